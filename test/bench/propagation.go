package main

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	corev1ac "k8s.io/client-go/applyconfigurations/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	quotav1 "github.com/appquota/appquota/api/v1alpha1"
	"github.com/appquota/appquota/pkg/quotaconfig"
)

// The propagation rows' notes.
const (
	noteRender = "One render (a reconcile of the render loop), from the manager's histogram " +
		"controller_runtime_reconcile_time_seconds: the upper bound of the bucket that holds the quantile."
	notePropagation = "Propagation: from the AppQuota change committed (the API server's acknowledgement of its patch " +
		"reaching the bench) to the ConfigMap watch event holding it. The user's own write before that is budgeted by the " +
		"admission rows, and the end-to-end rows time both ([scale.md](scale.md#which-interval-the-propagation-target-times))."
	noteQuietBaseline = "Baseline: a ConfigMap update sent to its watch event, after the same quiet gap as each sample " +
		"(the manager's minimum write interval since its last write), taken between the samples."
	noteInterval = "The ratio of the p99s and, in brackets, its 95% bootstrap interval: " +
		"the ratio over 2,000 resamples of both sides, with replacement."
	noteHotBaseline = "The baseline's ConfigMap update measured back to back instead, no quiet gap between updates, " +
		"as many times as there are samples."
	noteEndToEnd = "End to end: from the AppQuota patch sent, the user's own write included, to the ConfigMap watch event " +
		"holding it. No target: the 3x is the propagation row's."
	notePatch = "End to end's first step, the user's own write: the AppQuota patch's round trip, through the admission webhook."
	noteFloor = "End to end's floor, computed for comparison: the AppQuota patch's round trip plus a plain ConfigMap " +
		"update, over every pair of their samples, as if an operator took no time of its own and wrote one small ConfigMap; " +
		"the update after the quiet gap, or back to back. Ratio: the floor's p99 over the baseline's, " +
		"and end to end's p99 over the floor's."
	noteApply = "Propagation's last step: a server-side apply of a ConfigMap the size of the one the manager wrote " +
		"(random bytes, as incompressible as its gzip), sent to its watch event, back to back; against the back-to-back baseline."
	noteServerSide = "The API server's mean request durations over the propagation samples, from its own histograms " +
		"(their buckets are too coarse for a p99); the baseline is its ConfigMap update's."
	noteWebhookOff = "For comparison only: the same samples with the AppQuota webhook taken out of the API server's " +
		"configuration (the product keeps it), each against a baseline taken with them."
)

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
	update, stop, err := b.configMapUpdate(ctx, "baseline")
	if err != nil {
		return err
	}
	defer stop()
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
	q50, q99 := func(d []time.Duration) string { return ms(quantile(d, 0.5)) }, func(d []time.Duration) string { return ms(quantile(d, 0.99)) }
	ratioAt := func(d, base []time.Duration, q float64) string {
		return fmt.Sprintf("%.1fx", over(quantile(d, q), quantile(base, q)))
	}
	// Propagation proper starts when the change is committed: the API server
	// acknowledging the AppQuota patch. The user's own write before that,
	// webhook included, is what the admission rows budget (at most 2x a
	// ConfigMap create); counted here too, it would leave an operator no room
	// under 3x (the end-to-end floor below). docs/scale.md, "Which interval
	// the propagation target times", says more.
	p99, b99 := quantile(after, 0.99), quantile(base, 0.99)
	ratio := over(p99, b99)
	e99 := quantile(got, 0.99)
	prop := fmt.Sprintf("Propagation, %d apps", b.cfg.Apps)
	rep.add(
		Row{Name: "Render, p50", Notes: []string{noteRender}, Measured: "≤ " + histQuantile(recBefore, recAfter, 0.5)},
		Row{Name: "Render, p99", Notes: []string{noteRender}, Measured: "≤ " + histQuantile(recBefore, recAfter, 0.99)},
		Row{Name: prop + ", p50", Notes: []string{notePropagation, noteQuietBaseline},
			Measured: q50(after), Baseline: q50(base), Ratio: ratioAt(after, base, 0.5)},
		Row{Name: prop + ", p99", Notes: []string{notePropagation, noteQuietBaseline, noteInterval},
			Measured: ms(p99), Baseline: ms(b99), Ratio: withInterval(ratio, after, base), Target: "≤ 3x", Met: met(ratio <= 3)},
		Row{Name: "Baseline back to back, p50", Notes: []string{noteHotBaseline}, Measured: q50(hot)},
		Row{Name: "Baseline back to back, p99", Notes: []string{noteHotBaseline}, Measured: q99(hot),
			Ratio: fmt.Sprintf("%.1fx (propagation p99 over this)", over(p99, quantile(hot, 0.99)))},
	)
	// End to end: the same samples timed from the patch sent, the user's own
	// write included. No target: see the floor below. Then the user's own
	// write alone, through the admission webhook.
	rep.add(
		Row{Name: "End to end, p50", Notes: []string{noteEndToEnd, noteQuietBaseline},
			Measured: q50(got), Baseline: q50(base), Ratio: ratioAt(got, base, 0.5)},
		Row{Name: "End to end, p99", Notes: []string{noteEndToEnd, noteQuietBaseline, noteInterval}, Measured: q99(got), Baseline: q99(base),
			Ratio: withInterval(over(e99, b99), got, base)},
		Row{Name: "AppQuota patch, p50", Notes: []string{notePatch, noteQuietBaseline}, Measured: q50(patched), Baseline: q50(base)},
		Row{Name: "AppQuota patch, p99", Notes: []string{notePatch, noteQuietBaseline},
			Measured: q99(patched), Baseline: q99(base), Ratio: ratioAt(patched, base, 0.99)},
	)
	// The floor under end to end: the user's own write, then the least write
	// an operator makes after it, a plain update of a small ConfigMap, with
	// nothing in between (no watch event to the operator, no render). The
	// update is taken two ways: after the quiet gap, as the baseline is, and
	// back to back, on a machine already awake, as the patch leaves it for the
	// operator.
	cold50, cold99 := sumQuantile(patched, base, 0.5), sumQuantile(patched, base, 0.99)
	warm50, warm99 := sumQuantile(patched, hot, 0.5), sumQuantile(patched, hot, 0.99)
	rep.add(
		Row{Name: "Floor, after the gap, p50", Notes: []string{noteFloor, noteQuietBaseline}, Measured: ms(cold50), Baseline: q50(base)},
		Row{Name: "Floor, after the gap, p99", Notes: []string{noteFloor, noteQuietBaseline}, Measured: ms(cold99), Baseline: q99(base),
			Ratio: fmt.Sprintf("%.1fx; end to end %.1fx this", over(cold99, b99), over(e99, cold99))},
		Row{Name: "Floor, back to back, p50", Notes: []string{noteFloor, noteQuietBaseline}, Measured: ms(warm50), Baseline: q50(base)},
		Row{Name: "Floor, back to back, p99", Notes: []string{noteFloor, noteQuietBaseline}, Measured: ms(warm99), Baseline: q99(base),
			Ratio: fmt.Sprintf("%.1fx; end to end %.1fx this", over(warm99, b99), over(e99, warm99))},
	)
	// And its last step: the ConfigMap write, whatever the controller does before it.
	apply := fmt.Sprintf("ConfigMap apply (%.0f KB)", float64(size)/1000)
	rep.add(
		Row{Name: apply + ", p50", Notes: []string{noteApply, noteHotBaseline}, Measured: q50(writes), Baseline: q50(hot)},
		Row{Name: apply + ", p99", Notes: []string{noteApply, noteHotBaseline},
			Measured: q99(writes), Baseline: q99(hot), Ratio: ratioAt(writes, hot, 0.99)},
	)
	// Where the API server spent its time during the samples, from its own
	// request-duration histograms (means: their buckets are too coarse for p99).
	mean := func(name string, labels map[string]string) string { return apiMean(apiBefore, apiAfter, name, labels) }
	// requestMean is the mean duration of the requests with this verb on this
	// resource (not on a subresource of it).
	requestMean := func(resource, verb string) string {
		return mean("apiserver_request_duration_seconds", map[string]string{"resource": resource, "verb": verb, "subresource": ""})
	}
	rep.add(
		Row{Name: "API server: AppQuota patch, mean", Notes: []string{noteServerSide},
			Measured: requestMean("appquotas", "PATCH"),
			Baseline: requestMean("configmaps", "PUT")},
		Row{Name: "API server: of it, the webhook call, mean", Notes: []string{noteServerSide},
			Measured: mean("apiserver_admission_webhook_admission_duration_seconds", map[string]string{"name": appQuotaWebhook})},
		Row{Name: "API server: the manager's ConfigMap apply, mean", Notes: []string{noteServerSide},
			Measured: requestMean("configmaps", "APPLY")},
	)

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
	rep.add(
		Row{Name: "Webhook off: propagation, p50", Notes: []string{noteWebhookOff}, Measured: q50(off.after), Baseline: q50(off.base)},
		Row{Name: "Webhook off: propagation, p99", Notes: []string{noteWebhookOff},
			Measured: q99(off.after), Baseline: q99(off.base), Ratio: ratioAt(off.after, off.base, 0.99)},
		Row{Name: "Webhook off: end to end, p50", Notes: []string{noteWebhookOff}, Measured: q50(off.got), Baseline: q50(off.base)},
		Row{Name: "Webhook off: end to end, p99", Notes: []string{noteWebhookOff},
			Measured: q99(off.got), Baseline: q99(off.base), Ratio: ratioAt(off.got, off.base, 0.99)},
		Row{Name: "Webhook off: AppQuota patch, p50", Notes: []string{noteWebhookOff}, Measured: q50(off.patched), Baseline: q50(off.base)},
		Row{Name: "Webhook off: AppQuota patch, p99", Notes: []string{noteWebhookOff}, Measured: q99(off.patched), Baseline: q99(off.base)},
	)
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
		probe := &quotav1.AppQuota{ObjectMeta: metav1.ObjectMeta{Namespace: benchNamespace, Name: appID(0)}}
		label := client.RawPatch(types.MergePatchType, []byte(`{"metadata":{"labels":{"probe":"webhook"}}}`))
		if err := b.c.Patch(ctx, probe, label, client.DryRunAll); err != nil {
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
		a := &quotav1.AppQuota{ObjectMeta: metav1.ObjectMeta{Namespace: benchNamespace, Name: appID(i)}}
		if err := b.c.Patch(ctx, a, client.RawPatch(types.JSONPatchType, []byte(patch))); err != nil {
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

// applyRoundTrips server-side applies a ConfigMap holding size random bytes
// under binaryData, new bytes each time, and returns each apply's time from
// sent to its watch event.
func (b *bench) applyRoundTrips(ctx context.Context, size int) ([]time.Duration, error) {
	const name = "baseline-apply"
	sel := metav1.ListOptions{FieldSelector: "metadata.name=" + name}
	list, err := b.cs.CoreV1().ConfigMaps(benchNamespace).List(ctx, sel)
	if err != nil {
		return nil, err
	}
	w, err := b.watchConfigMaps(ctx, benchNamespace, sel, list.ResourceVersion)
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
		apply := corev1ac.ConfigMap(name, benchNamespace).
			WithLabels(map[string]string{"sample": strconv.Itoa(s)}).
			WithBinaryData(map[string][]byte{"v": data})
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
