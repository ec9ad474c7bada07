package main

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/appquota/appquota/pkg/quotaconfig"
)

// admissionBase numbers the admission samples' AppQuotas past any app count
// the benchmark loads.
const admissionBase = 10_000_000

// The admission rows' notes.
const (
	noteAdmission = "Admission: an AppQuota create, through the webhook, against a create of a ConfigMap of the same size " +
		"(no webhook), the two interleaved and back to back."
	noteWebhookHandler = "The webhook handler's own time, from the manager's histogram " +
		"controller_runtime_webhook_latency_seconds: the upper bound of the bucket that holds the quantile."
)

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
		c := &corev1.ConfigMap{
			ObjectMeta: metav1.ObjectMeta{Namespace: benchNamespace, Name: fmt.Sprintf("similar-%d", s)},
			Data:       map[string]string{"spec": strings.Repeat("x", len(size))},
		}
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
	rep.add(
		Row{Name: "Admission, p50", Notes: []string{noteAdmission}, Measured: ms(quantile(aq, 0.5)), Baseline: ms(quantile(cm, 0.5))},
		Row{Name: "Admission, p99", Notes: []string{noteAdmission, noteInterval}, Measured: ms(p99), Baseline: ms(b99),
			Ratio: withInterval(ratio, aq, cm), Target: "≤ 2x", Met: met(ratio <= 2)},
		Row{Name: "Webhook handler, p50", Notes: []string{noteWebhookHandler}, Measured: "≤ " + histQuantile(before, after, 0.5)},
		Row{Name: "Webhook handler, p99", Notes: []string{noteWebhookHandler}, Measured: "≤ " + histQuantile(before, after, 0.99)},
	)
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
