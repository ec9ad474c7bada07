package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/appquota/appquota/internal/supervise"

	"github.com/appquota/appquota/internal/operatortest"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	toolscache "k8s.io/client-go/tools/cache"
	watchtools "k8s.io/client-go/tools/watch"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	quotav1 "github.com/appquota/appquota/api/v1alpha1"
	"github.com/appquota/appquota/controllers"
	"github.com/appquota/appquota/internal/localcluster"
	"github.com/appquota/appquota/internal/wiring"
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
	// SkipEngine, when set, is why the engine rows (engine.go) are skipped;
	// EngineOnly runs the bulk load and the engine rows alone. EngineCalls
	// and EngineLoad size the ShouldRateLimit rows (0: a smoke test's).
	SkipEngine string
	EngineOnly bool
	// BulkOnly runs the bulk load's rows alone.
	BulkOnly    bool
	EngineCalls int
	EngineLoad  time.Duration
}

func defaultConfig() Config {
	return Config{Apps: 10000, BigApps: 100000, Samples: 200, AdmissionSamples: 1000, Workers: 16, Resolve: true, Grow: true,
		EngineCalls: 10000, EngineLoad: 5 * time.Second}
}

// bench holds a run's moving parts.
type bench struct {
	cfg     Config
	log     io.Writer
	cluster *localcluster.Cluster
	c       client.Client
	cs      *kubernetes.Clientset
	opts    wiring.Options
	mgr     *operatortest.Process
	// freeAddr finds the manager a port to serve metrics and pprof on
	// (supervise.FreeAddr; a test hands out a taken one).
	freeAddr func() (string, error)
	metrics  string // the manager's metrics URL
	xdsAddr  string // the manager's xDS server
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
	b := &bench{cfg: cfg, log: log, opts: wiring.DefaultOptions(), freeAddr: supervise.FreeAddr}
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
	bin, err := operatortest.BuildManager(ctx, binDir)
	if err != nil {
		return nil, err
	}
	fmt.Fprintln(log, "starting the control plane")
	if b.cluster, err = operatortest.StartCluster(localcluster.Options{}); err != nil {
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
	if err := b.cluster.CreateNamespaces(ctx, b.opts.Namespace, benchNamespace); err != nil {
		return nil, err
	}
	stopManager := sync.OnceFunc(b.stopManager)
	defer stopManager()
	if err := b.startWithCatalog(ctx, bin, rep); err != nil {
		return nil, err
	}
	rep.Notes = append(rep.Notes, fmt.Sprintf(
		"The manager runs as its own process with the environment config/manager/manager.yaml gives it (%s; container memory limit %s).",
		strings.Join(b.managerEnv, " "), b.memoryLimit))
	if err := b.watchOutput(watchCtx); err != nil {
		return nil, err
	}

	steps := []func(context.Context, *Report) error{b.bulk, b.propagation, b.admission, b.enforced, b.footprint(cfg.Apps)}
	if cfg.Grow && cfg.BigApps > cfg.Apps {
		steps = append(steps, b.grow(cfg.BigApps), b.footprint(cfg.BigApps))
	}
	steps = append(steps, b.documentSize)
	if cfg.EngineOnly {
		steps = []func(context.Context, *Report) error{b.bulk, b.enforced}
	}
	if cfg.BulkOnly {
		steps = []func(context.Context, *Report) error{b.bulk}
	}
	for _, step := range steps {
		if err := step(ctx, rep); err != nil {
			return rep, err
		}
	}
	if cfg.Resolve || cfg.SkipEngine == "" {
		// A gateway's lookup on a quiet machine: the manager and the control
		// plane (with 100,000 AppQuotas) would compete for the CPU and its caches.
		stopManager()
		stopCluster()
	}
	if cfg.BulkOnly {
		return rep, nil
	}
	if err := b.engineOffline(ctx, rep); err != nil {
		return rep, err
	}
	if cfg.Resolve && !cfg.EngineOnly {
		if err := b.resolve(ctx, rep); err != nil {
			return rep, err
		}
	}
	return rep, nil
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

// benchNamespace holds the benchmark's AppQuotas and its baseline
// ConfigMaps.
const benchNamespace = "bench"

func appID(i int) string { return fmt.Sprintf("bench-%07d", i) }

func (b *bench) appQuota(i int) *quotav1.AppQuota {
	return &quotav1.AppQuota{
		ObjectMeta: metav1.ObjectMeta{Namespace: benchNamespace, Name: appID(i)},
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

// waitReady polls until n bench AppQuotas report Ready=True for their generation.
func (b *bench) waitReady(ctx context.Context, n int) (time.Time, error) {
	deadline := time.Now().Add(15 * time.Minute)
	for {
		var list quotav1.AppQuotaList
		if err := b.c.List(ctx, &list, client.InNamespace(benchNamespace)); err != nil {
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
