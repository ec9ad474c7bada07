package controllers

import (
	"fmt"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	quotav1 "github.com/appquota/appquota/api/v1alpha1"
	"github.com/appquota/appquota/internal/delta"
)

// Engine is the rate-limit engine's configuration server as the controllers
// see it (internal/enforce serves it over xDS): the render loop hands it each
// merge it wrote, and the status writers ask it which version every connected
// instance runs. Versions are the merges' delta.Change.Seq, so an AppQuota's
// generation is enforced once every instance runs the version of the merge
// that first carried it, or a later one.
type Engine interface {
	// Publish serves the document of ch as version ch.Seq. An error (a
	// configuration the instances could not take) leaves the last version
	// served.
	Publish(ch delta.Change) error
	// State is what the instances last reported.
	State() EngineState
	// Updated receives a value (coalesced) whenever State may have changed.
	Updated() <-chan struct{}
}

// EngineState is the engine instances' view of the versions served.
type EngineState struct {
	// Published is the latest version served, 0 before the first.
	Published uint64
	// Connected is how many instances are connected, InSync how many of them
	// acknowledged Published.
	Connected, InSync int
	// Acked is the latest version every connected instance acknowledged (or
	// a later one); 0 when one has acknowledged none.
	Acked uint64
	// Rejected are the connected instances whose latest answer was a NACK.
	Rejected []Rejection
	// Refused is the latest version Publish could not serve (0: none since
	// the last served), and why.
	Refused        uint64
	RefusedMessage string
}

// Rejection is an instance's NACK of a version.
type Rejection struct {
	Instance string
	Version  uint64
	Message  string
}

// enforcedCondition is the Enforced condition of an AppQuota whose current
// generation first went out in the merge numbered since, given the engine's
// state (nil when the manager serves no engine).
func enforcedCondition(engine Engine, since uint64, generation int64) metav1.Condition {
	c := metav1.Condition{Type: quotav1.ConditionEnforced, ObservedGeneration: generation}
	if engine == nil {
		c.Status, c.Reason = metav1.ConditionUnknown, quotav1.ReasonNoEngineConnected
		c.Message = "the manager serves no rate-limit engine"
		return c
	}
	s := engine.State()
	for _, r := range s.Rejected {
		if r.Version >= since {
			c.Status, c.Reason = metav1.ConditionFalse, quotav1.ReasonEngineRejected
			c.Message = fmt.Sprintf("engine instance %s rejected configuration version %d: %s; it keeps its last good configuration",
				r.Instance, r.Version, r.Message)
			return c
		}
	}
	switch {
	case s.Refused >= since && s.Published < since:
		c.Status, c.Reason = metav1.ConditionFalse, quotav1.ReasonEngineRejected
		c.Message = fmt.Sprintf("configuration version %d was not served: %s; the engine keeps version %d", s.Refused, s.RefusedMessage, s.Published)
	case s.Connected == 0:
		c.Status, c.Reason = metav1.ConditionUnknown, quotav1.ReasonNoEngineConnected
		c.Message = "no rate-limit engine instance is connected; only gateways that read the ConfigMap enforce this generation"
	case s.Acked >= since:
		c.Status, c.Reason = metav1.ConditionTrue, quotav1.ReasonAcknowledged
		c.Message = fmt.Sprintf("all %d connected engine instances run configuration version %d or later", s.Connected, since)
	default:
		c.Status, c.Reason = metav1.ConditionFalse, quotav1.ReasonPropagating
		c.Message = fmt.Sprintf("waiting for the %d connected engine instances to acknowledge configuration version %d (%d run the latest, version %d)",
			s.Connected, since, s.InSync, s.Published)
	}
	return c
}
