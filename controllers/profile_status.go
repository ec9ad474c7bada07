package controllers

import (
	"context"
	"fmt"
	"strconv"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	quotav1 "github.com/appquota/appquota/api/v1alpha1"
	"github.com/appquota/appquota/internal/layout"
	"github.com/appquota/appquota/internal/render"
)

func (r *QuotaReconciler) updateProfileStatus(ctx context.Context, cached *quotav1.QuotaProfile, res *render.Result, st *layout.Stored) error {
	// p carries the desired status; cached (shared with the cache) stays as is.
	p := &quotav1.QuotaProfile{ObjectMeta: cached.ObjectMeta, Spec: cached.Spec, Status: *cached.Status.DeepCopy()}
	if p.DeletionTimestamp != nil {
		return nil
	}
	out, ok := res.Profiles[p.Name]
	if !ok {
		return nil
	}
	orig := cached
	cond := metav1.Condition{Type: quotav1.ConditionReady, ObservedGeneration: p.Generation}
	switch {
	case !out.Valid:
		cond.Status, cond.Reason = metav1.ConditionFalse, out.Reason
		cond.Message = out.Message
		if out.KeptLastGood {
			cond.Message += "; gateways keep the last good version"
		}
	case st.TooLarge:
		cond.Status, cond.Reason = metav1.ConditionFalse, quotav1.ReasonConfigTooLarge
		cond.Message = tooLargeMessage(st, r.MaxConfigBytes)
	default:
		cond.Status, cond.Reason = metav1.ConditionTrue, quotav1.ReasonApplied
		cond.Message = "in configuration " + st.Hash
		if orig.Status.ObservedGeneration == p.Generation && meta.IsStatusConditionTrue(orig.Status.Conditions, quotav1.ConditionReady) {
			// Already reported for this generation: keep the hash it was applied in.
			cond.Message = meta.FindStatusCondition(orig.Status.Conditions, quotav1.ConditionReady).Message
		}
	}
	meta.SetStatusCondition(&p.Status.Conditions, cond)
	p.Status.ObservedGeneration = p.Generation
	p.Status.Groups = int32(len(p.Spec.EndpointGroups))
	// status.engine is the engine watch's (engineWatch.reportProfiles): it
	// changes with every version, and writing it here would cost each render
	// a status write per QuotaProfile.
	if equality.Semantic.DeepEqual(orig.Status, p.Status) {
		return nil
	}
	if !out.Valid && !sameCondition(orig.Status.Conditions, cond) {
		r.Recorder.Eventf(cached, nil, corev1.EventTypeWarning, EventRejected, "Validate", "%s", cond.Message)
	}
	patched := cached.DeepCopy()
	patched.Status = p.Status
	if err := r.Status().Patch(ctx, patched, client.MergeFrom(cached)); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("QuotaProfile %s: %w", p.Name, err)
	}
	return nil
}

// sameCondition reports whether conds already holds c's status, reason,
// message and generation (so it was already reported).
func sameCondition(conds []metav1.Condition, c metav1.Condition) bool {
	old := meta.FindStatusCondition(conds, c.Type)
	return old != nil && old.Status == c.Status && old.Reason == c.Reason && old.Message == c.Message && old.ObservedGeneration == c.ObservedGeneration
}

// engineStatus is the engine's state as a QuotaProfile reports it; nil when
// the manager serves no engine.
func engineStatus(e Engine) *quotav1.EngineStatus {
	if e == nil {
		return nil
	}
	s := e.State()
	out := &quotav1.EngineStatus{Connected: int32(s.Connected), InSync: int32(s.InSync)}
	if s.Published > 0 {
		out.Version = strconv.FormatUint(s.Published, 10)
	}
	return out
}
