package main

import (
	"context"
	"fmt"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/appquota/appquota/pkg/quotaconfig"
)

// observeQuiet is how long the index is watched, after a new leader took
// over a quiet system, for a write it should not make: the property is that
// nothing happens, which no condition signals, so it is a window, longer than
// the new leader's first full render at these sizes.
const observeQuiet = 10 * time.Second

// handover is fault 1's SIGTERM variant: the leader releases the Lease on
// its way out, so the other replica takes over after about the retry period,
// not the lease duration; with nothing changed, the new leader writes nothing.
func handover(ctx context.Context, cfg Config, bin string) result {
	res := result{Fault: "Leader SIGTERM (handover)",
		Injection: fmt.Sprintf("SIGTERM of the leading manager on a quiet system of %d AppQuotas; %d repeats", cfg.Apps, cfg.Repeats)}
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	h, err := newHarness(runCtx, cfg.Log, bin)
	if err != nil {
		res.Err = err
		return res
	}
	defer h.stop()
	if err := h.start(runCtx); err != nil {
		res.Err = err
		return res
	}
	if err := h.createApps(runCtx, 0, cfg.Apps, cfg.Workers); err != nil {
		res.Err = err
		return res
	}
	o := &oracle{h: h}
	return repeated(res, cfg.Repeats, func(res *result) error { return handoverOnce(runCtx, h, o, res) })
}

func handoverOnce(ctx context.Context, h *harness, o *oracle, res *result) error {
	old, err := h.waitLeader(ctx)
	if err != nil {
		return err
	}
	if _, _, err := o.settle(ctx, time.Now(), 5*time.Minute); err != nil {
		return fmt.Errorf("before the handover: %w", err)
	}
	// Quiet means folded too: an index still carrying recent apps is folded
	// into its shards by whichever replica leads once --compact-after has
	// passed, a write the old leader would have made as well.
	if err := h.waitFolded(ctx, 5*time.Minute); err != nil {
		return fmt.Errorf("before the handover: %w", err)
	}
	var rv string
	if o.previous, _, rv, err = h.stored(ctx); err != nil {
		return err
	}
	holder, err := h.holder(ctx)
	if err != nil {
		return err
	}
	restartsBefore, conflictsBefore := h.restarts(), h.conflicts()
	h.mu.Lock()
	old.leading = false
	h.mu.Unlock()
	start := time.Now()
	if err := h.signal(old, syscall.SIGTERM); err != nil {
		return err
	}
	failover, err := h.waitHolderChange(ctx, holder, start)
	if err != nil {
		return err
	}
	end := time.Now()
	recovery, lost, err := o.settle(ctx, end, 5*time.Minute)
	res.Lost += lost
	if err != nil {
		return fmt.Errorf("after the handover: %w", err)
	}
	if _, err := h.waitLeader(ctx); err != nil {
		return err
	}
	deadline := time.Now().Add(observeQuiet)
	for time.Now().Before(deadline) {
		_, _, now, err := h.stored(ctx)
		if err != nil {
			return err
		}
		if now != rv {
			res.Stale++
			return fmt.Errorf("the new leader rewrote the index of an unchanged system (resourceVersion %s → %s)", rv, now)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
	res.Recovery = append(res.Recovery, recovery)
	res.Failover = append(res.Failover, failover)
	res.Restarts += h.restarts() - restartsBefore
	res.Stale += h.conflicts() - conflictsBefore
	return nil
}

// waitFolded waits until the stored index carries no recent apps (every app
// in its shard), polling until timeout.
func (h *harness) waitFolded(ctx context.Context, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		var cm corev1.ConfigMap
		err := h.c.Get(ctx, client.ObjectKey{Namespace: h.opts.Namespace, Name: h.opts.ConfigMapName}, &cm)
		if err == nil {
			var raw []byte
			if raw, err = quotaconfig.FromConfigMap(cm.Data, cm.BinaryData); err == nil {
				var index *quotaconfig.Document
				if index, err = quotaconfig.Parse(raw); err == nil {
					if len(index.Apps) == 0 && len(index.RemovedApps) == 0 || len(index.Shards) == 0 {
						return nil
					}
					err = fmt.Errorf("the index still carries %d apps", len(index.Apps)+len(index.RemovedApps))
				}
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the stored index was not folded within %s: %w", timeout, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
}
