package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"k8s.io/apimachinery/pkg/util/wait"
)

// rmwWorkers is how many concurrent editors the rmw fault runs: enough that
// two of them often read the same AppQuota before either writes it, which is
// what makes the API server refuse the second write with a conflict.
const rmwWorkers = 32

// rmw is fault 6: cfg.RMWEdits concurrent read-modify-write edits (get, raise
// the override's max by one, update, retried on a conflict as
// retry.RetryOnConflict does), spread at random over the apps by many
// workers. Every edit the API server acknowledged must be what is stored in
// the end (the oracle's lost count), and the stored configuration a render of
// it.
func rmw(ctx context.Context, cfg Config, bin string) result {
	res := result{Fault: "Concurrent read-modify-write",
		Injection: fmt.Sprintf("%d read-modify-write edits (get, raise, update; retried on conflict) by %d workers, "+
			"spread over %d AppQuotas", cfg.RMWEdits, rmwWorkers, cfg.Apps)}
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
	apps := max(cfg.Apps, 1)
	if err := h.createApps(runCtx, 0, apps, cfg.Workers); err != nil {
		res.Err = err
		return res
	}
	o := &oracle{h: h}
	if _, _, err := o.settle(runCtx, time.Now(), 5*time.Minute); err != nil {
		res.Err = fmt.Errorf("before the edits: %w", err)
		return res
	}
	if o.previous, _, _, err = h.stored(runCtx); err != nil {
		res.Err = err
		return res
	}
	restartsBefore, conflictsBefore := h.restarts(), h.conflicts()
	o.editor = newEditor(h, 0, apps)
	// Many workers on few apps, and the manager's status write after each
	// edit, make an edit meet several conflicts in a row: retry.DefaultRetry's
	// five tries give up on a few of them. An edit that gives up is not lost
	// (it was never acknowledged), but then it measures nothing.
	o.editor.backoff = wait.Backoff{Steps: 30, Duration: 10 * time.Millisecond, Factor: 1.5, Jitter: 0.5, Cap: time.Second}
	start := time.Now()
	failed, err := o.editor.runN(runCtx, cfg.RMWEdits, rmwWorkers)
	took := time.Since(start)
	res.Edits = o.editor.edits.Load()
	res.Note = fmt.Sprintf("%.0f edits/s, %d conflicts retried, %d edits failed", float64(res.Edits)/took.Seconds(),
		o.editor.conflicts.Load(), failed)
	fmt.Fprintf(h.log, "rmw: %d edits in %s: %s\n", res.Edits, took.Round(time.Millisecond), res.Note)
	if err != nil {
		res.Err = err
		return res
	}
	recovery, lost, err := o.settle(runCtx, time.Now(), 5*time.Minute)
	res.Lost = lost
	if err != nil {
		res.Err = fmt.Errorf("after the edits: %w", err)
		return res
	}
	// Nothing else happens during the fault, so every edit must have gone
	// through: a failed one is a write the API server refused for no reason
	// the fault gives it.
	if failed > 0 {
		res.Err = fmt.Errorf("%d of %d edits failed", failed, cfg.RMWEdits)
		return res
	}
	res.Recovery = append(res.Recovery, recovery)
	res.Restarts = h.restarts() - restartsBefore
	res.Stale = h.conflicts() - conflictsBefore
	return res
}

// runN makes n edits of random apps with workers concurrent editors and
// returns once all are done, with how many failed (after the conflict
// retries of edit). It stops early only when ctx ends.
func (e *editor) runN(ctx context.Context, n, workers int) (failed int64, err error) {
	var next atomic.Int64
	var nfailed atomic.Int64
	var wg sync.WaitGroup
	var mu sync.Mutex
	var first error
	for range workers {
		wg.Go(func() {
			for next.Add(1) <= int64(n) && ctx.Err() == nil {
				if err := e.edit(ctx, e.lo+rand.IntN(e.hi-e.lo)); err != nil {
					nfailed.Add(1)
					mu.Lock()
					if first == nil {
						first = err
					}
					mu.Unlock()
				}
			}
		})
	}
	wg.Wait()
	if ctx.Err() != nil {
		return nfailed.Load(), ctx.Err()
	}
	if first != nil {
		fmt.Fprintf(e.h.log, "rmw: first failed edit: %v\n", first)
	}
	return nfailed.Load(), nil
}
