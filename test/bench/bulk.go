package main

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/appquota/appquota/pkg/quotaconfig"
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
	rep.Notes = append(rep.Notes, fmt.Sprintf("Bulk: every AppQuota reported Ready=True %s after the last create was acknowledged (status writes follow the ConfigMap).", settled.Sub(last).Round(100*time.Millisecond)))
	rate := float64(b.cfg.Apps) / last.Sub(start).Seconds()
	rep.add(Row{"Bulk convergence: last create acknowledged to ConfigMap holding all " + strconv.Itoa(b.cfg.Apps),
		ms(converge), fmt.Sprintf("creates took %s (%.0f/s)", last.Sub(start).Round(time.Millisecond), rate), "", "≤ 5 s", met(converge <= 5*time.Second)})
	amp := float64(writes) / float64(b.cfg.Apps)
	rep.add(Row{"Bulk write amplification: ConfigMap writes / AppQuota changes", fmt.Sprintf("%d / %d = %.4f", writes, b.cfg.Apps, amp), "", "", "≤ 0.01", met(amp <= 0.01)})
	return nil
}
