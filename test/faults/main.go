// Command faults injects faults into a running appquota (two manager
// replicas under leader election on a local control plane) and checks,
// once each fault is over, that the system recovered: `make faults`. The
// table is printed and, with -out, written into docs/reliability.md between
// its markers.
//
// harness.go runs the control plane and the supervised replicas, load.go the
// creates and the edits in flight, readers.go the gateway readers every
// fault runs, oracle.go what must hold after a fault, report.go the table;
// each fault has its own file.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/appquota/appquota/internal/operatortest"
)

// Config sizes a run.
type Config struct {
	// Apps are the AppQuotas each fault runs on; BulkApps those the leader
	// kill creates in its bulk (the 10,000: a kill mid-bulk is the
	// fault the bulk's size matters to).
	Apps, BulkApps, Repeats, Workers int
	// RMWEdits is how many read-modify-write edits the rmw fault makes.
	RMWEdits int
	// Faults are the names of the faults to run (see faults).
	Faults []string
	Log    io.Writer
}

func defaultConfig() Config {
	return Config{Apps: 2000, BulkApps: 10000, Repeats: 3, Workers: 16, RMWEdits: 50000, Log: os.Stderr,
		Faults: []string{"leader-kill", "handover", "last-good", "hand-damage", "rmw", "webhook", "engine-restart",
			"apiserver-restart", "etcd-restart", "partition", "clock-skew"}}
}

// faults are the faults by name, in the order a run takes them.
var faults = map[string]func(context.Context, Config, string) result{
	"leader-kill":       leaderKill,
	"handover":          handover,
	"last-good":         lastGood,
	"hand-damage":       handDamage,
	"rmw":               rmw,
	"webhook":           webhookFault,
	"engine-restart":    engineRestart,
	"apiserver-restart": apiserverRestart,
	"etcd-restart":      etcdRestart,
	"partition":         partition,
	"clock-skew":        clockSkew,
}

func main() {
	cfg := defaultConfig()
	flag.IntVar(&cfg.Apps, "apps", cfg.Apps, "AppQuotas in each run but the leader kill's")
	flag.IntVar(&cfg.BulkApps, "bulk-apps", cfg.BulkApps, "AppQuotas in the leader kill's bulk create")
	flag.IntVar(&cfg.Repeats, "repeats", cfg.Repeats, "repeats of each fault")
	flag.IntVar(&cfg.Workers, "workers", cfg.Workers, "concurrent creates in a bulk load")
	flag.IntVar(&cfg.RMWEdits, "rmw-edits", cfg.RMWEdits, "read-modify-write edits the rmw fault makes")
	only := flag.String("faults", strings.Join(cfg.Faults, ","),
		"comma-separated faults to run: leader-kill, handover, last-good, hand-damage, rmw, webhook, engine-restart, "+
			"apiserver-restart, etcd-restart, partition, clock-skew")
	out := flag.String("out", "", "also write the table into this file, between its markers")
	flag.Parse()
	cfg.Faults = strings.Split(*only, ",")
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer cancel()
	results, err := run(ctx, cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, "faults:", err)
		os.Exit(1)
	}
	md := table(cfg, results)
	fmt.Print(md)
	if *out != "" {
		if err := writeTable(*out, md); err != nil {
			fmt.Fprintln(os.Stderr, "faults:", err)
			os.Exit(1)
		}
	}
	for _, r := range results {
		if r.Err != nil {
			fmt.Fprintf(os.Stderr, "faults: %s: %v\n", r.Fault, r.Err)
			os.Exit(1)
		}
	}
}

// run builds the manager once and runs each fault in cfg.Faults.
func run(ctx context.Context, cfg Config) ([]result, error) {
	dir, err := os.MkdirTemp("", "appquota-faults-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	fmt.Fprintln(cfg.Log, "building the manager")
	bin, err := operatortest.BuildManager(ctx, dir)
	if err != nil {
		return nil, err
	}
	var results []result
	for _, name := range cfg.Faults {
		f, ok := faults[name]
		if !ok {
			return nil, fmt.Errorf("no fault named %q", name)
		}
		fmt.Fprintf(cfg.Log, "fault %s\n", name)
		results = append(results, f(ctx, cfg, bin))
	}
	return results, nil
}
