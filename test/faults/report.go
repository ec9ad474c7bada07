package main

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"runtime"
	"slices"
	"strings"
	"time"
)

// The markers around the part of docs/reliability.md a run rewrites.
const (
	beginMarker = "<!-- make faults writes the table below this line -->"
	endMarker   = "<!-- make faults writes the table above this line -->"
)

// table renders the results as markdown, with the run's sizes and machine.
func table(cfg Config, results []result) string {
	var b strings.Builder
	b.WriteString("| fault | injected | recovery p50 / max | failover p50 / max (lease " + leaseDuration.String() +
		", renew " + renewDeadline.String() + ", retry " + retryPeriod.String() +
		") | updates lost | stale or conflicting writes | manager restarts | result |\n")
	b.WriteString("|---|---|---|---|---|---|---|---|\n")
	for _, r := range results {
		verdict := "held"
		if r.Err != nil {
			verdict = "**failed**: " + strings.ReplaceAll(r.Err.Error(), "|", "\\|")
		}
		if r.Note != "" {
			verdict += " (" + strings.ReplaceAll(r.Note, "|", "\\|") + ")"
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %d of %d edits | %d | %d | %s |\n", r.Fault, r.Injection,
			quantiles(r.Recovery), quantiles(r.Failover), r.Lost, r.Edits, r.Stale, r.Restarts, verdict)
	}
	fmt.Fprintf(&b, "\nRun: %d AppQuotas (the leader kill's bulk: %d), %d repeats, %d create workers; %d cores, %s/%s, %s.\n",
		cfg.Apps, cfg.BulkApps, cfg.Repeats, cfg.Workers, runtime.NumCPU(), runtime.GOOS, runtime.GOARCH, runtime.Version())
	return b.String()
}

func quantiles(ds []time.Duration) string {
	if len(ds) == 0 {
		return "–"
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	return fmt.Sprintf("%s / %s", s[(len(s)-1)/2].Round(100*time.Millisecond), s[len(s)-1].Round(100*time.Millisecond))
}

// writeTable replaces what lies between the markers in path with md, or
// appends the markers and md when the file has none.
func writeTable(path, md string) error {
	prev, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	section := beginMarker + "\n\n" + md + "\n" + endMarker
	i, j := bytes.Index(prev, []byte(beginMarker)), bytes.Index(prev, []byte(endMarker))
	var out []byte
	if i >= 0 && j > i {
		out = append(append(append(out, prev[:i]...), section...), prev[j+len(endMarker):]...)
	} else {
		out = append(append(out, prev...), "\n"+section+"\n"...)
	}
	return os.WriteFile(path, out, 0o644)
}

// repeated runs once n times on res, one fault's repeats, and stops at the
// first error, which it records in the row.
func repeated(res result, n int, once func(*result) error) result {
	for range n {
		if err := once(&res); err != nil {
			res.Err = err
			break
		}
	}
	return res
}
