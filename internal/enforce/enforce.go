// Package enforce connects the render loop to the rate-limit engine: it
// translates each merged document into envoyproxy/ratelimit's configuration
// (internal/ratelimit), serves it over xDS (internal/xds) as the version
// numbered by the merge, and reports what the connected instances run, for the
// AppQuotas' Enforced condition (controllers.Engine).
package enforce

import (
	"fmt"
	"sync"
	"time"

	rlsconfv3 "github.com/envoyproxy/go-control-plane/ratelimit/config/ratelimit/v3"

	"github.com/appquota/appquota/controllers"
	"github.com/appquota/appquota/internal/delta"
	"github.com/appquota/appquota/internal/ratelimit"
	"github.com/appquota/appquota/internal/xds"
)

// Engine serves the rate-limit engine's configuration and reports its
// instances' acknowledgements. It implements controllers.Engine.
type Engine struct {
	server  *xds.Server
	domain  string
	updated <-chan struct{}

	// trMu serialises translations: the Translator builds each version on
	// the one before.
	trMu sync.Mutex
	tr   *ratelimit.Translator

	mu sync.Mutex
	// refused is the latest version Publish could not serve since the last
	// it served, and why.
	refused    uint64
	refusedMsg string
	// served is the Seq of the last configuration sent, and same the latest
	// Seq whose document translates to it: a merge that changed nothing the
	// engine sees sends nothing (each version costs every instance a reload
	// of the whole configuration), and an instance that runs served runs
	// same too.
	served, same uint64
}

// New returns an Engine that publishes to server in the rate-limit domain.
func New(server *xds.Server, domain string) *Engine {
	updated, _ := server.Subscribe() // for the life of the process
	return &Engine{server: server, domain: domain, updated: updated,
		tr: ratelimit.NewTranslator(ratelimit.Options{Domain: domain})}
}

var _ controllers.Engine = (*Engine)(nil)

// Publish translates the document of ch and serves it as version ch.Seq,
// unless ch changed nothing since the version served.
func (e *Engine) Publish(ch delta.Change) error {
	e.mu.Lock()
	unchanged := e.served != 0 && ch.Follows(e.same) && len(ch.Apps) == 0 && !ch.Profiles
	if unchanged {
		e.same = ch.Seq
	}
	e.mu.Unlock()
	if unchanged {
		e.trMu.Lock()
		e.tr.Skip(ch)
		e.trMu.Unlock()
		return nil
	}
	err := e.publish(ch)
	e.mu.Lock()
	defer e.mu.Unlock()
	if err != nil {
		e.refused, e.refusedMsg = ch.Seq, err.Error()
		return err
	}
	e.refused, e.refusedMsg = 0, ""
	e.served, e.same = ch.Seq, ch.Seq
	return nil
}

func (e *Engine) publish(ch delta.Change) error {
	e.trMu.Lock()
	_, err := e.tr.Translate(ch, time.Now())
	// Served in its encoded form: the version's hash, the size check and
	// the xDS cache then copy its bytes rather than encode every app three
	// times over.
	cfg := e.tr.Encoded()
	e.trMu.Unlock()
	if err != nil {
		return fmt.Errorf("translate configuration %d: %w", ch.Seq, err)
	}
	configs := []*rlsconfv3.RateLimitConfig{cfg}
	version, err := xds.NewVersion(ch.Seq, configs)
	if err != nil {
		return fmt.Errorf("name configuration %d: %w", ch.Seq, err)
	}
	if err := e.server.Publish(version, configs); err != nil {
		return fmt.Errorf("serve configuration %d: %w", ch.Seq, err)
	}
	return nil
}

// Updated receives a value whenever an instance connects, acknowledges,
// rejects or leaves, or a version is served.
func (e *Engine) Updated() <-chan struct{} { return e.updated }

// State is what the connected instances last reported.
func (e *Engine) State() controllers.EngineState {
	published, _ := e.server.Versions()
	var s controllers.EngineState
	s.Published = seq(published)
	first := true
	for _, inst := range e.server.Status() {
		s.Connected++
		acked := seq(inst.AckedVersion)
		if acked >= s.Published && s.Published > 0 {
			s.InSync++
		}
		if first || acked < s.Acked {
			s.Acked = acked
		}
		first = false
		if n := inst.LastNack; n != nil && seq(n.Version) > acked {
			s.Rejected = append(s.Rejected, controllers.Rejection{
				Instance: fmt.Sprintf("%s (stream %d, %s)", inst.NodeID, inst.StreamID, inst.RemoteAddr),
				Version:  seq(n.Version),
				Message:  n.Message,
			})
		}
	}
	e.mu.Lock()
	s.Refused, s.RefusedMessage = e.refused, e.refusedMsg
	served, same := e.served, e.same
	e.mu.Unlock()
	// The versions merged since the one served are that one.
	alias := func(v uint64) uint64 {
		if served != 0 && v >= served {
			return max(v, same)
		}
		return v
	}
	s.Published, s.Acked = alias(s.Published), alias(s.Acked)
	for i := range s.Rejected {
		s.Rejected[i].Version = alias(s.Rejected[i].Version)
	}
	return s
}

// seq is a version's sequence number, 0 for none.
func seq(version string) uint64 {
	if version == "" {
		return 0
	}
	n, _, err := xds.ParseVersion(version)
	if err != nil {
		return 0
	}
	return n
}
