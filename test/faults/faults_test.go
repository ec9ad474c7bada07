package main

import (
	"context"
	"io"
	"os"
	"testing"
	"time"
)

// TestLeaderKillAndLastGood runs the leader SIGKILL and last-good faults at
// a hundred apps, once each, so that the suite cannot rot unnoticed in
// make test.
func TestLeaderKillAndLastGood(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	log := io.Discard
	if testing.Verbose() {
		log = os.Stderr
	}
	cfg := Config{Apps: 100, BulkApps: 100, Repeats: 1, Workers: 8, Faults: []string{"leader-kill", "last-good"}, Log: log}
	results, err := run(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range results {
		if r.Err != nil {
			t.Errorf("%s: %v", r.Fault, r.Err)
			continue
		}
		if r.Lost != 0 {
			t.Errorf("%s: %d updates lost", r.Fault, r.Lost)
		}
		if len(r.Recovery) != cfg.Repeats || len(r.Failover) != cfg.Repeats {
			t.Errorf("%s: %d recoveries and %d failovers measured, want %d each", r.Fault, len(r.Recovery), len(r.Failover), cfg.Repeats)
		}
		t.Logf("%s: recovery %s, failover %s, %d edits", r.Fault, quantiles(r.Recovery), quantiles(r.Failover), r.Edits)
	}
}
