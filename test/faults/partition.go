package main

import (
	"context"
	"fmt"
	"syscall"
	"time"
)

// partition is a partitioned old leader: the leading manager is frozen
// (SIGSTOP) with edits in flight, so that it neither renews the Lease nor
// learns it lost it; the other replica takes over when the Lease expires and
// writes the changes made meanwhile (an app deleted among them); then the old
// one is thawed (SIGCONT) with its cache, its queue and its remembered
// resourceVersions from before. Its writes are fenced by a resourceVersion
// precondition (docs/decisions/2026-12-04-shard-slots-and-fenced-writes.md):
// none may land, and it must step down (exit, as a manager whose Lease is
// lost does). The set is sharded, so that a write of the old leader would
// first touch shard slots.
func partition(ctx context.Context, cfg Config, bin string) result {
	res := result{Fault: "Partitioned old leader",
		Injection: fmt.Sprintf("sharded set of %d AppQuotas; the leading manager SIGSTOPped with edits in flight until the other "+
			"took over and wrote the changes made since (one app deleted), then SIGCONTed; a stale write is a configuration the "+
			"old leader logged writing after it was thawed; %d repeats", cfg.Apps, cfg.Repeats)}
	return repeated(res, cfg.Repeats, func(res *result) error { return partitionOnce(ctx, cfg, bin, res) })
}

func partitionOnce(ctx context.Context, cfg Config, bin string, res *result) error {
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	h, err := newHarness(runCtx, cfg.Log, bin, "--shard-above-bytes", "1024", "--compact-after", "1s")
	if err != nil {
		return err
	}
	defer h.stop()
	h.incompressible = true
	if err := h.start(runCtx); err != nil {
		return err
	}
	apps := max(cfg.Apps, 3)
	if err := h.createApps(runCtx, 0, apps, cfg.Workers); err != nil {
		return err
	}
	o := &oracle{h: h}
	if _, _, err := o.settle(runCtx, time.Now(), 5*time.Minute); err != nil {
		return fmt.Errorf("before the fault: %w", err)
	}
	old, err := h.leaderWithoutWebhook(runCtx)
	if err != nil {
		return err
	}
	if o.previous, _, _, err = h.stored(runCtx); err != nil {
		return err
	}
	holder, err := h.holder(runCtx)
	if err != nil {
		return err
	}
	restartsBefore, conflictsBefore := h.restarts(), h.conflicts()
	o.editor = newEditor(h, 1, apps) // app 0 is deleted during the partition
	stopEdits := o.editor.run(runCtx, 4)
	defer stopEdits()
	if err := waitEdits(runCtx, o.editor, 10); err != nil {
		return err
	}
	h.mu.Lock()
	old.leading = false
	oldProc := old.proc
	h.mu.Unlock()
	stopped := time.Now()
	if err := h.signal(old, syscall.SIGSTOP); err != nil {
		return err
	}
	thawed := false
	defer func() {
		if !thawed {
			_ = h.signal(old, syscall.SIGCONT)
		}
	}()
	failover, err := h.waitHolderChange(runCtx, holder, stopped)
	if err != nil {
		return err
	}
	if err := h.deleteApps(runCtx, o, 0, 1); err != nil {
		return err
	}
	// The new leader has made changes once it wrote a configuration holding
	// the deletion and the edits accepted so far.
	if err := waitEdits(runCtx, o.editor, o.editor.edits.Load()+20); err != nil {
		return err
	}
	if err := poll(runCtx, "the new leader to write the changes", 2*time.Minute, func(ctx context.Context) (bool, error) {
		doc, hash, _, err := h.stored(ctx)
		if err != nil {
			return false, err
		}
		_, present := doc.Apps[appName(0)]
		return !present && h.written(hash), nil
	}); err != nil {
		return err
	}
	h.mu.Lock()
	writesBefore, oldConflicts := old.writes, old.conflicts
	h.mu.Unlock()
	thawedAt := time.Now()
	thawed = true
	if err := h.signal(old, syscall.SIGCONT); err != nil {
		return err
	}
	// Thawed, it finds its renewal overdue and stops leading: the manager
	// exits, and the supervisor starts it again as a follower.
	if err := poll(runCtx, "the old leader to step down", renewDeadline+time.Minute, func(context.Context) (bool, error) {
		return oldProc.Exited(), nil
	}); err != nil {
		return err
	}
	stepDown := time.Since(thawedAt)
	h.mu.Lock()
	// The slot's writes since the thaw: its old incarnation's, as the new
	// one, a follower, writes nothing.
	stale, fenced := old.writes-writesBefore, old.conflicts-oldConflicts
	h.mu.Unlock()
	fmt.Fprintf(h.log, "partition: old leader thawed, stepped down after %s; %d of its writes refused by the resourceVersion fence, %d landed\n",
		stepDown.Round(100*time.Millisecond), fenced, stale)
	stopEdits()
	recovery, lost, err := o.settle(runCtx, thawedAt, 5*time.Minute)
	res.Lost += lost
	res.Edits += o.editor.edits.Load()
	// The column counts conflicts too: here the old leader's writes the
	// fence refused, and any other.
	res.Stale += stale + h.conflicts() - conflictsBefore
	if err != nil {
		return fmt.Errorf("after the old leader was thawed: %w", err)
	}
	if stale > 0 {
		return fmt.Errorf("the old leader, thawed, landed %d configuration writes after its successor took over", stale)
	}
	res.Recovery = append(res.Recovery, recovery)
	res.Failover = append(res.Failover, failover)
	res.Restarts += h.restarts() - restartsBefore
	return nil
}

// leaderWithoutWebhook returns the leader once it is replica b: replica a
// serves the webhook the API server calls (failurePolicy Fail), and freezing
// it would refuse every change the new leader is to write. When a leads, it
// hands over first (SIGTERM, the Lease released), and the supervisor holds
// its restart until b leads, so that a's next incarnation cannot take the
// released Lease back first.
func (h *harness) leaderWithoutWebhook(ctx context.Context) (*replica, error) {
	l, err := h.waitLeader(ctx)
	if err != nil || l != h.replicas[0] {
		return l, err
	}
	holder, err := h.holder(ctx)
	if err != nil {
		return nil, err
	}
	h.mu.Lock()
	l.leading, l.stopping = false, true
	h.mu.Unlock()
	defer func() {
		h.mu.Lock()
		l.stopping = false
		h.mu.Unlock()
	}()
	if err := h.signal(l, syscall.SIGTERM); err != nil {
		return nil, err
	}
	if _, err := h.waitHolderChange(ctx, holder, time.Now()); err != nil {
		return nil, err
	}
	if l, err = h.waitLeader(ctx); err != nil {
		return nil, err
	}
	if l != h.replicas[1] {
		return nil, fmt.Errorf("after a's handover replica %s leads, not b", l.name)
	}
	h.mu.Lock()
	h.replicas[0].stopping = false
	h.mu.Unlock()
	// The webhook must answer again before the edits start.
	return l, poll(ctx, "replica a to run again", time.Minute, func(context.Context) (bool, error) {
		h.mu.Lock()
		defer h.mu.Unlock()
		return !h.replicas[0].proc.Exited(), nil
	})
}
