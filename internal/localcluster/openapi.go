package localcluster

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/rest"
)

// openAPITimeout bounds waitForOpenAPI; the API server publishes a new CRD's
// schema well within a second when idle.
const openAPITimeout = 30 * time.Second

// waitForOpenAPI returns when every served version of every CRD has its schema
// in the API server's OpenAPI v3 document, which is what `kubectl explain` and
// server-side apply's field validation read.
//
// envtest waits for the CRDs to be Established and in discovery, but the
// API server publishes their OpenAPI asynchronously after that: a `kubectl
// explain appquota.spec` run right after Start answered "couldn't find resource
// for quota.appquota.io/v1alpha1, Resource=appquotas" (a CI run of
// test/manifests, 2026-11-27).
func waitForOpenAPI(ctx context.Context, cfg *rest.Config, crds []*apiextensionsv1.CustomResourceDefinition) error {
	dc, err := discovery.NewDiscoveryClientForConfig(cfg)
	if err != nil {
		return fmt.Errorf("localcluster: discovery client: %w", err)
	}
	want := map[schema.GroupVersion][]string{}
	for _, crd := range crds {
		for _, v := range crd.Spec.Versions {
			if v.Served {
				gv := schema.GroupVersion{Group: crd.Spec.Group, Version: v.Name}
				want[gv] = append(want[gv], crd.Spec.Names.Kind)
			}
		}
	}
	var missing []string
	err = wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, openAPITimeout, true, func(context.Context) (bool, error) {
		missing = missing[:0]
		paths, err := dc.OpenAPIV3().Paths()
		if err != nil {
			missing = append(missing, fmt.Sprintf("the OpenAPI v3 paths (%v)", err))
			return false, nil
		}
		for gv, kinds := range want {
			path := "apis/" + gv.Group + "/" + gv.Version
			doc, ok := paths[path]
			if !ok {
				missing = append(missing, fmt.Sprintf("%s (no %s)", kinds, path))
				continue
			}
			raw, err := doc.Schema(runtime.ContentTypeJSON)
			if err != nil {
				missing = append(missing, fmt.Sprintf("%s (%s: %v)", kinds, path, err))
				continue
			}
			have, err := openAPIKinds(raw)
			if err != nil {
				return false, fmt.Errorf("localcluster: %s: %w", path, err)
			}
			for _, k := range kinds {
				if !have[gv.WithKind(k)] {
					missing = append(missing, gv.WithKind(k).String())
				}
			}
		}
		return len(missing) == 0, nil
	})
	if err != nil {
		return fmt.Errorf("localcluster: the API server's OpenAPI v3 lacks %v: %w", missing, err)
	}
	return nil
}

// openAPIKinds lists the kinds an OpenAPI v3 group-version document describes,
// from its schemas' x-kubernetes-group-version-kind.
func openAPIKinds(raw []byte) (map[schema.GroupVersionKind]bool, error) {
	var doc struct {
		Components struct {
			Schemas map[string]struct {
				GVK []struct {
					Group   string `json:"group"`
					Version string `json:"version"`
					Kind    string `json:"kind"`
				} `json:"x-kubernetes-group-version-kind"`
			} `json:"schemas"`
		} `json:"components"`
	}
	if err := json.Unmarshal(raw, &doc); err != nil {
		return nil, err
	}
	kinds := map[schema.GroupVersionKind]bool{}
	for _, s := range doc.Components.Schemas {
		for _, gvk := range s.GVK {
			kinds[schema.GroupVersionKind{Group: gvk.Group, Version: gvk.Version, Kind: gvk.Kind}] = true
		}
	}
	return kinds, nil
}
