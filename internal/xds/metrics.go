package xds

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	connected prometheus.Gauge
	lag       *prometheus.GaugeVec
	nacks     prometheus.Counter
	// lagNodes are the node labels lag has a series for, so that a node's
	// series goes when its last instance does.
	lagNodes map[string]struct{}
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		connected: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "appquota_xds_connected_instances",
			Help: "Rate limit service instances connected to this manager's xDS server and subscribed to its configuration.",
		}),
		lag: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "appquota_xds_version_lag",
			Help: "Versions between the latest configuration published and the one an instance last acknowledged " +
				"(0 when current; the latest sequence number when it acknowledged none), by xDS node ID; " +
				"the largest when instances share a node ID.",
		}, []string{"node"}),
		nacks: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "appquota_xds_nacks_total",
			Help: "Configurations rejected (NACKed) by a rate limit service instance.",
		}),
		lagNodes: map[string]struct{}{},
	}
	if reg == nil {
		return m, nil
	}
	collectors := []prometheus.Collector{m.connected, m.lag, m.nacks}
	for i, c := range collectors {
		if err := reg.Register(c); err != nil {
			// Leave the registry as it was, so that a caller that handles the
			// error can try again.
			for _, done := range collectors[:i] {
				reg.Unregister(done)
			}
			return nil, fmt.Errorf("register xDS metrics: %w", err)
		}
	}
	return m, nil
}

// setLag replaces the lag series with lags, keyed by node ID.
func (m *metrics) setLag(lags map[string]uint64) {
	for node := range m.lagNodes {
		if _, ok := lags[node]; !ok {
			m.lag.DeleteLabelValues(node)
			delete(m.lagNodes, node)
		}
	}
	for node, lag := range lags {
		m.lag.WithLabelValues(node).Set(float64(lag))
		m.lagNodes[node] = struct{}{}
	}
}
