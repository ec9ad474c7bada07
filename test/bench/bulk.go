package main

import (
	"context"
	"fmt"
	"time"

	"github.com/appquota/appquota/pkg/quotaconfig"
)

// The bulk rows' notes.
const (
	noteBulk = "Bulk convergence: from the last AppQuota create acknowledged to the ConfigMap watch event holding every " +
		"app; the baseline is how long the creates took, and their rate."
	noteBulkWrites = "ConfigMap writes / AppQuota changes during the bulk load."
	noteBulkReady  = "From the configuration converging (the ConfigMap watch event holding every app) to every AppQuota reporting " +
		"Ready=True for its generation, polled every 0.5 s: the status writers' own budget, --status-qps " +
		"(docs/decisions/2026-12-04-status-write-budget.md)."
)

func (b *bench) bulk(ctx context.Context, rep *Report) error {
	fmt.Fprintf(b.log, "bulk: creating %d AppQuotas with %d workers\n", b.cfg.Apps, b.cfg.Workers)
	b.drain()
	writesBefore := b.writes.Load()
	start := time.Now()
	last, err := b.createApps(ctx, 0, b.cfg.Apps)
	if err != nil {
		return err
	}
	done, err := b.waitOutput(ctx, 10*time.Minute, func(d *quotaconfig.Document) bool { return countBench(d) == b.cfg.Apps })
	if err != nil {
		return fmt.Errorf("bulk: %w", err)
	}
	writes := b.writes.Load() - writesBefore
	converge := max(done.Sub(last), 0)
	// Statuses follow the ConfigMap; later rows measure a settled system.
	settled, err := b.waitReady(ctx, b.cfg.Apps)
	if err != nil {
		return err
	}
	rate := float64(b.cfg.Apps) / last.Sub(start).Seconds()
	amp := float64(writes) / float64(b.cfg.Apps)
	rep.add(
		Row{Name: fmt.Sprintf("Bulk convergence, %d apps", b.cfg.Apps), Notes: []string{noteBulk},
			Measured: ms(converge), Baseline: fmt.Sprintf("creates took %s (%.0f/s)", last.Sub(start).Round(time.Millisecond), rate),
			Target: "≤ 5 s", Met: met(converge <= 5*time.Second)},
		Row{Name: "Bulk write amplification", Notes: []string{noteBulkWrites},
			Measured: fmt.Sprintf("%d / %d = %.4f", writes, b.cfg.Apps, amp), Target: "≤ 0.01", Met: met(amp <= 0.01)},
		Row{Name: fmt.Sprintf("Bulk: every AppQuota Ready after convergence, %d apps", b.cfg.Apps), Notes: []string{noteBulkReady},
			Measured: max(settled.Sub(done), 0).Round(100 * time.Millisecond).String(),
			Baseline: fmt.Sprintf("%s after the last create", settled.Sub(last).Round(100*time.Millisecond)),
			Target:   "≤ 10 s", Met: met(settled.Sub(done) <= 10*time.Second)},
	)
	return nil
}
