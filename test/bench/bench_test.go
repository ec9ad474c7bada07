package main

import (
	"context"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/appquota/appquota/internal/supervise"

	"github.com/appquota/appquota/internal/operatortest"

	"sigs.k8s.io/controller-runtime/pkg/client"

	quotav1 "github.com/appquota/appquota/api/v1alpha1"
	"github.com/appquota/appquota/internal/layout"
	"github.com/appquota/appquota/internal/localcluster"
	"github.com/appquota/appquota/internal/wiring"
)

// TestSmoke runs the whole benchmark at 100 apps so that it cannot rot. It
// asserts that every row is measured, never how fast: timings belong to
// `make bench`, not to `make test`. Its size budget is small enough that 100
// apps go out compressed and 300 sharded (the catalog alone is 2.3 KB
// compressed), as 10,000 and 100,000 do at the default budget.
func TestSmoke(t *testing.T) {
	cfg := Config{Apps: 100, BigApps: 300, Samples: 5, AdmissionSamples: 5, Workers: 4, Grow: true, MaxConfigBytes: 5000, ProfileDir: t.TempDir()}
	log := io.Discard
	if testing.Verbose() {
		log = os.Stderr
	}
	rep, err := run(context.Background(), cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	md := rep.Markdown()
	for _, want := range append([]string{
		"Bulk convergence, 100 apps [1]", "Bulk write amplification", "Bulk: every AppQuota Ready",
		"Render, p50", "Render, p99", "Propagation, 100 apps, p50", "Propagation, 100 apps, p99", "Baseline back to back, p50", "Baseline back to back, p99",
		"End to end, p50", "End to end, p99", "AppQuota patch, p50", "AppQuota patch, p99", "Floor, after the gap, p99", "Floor, back to back, p99",
		"ConfigMap apply (", "API server: AppQuota patch, mean", "API server: of it, the webhook call, mean", "API server: the manager's ConfigMap apply, mean",
		"Webhook off: propagation, p99", "Webhook off: end to end, p99", "Webhook off: AppQuota patch, p99",
		"Admission, p50", "Admission, p99", "Webhook handler, p50", "Webhook handler, p99",
		"Footprint, 100 apps: heap", "Footprint, 100 apps: RSS", "Footprint, 300 apps: RSS", "Footprint, 300 apps: GC cycles",
		"Document, 100 apps: plain", "Document, 300 apps: largest object", ", compressed in 1 object |", ", sharded in ",
		"\n[1] " + noteBulk + "\n",
	}, engineSmokeRows...) {
		if !strings.Contains(md, want) {
			t.Errorf("report lacks %q:\n%s", want, md)
		}
	}
	// One measurement per row: no cell holds two.
	for _, line := range strings.Split(md, "\n") {
		if strings.HasPrefix(line, "| ") && strings.Contains(line, " / ") && !strings.Contains(line, "write amplification") {
			t.Errorf("a row with more than one measurement: %s", line)
		}
	}
	if strings.Contains(md, notMeasured) {
		t.Errorf("a row was not measured:\n%s", md)
	}
	for _, name := range []string{"heap-100.pprof", "goroutine-300.pprof"} {
		if fi, err := os.Stat(filepath.Join(cfg.ProfileDir, name)); err != nil || fi.Size() == 0 {
			t.Errorf("profile %s not saved: %v", name, err)
		}
	}
}

// TestManagerStartsAgainOnATakenPort: the first port the harness finds for the
// manager is taken (a listener here holds it), so the manager exits at start;
// the harness says so in the report, starts it again on new ports, and the
// catalog is created through its webhook. A manager that exits for any other
// reason is not started again.
func TestManagerStartsAgainOnATakenPort(t *testing.T) {
	ctx := context.Background()
	held, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	bin, err := operatortest.BuildManager(ctx, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	cluster, err := operatortest.StartCluster(localcluster.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cluster.Stop() }()
	c, err := cluster.Client()
	if err != nil {
		t.Fatal(err)
	}
	opts := wiring.DefaultOptions()
	if err := cluster.CreateNamespaces(ctx, opts.Namespace); err != nil {
		t.Fatal(err)
	}
	calls := 0
	b := &bench{log: io.Discard, cluster: cluster, c: c, opts: opts, freeAddr: func() (string, error) {
		calls++
		if calls == 1 {
			return held.Addr().String(), nil
		}
		return supervise.FreeAddr()
	}}
	defer b.stopManager()
	rep := &Report{}
	if err := b.startWithCatalog(ctx, bin, rep); err != nil {
		t.Fatal(err)
	}
	if calls != 4 {
		t.Errorf("%d ports asked for, want 4: two per start", calls)
	}
	if got := strings.Join(rep.Notes, "\n"); !strings.Contains(got, "started again") || !strings.Contains(got, held.Addr().String()) {
		t.Errorf("the report does not say the manager was started again, and why:\n%s", got)
	}
	var p quotav1.QuotaProfile
	if err := c.Get(ctx, client.ObjectKey{Name: opts.DefaultProfile}, &p); err != nil {
		t.Errorf("the catalog was not created: %v", err)
	}

	// A manager that exits for another reason is reported, not started again.
	if err := c.Delete(ctx, &p); err != nil {
		t.Fatal(err)
	}
	b.stopManager()
	bad := filepath.Join(t.TempDir(), "manager")
	if err := os.WriteFile(bad, []byte("#!/bin/sh\necho 'setup: cannot start: no-such-thing' >&2\nexit 1\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	rep = &Report{}
	err = b.startWithCatalog(ctx, bad, rep)
	if err == nil || !strings.Contains(err.Error(), "the manager exited") || !strings.Contains(err.Error(), "no-such-thing") {
		t.Errorf("err = %v, want the manager's exit and its complaint", err)
	}
	if len(rep.Notes) != 0 {
		t.Errorf("notes after an exit that was not a taken port: %q", rep.Notes)
	}
}

// TestReportKeepsHandWrittenPart checks that a run rewrites the measured part
// of docs/benchmarks.md and keeps what was written below the marker.
func TestReportKeepsHandWrittenPart(t *testing.T) {
	path := filepath.Join(t.TempDir(), "benchmarks.md")
	if err := writeReport(path, "# run 1\n"); err != nil {
		t.Fatal(err)
	}
	first, _ := os.ReadFile(path)
	if want := "# run 1\n\n" + keptMarker + "\n"; string(first) != want {
		t.Fatalf("new file = %q, want %q", first, want)
	}
	handWritten := "\n## What profiling changed\n\n| change | before | after |\n"
	if err := os.WriteFile(path, append(first, handWritten...), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, run := range []string{"# run 2\n", "# run 3\n"} {
		if err := writeReport(path, run); err != nil {
			t.Fatal(err)
		}
	}
	got, _ := os.ReadFile(path)
	if want := "# run 3\n\n" + keptMarker + "\n" + handWritten; string(got) != want {
		t.Errorf("after two more runs = %q, want %q", got, want)
	}
}

// TestResolveRows checks how the Resolve rows read go test's output: the
// median of the runs, the largest allocation count, and a miss when either is
// over its target.
func TestResolveRows(t *testing.T) {
	out := func(resolveNs []string, allocs string) string {
		var b strings.Builder
		b.WriteString("goos: linux\ngoarch: amd64\npkg: github.com/appquota/appquota/pkg/quotaconfig\n")
		for _, ns := range resolveNs {
			b.WriteString("BenchmarkResolve-2   \t 4182344\t       " + ns + " ns/op\t       0 B/op\t       " + allocs + " allocs/op\n")
			b.WriteString("--- BENCH: BenchmarkResolve-2\n    bench_test.go:110: Compile (validate + compile, 100000 apps): 231.02706ms\n")
		}
		for _, ns := range []string{"100.2", "99.4", "99.6"} {
			b.WriteString("BenchmarkRateLimiterAllow-2   \t11285628\t       " + ns + " ns/op\t       0 B/op\t       0 allocs/op\n")
		}
		return b.String() + "PASS\nok  \tgithub.com/appquota/appquota/pkg/quotaconfig\t9.302s\n"
	}
	for _, tc := range []struct {
		name      string
		resolveNs []string
		allocs    string
		// The time row's measured, ratio and met, the allocations row's measured and met.
		want [5]string
	}{
		{"median under target, one slow run", []string{"381.8", "190.1", "201.5"}, "0", [5]string{"201.5 ns (190.1-381.8)", "2.0x", "yes", "0", "yes"}},
		{"median over target", []string{"301.0", "190.1", "381.8"}, "0", [5]string{"301.0 ns (190.1-381.8)", "3.0x", "**no**", "0", "yes"}},
		{"allocates", []string{"190.1", "190.1", "190.1"}, "1", [5]string{"190.1 ns (190.1-190.1)", "1.9x", "yes", "1", "**no**"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rows, err := resolveRows(out(tc.resolveNs, tc.allocs), 3)
			if err != nil {
				t.Fatal(err)
			}
			if len(rows) != 2 {
				t.Fatalf("%d rows, want 2", len(rows))
			}
			if got, want := [...]string{rows[0].Measured, rows[0].Ratio, rows[0].Met, rows[1].Measured, rows[1].Met}, tc.want; got != want {
				t.Errorf("rows = %q, want %q", got, want)
			}
			if want := "99.6 ns (99.4-100.2)"; rows[0].Baseline != want {
				t.Errorf("baseline = %q, want %q", rows[0].Baseline, want)
			}
		})
	}
	if _, err := resolveRows(out([]string{"190.1"}, "0"), 3); err == nil {
		t.Error("one run of three: no error")
	}
}

// TestRatioInterval checks the bootstrap interval of a ratio of p99s: a
// point when neither side varies, around the ratio when both do, wider on
// the side of a slow outlier, and the same for the same samples.
func TestRatioInterval(t *testing.T) {
	ms := func(vs ...float64) []time.Duration {
		d := make([]time.Duration, 0, len(vs))
		for _, v := range vs {
			d = append(d, time.Duration(v*float64(time.Millisecond)))
		}
		return d
	}
	steady := func(n int, v float64) []time.Duration {
		d := make([]float64, n)
		for i := range d {
			d[i] = v
		}
		return ms(d...)
	}
	if lo, hi := ratioInterval(steady(200, 30), steady(200, 10)); lo != 3 || hi != 3 {
		t.Errorf("constant samples: interval %.2f-%.2f, want 3-3", lo, hi)
	}

	// 1 to 200 ms, and three times that: the ratio of p99s is 3 and the
	// resamples' ratios spread around it.
	var den, num []float64
	for i := 1; i <= 200; i++ {
		den, num = append(den, float64(i)), append(num, float64(3*i))
	}
	lo, hi := ratioInterval(ms(num...), ms(den...))
	if !(lo < 3 && 3 < hi) || hi-lo > 0.5 {
		t.Errorf("spread samples: interval %.2f-%.2f, want a narrow one around 3", lo, hi)
	}
	if lo2, hi2 := ratioInterval(ms(num...), ms(den...)); lo2 != lo || hi2 != hi {
		t.Errorf("same samples, interval %.2f-%.2f then %.2f-%.2f", lo, hi, lo2, hi2)
	}

	// One sample of 2 s among 1 to 199 ms: p99 is the second largest (199 ms),
	// so the ratio is 1, but a resample that draws the outlier twice makes it
	// 10: the interval reaches far above the ratio and not below it by as much.
	slow := append(slices.Clone(den[:199]), 2000)
	lo, hi = ratioInterval(ms(slow...), ms(den...))
	if point := over(quantile(ms(slow...), 0.99), quantile(ms(den...), 0.99)); point != 1 {
		t.Fatalf("point ratio %.2f, want 1", point)
	}
	if hi < 5 || lo > 1 || 1-lo > 0.2 {
		t.Errorf("one slow outlier: interval %.2f-%.2f, want from just under 1 to past 5", lo, hi)
	}
	if got := withInterval(over(quantile(ms(num...), 0.99), quantile(ms(den...), 0.99)), ms(num...), ms(den...)); !strings.HasPrefix(got, "3.0x (2.") {
		t.Errorf("formatted: %q", got)
	}
}

// TestSumQuantile checks the floor's arithmetic: quantiles of the sums of
// every pair, not of the sum of the quantiles.
func TestSumQuantile(t *testing.T) {
	ms := func(vs ...int) []time.Duration {
		d := make([]time.Duration, 0, len(vs))
		for _, v := range vs {
			d = append(d, time.Duration(v)*time.Millisecond)
		}
		return d
	}
	for _, c := range []struct {
		as, bs []time.Duration
		q      float64
		want   time.Duration
	}{
		{ms(1, 2), ms(10, 20), 0.5, 12 * time.Millisecond},  // 11 12 21 22
		{ms(1, 2), ms(10, 20), 0.99, 22 * time.Millisecond}, // the largest of four
		{ms(5), ms(7), 0.99, 12 * time.Millisecond},
		// One slow step on each side: the p99 of 100 sums is their largest but
		// one, a slow step plus a fast one (101), not both slow (200).
		{ms(1, 1, 1, 1, 1, 1, 1, 1, 1, 100), ms(1, 1, 1, 1, 1, 1, 1, 1, 1, 100), 0.99, 101 * time.Millisecond},
		{nil, ms(1), 0.5, 0},
	} {
		if got := sumQuantile(c.as, c.bs, c.q); got != c.want {
			t.Errorf("sumQuantile(%v, %v, %v) = %v, want %v", c.as, c.bs, c.q, got, c.want)
		}
	}
}

// TestStoredSizes checks the document-size row's account of what is written:
// the total, and each object's size.
func TestStoredSizes(t *testing.T) {
	one := &layout.Stored{Layout: layout.Compressed, Data: make([]byte, 150_000), StoredBytes: 150_000}
	if got, want := storedSizes(one), "0.15 MB, compressed in 1 object"; got != want {
		t.Errorf("compressed: %q, want %q", got, want)
	}
	sharded := &layout.Stored{Layout: layout.Sharded, Data: make([]byte, 10_000), StoredBytes: 760_000,
		Shards: []layout.StoredShard{{Data: make([]byte, 750_000)}, {Data: make([]byte, 760_000)}}}
	if got, want := storedSizes(sharded), "1.52 MB, sharded in 3 objects: an index of 10.0 KB and 2 shards of 0.75 MB to 0.76 MB"; got != want {
		t.Errorf("sharded: %q, want %q", got, want)
	}
	sharded.Shards[0].Data = make([]byte, 759_000)
	if got, want := storedSizes(sharded), "1.53 MB, sharded in 3 objects: an index of 10.0 KB and 2 shards of 0.76 MB"; got != want {
		t.Errorf("shards of one size: %q, want %q", got, want)
	}
}

// TestMarkdownNotes: each row's label carries the numbers of its notes, a
// note cited again keeps its number, and the notes follow the table.
func TestMarkdownNotes(t *testing.T) {
	got := markdownTable([]Row{
		{Name: "A", Measured: "1 ms", Notes: []string{"first", "second"}},
		{Name: "B", Measured: "2 ms", Target: "≤ 3 ms", Met: "yes", Notes: []string{"second"}},
		{Name: "C", Measured: "3", Notes: []string{"third"}},
		{Name: "D", Measured: "4"},
	})
	want := `| measurement | measured | baseline (same run) | ratio | target | met |
|---|---|---|---|---|---|
| A [1, 2] | 1 ms |  |  |  |  |
| B [2] | 2 ms |  |  | ≤ 3 ms | yes |
| C [3] | 3 |  |  |  |  |
| D | 4 |  |  |  |  |

[1] first

[2] second

[3] third
`
	if got != want {
		t.Errorf("got\n%s\nwant\n%s", got, want)
	}
}
