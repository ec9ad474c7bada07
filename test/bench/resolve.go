package main

import (
	"context"
	"fmt"
	"os/exec"
	"slices"
	"strconv"
	"strings"

	"github.com/appquota/appquota/internal/localcluster"
)

// resolveRuns is how many times the Resolve row runs each benchmark. It
// reports the median: Resolve reads memory that another process on the
// machine can push out of the shared cache, and one such run should not be
// the row.
const resolveRuns = 5

// resolve runs pkg/quotaconfig's benchmarks next to golang.org/x/time/rate.
func (b *bench) resolve(ctx context.Context, rep *Report) error {
	root, _ := localcluster.RepoRoot()
	cmd := exec.CommandContext(ctx, "go", "test", "./pkg/quotaconfig", "-run", "^$",
		"-bench", "^(BenchmarkResolve|BenchmarkRateLimiterAllow)$", "-benchmem", "-count", strconv.Itoa(resolveRuns))
	cmd.Dir = root
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("go test -bench: %w\n%s", err, out)
	}
	rows, err := resolveRows(string(out), resolveRuns)
	if err != nil {
		return err
	}
	rep.add(rows...)
	return nil
}

// resolveRows makes the Resolve rows from the output of runs runs of
// BenchmarkResolve and BenchmarkRateLimiterAllow with -benchmem.
func resolveRows(out string, runs int) ([]Row, error) {
	ns, allocs := map[string][]float64{}, map[string]float64{}
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) >= 8 && strings.HasPrefix(f[0], "Benchmark") && f[3] == "ns/op" && f[7] == "allocs/op" {
			name := strings.SplitN(f[0], "-", 2)[0]
			v, err1 := strconv.ParseFloat(f[2], 64)
			a, err2 := strconv.ParseFloat(f[6], 64)
			if err1 != nil || err2 != nil {
				return nil, fmt.Errorf("unexpected benchmark line %q", line)
			}
			ns[name] = append(ns[name], v)
			allocs[name] = max(allocs[name], a)
		}
	}
	r, y := ns["BenchmarkResolve"], ns["BenchmarkRateLimiterAllow"]
	if len(r) != runs || len(y) != runs {
		return nil, fmt.Errorf("want %d runs of each benchmark, got %d and %d in:\n%s", runs, len(r), len(y), out)
	}
	slices.Sort(r)
	slices.Sort(y)
	rm, ym := r[len(r)/2], y[len(y)/2]
	ra, ya := allocs["BenchmarkResolve"], allocs["BenchmarkRateLimiterAllow"]
	note := fmt.Sprintf(
		"Resolve: pkg/quotaconfig's BenchmarkResolve, full catalog, 100,000 apps, the median of %d runs and their range, "+
			"against golang.org/x/time/rate's Limiter.Allow (BenchmarkRateLimiterAllow); allocations per call, the most of any run. "+
			"Run after the manager and the control plane stopped.", runs)
	return []Row{
		{Name: "Resolve", Notes: []string{note}, Measured: fmt.Sprintf("%.1f ns (%.1f-%.1f)", rm, r[0], r[len(r)-1]),
			Baseline: fmt.Sprintf("%.1f ns (%.1f-%.1f)", ym, y[0], y[len(y)-1]), Ratio: fmt.Sprintf("%.1fx", rm/ym), Target: "< 300 ns", Met: met(rm < 300)},
		{Name: "Resolve: allocations", Notes: []string{note}, Measured: fmt.Sprintf("%.0f", ra), Baseline: fmt.Sprintf("%.0f", ya),
			Target: "0", Met: met(ra == 0)},
	}, nil
}
