package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	corev1ac "k8s.io/client-go/applyconfigurations/core/v1"
	"k8s.io/client-go/kubernetes"
	toolscache "k8s.io/client-go/tools/cache"
	watchtools "k8s.io/client-go/tools/watch"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	quotav1 "github.com/appquota/appquota/api/v1alpha1"
	"github.com/appquota/appquota/controllers"
	"github.com/appquota/appquota/internal/localcluster"
	"github.com/appquota/appquota/internal/manifest"
	"github.com/appquota/appquota/internal/operator"
	"github.com/appquota/appquota/internal/render"
	"github.com/appquota/appquota/pkg/quotaconfig"
)

// Config sizes a run.
type Config struct {
	Apps, BigApps, Samples, AdmissionSamples, Workers int
	Resolve                                           bool
	// Grow loads BigApps AppQuotas into the cluster for the second footprint
	// point; without it BigApps sizes only the offline document row.
	Grow bool
	// MaxConfigBytes is the manager's --max-config-bytes; 0 keeps its default.
	MaxConfigBytes int
	// ShardAboveBytes, when positive, is the manager's --shard-above-bytes;
	// 0 keeps its default.
	ShardAboveBytes int
	// ProfileDir, when set, receives the manager's heap and goroutine profiles
	// at each footprint point.
	ProfileDir string
	Out        string
}

func defaultConfig() Config {
	return Config{Apps: 10000, BigApps: 100000, Samples: 200, AdmissionSamples: 1000, Workers: 16, Resolve: true, Grow: true}
}

// Row is one line of the report.
type Row struct {
	Name, Measured, Baseline, Ratio, Target, Met string
}

// Report is a run's result.
type Report struct {
	Config Config
	Rows   []Row
	Notes  []string
}

func (r *Report) add(row Row) { r.Rows = append(r.Rows, row) }

