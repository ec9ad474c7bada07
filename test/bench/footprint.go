package main

import (
	"context"
	"fmt"
	"path/filepath"
	"time"

	"sigs.k8s.io/controller-runtime/pkg/client"

	quotav1 "github.com/appquota/appquota/api/v1alpha1"
)

// The footprint rows' notes.
const (
	noteFootprint = "Footprint: the manager with that many AppQuotas in its cache: its heap (go_memstats_heap_alloc_bytes), " +
		"goroutines, resident memory and the file-backed part of it, the executable's pages (VmRSS and RssFile in /proc)."
	noteSinceStart = "Since the manager started: what holding memory down cost, as the collector runs more often near GOMEMLIMIT."
)

func (b *bench) footprint(apps int) func(context.Context, *Report) error {
	return func(ctx context.Context, rep *Report) error {
		rss, rssFile, err := procRSS(b.mgr.PID())
		if err != nil {
			return err
		}
		families, err := b.scrape()
		if err != nil {
			return err
		}
		// GC cycles and CPU seconds: what holding memory down cost, as the
		// collector runs more often near GOMEMLIMIT.
		var heap, goroutines, gcs, cpu float64
		for name, v := range map[string]*float64{"go_memstats_heap_alloc_bytes": &heap, "go_goroutines": &goroutines,
			"go_gc_duration_seconds": &gcs, "process_cpu_seconds_total": &cpu} {
			if *v, err = metricValue(families, name); err != nil {
				return err
			}
		}
		target, ok := "", ""
		if apps >= 100000 {
			target, ok = "< 300 MiB", met(rss < 300<<20)
		}
		label := fmt.Sprintf("Footprint, %d apps: ", apps)
		mib := func(v float64) string { return fmt.Sprintf("%.0f MiB", v/(1<<20)) }
		rep.add(
			Row{Name: label + "heap", Notes: []string{noteFootprint}, Measured: mib(heap)},
			Row{Name: label + "RSS", Notes: []string{noteFootprint}, Measured: mib(float64(rss)), Target: target, Met: ok},
			Row{Name: label + "of the RSS, the executable", Notes: []string{noteFootprint}, Measured: mib(float64(rssFile))},
			Row{Name: label + "goroutines", Notes: []string{noteFootprint}, Measured: fmt.Sprintf("%.0f", goroutines)},
			Row{Name: label + "GC cycles", Notes: []string{noteFootprint, noteSinceStart}, Measured: fmt.Sprintf("%.0f", gcs)},
			Row{Name: label + "CPU", Notes: []string{noteFootprint, noteSinceStart}, Measured: fmt.Sprintf("%.0f s", cpu)},
		)
		if b.cfg.ProfileDir != "" {
			for _, p := range []string{"heap", "goroutine"} {
				if err := b.saveProfile(ctx, p, filepath.Join(b.cfg.ProfileDir, fmt.Sprintf("%s-%d.pprof", p, apps))); err != nil {
					return err
				}
			}
		}
		return nil
	}
}

// grow adds AppQuotas up to n, for the second footprint point, and waits until
// the manager's cache has seen them (their statuses are written).
func (b *bench) grow(n int) func(context.Context, *Report) error {
	return func(ctx context.Context, rep *Report) error {
		fmt.Fprintf(b.log, "growing to %d AppQuotas\n", n)
		if _, err := b.createApps(ctx, b.cfg.Apps, n); err != nil {
			return err
		}
		// The last one created has a status once the controller rendered it.
		deadline := time.Now().Add(15 * time.Minute)
		for {
			var a quotav1.AppQuota
			if err := b.c.Get(ctx, client.ObjectKey{Namespace: benchNamespace, Name: appID(n - 1)}, &a); err == nil && len(a.Status.Conditions) > 0 {
				c := a.Status.Conditions[0]
				rep.Notes = append(rep.Notes, fmt.Sprintf("At %d apps the last AppQuota reports Ready=%s (%s): %s", n, c.Status, c.Reason, c.Message))
				return nil
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("the controller did not report on %d AppQuotas within 15 minutes", n)
			}
			time.Sleep(time.Second)
		}
	}
}
