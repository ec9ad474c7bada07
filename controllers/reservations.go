package controllers

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	corev1ac "k8s.io/client-go/applyconfigurations/core/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/appquota/appquota/internal/render"
	"github.com/appquota/appquota/internal/reservation"
)

// reservations is the render loop's copy of the app ID reservations it
// stores in the ConfigMap reservation.ConfigMapName, beside the
// configuration (docs/decisions/2026-12-05-deleted-app-id-reservation.md).
// It is read from the cache when the loop starts (a new leader, a restart)
// and after a failed write; otherwise this replica is the only writer and
// its copy is the stored set, which the cache may not have caught up with.
type reservations struct {
	set    reservation.Set
	loaded bool
}

// reservationsName is the reservations ConfigMap's name.
func (r *QuotaReconciler) reservationsName() client.ObjectKey {
	return client.ObjectKey{Namespace: r.ConfigMap.Namespace, Name: reservation.ConfigMapName}
}

// heldReservations returns the render's Input.Reservations: nil when
// reservations are off (AppIDReservation 0), else the stored set and the
// grace period.
func (r *QuotaReconciler) heldReservations(ctx context.Context) (*render.Reservations, error) {
	if r.AppIDReservation <= 0 {
		return nil, nil
	}
	rs := &r.pub.reservations
	if !rs.loaded {
		var cm corev1.ConfigMap
		err := r.Get(ctx, r.reservationsName(), &cm)
		switch {
		case apierrors.IsNotFound(err):
			rs.set = reservation.Set{}
		case err != nil:
			return nil, fmt.Errorf("read ConfigMap %s: %w", r.reservationsName(), err)
		default:
			set, err := reservation.Decode(cm.Data[reservation.DataKey])
			if err != nil {
				// A damaged record must not stop every tenant's changes: the
				// reservations it held are lost, the next write replaces it.
				ctrl.LoggerFrom(ctx).Error(err, "the stored app ID reservations are unreadable; starting without them", "configMap", r.reservationsName())
				set = reservation.Set{}
			}
			rs.set = set
		}
		rs.loaded = true
	}
	return &render.Reservations{Held: rs.set, Grace: r.AppIDReservation}, nil
}

// storeReservations writes the reservations a render returned, when they
// changed, before the configuration that drops the apps they hold is
// written: a restart or a new leader between the two writes finds the
// reservation stored, and the app still in the stored configuration, which
// releases it again. The write is fenced as the configuration's are
// (fencedApply: the Lease, and the resourceVersion last seen).
func (r *QuotaReconciler) storeReservations(ctx context.Context, res *render.Result) error {
	rs := &r.pub.reservations
	if r.AppIDReservation <= 0 || res.Reservations == nil || res.Reservations.Equal(rs.set) {
		return nil
	}
	data, err := reservation.Encode(res.Reservations)
	if err != nil {
		return err
	}
	var cur corev1.ConfigMap
	var existing *corev1.ConfigMap
	if err := r.Get(ctx, r.reservationsName(), &cur); err == nil {
		existing = &cur
	} else if !apierrors.IsNotFound(err) {
		return fmt.Errorf("read ConfigMap %s: %w", r.reservationsName(), err)
	}
	apply := corev1ac.ConfigMap(reservation.ConfigMapName, r.ConfigMap.Namespace).
		WithLabels(map[string]string{ManagedByLabel: ManagedByValue}).
		WithData(map[string]string{reservation.DataKey: data})
	if err := r.fencedApply(ctx, apply, existing); err != nil {
		// Read the stored set again before the next render: another
		// replica may have written it.
		rs.loaded = false
		return err
	}
	rs.set = res.Reservations
	ctrl.LoggerFrom(ctx).V(1).Info("wrote app ID reservations", "count", len(res.Reservations))
	return nil
}
