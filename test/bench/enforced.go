package main

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	toolscache "k8s.io/client-go/tools/cache"
	watchtools "k8s.io/client-go/tools/watch"
	"sigs.k8s.io/controller-runtime/pkg/client"

	rlsconfv3 "github.com/envoyproxy/go-control-plane/ratelimit/config/ratelimit/v3"

	quotav1 "github.com/appquota/appquota/api/v1alpha1"
	"github.com/appquota/appquota/pkg/quotaconfig"
)

// The edit→Enforced rows' notes.
const (
	noteEnforced = "Edit→Enforced: from an AppQuota's patch acknowledged to the watch event of its Enforced condition " +
		"True for the new generation, which the manager reports once every connected ratelimit instance (here" +
		" one, fed by the manager's xDS server, --xds-bind-address, counting in a redis-server) acknowledged " +
		"a configuration version holding the edit. Each sample patches one app's override max, after the same" +
		" quiet gap as the propagation samples."
	noteEnforcedFloor = "Floor: the quantile of a plain ConfigMap update plus the quantile of the engine's own load of the " +
		"same configuration handed over directly, both taken in the same run, interleaved with the samples " +
		"(the rows below). Ratio: edit→Enforced over the floor."
	noteEnforcedUpdate = "A plain ConfigMap update sent to its watch event, after the same quiet gap, taken between the edit→Enforced samples."
	noteEnforcedLoad   = "The engine's own time to load the same configuration handed over directly: after each sample, the " +
		"document the manager stored, translated (ratelimit.Translate) and published as a new version by an " +
		"xDS server of the operator's package (internal/xds) in the bench's process to a second ratelimit " +
		"instance; from Publish to its acknowledgement, which ratelimit sends once it has loaded the " +
		"configuration; after the same quiet gap."
	noteEnforcedSent = "The edit→Enforced samples timed from the patch sent: the user's own write, through the admission " +
		"webhook, included. No target."
	noteEnforcedConnect = "From a ratelimit instance's start, fed by the manager, to every AppQuota reporting Enforced=True: " +
		"its first configuration loaded and acknowledged, then the manager's status write for each AppQuota " +
		"(--kube-api-qps)."
)

