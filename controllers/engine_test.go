package controllers

import (
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	quotav1 "github.com/appquota/appquota/api/v1alpha1"
	"github.com/appquota/appquota/internal/delta"
)

// fixedEngine reports a fixed state.
type fixedEngine struct{ state EngineState }

func (fixedEngine) Publish(delta.Change) error { return nil }
func (e fixedEngine) State() EngineState       { return e.state }
func (fixedEngine) Updated() <-chan struct{}   { return nil }

// TestEnforcedCondition: an AppQuota whose generation first went out in
// version 5 is Enforced once every connected instance runs 5 or later;
// a rejection or a refusal of 5 or later says why; no instance is Unknown.
func TestEnforcedCondition(t *testing.T) {
	for _, tc := range []struct {
		name    string
		engine  Engine
		status  metav1.ConditionStatus
		reason  string
		message string
	}{
		{"no engine served", nil, metav1.ConditionUnknown, quotav1.ReasonNoEngineConnected, "serves no rate-limit engine"},
		{"no instance connected", fixedEngine{EngineState{Published: 5}}, metav1.ConditionUnknown, quotav1.ReasonNoEngineConnected, "no rate-limit engine instance is connected"},
		{"every instance runs 5", fixedEngine{EngineState{Published: 5, Connected: 2, InSync: 2, Acked: 5}}, metav1.ConditionTrue, quotav1.ReasonAcknowledged, "all 2 connected"},
		{"every instance runs a later one", fixedEngine{EngineState{Published: 9, Connected: 2, InSync: 2, Acked: 9}}, metav1.ConditionTrue, quotav1.ReasonAcknowledged, "version 5 or later"},
		{"one instance runs 4", fixedEngine{EngineState{Published: 5, Connected: 2, InSync: 1, Acked: 4}}, metav1.ConditionFalse, quotav1.ReasonPropagating, "1 run the latest"},
		{"an instance rejected 6", fixedEngine{EngineState{Published: 6, Connected: 2, InSync: 1, Acked: 4,
			Rejected: []Rejection{{Instance: "rl-0", Version: 6, Message: "bad unit"}}}}, metav1.ConditionFalse, quotav1.ReasonEngineRejected, "rl-0 rejected configuration version 6: bad unit"},
		{"a rejection of an older version does not count", fixedEngine{EngineState{Published: 5, Connected: 1, InSync: 1, Acked: 5,
			Rejected: []Rejection{{Instance: "rl-0", Version: 3, Message: "old"}}}}, metav1.ConditionTrue, quotav1.ReasonAcknowledged, ""},
		{"5 was too large to serve", fixedEngine{EngineState{Published: 4, Connected: 1, InSync: 1, Acked: 4, Refused: 5, RefusedMessage: "over the 4194304-byte limit"}},
			metav1.ConditionFalse, quotav1.ReasonEngineRejected, "version 5 was not served: over the 4194304-byte limit; the engine keeps version 4"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := enforcedCondition(tc.engine, 5, 3)
			if c.Type != quotav1.ConditionEnforced || c.Status != tc.status || c.Reason != tc.reason || c.ObservedGeneration != 3 || !strings.Contains(c.Message, tc.message) {
				t.Errorf("got %s=%s (%s, generation %d): %q; want %s (%s) containing %q", c.Type, c.Status, c.Reason, c.ObservedGeneration, c.Message, tc.status, tc.reason, tc.message)
			}
		})
	}
}
