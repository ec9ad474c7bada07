package controllers

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	"k8s.io/klog/v2"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/source"

	quotav1 "github.com/appquota/appquota/api/v1alpha1"
	"github.com/appquota/appquota/internal/render"
)

// snapshot is one render's result, as the status controller needs it.
type snapshot struct {
	res    *render.Result
	stored *render.Stored
	budget int
}

// Board passes renders from the render loop to the status controller: the
// latest snapshot, and a stream of the AppQuotas whose outcome changed.
type Board struct {
	mu      sync.RWMutex
	current *snapshot
	// outcomes is what the previous publish told, to send only what changed.
	outcomes map[string]*render.Outcome
	changed  chan event.GenericEvent
}

// NewBoard returns an empty Board.
func NewBoard() *Board {
	return &Board{changed: make(chan event.GenericEvent, 1024)}
}

func (b *Board) snapshot() *snapshot {
	b.mu.RLock()
	defer b.mu.RUnlock()
	return b.current
}

// publish makes snap current and queues the AppQuotas whose outcome differs
// from the last publish (all of them the first time), and those named in
// touched. It blocks while the status controller's queue intake is full,
// which is the back-pressure wanted, and gives up when ctx ends (the manager
// is stopping).
func (b *Board) publish(ctx context.Context, snap *snapshot, touched []types.NamespacedName) {
	b.mu.Lock()
	b.current = snap
	last := b.outcomes
	b.outcomes = snap.res.Apps
	b.mu.Unlock()
	// The Renderer hands out the same *Outcome while an AppQuota's outcome is
	// unchanged, so this is a pointer comparison per AppQuota; the key names the
	// object, which is all the status controller's queue needs.
	differs := func(key string, o *render.Outcome) bool {
		prev, seen := last[key]
		return !seen || (prev != o && !prev.Equal(o)) || snap.stored.TooLarge
	}
	for key, o := range snap.res.Apps {
		if !differs(key, o) {
			continue
		}
		ns, name, _ := strings.Cut(key, "/")
		if !b.queue(ctx, types.NamespacedName{Namespace: ns, Name: name}) {
			return
		}
	}
	// Touched AppQuotas whose outcome did not differ, so not queued above (one
	// without an outcome is gone, or going: no status to write).
	for _, name := range touched {
		key := name.String() // render.Key's namespace/name
		if o, ok := snap.res.Apps[key]; ok && !differs(key, o) && !b.queue(ctx, name) {
			return
		}
	}
}

// queue hands an AppQuota to the status controller; false when ctx ended
// first.
func (b *Board) queue(ctx context.Context, name types.NamespacedName) bool {
	select {
	case b.changed <- event.GenericEvent{Object: &quotav1.AppQuota{ObjectMeta: metav1.ObjectMeta{Namespace: name.Namespace, Name: name.Name}}}:
		return true
	case <-ctx.Done():
		return false
	}
}

// StatusReconciler writes AppQuota statuses and events from the latest render,
// many at a time and apart from the render loop.
type StatusReconciler struct {
	client.Client
	Recorder events.EventRecorder
	Board    *Board
}

// SetupWithManager registers the status controller.
func (r *StatusReconciler) SetupWithManager(mgr ctrl.Manager) error {
	return ctrl.NewControllerManagedBy(mgr).
		Named("appquota-status").
		WatchesRawSource(source.Channel(r.Board.changed, &handler.EnqueueRequestForObject{})).
		WithOptions(controller.Options{MaxConcurrentReconciles: statusWriters}).
		Complete(r)
}

// Reconcile brings one AppQuota's status in line with the latest render.
func (r *StatusReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	snap := r.Board.snapshot()
	if snap == nil {
		return ctrl.Result{}, nil
	}
	var a quotav1.AppQuota
	if err := r.Get(ctx, req.NamespacedName, &a); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	return ctrl.Result{}, r.updateAppStatus(ctx, &a, snap)
}

func (r *StatusReconciler) updateAppStatus(ctx context.Context, cached *quotav1.AppQuota, snap *snapshot) error {
	res, tooLarge := snap.res, snap.stored.TooLarge
	// a carries the desired status; cached (shared with the cache) stays as is.
	a := &quotav1.AppQuota{ObjectMeta: cached.ObjectMeta, Spec: cached.Spec, Status: *cached.Status.DeepCopy()}
	if a.DeletionTimestamp != nil {
		return nil
	}
	out, ok := res.Apps[render.Key(a)]
	if !ok || out.Generation != a.Generation {
		// Not rendered yet, or rendered from an older generation: the render of
		// this one will publish again.
		return nil
	}
	orig := cached
	cond := metav1.Condition{Type: quotav1.ConditionReady, ObservedGeneration: a.Generation}
	alreadyApplied := orig.Status.ObservedGeneration == a.Generation &&
		meta.IsStatusConditionTrue(orig.Status.Conditions, quotav1.ConditionReady) &&
		orig.Status.ActiveOverrides == out.ActiveOverrides
	switch {
	case !out.Valid:
		cond.Status, cond.Reason, cond.Message = metav1.ConditionFalse, out.Reason, out.Message
		if out.KeptLastGood {
			cond.Message += "; gateways keep the app's last good limits"
		}
	case tooLarge && !alreadyApplied:
		cond.Status, cond.Reason = metav1.ConditionFalse, quotav1.ReasonConfigTooLarge
		cond.Message = tooLargeMessage(snap.stored, snap.budget)
	default:
		cond.Status, cond.Reason = metav1.ConditionTrue, quotav1.ReasonApplied
		cond.Message = fmt.Sprintf("%d active overrides", out.ActiveOverrides)
		if !alreadyApplied {
			a.Status.ConfigHash = snap.stored.Hash
		}
		a.Status.ActiveOverrides = out.ActiveOverrides
		a.Status.NextExpiry = nil
		if out.NextExpiry != nil {
			t := metav1.NewTime(*out.NextExpiry)
			a.Status.NextExpiry = &t
		}
	}
	meta.SetStatusCondition(&a.Status.Conditions, cond)
	a.Status.ObservedGeneration = a.Generation

	// Events for what changed since the previous document.
	if out.Valid && !tooLarge {
		if !alreadyApplied && orig.Status.ObservedGeneration != a.Generation {
			groups := make([]string, 0, len(a.Spec.Overrides))
			for _, o := range a.Spec.Overrides {
				if !slices.Contains(out.Expired, o.Group) {
					groups = append(groups, o.Group)
				}
			}
			r.Recorder.Eventf(cached, nil, corev1.EventTypeNormal, EventOverridesApplied, "Apply",
				"generation %d in configuration %s: overrides for [%s]", a.Generation, snap.stored.Hash, strings.Join(groups, ", "))
		}
	}
	if cond.Status == metav1.ConditionFalse && !sameCondition(orig.Status.Conditions, cond) {
		reason := EventRejected
		if cond.Reason == quotav1.ReasonConfigTooLarge {
			reason = EventConfigTooLarge
		}
		r.Recorder.Eventf(cached, nil, corev1.EventTypeWarning, reason, "Validate", "%s", cond.Message)
	}

	if equality.Semantic.DeepEqual(orig.Status, a.Status) {
		return nil
	}
	ctrl.LoggerFrom(ctx).V(1).Info("updating status", "appQuota", klog.KObj(a), "ready", cond.Status, "reason", cond.Reason)
	patched := cached.DeepCopy()
	patched.Status = a.Status
	if err := r.Status().Patch(ctx, patched, client.MergeFrom(cached)); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("AppQuota %s: %w", render.Key(a), err)
	}
	return nil
}