// enforced times edit→Enforced with the run's apps loaded, next to its floor:
// a plain ConfigMap update plus the engine's own load of that configuration.
func (b *bench) enforced(ctx context.Context, rep *Report) error {
	if b.engineSkipped(rep) {
		return nil
	}
	n := b.cfg.Apps
	rep.Notes = append(rep.Notes, "The manager serves the engine's configuration over xDS (--xds-bind-address on a loopback port) "+
		"for the whole run, as deployed (its default is :18000): every ConfigMap write is also a version translated and served, "+
		"and the QuotaProfiles' status reports the engine. -skip-engine runs it without, as the runs before the engine rows did.")
	fmt.Fprintf(b.log, "edit→Enforced: %d samples with %d apps loaded, ratelimit fed by the manager\n", b.cfg.Samples, n)
	procs, err := startRedis(ctx)
	if err != nil {
		return err
	}
	defer func() {
		if err := procs.stop(); err != nil {
			fmt.Fprintf(b.log, "the engine's processes ended badly: %v\n", err)
		}
	}()
	started := time.Now()
	if _, err := procs.ratelimit(ctx, b.xdsAddr, "bench-manager", b.opts.RateLimitDomain); err != nil {
		return err
	}
	settled, err := b.waitEnforcedAll(ctx, n)
	if err != nil {
		return err
	}

	// The second instance, fed directly the configuration the manager stored.
	f, err := startFeed(ctx)
	if err != nil {
		return err
	}
	defer func() {
		if err := f.stop(); err != nil {
			fmt.Fprintf(b.log, "the xDS feed ended badly: %v\n", err)
		}
	}()
	cfg, err := b.storedConfig(ctx)
	if err != nil {
		return err
	}
	if _, err := f.publish(ctx, cfg, 0); err != nil {
		return err
	}
	if _, err := procs.ratelimit(ctx, f.addr, "bench-direct", b.opts.RateLimitDomain); err != nil {
		return err
	}

	events, stopWatch, err := b.watchEnforced(ctx)
	if err != nil {
		return err
	}
	defer stopWatch()
	update, stopUpdate, err := b.configMapUpdate(ctx, "baseline-enforced")
	if err != nil {
		return err
	}
	defer stopUpdate()

	gap := b.opts.MinWriteInterval + 50*time.Millisecond
	var lastDone time.Time
	quiet := func() {
		until := time.Unix(0, b.lastEvent.Load()).Add(gap)
		if t := lastDone.Add(gap); t.After(until) {
			until = t
		}
		time.Sleep(time.Until(until))
	}
	var after, got, base, load []time.Duration
	for s := range b.cfg.Samples {
		quiet()
		i := rand.IntN(n)
		patch := fmt.Sprintf(`[{"op":"replace","path":"/spec/overrides/0/limits/0/max","value":%d}]`, 7_000_000+s)
		a := &quotav1.AppQuota{ObjectMeta: metav1.ObjectMeta{Namespace: benchNamespace, Name: appID(i)}}
		drainEnforced(events)
		sent := time.Now()
		if err := b.c.Patch(ctx, a, client.RawPatch(types.JSONPatchType, []byte(patch))); err != nil {
			return err
		}
		acked := time.Now()
		at, err := waitEnforcedEvent(ctx, events, a.Name, a.Generation, time.Minute)
		if err != nil {
			return fmt.Errorf("edit→Enforced sample %d: %w", s, err)
		}
		after, got = append(after, at.Sub(acked)), append(got, at.Sub(sent))
		lastDone = time.Now()

		quiet()
		d, err := update(fmt.Sprint(s))
		if err != nil {
			return err
		}
		base = append(base, d)
		lastDone = time.Now()

		// The same configuration, handed over directly.
		cfg, err := b.storedConfig(ctx)
		if err != nil {
			return err
		}
		quiet()
		if d, err = f.publish(ctx, cfg, 1); err != nil {
			return fmt.Errorf("edit→Enforced sample %d, direct load: %w", s, err)
		}
		load = append(load, d)
		lastDone = time.Now()
		if (s+1)%50 == 0 {
			fmt.Fprintf(b.log, "edit→Enforced: %d samples, p50 so far %s\n", s+1, ms(quantile(after, 0.5)))
		}
	}

	q := quantile
	floor50, floor99 := q(base, 0.5)+q(load, 0.5), q(base, 0.99)+q(load, 0.99)
	p50, p99 := q(after, 0.5), q(after, 0.99)
	ratio := over(p99, floor99)
	label := fmt.Sprintf("Edit→Enforced, %d apps", n)
	rep.add(
		Row{Name: label + ", p50", Notes: []string{noteEnforced, noteEnforcedFloor}, Measured: ms(p50), Baseline: "floor " + ms(floor50),
			Ratio: fmt.Sprintf("%.1fx", over(p50, floor50))},
		Row{Name: label + ", p99", Notes: []string{noteEnforced, noteEnforcedFloor}, Measured: ms(p99), Baseline: "floor " + ms(floor99),
			Ratio: fmt.Sprintf("%.1fx", ratio), Target: "≤ 2x", Met: met(ratio <= 2)},
		Row{Name: "Edit→Enforced: ConfigMap update, p50", Notes: []string{noteEnforcedUpdate}, Measured: ms(q(base, 0.5))},
		Row{Name: "Edit→Enforced: ConfigMap update, p99", Notes: []string{noteEnforcedUpdate}, Measured: ms(q(base, 0.99))},
		Row{Name: "Edit→Enforced: engine load handed over directly, p50", Notes: []string{noteEnforcedLoad}, Measured: ms(q(load, 0.5))},
		Row{Name: "Edit→Enforced: engine load handed over directly, p99", Notes: []string{noteEnforcedLoad}, Measured: ms(q(load, 0.99))},
		Row{Name: "Edit→Enforced from the patch sent, p50", Notes: []string{noteEnforcedSent}, Measured: ms(q(got, 0.5))},
		Row{Name: "Edit→Enforced from the patch sent, p99", Notes: []string{noteEnforcedSent}, Measured: ms(q(got, 0.99))},
		Row{Name: fmt.Sprintf("Enforced after an engine instance connects, %d apps", n), Notes: []string{noteEnforcedConnect},
			Measured: settled.Sub(started).Round(100 * time.Millisecond).String()},
	)
	return nil
}

// waitEnforcedAll polls until n bench AppQuotas report Enforced=True for
// their generation.
func (b *bench) waitEnforcedAll(ctx context.Context, n int) (time.Time, error) {
	deadline := time.Now().Add(15 * time.Minute)
	for {
		var list quotav1.AppQuotaList
		if err := b.c.List(ctx, &list, client.InNamespace(benchNamespace)); err != nil {
			return time.Time{}, err
		}
		enforced := 0
		for _, a := range list.Items {
			if enforcedNow(&a) {
				enforced++
			}
		}
		if enforced >= n {
			return time.Now(), nil
		}
		if time.Now().After(deadline) {
			return time.Time{}, fmt.Errorf("only %d of %d AppQuotas Enforced after 15 minutes", enforced, n)
		}
		time.Sleep(time.Second)
	}
}

