package main

import (
	"bytes"
	"context"
	"fmt"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

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
		return notMeasured
	}
	return fmt.Sprintf("%.1f ms (%d requests)", (s1-s0)/float64(n1-n0)*1000, n1-n0)
}