// Markdown renders the report with the machine it ran on.
func (r *Report) Markdown() string {
	var b strings.Builder
	fmt.Fprintf(&b, "# Benchmarks\n\nWritten by `make bench` (test/bench). Each ratio compares with a baseline measured in the same run on the same API server. [scale.md](scale.md) explains the design; [what profiling changed](#what-profiling-changed), below the table and kept by every run, gives each number before and after the changes that moved it.\n\n")
	fmt.Fprintf(&b, "| measurement | measured | baseline (same run) | ratio | target | met |\n|---|---|---|---|---|---|\n")
	for _, row := range r.Rows {
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s |\n", row.Name, row.Measured, row.Baseline, row.Ratio, row.Target, row.Met)
	}
	fmt.Fprintf(&b, "\nMachine: %d cores, %s memory, %s/%s, %s; control plane kube-apiserver v1.37.2, etcd 3.7.3 (built by hack/setup-envtest.sh).\n",
		runtime.NumCPU(), memTotal(), runtime.GOOS, runtime.GOARCH, runtime.Version())
	fmt.Fprintf(&b, "Run: %d apps (bulk, propagation, footprint), %d apps (document size%s), %d propagation samples, %d admission samples, %d bulk workers.\n",
		r.Config.Apps, r.Config.BigApps, map[bool]string{true: ", second footprint point", false: "; -grow=false: not loaded into the cluster"}[r.Config.Grow], r.Config.Samples, r.Config.AdmissionSamples, r.Config.Workers)
	for _, n := range r.Notes {
		fmt.Fprintf(&b, "\n%s\n", n)
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

func quantile(d []time.Duration, q float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	i := int(q*float64(len(s))+0.5) - 1
	return s[max(0, min(i, len(s)-1))]
}

// sumQuantile is the q-quantile of a+b over every pair of a sample of as and
// one of bs: the time of two steps taken one after the other, had each taken
// as long as some sample of its own. It treats the steps as independent, so a
// slow moment that holds up both at once is in neither: an optimistic bound.
func sumQuantile(as, bs []time.Duration, q float64) time.Duration {
	sums := make([]time.Duration, 0, len(as)*len(bs))
	for _, a := range as {
		for _, b := range bs {
			sums = append(sums, a+b)
		}
	}
	return quantile(sums, q)
}

// ratioInterval is a 95% bootstrap percentile interval for the ratio of the
// q-quantiles of num and den: the ratio over 2,000 resamples, each drawing as
// many samples as each side has, with replacement. A p99 of 200 samples is
// their second largest, so one slow sample more or less moves it, and this
// says how far. The generator is seeded: the same samples give the same
// interval.
func ratioInterval(num, den []time.Duration, q float64) (lo, hi float64) {
	if len(num) == 0 || len(den) == 0 {
		return 0, 0
	}
	const resamples = 2000
	rng := rand.New(rand.NewPCG(1, 2))
	draw := func(from, to []time.Duration) []time.Duration {
		for i := range to {
			to[i] = from[rng.IntN(len(from))]
		}
		return to
	}
	n, d := make([]time.Duration, len(num)), make([]time.Duration, len(den))
	ratios := make([]float64, resamples)
	for i := range ratios {
		ratios[i] = over(quantile(draw(num, n), q), quantile(draw(den, d), q))
	}
	slices.Sort(ratios)
	return ratios[resamples*25/1000], ratios[resamples*975/1000-1]
}

// withInterval formats ratio, the ratio of the q-quantiles of num and den
// that the row judges against its target, with its bootstrap interval.
func withInterval(ratio float64, num, den []time.Duration, q float64) string {
	lo, hi := ratioInterval(num, den, q)
	return fmt.Sprintf("%.1fx (95%% bootstrap interval %.1f-%.1fx)", ratio, lo, hi)
}

// endToEnd formats the end-to-end propagation ratios, p50 and p99 with the
// p99's bootstrap interval, and says the target is not theirs.
func endToEnd(got, base []time.Duration) string {
	lo, hi := ratioInterval(got, base, 0.99)
	return fmt.Sprintf("%.1fx / %.1fx (p50 / p99; the p99's 95%% bootstrap interval %.1f-%.1fx; the 3x target is the committed-change row's)",
		over(quantile(got, 0.5), quantile(base, 0.5)), over(quantile(got, 0.99), quantile(base, 0.99)), lo, hi)
}

// over is the ratio a/b, with b at least a microsecond.
func over(a, b time.Duration) float64 { return float64(a) / float64(max(b, time.Microsecond)) }

func ms(d time.Duration) string { return fmt.Sprintf("%.1f ms", float64(d.Microseconds())/1000) }

func met(ok bool) string {
	if ok {
		return "yes"
	}
	return "**no**"
}

// bench holds a run's moving parts.
type bench struct {
	cfg     Config
	log     io.Writer
	cluster *localcluster.Cluster
	c       client.Client
	cs      *kubernetes.Clientset
	opts    operator.Options
	mgr     *localcluster.Process
	// freeAddr finds the manager a port to serve metrics and pprof on
	// (localcluster.FreeAddr; a test hands out a taken one).
	freeAddr func() (string, error)
	metrics  string // the manager's metrics URL
	pprof    string // the manager's /debug/pprof/ URL
	// managerEnv is what config/manager sets in the manager's environment, and
	// memoryLimit its container's memory limit.
	managerEnv  []string
	memoryLimit string
	groups      []string
	events      chan cmEvent   // the output ConfigMaps' watch events, timestamped on arrival
	watching    sync.WaitGroup // the goroutine that sends them, until the watch ends
	writes      atomic.Int64
	// lastEvent is when the last of those events arrived (Unix ns).
	lastEvent atomic.Int64
}

type cmEvent struct {
	at  time.Time
	cms map[string]*corev1.ConfigMap // by name, as of this event
}

func run(ctx context.Context, cfg Config, log io.Writer) (*Report, error) {
	ctrl.SetLogger(logr.Discard()) // the harness's own client logs nothing worth reading
	b := &bench{cfg: cfg, log: log, opts: operator.DefaultOptions(), freeAddr: localcluster.FreeAddr}
	if cfg.MaxConfigBytes > 0 {
		b.opts.MaxConfigBytes = cfg.MaxConfigBytes
	}
	rep := &Report{Config: cfg}
	if cfg.ShardAboveBytes > 0 {
		b.opts.ShardAboveBytes = cfg.ShardAboveBytes
		rep.Notes = append(rep.Notes, fmt.Sprintf("The manager ran with --shard-above-bytes=%d instead of its default.", cfg.ShardAboveBytes))
	}
	// The manager is built first: envtest picks the webhook's port at Start,
	// and nothing holds it until the manager listens there.
	binDir, err := os.MkdirTemp("", "appquota-bench-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(binDir)
	fmt.Fprintln(log, "building the manager")
	bin, err := localcluster.BuildManager(ctx, binDir)
	if err != nil {
		return nil, err
	}
	fmt.Fprintln(log, "starting the control plane")
	if b.cluster, err = localcluster.Start(localcluster.Options{}); err != nil {
		return nil, err
	}
	// The output watch resumes whenever its connection ends, so it is ended
	// first: after the control plane it would try again, and log each failure,
	// until the process exits (through the Resolve benchmark, for one).
	watchCtx, stopWatch := context.WithCancel(ctx)
	stopCluster := sync.OnceFunc(func() {
		stopWatch()
		b.watching.Wait()
		_ = b.cluster.Stop()
	})
	defer stopCluster()
	if b.c, err = b.cluster.Client(); err != nil {
		return nil, err
	}
	if b.cs, err = kubernetes.NewForConfig(b.cluster.Config); err != nil {
		return nil, err
	}
	if err := b.cluster.CreateNamespaces(ctx, b.opts.Namespace, "bench"); err != nil {
		return nil, err
	}
	stopManager := sync.OnceFunc(b.stopManager)
	defer stopManager()
	if err := b.startWithCatalog(ctx, bin, rep); err != nil {
		return nil, err
	}
	rep.Notes = append(rep.Notes, fmt.Sprintf("The manager runs as its own process with the environment config/manager/manager.yaml gives it (%s; container memory limit %s).",
		strings.Join(b.managerEnv, " "), b.memoryLimit))
	if err := b.watchOutput(watchCtx); err != nil {
		return nil, err
	}

	steps := []func(context.Context, *Report) error{b.bulk, b.propagation, b.admission, b.footprint(cfg.Apps)}
	if cfg.Grow && cfg.BigApps > cfg.Apps {
		steps = append(steps, b.grow(cfg.BigApps), b.footprint(cfg.BigApps))
	}
	steps = append(steps, b.documentSize)
	for _, step := range steps {
		if err := step(ctx, rep); err != nil {
			return rep, err
		}
	}
	if cfg.Resolve {
		// A gateway's lookup on a quiet machine: the manager and the control
		// plane (with 100,000 AppQuotas) would compete for the CPU and its caches.
		stopManager()
		stopCluster()
		if err := b.resolve(ctx, rep); err != nil {
			return rep, err
		}
	}
	return rep, nil
}

// startManager runs the manager binary as its own process, so its memory is
// its own, with the webhook on envtest's address and certificates, and its
// metrics and pprof on addresses just found free.
func (b *bench) startManager(bin string) (*localcluster.Process, error) {
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
	return b.cluster.StartManager(bin, b.managerEnv, b.log,
		"--namespace", b.opts.Namespace, "--max-config-bytes", strconv.Itoa(b.opts.MaxConfigBytes),
		"--shard-above-bytes", strconv.Itoa(b.opts.ShardAboveBytes),
		"--metrics-bind-address", addr, "--metrics-secure=false", "--health-probe-bind-address", "0", "--pprof-bind-address", pprofAddr,
		"--zap-log-level", "error")
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
	env, limit, err := localcluster.ManagerEnv(root)
	if err != nil {
		return err
	}
	b.managerEnv = nil
	for _, k := range slices.Sorted(maps.Keys(env)) {
		b.managerEnv = append(b.managerEnv, k+"="+env[k])
	}
	b.memoryLimit = limit.String()
	mgr, retried, err := localcluster.StartUntilReady(ctx, func() (*localcluster.Process, error) { return b.startManager(bin) },
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
	objs, err := manifest.ReadFiles(filepath.Join(root, "config", "samples", "quota_v1alpha1_quotaprofile.yaml"))
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

// watchOutput follows the ConfigMaps the manager writes (the named one and its
// shards): one goroutine timestamps events as they arrive and passes on the
// set of ConfigMaps as of each, so decoding them later does not delay the clock.
func (b *bench) watchOutput(ctx context.Context) error {
	sel := metav1.ListOptions{LabelSelector: controllers.ManagedByLabel + "=" + controllers.ManagedByValue}
	list, err := b.cs.CoreV1().ConfigMaps(b.opts.Namespace).List(ctx, sel)
	if err != nil {
		return err
	}
	latest := map[string]*corev1.ConfigMap{}
	for i := range list.Items {
		latest[list.Items[i].Name] = &list.Items[i]
	}
	w, err := b.watchConfigMaps(ctx, b.opts.Namespace, sel, list.ResourceVersion)
	if err != nil {
		return err
	}
	b.events = make(chan cmEvent, 1<<16)
	b.watching.Go(func() {
		defer w.Stop()
		// A closed channel tells waitOutput the watch is over.
		defer close(b.events)
		for ev := range w.ResultChan() {
			cm, ok := ev.Object.(*corev1.ConfigMap)
			if !ok {
				continue
			}
			switch ev.Type {
			case watch.Added, watch.Modified:
				latest[cm.Name] = cm
			case watch.Deleted:
				delete(latest, cm.Name)
			default:
				continue
			}
			b.writes.Add(1)
			b.lastEvent.Store(time.Now().UnixNano())
			select {
			case b.events <- cmEvent{at: time.Now(), cms: maps.Clone(latest)}:
			default: // nobody is waiting; the count is what matters
			}
		}
	})
	return nil
}

// watchConfigMaps watches the ConfigMaps in ns that sel selects, from
// resourceVersion on. The API server ends each watch after its request
// timeout (30 to 60 minutes by default), which a long run outlasts; client-go's
// retry watcher starts the next from the last resourceVersion seen, so no
// event is lost between them.
func (b *bench) watchConfigMaps(ctx context.Context, ns string, sel metav1.ListOptions, resourceVersion string) (watch.Interface, error) {
	return watchtools.NewRetryWatcherWithContext(ctx, resourceVersion, &toolscache.ListWatch{
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			o.LabelSelector, o.FieldSelector = sel.LabelSelector, sel.FieldSelector
			return b.cs.CoreV1().ConfigMaps(ns).Watch(ctx, o)
		},
	})
}

// decode assembles the configuration as of one event, as a gateway reading the
// API would; between the writes of a shard and of the index it fails, and the
// next event completes it.
func (b *bench) decode(ev cmEvent) (*quotaconfig.Document, error) {
	return quotaconfig.LoadConfigMaps(b.opts.ConfigMapName, func(name string) (map[string]string, map[string][]byte, error) {
		cm, ok := ev.cms[name]
		if !ok {
			return nil, nil, fmt.Errorf("ConfigMap %s not seen yet", name)
		}
		return cm.Data, cm.BinaryData, nil
	})
}

// waitOutput returns the arrival time of the first ConfigMap event (from now on)
// whose document satisfies ok.
func (b *bench) waitOutput(ctx context.Context, timeout time.Duration, ok func(*quotaconfig.Document) bool) (time.Time, error) {
	deadline := time.After(timeout)
	for {
		select {
		case ev, open := <-b.events:
			if !open {
				return time.Time{}, errors.New("the watch of the output ConfigMaps ended")
			}
			d, err := b.decode(ev)
			if err == nil && ok(d) {
				return ev.at, nil
			}
		case <-deadline:
			return time.Time{}, fmt.Errorf("the ConfigMap did not get there within %s", timeout)
		case <-ctx.Done():
			return time.Time{}, ctx.Err()
		}
	}
}

func (b *bench) drain() {
	for {
		select {
		case _, open := <-b.events:
			if !open {
				return
			}
		default:
			return
		}
	}
}

func appID(i int) string { return fmt.Sprintf("bench-%07d", i) }

func (b *bench) appQuota(i int) *quotav1.AppQuota {
	return &quotav1.AppQuota{
		ObjectMeta: metav1.ObjectMeta{Namespace: "bench", Name: appID(i)},
		Spec: quotav1.AppQuotaSpec{AppID: appID(i), Overrides: []quotav1.Override{{
			Group:  b.groups[i%len(b.groups)],
			Limits: []quotav1.OverrideLimit{{Unit: quotav1.UnitRequests, Window: quotav1.WindowHour, Max: int64(1000 + i)}},
			Reason: "benchmark",
		}}},
	}
}

// createApps creates AppQuotas [from, to) with the configured workers and
// returns when the last create was acknowledged.
func (b *bench) createApps(ctx context.Context, from, to int) (time.Time, error) {
	next := atomic.Int64{}
	next.Store(int64(from))
	var wg sync.WaitGroup
	errs := make(chan error, b.cfg.Workers)
	for range b.cfg.Workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= to {
					return
				}
				if err := b.c.Create(ctx, b.appQuota(i)); err != nil {
					errs <- fmt.Errorf("create %s: %w", appID(i), err)
					return
				}
			}
		}()
	}
	wg.Wait()
	last := time.Now()
	select {
	case err := <-errs:
		return last, err
	default:
		return last, nil
	}
}

func countBench(d *quotaconfig.Document) int {
	n := 0
	for id := range d.Apps {
		if strings.HasPrefix(id, "bench-") {
			n++
		}
	}
	return n
}

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

// waitReady polls until n bench AppQuotas report Ready=True for their generation.
func (b *bench) waitReady(ctx context.Context, n int) (time.Time, error) {
	deadline := time.Now().Add(15 * time.Minute)
	for {
		var list quotav1.AppQuotaList
		if err := b.c.List(ctx, &list, client.InNamespace("bench")); err != nil {
			return time.Time{}, err
		}
		ready := 0
		for _, a := range list.Items {
			for _, c := range a.Status.Conditions {
				if c.Type == quotav1.ConditionReady && c.Status == metav1.ConditionTrue && c.ObservedGeneration == a.Generation {
					ready++
				}
			}
		}
		if ready >= n {
			return time.Now(), nil
		}
		if time.Now().After(deadline) {
			return time.Time{}, fmt.Errorf("only %d of %d AppQuotas Ready after 15 minutes", ready, n)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

func (b *bench) propagation(ctx context.Context, rep *Report) error {
	fmt.Fprintf(b.log, "propagation: %d samples with %d apps loaded, each with a ConfigMap update baseline\n", b.cfg.Samples, b.cfg.Apps)
	recBefore, err := b.histogram("controller_runtime_reconcile_time_seconds", "controller", "appquota")
	if err != nil {
		return err
	}
	apiBefore, err := b.apiMetrics(ctx)
	if err != nil {
		return err
	}
	// Baseline: a plain ConfigMap update, sent to seen by a watch.
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "bench", Name: "baseline"}, Data: map[string]string{"v": "0"}}
	if err := b.c.Create(ctx, cm); err != nil {
		return err
	}
	w, err := b.watchConfigMaps(ctx, "bench", metav1.ListOptions{FieldSelector: "metadata.name=baseline"}, cm.ResourceVersion)
	if err != nil {
		return err
	}
	defer w.Stop()
	update := func(v string) (time.Duration, error) {
		cm.Data["v"] = v
		sent := time.Now()
		if err := b.c.Update(ctx, cm); err != nil {
			return 0, err
		}
		for ev := range w.ResultChan() {
			if c, ok := ev.Object.(*corev1.ConfigMap); ok && c.Data["v"] == v {
				return time.Since(sent), nil
			}
		}
		return 0, errors.New("baseline watch closed")
	}
	on, err := b.propagationSamples(ctx, 0, update)
	if err != nil {
		return err
	}
	got, patched, after, base := on.got, on.patched, on.after, on.base
	apiAfter, err := b.apiMetrics(ctx)
	if err != nil {
		return err
	}
	recAfter, err := b.histogram("controller_runtime_reconcile_time_seconds", "controller", "appquota")
	if err != nil {
		return err
	}
	// The same baseline back to back, for comparison with the rows before.
	var hot []time.Duration
	for s := range b.cfg.Samples {
		d, err := update("hot-" + strconv.Itoa(s))
		if err != nil {
			return err
		}
		hot = append(hot, d)
	}
	// The ConfigMap write's own cost: a server-side apply (as the controller
	// writes) of an object the size of the one it wrote, random bytes as
	// incompressible as gzip output, sent to its watch event.
	var out corev1.ConfigMap
	if err := b.c.Get(ctx, client.ObjectKey{Namespace: b.opts.Namespace, Name: b.opts.ConfigMapName}, &out); err != nil {
		return err
	}
	size := 0
	for _, v := range out.BinaryData {
		size += len(v)
	}
	for _, v := range out.Data {
		size += len(v)
	}
	writes, err := b.applyRoundTrips(ctx, size)
	if err != nil {
		return err
	}
	ratioAt := func(d []time.Duration, q float64) string {
		return fmt.Sprintf("%.1fx", over(quantile(d, q), quantile(base, q)))
	}
	pair := func(d []time.Duration) string { return ms(quantile(d, 0.5)) + " / " + ms(quantile(d, 0.99)) }
	// Propagation proper starts when the change is committed: the API server
	// acknowledging the AppQuota patch. The user's own write before that,
	// webhook included, is what the admission rows budget (at most 2x a
	// ConfigMap create); counted here too, it would leave an operator no room
	// under 3x (the end-to-end floor below). docs/scale.md, "Which interval
	// the propagation target times", says more.
	p99, b99 := quantile(after, 0.99), quantile(base, 0.99)
	ratio := over(p99, b99)
	e99 := quantile(got, 0.99)
	rep.add(Row{"Propagation: one render (reconcile) p50 / p99, from the manager's histogram",
		fmt.Sprintf("≤ %s / ≤ %s", histQuantile(recBefore, recAfter, 0.5), histQuantile(recBefore, recAfter, 0.99)), "", "", "", ""})
	rep.add(Row{fmt.Sprintf("Propagation p50, %d apps loaded: the AppQuota change committed (its patch acknowledged) to the ConfigMap watch event holding it", b.cfg.Apps),
		ms(quantile(after, 0.5)), ms(quantile(base, 0.5)) + " (ConfigMap update sent to its watch event, after the same quiet gap)", ratioAt(after, 0.5), "", ""})
	rep.add(Row{"Propagation p99", ms(p99), ms(b99), withInterval(ratio, after, base, 0.99), "≤ 3x", met(ratio <= 3)})
	rep.Notes = append(rep.Notes, "Propagation is timed from the AppQuota change committed (the API server's acknowledgement of the patch reaching the bench) to the ConfigMap watch event holding it; the user's own write before that is budgeted by the admission rows, and the end-to-end rows time both ([scale.md](scale.md#which-interval-the-propagation-target-times)).")
	rep.add(Row{"Propagation baseline measured back to back instead (no quiet gap) p50 / p99", pair(hot), "", fmt.Sprintf("%.1fx (propagation p99 / this p99)", over(p99, quantile(hot, 0.99))), "", ""})
	// End to end: the same samples timed from the patch sent, the user's own
	// write included. No target: see the floor two rows down.
	rep.add(Row{"Propagation end to end, the user's own write included: AppQuota patch sent to ConfigMap watch event holding it, p50 / p99",
		pair(got), pair(base), endToEnd(got, base), "", ""})
	// The user's own write alone, through the admission webhook.
	rep.add(Row{"Propagation end to end, its first step, the user's own write: the AppQuota patch's round trip (webhook on) p50 / p99",
		pair(patched), pair(base), ratioAt(patched, 0.99) + " (p99)", "", ""})
	// The floor under end to end: the user's own write, then the least write
	// an operator makes after it, a plain update of a small ConfigMap, with
	// nothing in between (no watch event to the operator, no render). The
	// update is taken two ways: after the quiet gap, as the baseline is, and
	// back to back, on a machine already awake, as the patch leaves it for the
	// operator.
	cold50, cold99 := sumQuantile(patched, base, 0.5), sumQuantile(patched, base, 0.99)
	warm50, warm99 := sumQuantile(patched, hot, 0.5), sumQuantile(patched, hot, 0.99)
	rep.add(Row{"Propagation end to end, its floor, computed for comparison: the AppQuota patch's round trip plus a plain ConfigMap update, over every pair of their samples (an operator taking no time of its own and writing one small ConfigMap), with the update after the quiet gap / back to back, p50 / p99",
		ms(cold50) + " / " + ms(cold99) + "; " + ms(warm50) + " / " + ms(warm99), pair(base),
		fmt.Sprintf("%.1fx / %.1fx (floor p99 / baseline p99); end-to-end propagation p99 is %.1fx / %.1fx the floor's", over(cold99, b99), over(warm99, b99), over(e99, cold99), over(e99, warm99)), "", ""})
	// And its last step: the ConfigMap write, whatever the controller does before it.
	rep.add(Row{fmt.Sprintf("Propagation, its last step: server-side apply of a ConfigMap the size of the one written (%.0f KB) to its watch event, back to back, p50 / p99", float64(size)/1000),
		pair(writes), pair(hot), fmt.Sprintf("%.1fx (p99, against the back-to-back baseline)", over(quantile(writes, 0.99), quantile(hot, 0.99))), "", ""})
	// Where the API server spent its time during the samples, from its own
	// request-duration histograms (means: their buckets are too coarse for p99).
	rep.add(Row{"Propagation, server side (the API server's mean request durations over the samples): AppQuota patch / of it the webhook call / the manager's ConfigMap apply",
		apiMean(apiBefore, apiAfter, "apiserver_request_duration_seconds", map[string]string{"resource": "appquotas", "verb": "PATCH", "subresource": ""}) + " / " +
			apiMean(apiBefore, apiAfter, "apiserver_admission_webhook_admission_duration_seconds", map[string]string{"name": appQuotaWebhook}) + " / " +
			apiMean(apiBefore, apiAfter, "apiserver_request_duration_seconds", map[string]string{"resource": "configmaps", "verb": "APPLY", "subresource": ""}),
		apiMean(apiBefore, apiAfter, "apiserver_request_duration_seconds", map[string]string{"resource": "configmaps", "verb": "PUT", "subresource": ""}) + " (baseline update)", "", "", ""})

	// For comparison only: the same samples with the AppQuota webhook taken out
	// of the API server's configuration, which measures what its round trip
	// costs propagation. The product keeps it: the warnings on an update (a
	// limit lowered, blocked or raised 100x, an override already expired) need
	// the profile and the clock, which the API server's CEL does not have.
	var off propSamples
	if err := b.withoutAppQuotaWebhook(ctx, func() (err error) {
		off, err = b.propagationSamples(ctx, 1, update)
		return err
	}); err != nil {
		return err
	}
	rep.add(Row{"For comparison only, the AppQuota webhook taken out of the API server's configuration (the product keeps it): propagation p50 / p99; end to end p50 / p99, and its first step, the patch, p50 / p99",
		pair(off.after) + "; end to end " + pair(off.got) + ", patch " + pair(off.patched), pair(off.base) + " (its own baseline, taken with it)",
		fmt.Sprintf("%.1fx; end to end %.1fx (p99)", over(quantile(off.after, 0.99), quantile(off.base, 0.99)), over(quantile(off.got, 0.99), quantile(off.base, 0.99))), "", ""})
	return nil
}

// appQuotaWebhook is the name of the AppQuota webhook in the
// ValidatingWebhookConfiguration (config/webhook).
const appQuotaWebhook = "vappquota.quota.appquota.io"

// withoutAppQuotaWebhook runs f with the AppQuota webhook removed from the API
// server's configuration, and puts it back after. It waits, both ways, until
// the API server's own count of calls to the webhook says the change took.
func (b *bench) withoutAppQuotaWebhook(ctx context.Context, f func() error) error {
	var list admissionregistrationv1.ValidatingWebhookConfigurationList
	if err := b.c.List(ctx, &list); err != nil {
		return err
	}
	var cfg *admissionregistrationv1.ValidatingWebhookConfiguration
	for i := range list.Items {
		if slices.ContainsFunc(list.Items[i].Webhooks, func(w admissionregistrationv1.ValidatingWebhook) bool { return w.Name == appQuotaWebhook }) {
			cfg = &list.Items[i]
		}
	}
	if cfg == nil {
		return fmt.Errorf("no ValidatingWebhookConfiguration holds %s", appQuotaWebhook)
	}
	hooks := cfg.Webhooks
	cfg.Webhooks = slices.DeleteFunc(slices.Clone(hooks), func(w admissionregistrationv1.ValidatingWebhook) bool { return w.Name == appQuotaWebhook })
	if err := b.c.Update(ctx, cfg); err != nil {
		return fmt.Errorf("remove the AppQuota webhook: %w", err)
	}
	ferr := b.waitWebhookCalled(ctx, false)
	if ferr == nil {
		ferr = f()
	}
	// Put it back whatever happened: the rows after this one measure with it.
	if err := b.c.Get(ctx, client.ObjectKeyFromObject(cfg), cfg); err != nil {
		return errors.Join(ferr, err)
	}
	cfg.Webhooks = hooks
	if err := b.c.Update(ctx, cfg); err != nil {
		return errors.Join(ferr, fmt.Errorf("restore the AppQuota webhook: %w", err))
	}
	return errors.Join(ferr, b.waitWebhookCalled(ctx, true))
}

// waitWebhookCalled polls until a dry-run patch of an AppQuota does (called)
// or does not call the AppQuota webhook, by the API server's count of its calls.
func (b *bench) waitWebhookCalled(ctx context.Context, called bool) error {
	calls := func() (uint64, error) {
		m, err := b.apiMetrics(ctx)
		if err != nil {
			return 0, err
		}
		_, n := apiSum(m, "apiserver_admission_webhook_admission_duration_seconds", map[string]string{"name": appQuotaWebhook})
		return n, nil
	}
	deadline := time.Now().Add(time.Minute)
	for {
		before, err := calls()
		if err != nil {
			return err
		}
		probe := &quotav1.AppQuota{ObjectMeta: metav1.ObjectMeta{Namespace: "bench", Name: appID(0)}}
		if err := b.c.Patch(ctx, probe, client.RawPatch(types.MergePatchType, []byte(`{"metadata":{"labels":{"probe":"webhook"}}}`)), client.DryRunAll); err != nil {
			return fmt.Errorf("probe the AppQuota webhook: %w", err)
		}
		after, err := calls()
		if err != nil {
			return err
		}
		if (after > before) == called {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the API server did not take the AppQuota webhook change (want called=%t) within a minute", called)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// propSamples are a run of propagation samples: each AppQuota patch sent to
// the ConfigMap event holding it (got), the patch's own round trip (patched),
// the patch acknowledged to that event (after), and the baseline update taken
// with it (base).
type propSamples struct{ got, patched, after, base []time.Duration }

// propagationSamples takes cfg.Samples samples, each an AppQuota patch and a
// baseline update (update). round keeps the values each run writes apart from
// those of the runs before, so that no patch leaves an object as it was.
func (b *bench) propagationSamples(ctx context.Context, round int, update func(string) (time.Duration, error)) (propSamples, error) {
	// Every measured write, AppQuota patch or baseline update, starts after the
	// same quiet gap: the manager's minimum write interval since its last
	// ConfigMap write (a change sooner would wait for it; the bulk rows measure
	// bursts), and as long since the previous measured write. Measured back to
	// back instead, the baseline runs on a machine kept busy and fast; after a
	// quiet second both pay the same wake-up, which is not the operator's cost.
	gap := b.opts.MinWriteInterval + 50*time.Millisecond
	var lastDone time.Time
	quiet := func() {
		until := time.Unix(0, b.lastEvent.Load()).Add(gap)
		if t := lastDone.Add(gap); t.After(until) {
			until = t
		}
		time.Sleep(time.Until(until))
	}
	var r propSamples
	for s := range b.cfg.Samples {
		quiet()
		i := rand.IntN(b.cfg.Apps)
		want := int64(5_000_000 + round*100_000 + s)
		patch := fmt.Sprintf(`[{"op":"replace","path":"/spec/overrides/0/limits/0/max","value":%d}]`, want)
		b.drain()
		sent := time.Now()
		if err := b.c.Patch(ctx, &quotav1.AppQuota{ObjectMeta: metav1.ObjectMeta{Namespace: "bench", Name: appID(i)}}, client.RawPatch(types.JSONPatchType, []byte(patch))); err != nil {
			return r, err
		}
		acked := time.Now()
		r.patched = append(r.patched, acked.Sub(sent))
		at, err := b.waitOutput(ctx, time.Minute, func(d *quotaconfig.Document) bool {
			a, ok := d.Apps[appID(i)]
			return ok && len(a.Overrides) == 1 && len(a.Overrides[0].Limits) == 1 && a.Overrides[0].Limits[0].Max == want
		})
		if err != nil {
			return r, fmt.Errorf("propagation sample %d: %w", s, err)
		}
		r.got = append(r.got, at.Sub(sent))
		r.after = append(r.after, at.Sub(acked))
		lastDone = time.Now()

		quiet()
		d, err := update(fmt.Sprintf("%d-%d", round, s))
		if err != nil {
			return r, err
		}
		r.base = append(r.base, d)
		lastDone = time.Now()
	}
	return r, nil
}

// apiMetrics reads the API server's metrics once.
func (b *bench) apiMetrics(ctx context.Context) (map[string]*dto.MetricFamily, error) {
	raw, err := b.cs.RESTClient().Get().AbsPath("/metrics").DoRaw(ctx)
	if err != nil {
		return nil, fmt.Errorf("scrape API server metrics: %w", err)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	return parser.TextToMetricFamilies(bytes.NewReader(raw))
}

// apiSum is the sum and count of the histogram series whose labels include want.
func apiSum(f map[string]*dto.MetricFamily, name string, want map[string]string) (s float64, n uint64) {
	fam := f[name]
	if fam == nil {
		return 0, 0
	}
series:
	for _, m := range fam.Metric {
		labels := map[string]string{}
		for _, l := range m.Label {
			labels[l.GetName()] = l.GetValue()
		}
		for k, v := range want {
			if labels[k] != v {
				continue series
			}
		}
		if h := m.GetHistogram(); h != nil {
			s += h.GetSampleSum()
			n += h.GetSampleCount()
		}
	}
	return s, n
}

// apiMean is the mean of the histogram series whose labels include want,
// between two scrapes.
func apiMean(before, after map[string]*dto.MetricFamily, name string, want map[string]string) string {
	s0, n0 := apiSum(before, name, want)
	s1, n1 := apiSum(after, name, want)
	if n1 <= n0 {
		return "n/a"
	}
	return fmt.Sprintf("%.1f ms (%d requests)", (s1-s0)/float64(n1-n0)*1000, n1-n0)
}

// applyRoundTrips server-side applies a ConfigMap holding size random bytes
// under binaryData, new bytes each time, and returns each apply's time from
// sent to its watch event.
func (b *bench) applyRoundTrips(ctx context.Context, size int) ([]time.Duration, error) {
	const name = "baseline-apply"
	sel := metav1.ListOptions{FieldSelector: "metadata.name=" + name}
	list, err := b.cs.CoreV1().ConfigMaps("bench").List(ctx, sel)
	if err != nil {
		return nil, err
	}
	w, err := b.watchConfigMaps(ctx, "bench", sel, list.ResourceVersion)
	if err != nil {
		return nil, err
	}
	defer w.Stop()
	rng := rand.New(rand.NewPCG(1, 2))
	data := make([]byte, size)
	var out []time.Duration
	for s := range b.cfg.Samples {
		for i := range data {
			data[i] = byte(rng.Uint32())
		}
		apply := corev1ac.ConfigMap(name, "bench").WithLabels(map[string]string{"sample": strconv.Itoa(s)}).WithBinaryData(map[string][]byte{"v": data})
		sent := time.Now()
		if err := b.c.Apply(ctx, apply, client.FieldOwner("appquota-bench"), client.ForceOwnership); err != nil {
			return nil, err
		}
		for ev := range w.ResultChan() {
			if c, ok := ev.Object.(*corev1.ConfigMap); ok && c.Labels["sample"] == strconv.Itoa(s) {
				out = append(out, time.Since(sent))
				break
			}
		}
		if len(out) == s {
			return nil, errors.New("the apply baseline's watch ended")
		}
	}
	return out, nil
}

// admissionBase numbers the admission samples' AppQuotas past any app count
// the benchmark loads.
const admissionBase = 10_000_000

// admission times AppQuota creates, through the webhook, against creates of a
// ConfigMap of the same size, interleaved and back to back. The default of
// 1,000 samples makes the p99 the tenth largest of each: with 200 it was the
// second, and one slow create moved the ratio across the target between runs
// of the same code (docs/benchmarks.md, below the table).
func (b *bench) admission(ctx context.Context, rep *Report) error {
	fmt.Fprintf(b.log, "admission: %d AppQuota and ConfigMap creates\n", b.cfg.AdmissionSamples)
	before, err := b.webhookHistogram()
	if err != nil {
		return err
	}
	var aq, cm []time.Duration
	var created []client.Object
	for s := range b.cfg.AdmissionSamples {
		a := b.appQuota(admissionBase + s)
		size, _ := json.Marshal(a)
		t0 := time.Now()
		if err := b.c.Create(ctx, a); err != nil {
			return err
		}
		aq = append(aq, time.Since(t0))
		created = append(created, a)
		c := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "bench", Name: fmt.Sprintf("similar-%d", s)}, Data: map[string]string{"spec": strings.Repeat("x", len(size))}}
		t0 = time.Now()
		if err := b.c.Create(ctx, c); err != nil {
			return err
		}
		cm = append(cm, time.Since(t0))
		created = append(created, c)
	}
	after, err := b.webhookHistogram()
	if err != nil {
		return err
	}
	if err := b.removeAdmitted(ctx, created); err != nil {
		return err
	}
	p99, b99 := quantile(aq, 0.99), quantile(cm, 0.99)
	ratio := over(p99, b99)
	rep.add(Row{"Admission: AppQuota create p50 (webhook on)", ms(quantile(aq, 0.5)), ms(quantile(cm, 0.5)) + " (ConfigMap create, no webhook)", "", "", ""})
	rep.add(Row{"Admission: AppQuota create p99", ms(p99), ms(b99), withInterval(ratio, aq, cm, 0.99), "≤ 2x", met(ratio <= 2)})
	rep.add(Row{"Admission: webhook handler p50 / p99 (its latency histogram, bucket upper bounds)",
		fmt.Sprintf("≤ %s / ≤ %s", histQuantile(before, after, 0.5), histQuantile(before, after, 0.99)), "", "", "", ""})
	return nil
}

// removeAdmitted deletes the objects the admission samples created, and
// waits until the ConfigMap holds cfg.Apps apps again, so that the footprint
// rows after it measure the app counts they name.
func (b *bench) removeAdmitted(ctx context.Context, created []client.Object) error {
	// Events queued so far are from the creates: every one holds more apps.
	b.drain()
	for _, o := range created {
		if err := b.c.Delete(ctx, o); err != nil {
			return fmt.Errorf("remove the admission samples: %w", err)
		}
	}
	if _, err := b.waitOutput(ctx, time.Minute, func(d *quotaconfig.Document) bool { return countBench(d) == b.cfg.Apps }); err != nil {
		return fmt.Errorf("remove the admission samples: %w", err)
	}
	return nil
}

// webhookHistogram reads the AppQuota webhook's latency histogram from the
// manager's metrics: bucket upper bound (seconds) to cumulative count.
func (b *bench) webhookHistogram() (map[float64]uint64, error) {
	return b.histogram("controller_runtime_webhook_latency_seconds", "webhook", "-appquota")
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

func histQuantile(before, after map[float64]uint64, q float64) string {
	bounds := make([]float64, 0, len(after))
	for ub := range after {
		bounds = append(bounds, ub)
	}
	slices.Sort(bounds)
	if len(bounds) == 0 {
		return "n/a"
	}
	total := after[bounds[len(bounds)-1]] - before[bounds[len(bounds)-1]]
	for _, ub := range bounds {
		if float64(after[ub]-before[ub]) >= q*float64(total) {
			return ms(time.Duration(ub * float64(time.Second)))
		}
	}
	return "n/a"
}

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
			target, ok = "RSS < 300 MiB", met(rss < 300<<20)
		}
		rep.add(Row{fmt.Sprintf("Footprint: manager heap / RSS / goroutines with %d AppQuotas in its cache (GC cycles and CPU seconds since it started)", apps),
			fmt.Sprintf("%.0f MiB / %.0f MiB (%.0f MiB of it the executable's pages) / %.0f (%.0f GCs, %.0f s)",
				heap/(1<<20), float64(rss)/(1<<20), float64(rssFile)/(1<<20), goroutines, gcs, cpu), "", "", target, ok})
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
			if err := b.c.Get(ctx, client.ObjectKey{Namespace: "bench", Name: appID(n - 1)}, &a); err == nil && len(a.Status.Conditions) > 0 {
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

// documentSize renders documents offline, the way the controller does, for
// the run's app counts with one override each.
func (b *bench) documentSize(_ context.Context, rep *Report) error {
	root, _ := localcluster.RepoRoot()
	objs, err := manifest.ReadFiles(filepath.Join(root, "config", "samples", "quota_v1alpha1_quotaprofile.yaml"))
	if err != nil {
		return err
	}
	profiles := objs.QuotaProfiles
	for _, n := range []int{b.cfg.Apps, b.cfg.BigApps} {
		if n == 0 {
			continue
		}
		apps := make([]quotav1.AppQuota, n)
		for i := range n {
			apps[i] = *b.appQuota(i)
		}
		res, err := render.Render(render.Input{DefaultProfile: "default", Profiles: profiles, AppQuotas: render.Pointers(apps), Now: time.Now()})
		if err != nil {
			return err
		}
		gz, err := quotaconfig.Compress(res.Data)
		if err != nil {
			return err
		}
		budget := b.opts.MaxConfigBytes
		st, err := (&render.Renderer{ShardAbove: b.opts.ShardAboveBytes}).Store(res.Document, budget, func(i int) string { return fmt.Sprint(i) })
		if err != nil {
			return err
		}
		stored := storedSizes(st)
		if st.TooLarge {
			stored = "too large even in " + strconv.Itoa(render.MaxShards) + " shards"
		}
		rep.add(Row{fmt.Sprintf("Document size, %d apps with one override: plain / gzip / as the controller stores it", n),
			fmt.Sprintf("%.2f MB / %.2f MB / %s", float64(len(res.Data))/1e6, float64(len(gz))/1e6, stored),
			fmt.Sprintf("budget %d KiB per ConfigMap", budget/1024), fmt.Sprintf("gzip %.1fx smaller", float64(len(res.Data))/float64(len(gz))),
			"every object within budget", met(!st.TooLarge && st.StoredBytes <= budget)})
	}
	return nil
}

// storedSizes says what the controller writes for a document: its layout, the
// size of each object (the named ConfigMap, then the shards' range) and the
// total.
func storedSizes(st *render.Stored) string {
	size := func(n int) string {
		if n < 100_000 {
			return fmt.Sprintf("%.1f KB", float64(n)/1e3)
		}
		return fmt.Sprintf("%.2f MB", float64(n)/1e6)
	}
	total := len(st.Data)
	if len(st.Shards) == 0 {
		return fmt.Sprintf("%s, 1 object(s), %s", st.Layout, size(total))
	}
	lo, hi := len(st.Shards[0].Data), 0
	for _, sh := range st.Shards {
		lo, hi = min(lo, len(sh.Data)), max(hi, len(sh.Data))
		total += len(sh.Data)
	}
	shards := size(lo) + " to " + size(hi)
	if size(lo) == size(hi) {
		shards = size(hi)
	}
	return fmt.Sprintf("%s, %d object(s): index %s, %d shards of %s each; %s in total, largest %s",
		st.Layout, 1+len(st.Shards), size(len(st.Data)), len(st.Shards), shards, size(total), size(st.StoredBytes))
}

// resolveRuns is how many times the Resolve row runs each benchmark. It
// reports the median: Resolve reads memory that another process on the
// machine can push out of the shared cache, and one such run should not be
// the row.
const resolveRuns = 5

// resolve runs pkg/quotaconfig's benchmarks next to golang.org/x/time/rate.
func (b *bench) resolve(ctx context.Context, rep *Report) error {
	root, _ := localcluster.RepoRoot()
	cmd := exec.CommandContext(ctx, "go", "test", "./pkg/quotaconfig", "-run", "^$", "-bench", "^(BenchmarkResolve|BenchmarkRateLimiterAllow)$", "-benchmem", "-count", strconv.Itoa(resolveRuns))
	cmd.Dir = root
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("go test -bench: %w\n%s", err, out)
	}
	row, err := resolveRow(string(out), resolveRuns)
	if err != nil {
		return err
	}
	rep.add(row)
	return nil
}

// resolveRow makes the Resolve row from the output of runs runs of
// BenchmarkResolve and BenchmarkRateLimiterAllow with -benchmem.
func resolveRow(out string, runs int) (Row, error) {
	ns, allocs := map[string][]float64{}, map[string]float64{}
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) >= 8 && strings.HasPrefix(f[0], "Benchmark") && f[3] == "ns/op" && f[7] == "allocs/op" {
			name := strings.SplitN(f[0], "-", 2)[0]
			v, err1 := strconv.ParseFloat(f[2], 64)
			a, err2 := strconv.ParseFloat(f[6], 64)
			if err1 != nil || err2 != nil {
				return Row{}, fmt.Errorf("unexpected benchmark line %q", line)
			}
			ns[name] = append(ns[name], v)
			allocs[name] = max(allocs[name], a)
		}
	}
	r, y := ns["BenchmarkResolve"], ns["BenchmarkRateLimiterAllow"]
	if len(r) != runs || len(y) != runs {
		return Row{}, fmt.Errorf("want %d runs of each benchmark, got %d and %d in:\n%s", runs, len(r), len(y), out)
	}
	slices.Sort(r)
	slices.Sort(y)
	rm, ym := r[len(r)/2], y[len(y)/2]
	ra, ya := allocs["BenchmarkResolve"], allocs["BenchmarkRateLimiterAllow"]
	return Row{fmt.Sprintf("Resolve, full catalog, 100,000 apps (ns/op, allocs/op; median of %d runs, their range)", runs),
		fmt.Sprintf("%.1f ns (%.1f-%.1f), %.0f allocs", rm, r[0], r[len(r)-1], ra),
		fmt.Sprintf("%.1f ns (%.1f-%.1f), %.0f allocs (x/time/rate Limiter.Allow)", ym, y[0], y[len(y)-1], ya),
		fmt.Sprintf("%.1fx", rm/ym), "< 300 ns, 0 allocs", met(rm < 300 && ra == 0)}, nil
}