// storedConfig is the configuration the manager stored, as a gateway loads
// it, translated for the engine as the manager translates it.
func (b *bench) storedConfig(ctx context.Context) (*rlsconfv3.RateLimitConfig, error) {
	doc, err := quotaconfig.LoadConfigMaps(b.opts.ConfigMapName, func(name string) (map[string]string, map[string][]byte, error) {
		var cm corev1.ConfigMap
		if err := b.c.Get(ctx, client.ObjectKey{Namespace: b.opts.Namespace, Name: name}, &cm); err != nil {
			return nil, nil, err
		}
		return cm.Data, cm.BinaryData, nil
	})
	if err != nil {
		return nil, err
	}
	return b.translate(doc)
}

// enforcedNow reports whether a reports Enforced=True for its generation.
func enforcedNow(a *quotav1.AppQuota) bool {
	c := meta.FindStatusCondition(a.Status.Conditions, quotav1.ConditionEnforced)
	return c != nil && c.Status == metav1.ConditionTrue && c.ObservedGeneration == a.Generation
}

type enforcedEvent struct {
	name       string
	generation int64
	at         time.Time
}

// watchEnforced follows the bench AppQuotas and passes on, timestamped on
// arrival, each event that reports one Enforced=True for its generation.
func (b *bench) watchEnforced(ctx context.Context) (<-chan enforcedEvent, func(), error) {
	wc, err := client.NewWithWatch(b.cluster.Config, client.Options{Scheme: b.c.Scheme()})
	if err != nil {
		return nil, nil, err
	}
	var list quotav1.AppQuotaList
	if err := b.c.List(ctx, &list, client.InNamespace(benchNamespace), client.Limit(1)); err != nil {
		return nil, nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	w, err := watchtools.NewRetryWatcherWithContext(ctx, list.ResourceVersion, &toolscache.ListWatch{
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			return wc.Watch(ctx, &quotav1.AppQuotaList{}, client.InNamespace(benchNamespace), &client.ListOptions{Raw: &o})
		},
	})
	if err != nil {
		cancel()
		return nil, nil, err
	}
	out := make(chan enforcedEvent, 1<<16)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ev := range w.ResultChan() {
			a, ok := ev.Object.(*quotav1.AppQuota)
			if !ok || (ev.Type != watch.Added && ev.Type != watch.Modified) {
				continue
			}
			if !enforcedNow(a) {
				continue
			}
			select {
			case out <- enforcedEvent{name: a.Name, generation: a.Generation, at: time.Now()}:
			default: // nobody is waiting
			}
		}
	}()
	return out, func() {
		cancel()
		w.Stop()
		<-done
	}, nil
}

func drainEnforced(events <-chan enforcedEvent) {
	for {
		select {
		case <-events:
		default:
			return
		}
	}
}

// waitEnforcedEvent returns the arrival of the event reporting AppQuota name
// Enforced for generation (or a later one).
func waitEnforcedEvent(ctx context.Context, events <-chan enforcedEvent, name string, generation int64, timeout time.Duration) (time.Time, error) {
	deadline := time.After(timeout)
	for {
		select {
		case ev := <-events:
			if ev.name == name && ev.generation >= generation {
				return ev.at, nil
			}
		case <-deadline:
			return time.Time{}, fmt.Errorf("AppQuota %s not Enforced for generation %d within %s", name, generation, timeout)
		case <-ctx.Done():
			return time.Time{}, ctx.Err()
		}
	}
}

// configMapUpdate creates ConfigMap name in the bench namespace and returns
// a function that updates it and times the update from sent to its watch
// event: the baseline of a plain write.
func (b *bench) configMapUpdate(ctx context.Context, name string) (func(string) (time.Duration, error), func(), error) {
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: benchNamespace, Name: name}, Data: map[string]string{"v": "start"}}
	if err := b.c.Create(ctx, cm); err != nil {
		return nil, nil, err
	}
	w, err := b.watchConfigMaps(ctx, benchNamespace, metav1.ListOptions{FieldSelector: "metadata.name=" + name}, cm.ResourceVersion)
	if err != nil {
		return nil, nil, err
	}
	return func(v string) (time.Duration, error) {
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
		return 0, errors.New("the baseline ConfigMap's watch ended")
	}, w.Stop, nil
}
