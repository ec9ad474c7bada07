package xds

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

// Instance is one connected ratelimit instance: one xDS stream. Instances may
// share a node ID (CONFIG_GRPC_XDS_NODE_ID defaults to "default"); the stream
// ID tells them apart.
type Instance struct {
	NodeID     string
	StreamID   int64
	RemoteAddr string
	// ConnectedSince is when the stream opened.
	ConnectedSince time.Time
	// SentVersion is the version of the last response sent on the stream.
	SentVersion string
	// AckedVersion is the version of the last response the instance
	// accepted on this stream, "" before its first.
	AckedVersion string
	// LastNack is the last response the instance rejected on this stream;
	// nil if none. An instance that rejects a version keeps enforcing the
	// one it had.
	LastNack *Nack
}

// Nack is a rejected configuration and ratelimit's reason.
type Nack struct {
	Version string
	Message string
	At      time.Time
}

// sentKept is how many responses of a stream the tracker remembers by nonce.
// A SotW client answers the latest response, so a few cover a client that
// answers one while the next is already on its way.
const sentKept = 8

type sent struct{ nonce, version string }

type streamState struct {
	inst Instance
	// subscribed is set by the stream's first request: before it the stream
	// has asked for nothing and is no instance yet.
	subscribed bool
	// sent are the stream's latest responses, oldest first.
	sent []sent
}

func (st *streamState) versionOf(nonce string) (string, bool) {
	for _, r := range st.sent {
		if r.nonce == nonce {
			return r.version, true
		}
	}
	return "", false
}

// callbacks are go-control-plane's hooks into the stream, kept off Server's
// exported methods.
type callbacks struct{ s *Server }

func (c callbacks) OnStreamOpen(ctx context.Context, id int64, _ string) error {
	st := &streamState{inst: Instance{StreamID: id, ConnectedSince: time.Now()}}
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		st.inst.RemoteAddr = p.Addr.String()
	}
	s := c.s
	s.mu.Lock()
	s.streams[id] = st
	s.mu.Unlock()
	return nil
}

// OnStreamRequest reads an acknowledgement from each request. In SotW a
// request answers the response whose nonce it carries: it accepts that
// response's version when ErrorDetail is nil and rejects it otherwise.
// Only nonces this stream sent count: a reconnecting client's first request
// carries the nonce and version of a stream that is gone (ratelimit's client
// even reports a version it rejected there), so it proves nothing.
//
// It also edits the request before the cache sees it, in two cases:
//   - a rejection: VersionInfo becomes the rejected version, so that the cache
//     waits for a new snapshot instead of sending the same one straight back
//     (it compares VersionInfo, the client's last accepted version, with the
//     snapshot's), which would loop at network speed;
//   - a stream's first request: VersionInfo becomes "", so that every stream
//     starts with a response the instance must answer here. Otherwise a
//     client claiming the current version of an empty configuration would
//     get nothing and never show as acknowledged.
func (c callbacks) OnStreamRequest(id int64, req *discoveryv3.DiscoveryRequest) error {
	if req.GetTypeUrl() != TypeURL {
		return status.Errorf(codes.InvalidArgument, "this server serves only %s, not %s", TypeURL, req.GetTypeUrl())
	}
	s := c.s
	s.mu.Lock()
	st, ok := s.streams[id]
	if !ok {
		s.mu.Unlock()
		return status.Errorf(codes.Internal, "stream %d was not opened", id)
	}
	log := s.log.WithValues("node", req.GetNode().GetId(), "stream", id)
	if st.inst.NodeID == "" {
		st.inst.NodeID = req.GetNode().GetId()
	}
	changed := false
	if !st.subscribed {
		st.subscribed = true
		changed = true
		log.Info("rate limit instance connected", "remoteAddr", st.inst.RemoteAddr)
	}

	rejectedNow := false
	if version, ok := st.versionOf(req.GetResponseNonce()); ok {
		if req.GetErrorDetail() == nil {
			if req.GetVersionInfo() != version {
				log.V(1).Info("acknowledgement names another version than its nonce's; counting the nonce's",
					"nonceVersion", version, "versionInfo", req.GetVersionInfo())
			}
			if st.inst.AckedVersion != version {
				st.inst.AckedVersion = version
				changed = true
				log.V(1).Info("rate limit instance accepted configuration", "version", version)
			}
		} else {
			msg := req.GetErrorDetail().GetMessage()
			st.inst.LastNack = &Nack{Version: version, Message: msg, At: time.Now()}
			changed, rejectedNow = true, true
			s.metrics.nacks.Inc()
			log.Info("rate limit instance rejected configuration", "version", version, "reason", msg, "keeps", st.inst.AckedVersion)
			req.VersionInfo = version
		}
	} else if len(st.sent) == 0 {
		req.VersionInfo = ""
	}
	if changed {
		s.updateMetricsLocked()
		s.notifyLocked()
	}
	s.mu.Unlock()

	if rejectedNow {
		s.reconsider()
	}
	return nil
}

func (c callbacks) OnStreamResponse(_ context.Context, id int64, _ *discoveryv3.DiscoveryRequest, resp *discoveryv3.DiscoveryResponse) {
	s := c.s
	s.mu.Lock()
	defer s.mu.Unlock()
	st, ok := s.streams[id]
	if !ok {
		return
	}
	st.sent = append(st.sent, sent{nonce: resp.GetNonce(), version: resp.GetVersionInfo()})
	if len(st.sent) > sentKept {
		st.sent = slices.Delete(st.sent, 0, len(st.sent)-sentKept)
	}
	st.inst.SentVersion = resp.GetVersionInfo()
	s.notifyLocked()
}

