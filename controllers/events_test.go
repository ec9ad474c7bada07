package controllers_test

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/tools/events"

	"github.com/appquota/appquota/controllers"
)

// TestLimitedRecorder checks that a burst beyond the budget is dropped and
// counted, and that Normal events cannot use up the Warnings' budget.
func TestLimitedRecorder(t *testing.T) {
	const burst = 5
	inner := events.NewFakeRecorder(1000)
	// A rate this low refills nothing during the test: only the burst passes.
	r := controllers.NewLimitedRecorder(inner, 1e-9, burst)
	droppedNormal := testutil.ToFloat64(controllers.EventsDropped.WithLabelValues(corev1.EventTypeNormal))
	for range 3 * burst {
		r.Eventf(nil, nil, corev1.EventTypeNormal, controllers.EventOverridesApplied, "Apply", "n")
	}
	if got := len(inner.Events); got != burst {
		t.Fatalf("%d Normal events passed, want the burst of %d", got, burst)
	}
	if got := testutil.ToFloat64(controllers.EventsDropped.WithLabelValues(corev1.EventTypeNormal)) - droppedNormal; got != 2*burst {
		t.Errorf("dropped Normal events counted %v, want %d", got, 2*burst)
	}
	for range burst {
		r.Eventf(nil, nil, corev1.EventTypeWarning, controllers.EventRejected, "Validate", "w")
	}
	if got := len(inner.Events); got != 2*burst {
		t.Fatalf("%d events passed after %d Warnings, want %d: Normal events took the Warnings' budget", got, burst, 2*burst)
	}
}
