package main

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"
)

// Row is one line of the report: one measurement, under a short label.
type Row struct {
	Name, Measured, Baseline, Ratio, Target, Met string
	// Notes say what the row measures and how, in footnotes under the table;
	// rows with the same note share it.
	Notes []string
}

// Report is a run's result.
type Report struct {
	Config Config
	Rows   []Row
	Notes  []string
}

func (r *Report) add(rows ...Row) { r.Rows = append(r.Rows, rows...) }

// Markdown renders the report with the machine it ran on: the table, its
// footnotes (numbered in the order the rows first cite them), then the run.
func (r *Report) Markdown() string {
	var b strings.Builder
	fmt.Fprintf(&b,
		"# Benchmarks\n\nWritten by `make bench` (test/bench). Each ratio compares with a baseline measured in the same run on the "+
			"same API server; the numbers in brackets are the notes under the table, which say what each row measures. "+
			"[scale.md](scale.md) explains the design; [what profiling changed](#what-profiling-changed), "+
			"below and kept by every run, gives each number before and after the changes that moved it.\n\n")
	b.WriteString(markdownTable(r.Rows))
	fmt.Fprintf(&b, "\nMachine: %d cores, %s memory, %s/%s, %s; control plane kube-apiserver v1.37.2, etcd 3.7.3 (built by hack/setup-envtest.sh).\n",
		runtime.NumCPU(), memTotal(), runtime.GOOS, runtime.GOARCH, runtime.Version())
	bigApps := "; -grow=false: not loaded into the cluster"
	if r.Config.Grow {
		bigApps = ", second footprint point"
	}
	fmt.Fprintf(&b, "Run: %d apps (bulk, propagation, footprint), %d apps (document size%s), "+
		"%d propagation samples, %d admission samples, %d bulk workers.\n",
		r.Config.Apps, r.Config.BigApps, bigApps, r.Config.Samples, r.Config.AdmissionSamples, r.Config.Workers)
	for _, n := range r.Notes {
		fmt.Fprintf(&b, "\n%s\n", n)
	}
	return b.String()
}

// markdownTable renders rows, each label followed by the numbers of its
// notes, and the notes after the table, numbered in the order the rows first
// cite them.
func markdownTable(rows []Row) string {
	var b strings.Builder
	b.WriteString("| measurement | measured | baseline (same run) | ratio | target | met |\n|---|---|---|---|---|---|\n")
	number := map[string]int{}
	var notes []string
	for _, row := range rows {
		name := row.Name
		var refs []string
		for _, n := range row.Notes {
			if number[n] == 0 {
				notes = append(notes, n)
				number[n] = len(notes)
			}
			refs = append(refs, strconv.Itoa(number[n]))
		}
		if len(refs) > 0 {
			name += " [" + strings.Join(refs, ", ") + "]"
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s |\n", name, row.Measured, row.Baseline, row.Ratio, row.Target, row.Met)
	}
	if len(notes) > 0 {
		b.WriteString("\n")
	}
	for i, n := range notes {
		fmt.Fprintf(&b, "[%d] %s\n", i+1, n)
		if i < len(notes)-1 {
			b.WriteString("\n")
		}
	}
	return b.String()
}

// keptMarker starts the part of the report file that a run keeps: what was
// written by hand (the numbers before and after each change profiling led to),
// which a run cannot measure again.
const keptMarker = "<!-- make bench rewrites what is above this line and keeps what is below it -->"

// withKept returns the report md followed by the kept part of the file's
// previous content (from keptMarker on), or md and the marker alone when the
// file had none.
func withKept(md string, previous []byte) string {
	kept := keptMarker + "\n"
	if i := bytes.Index(previous, []byte(keptMarker)); i >= 0 {
		kept = string(previous[i:])
	}
	return md + "\n" + kept
}

// writeReport writes md to path, keeping the part of the file below keptMarker.
func writeReport(path, md string) error {
	previous, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return os.WriteFile(path, []byte(withKept(md, previous)), 0o644)
}

func memTotal() string {
	data, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return "unknown"
	}
	for _, line := range strings.Split(string(data), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "MemTotal:" {
			kb, _ := strconv.Atoi(f[1])
			return fmt.Sprintf("%.1f GiB", float64(kb)/(1<<20))
		}
	}
	return "unknown"
}

func ms(d time.Duration) string { return fmt.Sprintf("%.1f ms", float64(d.Microseconds())/1000) }

func met(ok bool) string {
	if ok {
		return "yes"
	}
	return "**no**"
}
