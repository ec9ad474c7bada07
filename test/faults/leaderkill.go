package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"syscall"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
)

// result is one fault's measurements over its repeats.
type result struct {
	Fault, Injection      string
	Recovery, Failover    []time.Duration
	Lost, Stale, Restarts int
	Edits                 int64
	// Note is what the fault measured beyond the table's columns (rates,
	// counts), printed after its verdict.
	Note string
	Err  error
}

// leaderKill is fault 1: SIGKILL of the leader at a random point of a bulk
// create, with edits in flight, in a fresh run per repeat.
func leaderKill(ctx context.Context, cfg Config, bin string) result {
	res := result{Fault: "Leader SIGKILL mid-bulk",
		Injection: fmt.Sprintf("SIGKILL of the leading manager at a random point of a bulk create of %d AppQuotas, "+
			"with edits in flight; %d repeats", cfg.BulkApps, cfg.Repeats)}
	return repeated(res, cfg.Repeats, func(res *result) error { return leaderKillOnce(ctx, cfg, bin, res) })
}

func leaderKillOnce(ctx context.Context, cfg Config, bin string, res *result) error {
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	h, err := newHarness(runCtx, cfg.Log, bin)
	if err != nil {
		return err
	}
	defer h.stop()
	if err := h.start(runCtx); err != nil {
		return err
	}
	old, err := h.waitLeader(runCtx)
	if err != nil {
		return err
	}
	// A first half exists before the fault, so that edits have apps to change.
	base := max(cfg.BulkApps/2, 1)
	if err := h.createApps(runCtx, 0, base, cfg.Workers); err != nil {
		return err
	}
	o := &oracle{h: h}
	if _, _, err := o.settle(runCtx, time.Now(), 5*time.Minute); err != nil {
		return fmt.Errorf("before the fault: %w", err)
	}
	if o.previous, _, _, err = h.stored(runCtx); err != nil {
		return err
	}
	o.editor = newEditor(h, 2, base) // apps 0 and 1 are deleted during the fault
	stopEdits := o.editor.run(runCtx, 4)
	defer stopEdits()

	holder, err := h.holder(runCtx)
	if err != nil {
		return err
	}
	bulk := make(chan error, 1)
	go func() { bulk <- h.createApps(runCtx, base, cfg.BulkApps, cfg.Workers) }()
	// The kill lands at a random point of the bulk.
	killAt := base + rand.IntN(max(cfg.BulkApps-base, 1))
	if err := poll(runCtx, "the bulk to reach its kill point", 5*time.Minute, func(context.Context) (bool, error) {
		return int(h.created.Load()) >= killAt || len(bulk) > 0, nil
	}); err != nil {
		return err
	}
	restartsBefore := h.restarts()
	h.mu.Lock()
	old.leading = false
	h.mu.Unlock()
	killed := time.Now()
	if err := h.signal(old, syscall.SIGKILL); err != nil {
		return err
	}
	if err := h.deleteApps(runCtx, o, 0, 2); err != nil {
		return err
	}
	failover, err := h.waitHolderChange(runCtx, holder, killed)
	if err != nil {
		return err
	}
	if err := <-bulk; err != nil {
		return err
	}
	stopEdits()
	end := time.Now()
	recovery, lost, err := o.settle(runCtx, end, 5*time.Minute)
	res.Lost += lost
	res.Edits += o.editor.edits.Load()
	if err != nil {
		return fmt.Errorf("after the leader was killed: %w", err)
	}
	res.Recovery = append(res.Recovery, recovery)
	res.Failover = append(res.Failover, failover)
	res.Restarts += h.restarts() - restartsBefore
	res.Stale += h.conflicts()
	return nil
}

// waitHolderChange waits until the Lease names a holder other than from and
// returns how long after since that was.
func (h *harness) waitHolderChange(ctx context.Context, from string, since time.Time) (time.Duration, error) {
	var at time.Time
	err := poll(ctx, "the Lease to change holder", 2*leaseDuration+time.Minute, func(ctx context.Context) (bool, error) {
		now, err := h.holder(ctx)
		at = time.Now()
		return err == nil && now != "" && now != from, err
	})
	return at.Sub(since), err
}

// deleteApps deletes apps [from, to) and records their IDs as deleted.
func (h *harness) deleteApps(ctx context.Context, o *oracle, from, to int) error {
	for i := from; i < to; i++ {
		a := h.appQuota(i)
		err := poll(ctx, "delete "+a.Name, 2*time.Minute, func(ctx context.Context) (bool, error) {
			err := h.c.Delete(ctx, a)
			return err == nil || apierrors.IsNotFound(err), err
		})
		if err != nil {
			return err
		}
		o.deleted = append(o.deleted, a.Spec.AppID)
	}
	return nil
}

func (h *harness) conflicts() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.replicas[0].conflicts + h.replicas[1].conflicts
}
