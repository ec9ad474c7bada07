package controllers

import (
	"context"
	"fmt"
	"maps"
	"strconv"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/predicate"

	quotav1 "github.com/appquota/appquota/api/v1alpha1"
	"github.com/appquota/appquota/internal/render"
	"github.com/appquota/appquota/internal/validation"
)

// +kubebuilder:rbac:groups="",resources=namespaces,verbs=get;list;watch

// Grants is what every namespace may claim (quotav1.AppIDsAnnotation), read
// by the render loop from the Namespaces' metadata in the manager's cache:
// an AppQuota that got past the admission policy and the webhook with an
// appID its namespace may not claim is held by the render too. Only the
// render loop uses it.
type Grants struct {
	// raw are the annotations' values by namespace, as last read.
	raw     map[string]string
	claims  *render.Claims
	version uint64
}

// Claims reads every Namespace's grant from c (the cache: a list of
// metadata, a few thousand at most) and returns them, under a new version
// when any changed since the last call.
func (g *Grants) Claims(ctx context.Context, c client.Reader) (*render.Claims, error) {
	list := &metav1.PartialObjectMetadataList{}
	list.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("NamespaceList"))
	if err := c.List(ctx, list, client.UnsafeDisableDeepCopy); err != nil {
		return nil, fmt.Errorf("list Namespaces: %w", err)
	}
	raw := make(map[string]string, len(g.raw))
	for i := range list.Items {
		if v, ok := list.Items[i].Annotations[quotav1.AppIDsAnnotation]; ok {
			raw[list.Items[i].Name] = v
		}
	}
	if g.claims != nil && maps.Equal(raw, g.raw) {
		return g.claims, nil
	}
	grants := make(map[string]*validation.Grant, len(raw))
	for ns, v := range raw {
		p := validation.ParseGrant(ns, map[string]string{quotav1.AppIDsAnnotation: v})
		grants[ns] = &p
	}
	g.version++
	g.raw, g.claims = raw, &render.Claims{Grants: grants, Version: strconv.FormatUint(g.version, 10)}
	return g.claims, nil
}

// grantChanged passes the Namespace events that can change a grant.
var grantChanged = predicate.Funcs{
	UpdateFunc: func(e event.UpdateEvent) bool {
		o, n := e.ObjectOld.GetAnnotations(), e.ObjectNew.GetAnnotations()
		ov, ook := o[quotav1.AppIDsAnnotation]
		nv, nok := n[quotav1.AppIDsAnnotation]
		return ov != nv || ook != nok
	},
	CreateFunc:  func(event.CreateEvent) bool { return true },
	DeleteFunc:  func(event.DeleteEvent) bool { return true },
	GenericFunc: func(event.GenericEvent) bool { return false },
}
