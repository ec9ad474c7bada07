package main

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/client"

	quotav1 "github.com/appquota/appquota/api/v1alpha1"
)

func appName(i int) string { return fmt.Sprintf("app-%06d", i) }

func (h *harness) appQuota(i int) *quotav1.AppQuota {
	why := "fault injection"
	if h.incompressible {
		why = reason(i)
	}
	return &quotav1.AppQuota{
		ObjectMeta: metav1.ObjectMeta{Namespace: appNamespace, Name: appName(i)},
		Spec: quotav1.AppQuotaSpec{AppID: appName(i), Overrides: []quotav1.Override{{
			Group:  h.groups[i%len(h.groups)],
			Limits: []quotav1.OverrideLimit{{Unit: quotav1.UnitRequests, Window: quotav1.WindowHour, Max: int64(1000 + i)}},
			Reason: why,
		}}},
	}
}

// createApps creates AppQuotas [from, to) with workers concurrent creates.
// A create refused while a fault is in progress (the webhook's replica
// restarting) is tried again until timeout; one that already exists counts
// as made.
func (h *harness) createApps(ctx context.Context, from, to, workers int) error {
	var next atomic.Int64
	next.Store(int64(from))
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for range workers {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= to {
					return
				}
				err := poll(ctx, "create "+appName(i), 2*time.Minute, func(ctx context.Context) (bool, error) {
					err := h.c.Create(ctx, h.appQuota(i))
					return err == nil || apierrors.IsAlreadyExists(err), err
				})
				if err != nil {
					errs <- err
					return
				}
				h.created.Add(1)
			}
		})
	}
	wg.Wait()
	select {
	case err := <-errs:
		return err
	default:
		return nil
	}
}

// editor changes the max of apps' overrides while a fault runs, and records
// the last value the API server accepted for each app: the oracle checks
// that each app ends with that value.
type editor struct {
	h        *harness
	lo, hi   int // the apps edited: [lo, hi)
	mu       sync.Mutex
	accepted map[string]int64
	// unknown are values an update tried to set and got an error other than
	// a conflict for: the API server may have applied it all the same (the
	// response lost on a connection cut by the fault).
	unknown map[string]map[int64]bool
	edits   atomic.Int64
	failed  atomic.Int64
	// conflicts counts the updates the API server refused as conflicting
	// (another write since the read), each then retried.
	conflicts atomic.Int64
	// backoff paces the conflict retries of an edit; zero means
	// retry.DefaultRetry.
	backoff wait.Backoff
}

func newEditor(h *harness, lo, hi int) *editor {
	return &editor{h: h, lo: lo, hi: hi, accepted: map[string]int64{}, unknown: map[string]map[int64]bool{}}
}

// run edits random apps until stop is called, which returns once the edits
// in flight are done. Requests are not cancelled: an update cancelled in
// flight may still be applied, and then its value would not be known.
func (e *editor) run(ctx context.Context, workers int) (stop func()) {
	var wg sync.WaitGroup
	var stopped atomic.Bool
	for range workers {
		wg.Go(func() {
			for !stopped.Load() && ctx.Err() == nil {
				if err := e.edit(ctx, e.lo+rand.IntN(e.hi-e.lo)); err != nil && ctx.Err() == nil {
					// A refused edit is not recorded, so it cannot be lost; the
					// fault is allowed to refuse writes for a while.
					e.failed.Add(1)
					select {
					case <-ctx.Done():
					case <-time.After(100 * time.Millisecond):
					}
				}
			}
		})
	}
	return func() {
		stopped.Store(true)
		wg.Wait()
	}
}

// edit raises app i's override max by one, a read-modify-write retried on
// conflict. Each accepted update raises the value, so the last one accepted
// is the largest recorded.
func (e *editor) edit(ctx context.Context, i int) error {
	var set int64
	backoff := e.backoff
	if backoff.Steps == 0 {
		backoff = retry.DefaultRetry
	}
	err := retry.RetryOnConflict(backoff, func() error {
		var a quotav1.AppQuota
		if err := e.h.c.Get(ctx, client.ObjectKey{Namespace: appNamespace, Name: appName(i)}, &a); err != nil {
			return err
		}
		if len(a.Spec.Overrides) == 0 || len(a.Spec.Overrides[0].Limits) == 0 {
			return errors.New(appName(i) + " has no override to edit")
		}
		set = a.Spec.Overrides[0].Limits[0].Max + 1
		a.Spec.Overrides[0].Limits[0].Max = set
		err := e.h.c.Update(ctx, &a)
		if apierrors.IsConflict(err) {
			e.conflicts.Add(1)
		}
		if err != nil && !apierrors.IsConflict(err) && !apierrors.IsInvalid(err) && !apierrors.IsForbidden(err) {
			e.mu.Lock()
			if e.unknown[appName(i)] == nil {
				e.unknown[appName(i)] = map[int64]bool{}
			}
			e.unknown[appName(i)][set] = true
			e.mu.Unlock()
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("edit %s: %w", appName(i), err)
	}
	e.mu.Lock()
	e.accepted[appName(i)] = max(e.accepted[appName(i)], set)
	e.mu.Unlock()
	e.edits.Add(1)
	return nil
}
