// Command bench measures appquota at scale on a local control plane: `make bench`.
// Every row is measured next to a baseline taken in the same run, and the table
// is printed and, with -out, written to docs/benchmarks.md.
//
// bench.go is the harness (a run's steps, the output watch, creating
// AppQuotas); manager.go runs the manager as its own process and reads its
// metrics, apiserver.go the API server's; stats.go holds the quantiles and
// intervals and report.go the table. Each scenario has its own file: bulk,
// propagation, admission, footprint, documentsize and resolve; engine.go
// introduces the engine rows (enforced, engineload, shouldratelimit).
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	cfg := defaultConfig()
	flag.IntVar(&cfg.Apps, "apps", cfg.Apps, "AppQuotas for the bulk, propagation and footprint rows")
	flag.IntVar(&cfg.BigApps, "big-apps", cfg.BigApps, "AppQuotas for the second footprint point and document size (0 skips the footprint point)")
	flag.IntVar(&cfg.Samples, "samples", cfg.Samples, "propagation samples")
	flag.IntVar(&cfg.AdmissionSamples, "admission-samples", cfg.AdmissionSamples, "admission samples")
	flag.IntVar(&cfg.Workers, "workers", cfg.Workers, "concurrent creates in the bulk load")
	flag.StringVar(&cfg.SkipEngine, "skip-engine", "",
		"skip the engine rows (ratelimit and redis-server), giving this reason in the report; the manager then serves no xDS")
	flag.BoolVar(&cfg.EngineOnly, "engine-only", false, "run the bulk load and the engine rows alone")
	flag.BoolVar(&cfg.BulkOnly, "bulk-only", false, "run the bulk load's rows alone")
	flag.IntVar(&cfg.EngineCalls, "engine-calls", cfg.EngineCalls, "ShouldRateLimit calls timed with each configuration")
	flag.DurationVar(&cfg.EngineLoad, "engine-load", cfg.EngineLoad, "how long each ShouldRateLimit throughput run lasts")
	flag.BoolVar(&cfg.Grow, "grow", cfg.Grow, "load -big-apps AppQuotas into the cluster for the second footprint point")
	flag.BoolVar(&cfg.Resolve, "resolve", cfg.Resolve, "run pkg/quotaconfig's Resolve benchmark")
	flag.IntVar(&cfg.MaxConfigBytes, "max-config-bytes", 0, "the manager's --max-config-bytes (0: its default)")
	flag.IntVar(&cfg.ShardAboveBytes, "shard-above-bytes", 0, "the manager's --shard-above-bytes (0: its default)")
	flag.StringVar(&cfg.ProfileDir, "profile-dir", "",
		"save the manager's heap and goroutine profiles at each footprint point in this directory (go tool pprof reads them)")
	flag.StringVar(&cfg.Out, "out", "", "also write the report (markdown) to this file")
	flag.Parse()
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer cancel()
	rep, err := run(ctx, cfg, os.Stderr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
	md := rep.Markdown()
	fmt.Print(md)
	if cfg.Out != "" {
		if err := writeReport(cfg.Out, md); err != nil {
			fmt.Fprintln(os.Stderr, "bench:", err)
			os.Exit(1)
		}
	}
}
