package controllers

import (
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/tools/events"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	quotav1 "github.com/appquota/appquota/api/v1alpha1"
)

// EventsDropped counts the events a rate-limited recorder did not send.
var EventsDropped = prometheus.NewCounterVec(prometheus.CounterOpts{
	Name: "appquota_events_dropped_total",
	Help: "Events not sent because more were emitted than --event-rate allows, by event type (Normal, Warning).",
}, []string{"type"})

// Renders counts the render loop's passes by outcome: "rendered" (merged and
// stored), "skipped" (nothing had changed since the last render: the event of
// the controller's own write, or a requeue with nothing due), "held" (not
// written: the stored configuration does not verify and the render would drop
// last good entries; see QuotaReconciler.hold).
var Renders = prometheus.NewCounterVec(prometheus.CounterOpts{
	Name: "appquota_renders_total",
	Help: "Render loop passes by outcome: rendered; skipped because nothing changed since the last render; " +
		"held because the stored configuration does not verify and the render would drop last good entries.",
}, []string{"outcome"})

func init() {
	metrics.Registry.MustRegister(EventsDropped, Renders)
}

// limitedRecorder sends events at most at a set rate per event type and drops
// the rest. client-go's events broadcaster sends each event from a goroutine
// of its own and keeps every event it sent for six minutes to build series;
// unbounded, a bulk change to 100,000 AppQuotas would hold 100,000 of both.
// Warnings have their own budget, so a flood of OverridesApplied never hides a
// Rejected. An AppQuota's status is the complete record; events are a sample.
type limitedRecorder struct {
	events.EventRecorder
	normal, warning *rate.Limiter
}

// NewLimitedRecorder returns a recorder that passes at most perSecond events of
// each type (Normal, Warning) to inner, with bursts of up to burst, and drops
// the rest.
func NewLimitedRecorder(inner events.EventRecorder, perSecond float64, burst int) events.EventRecorder {
	return &limitedRecorder{
		EventRecorder: inner,
		normal:        rate.NewLimiter(rate.Limit(perSecond), burst),
		warning:       rate.NewLimiter(rate.Limit(perSecond), burst),
	}
}

func (r *limitedRecorder) Eventf(regarding, related runtime.Object, eventtype, reason, action, note string, args ...any) {
	l := r.normal
	if eventtype == corev1.EventTypeWarning {
		l = r.warning
	}
	if !l.Allow() {
		EventsDropped.WithLabelValues(eventtype).Inc()
		return
	}
	r.EventRecorder.Eventf(regarding, related, eventtype, reason, action, note, args...)
}

// reportChanges records, on each AppQuota whose entry in the configuration
// written changed (changed, from limitChanges), what happened to its
// effective limits and who asked (quotav1.ChangedByAnnotation, stamped by the
// API server): "alice raised app acme group messages-send-users
// Requests/Second from 100 to 500 until 2027-01-31T00:00:00Z: SALES-42".
// Expirations have their own event. A bulk change (more than
// render.MaxBefore apps in one write) is not told app by app; the AppQuotas
// themselves keep who changed them and why.
func (r *QuotaReconciler) reportChanges(changed []appChange) {
	for _, c := range changed {
		user := c.app.Annotations[quotav1.ChangedByAnnotation]
		for _, ch := range c.changes {
			r.Recorder.Eventf(c.app, nil, corev1.EventTypeNormal, EventLimitsChanged, "Change", "%s", ch.Line(user, c.appID))
		}
	}
}