func (c callbacks) OnStreamClosed(id int64, _ *corev3.Node) {
	s := c.s
	s.mu.Lock()
	st, ok := s.streams[id]
	delete(s.streams, id)
	if ok && st.subscribed {
		s.log.Info("rate limit instance disconnected", "node", st.inst.NodeID, "stream", id, "acked", st.inst.AckedVersion)
		s.updateMetricsLocked()
		s.notifyLocked()
	}
	s.mu.Unlock()
	if ok && st.inst.LastNack != nil {
		// The instance that held the published version back may be gone.
		s.reconsider()
	}
}

// Delta xDS is refused: ratelimit speaks SotW, and the tracking reads SotW
// acknowledgements.
func (callbacks) OnDeltaStreamOpen(context.Context, int64, string) error {
	return status.Error(codes.Unimplemented, "delta xDS is not served; use state of the world")
}
func (callbacks) OnDeltaStreamClosed(int64, *corev3.Node) {}
func (callbacks) OnStreamDeltaRequest(int64, *discoveryv3.DeltaDiscoveryRequest) error {
	return status.Error(codes.Unimplemented, "delta xDS is not served; use state of the world")
}
func (callbacks) OnStreamDeltaResponse(int64, *discoveryv3.DeltaDiscoveryRequest, *discoveryv3.DeltaDiscoveryResponse) {
}

// REST fetches are never registered on the gRPC server; these complete the
// interface.
func (callbacks) OnFetchRequest(context.Context, *discoveryv3.DiscoveryRequest) error {
	return status.Error(codes.Unimplemented, "fetch is not served")
}
func (callbacks) OnFetchResponse(*discoveryv3.DiscoveryRequest, *discoveryv3.DiscoveryResponse) {}

// Status returns the connected instances sorted by node ID, then stream ID.
func (s *Server) Status() []Instance {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.instancesLocked()
}

func (s *Server) instancesLocked() []Instance {
	out := make([]Instance, 0, len(s.streams))
	for _, st := range s.streams {
		if !st.subscribed {
			continue
		}
		inst := st.inst
		if inst.LastNack != nil {
			n := *inst.LastNack
			inst.LastNack = &n
		}
		out = append(out, inst)
	}
	slices.SortFunc(out, func(a, b Instance) int {
		return cmp.Or(cmp.Compare(a.NodeID, b.NodeID), cmp.Compare(a.StreamID, b.StreamID))
	})
	return out
}

// Rollout is how far one version has reached the connected instances.
type Rollout struct {
	Version   string
	Connected int
	// Acked counts the instances that accepted Version or a later one.
	Acked int
	// Rejected are the instances that rejected Version or a later one and
	// accepted neither since; they keep enforcing what they had.
	Rejected []Instance
	// Pending are the instances that answered neither yet.
	Pending []Instance
}

// Complete reports whether at least one instance is connected and every
// connected instance accepted the version or a later one. No instance
// connected is not complete: nothing enforces the version.
func (r Rollout) Complete() bool { return r.Connected > 0 && r.Acked == r.Connected }

// Rollout reports which connected instances accepted version or a later one.
// Versions are compared by sequence number (CompareVersions), so asking about
// a version that was superseded before everyone acknowledged it still
// answers whether everyone runs at least that.
func (s *Server) Rollout(version string) (Rollout, error) {
	seq, _, err := ParseVersion(version)
	if err != nil {
		return Rollout{}, fmt.Errorf("rollout: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	r := Rollout{Version: version}
	for _, inst := range s.instancesLocked() {
		r.Connected++
		switch {
		case seqOf(inst.AckedVersion) >= seq:
			r.Acked++
		case inst.LastNack != nil && seqOf(inst.LastNack.Version) >= seq:
			r.Rejected = append(r.Rejected, inst)
		default:
			r.Pending = append(r.Pending, inst)
		}
	}
	return r, nil
}

// Subscribe returns a channel that receives a value after any change to the
// tracking (an instance connected, accepted, rejected or left, a version was
// published or served), and a function that ends the subscription. Changes
// coalesce: the channel holds one value, so a reader that falls behind reads
// one and then the current state. The channel is never closed.
func (s *Server) Subscribe() (<-chan struct{}, func()) {
	ch := make(chan struct{}, 1)
	s.mu.Lock()
	s.subscribers[ch] = struct{}{}
	s.mu.Unlock()
	return ch, func() {
		s.mu.Lock()
		delete(s.subscribers, ch)
		s.mu.Unlock()
	}
}

func (s *Server) notifyLocked() {
	for ch := range s.subscribers {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

// updateMetricsLocked recomputes the gauges from the streams: they are few
// (one per ratelimit replica), so recomputing beats keeping counts in step.
func (s *Server) updateMetricsLocked() {
	connected := 0
	lags := map[string]uint64{}
	for _, st := range s.streams {
		if !st.subscribed {
			continue
		}
		connected++
		var lag uint64
		// Publish records its sequence number before serving it, so an
		// acknowledged one never exceeds it; the test keeps the subtraction
		// from wrapping all the same.
		if acked := seqOf(st.inst.AckedVersion); acked < s.publishedSeq {
			lag = s.publishedSeq - acked
		}
		lags[st.inst.NodeID] = max(lags[st.inst.NodeID], lag)
	}
	s.metrics.connected.Set(float64(connected))
	s.metrics.setLag(lags)
}
