package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/appquota/appquota/internal/operatortest"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	quotav1 "github.com/appquota/appquota/api/v1alpha1"
	"github.com/appquota/appquota/internal/localcluster"
	"github.com/appquota/appquota/internal/manifest"
)

// startManager runs the manager binary as its own process, so its memory is
// its own, with the webhook on envtest's address and certificates, and its
// metrics and pprof on addresses just found free.
func (b *bench) startManager(bin string) (*operatortest.Process, error) {
	addr, err := b.freeAddr()
	if err != nil {
		return nil, err
	}
	b.metrics = "http://" + addr + "/metrics"
	pprofAddr, err := b.freeAddr()
	if err != nil {
		return nil, err
	}
	b.pprof = "http://" + pprofAddr + "/debug/pprof/"
	xdsFlags, err := b.xdsFlags()
	if err != nil {
		return nil, err
	}
	return operatortest.StartManager(b.cluster, bin, b.managerEnv, b.log, append([]string{
		"--namespace", b.opts.Namespace, "--max-config-bytes", strconv.Itoa(b.opts.MaxConfigBytes),
		"--shard-above-bytes", strconv.Itoa(b.opts.ShardAboveBytes),
		"--metrics-bind-address", addr, "--metrics-secure=false", "--health-probe-bind-address", "0", "--pprof-bind-address", pprofAddr,
		"--zap-log-level", "error"}, xdsFlags...)...)
}

func (b *bench) stopManager() {
	if b.mgr != nil {
		if err := b.mgr.Stop(); err != nil {
			fmt.Fprintf(b.log, "the manager ended badly: %v\n", err)
		}
	}
}

// startWithCatalog starts the manager and creates the default profile once
// its webhook answers. A start that failed on a port taken in between
// (localcluster.StartUntilReady starts the manager again) is in the report.
func (b *bench) startWithCatalog(ctx context.Context, bin string, rep *Report) error {
	catalog, err := b.readCatalog()
	if err != nil {
		return err
	}
	root, err := localcluster.RepoRoot()
	if err != nil {
		return err
	}
	// The manager runs with the environment it is deployed with (GOMEMLIMIT).
	env, limit, err := operatortest.ManagerEnv(root)
	if err != nil {
		return err
	}
	b.managerEnv = nil
	for _, k := range slices.Sorted(maps.Keys(env)) {
		b.managerEnv = append(b.managerEnv, k+"="+env[k])
	}
	b.memoryLimit = limit.String()
	mgr, retried, err := operatortest.StartUntilReady(ctx, func() (*operatortest.Process, error) { return b.startManager(bin) },
		"create the catalog (the manager's webhook must answer)", 2*time.Minute, func(ctx context.Context) (bool, error) {
			err := b.c.Create(ctx, catalog.DeepCopy())
			return err == nil, err
		})
	for _, taken := range retried {
		rep.Notes = append(rep.Notes, "The manager was started again: a port it was given was taken before it listened ("+taken+").")
	}
	b.mgr = mgr
	return err
}

// readCatalog reads the default profile from config/samples.
func (b *bench) readCatalog() (*quotav1.QuotaProfile, error) {
	root, err := localcluster.RepoRoot()
	if err != nil {
		return nil, err
	}
	objs, err := manifest.ReadFiles(filepath.Join(root, "config", "catalog", "default.yaml"))
	if err != nil {
		return nil, fmt.Errorf("read the catalog: %w", err)
	}
	if len(objs.QuotaProfiles) != 1 {
		return nil, fmt.Errorf("read the catalog: want one QuotaProfile, got %d", len(objs.QuotaProfiles))
	}
	b.groups = b.groups[:0]
	for _, g := range objs.QuotaProfiles[0].Spec.EndpointGroups {
		b.groups = append(b.groups, g.Name)
	}
	return &objs.QuotaProfiles[0], nil
}

// scrape reads the manager's metrics once.
func (b *bench) scrape() (map[string]*dto.MetricFamily, error) {
	resp, err := http.Get(b.metrics)
	if err != nil {
		return nil, fmt.Errorf("scrape manager metrics: %w", err)
	}
	defer resp.Body.Close()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	return parser.TextToMetricFamilies(resp.Body)
}

// histogram reads a histogram from the manager's metrics, summing the series
// whose label ends with suffix: bucket upper bound (seconds) to cumulative count.
func (b *bench) histogram(name, label, suffix string) (map[float64]uint64, error) {
	families, err := b.scrape()
	if err != nil {
		return nil, err
	}
	out := map[float64]uint64{}
	fam, ok := families[name]
	if !ok {
		return out, nil
	}
	for _, m := range fam.Metric {
		for _, l := range m.Label {
			if l.GetName() == label && strings.HasSuffix(l.GetValue(), suffix) {
				for _, bk := range m.Histogram.Bucket {
					out[bk.GetUpperBound()] += bk.GetCumulativeCount()
				}
			}
		}
	}
	return out, nil
}

// metricValue is a gauge's or counter's value, or a summary's sample count.
func metricValue(families map[string]*dto.MetricFamily, name string) (float64, error) {
	f, ok := families[name]
	if !ok || len(f.Metric) == 0 {
		return 0, fmt.Errorf("metric %s not exported", name)
	}
	m := f.Metric[0]
	switch {
	case m.Counter != nil:
		return m.Counter.GetValue(), nil
	case m.Summary != nil:
		return float64(m.Summary.GetSampleCount()), nil
	}
	return m.GetGauge().GetValue(), nil
}

// procRSS returns a process's resident memory and the part of it that is
// file-backed (the executable's pages).
func procRSS(pid int) (rss, file int64, err error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	found := false
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		if len(fs) < 2 {
			continue
		}
		kb, perr := strconv.ParseInt(fs[1], 10, 64)
		switch fs[0] {
		case "VmRSS:":
			rss, err, found = kb<<10, perr, true
		case "RssFile:":
			file = kb << 10
		}
	}
	if !found {
		return 0, 0, errors.New("no VmRSS in /proc status")
	}
	return rss, file, err
}

// saveProfile writes the manager's named pprof profile to path.
func (b *bench) saveProfile(ctx context.Context, name, path string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, b.pprof+name, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("%s profile: %w", name, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s profile: %s", name, resp.Status)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
