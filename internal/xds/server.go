package xds

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"math"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	cachetypes "github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/envoyproxy/go-control-plane/pkg/server/sotw/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	rlsconfv3 "github.com/envoyproxy/go-control-plane/ratelimit/config/ratelimit/v3"
	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

// TypeURL is the type of the one resource this server serves, the one
// envoyproxy/ratelimit asks for when CONFIG_TYPE is GRPC_XDS_SOTW.
const TypeURL = resourcev3.RateLimitConfigType

// DefaultMaxMessageBytes is gRPC's default limit on a message a client
// receives, which ratelimit keeps unless XDS_CLIENT_MAX_MSG_SIZE_IN_BYTES is
// set.
const DefaultMaxMessageBytes = 4 << 20

const (
	// snapshotKey is the one key of the snapshot cache: every node gets the
	// same configuration, whatever its CONFIG_GRPC_XDS_NODE_ID.
	snapshotKey = "ratelimit"

	// The server pings a connection idle for keepaliveTime and drops it when
	// no answer comes within keepaliveTimeout, so that an instance whose node
	// vanished without closing its connection stops counting as connected
	// within a minute rather than after the kernel's two hours.
	keepaliveTime    = 30 * time.Second
	keepaliveTimeout = 10 * time.Second

	// shutdownGrace bounds the wait for streams to end on shutdown; a client
	// that stopped reading could otherwise hold it forever.
	shutdownGrace = 5 * time.Second
)

// Options configure a Server.
type Options struct {
	// Log receives connections, rejections and shutdown; go-control-plane's
	// own messages go to V(1) and V(2).
	Log logr.Logger

	// Address is where Start listens, e.g. ":18001". Serve ignores it.
	Address string

	// MaxMessageBytes is the largest response Publish lets through: set it to
	// ratelimit's XDS_CLIENT_MAX_MSG_SIZE_IN_BYTES. 0 means
	// DefaultMaxMessageBytes.
	MaxMessageBytes int

	// TLS, when set, makes the server speak TLS only. Set its GetCertificate
	// to a certwatcher's to follow certificate rotation, and ClientCAs with
	// ClientAuth to require client certificates.
	TLS *tls.Config

	// Registerer receives the server's metrics; nil registers none.
	Registerer prometheus.Registerer
}

// Server serves ratelimit's configuration over aggregated xDS, state of the
// world, and tracks which configuration each connected instance runs.
type Server struct {
	log      logr.Logger
	address  string
	maxBytes int
	tls      *tls.Config
	cache    cachev3.SnapshotCache
	metrics  *metrics
	started  atomic.Bool

	// serveMu serialises Publish and the choice of the served snapshot, so
	// that the cache's snapshot always matches served.
	serveMu sync.Mutex
	// published is the latest configuration Publish accepted; lastGood the
	// latest before it that no connected instance had rejected when it was
	// superseded, served in its place while published is rejected.
	published, lastGood *publication
	// fallback is whether lastGood is served in place of published.
	fallback bool

	// mu guards the tracking state below; it is never held while taking
	// serveMu.
	mu            sync.Mutex
	streams       map[int64]*streamState
	publishedSeq  uint64
	publishedVers string
	servedVers    string
	subscribers   map[chan struct{}]struct{}
}

type publication struct {
	version  string
	snapshot *cachev3.Snapshot
}

// New returns a Server with nothing published; instances that connect before
// the first Publish wait for it.
func New(opts Options) (*Server, error) {
	maxBytes := opts.MaxMessageBytes
	switch {
	case maxBytes == 0:
		maxBytes = DefaultMaxMessageBytes
	case maxBytes < 0:
		return nil, fmt.Errorf("create xDS server: MaxMessageBytes %d is negative", maxBytes)
	}
	m, err := newMetrics(opts.Registerer)
	if err != nil {
		return nil, fmt.Errorf("create xDS server: %w", err)
	}
	log := opts.Log
	if log.GetSink() == nil {
		log = logr.Discard()
	}
	return &Server{
		log:         log,
		address:     opts.Address,
		maxBytes:    maxBytes,
		tls:         opts.TLS,
		cache:       cachev3.NewSnapshotCache(false, oneNode{}, cpLogger{log}),
		metrics:     m,
		streams:     map[int64]*streamState{},
		subscribers: map[chan struct{}]struct{}{},
	}, nil
}

// oneNode hashes every node to the same cache key, so one SetSnapshot serves
// them all; the callbacks still track each stream on its own.
type oneNode struct{}

func (oneNode) ID(*corev3.Node) string { return snapshotKey }

// NeedLeaderElection is false: every replica serves, so that ratelimit
// instances reach whichever replica their connection lands on.
func (s *Server) NeedLeaderElection() bool { return false }

// Start listens on Options.Address and serves until ctx ends, as a
// controller-runtime manager runs its runnables.
func (s *Server) Start(ctx context.Context) error {
	if s.address == "" {
		return errors.New("start xDS server: no address to listen on")
	}
	lis, err := net.Listen("tcp", s.address)
	if err != nil {
		return fmt.Errorf("start xDS server: %w", err)
	}
	return s.Serve(ctx, lis)
}

// Serve serves on lis until ctx ends, then ends every stream and returns nil;
// it returns an error if lis fails first. A Server serves once: stream IDs
// would repeat in a second run.
func (s *Server) Serve(ctx context.Context, lis net.Listener) error {
	if !s.started.CompareAndSwap(false, true) {
		lis.Close()
		return errors.New("serve xDS: this server has already served")
	}
	// Streams end when the context the xDS server holds ends, which is what
	// lets GracefulStop return: without it every stream would wait for its
	// client to hang up.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	opts := []grpc.ServerOption{
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: keepaliveTime, Timeout: keepaliveTimeout}),
	}
	if s.tls != nil {
		opts = append(opts, grpc.Creds(credentials.NewTLS(s.tls)))
	}
	gs := grpc.NewServer(opts...)
	xs := serverv3.NewServer(ctx, s.cache, callbacks{s}, sotw.WithLogger(cpLogger{s.log}))
	discoveryv3.RegisterAggregatedDiscoveryServiceServer(gs, xs)

	s.log.Info("serving rate limit configuration over xDS", "address", lis.Addr().String(), "tls", s.tls != nil)
	served := make(chan error, 1)
	go func() { served <- gs.Serve(lis) }()
	select {
	case err := <-served:
		gs.Stop()
		return fmt.Errorf("serve xDS on %s: %w", lis.Addr(), err)
	case <-ctx.Done():
	}

	cancel()
	stopped := make(chan struct{})
	go func() {
		gs.GracefulStop()
		close(stopped)
	}()
	grace := time.NewTimer(shutdownGrace)
	defer grace.Stop()
	select {
	case <-stopped:
	case <-grace.C:
		s.log.Info("xDS streams did not end in time; closing their connections", "grace", shutdownGrace)
		gs.Stop()
		<-stopped
	}
	// Serve returns nil once stopped; anything else failed the listener
	// while the server was stopping, and stopping goes on.
	if err := <-served; err != nil {
		s.log.Error(err, "xDS server failed while stopping")
	}
	s.log.Info("stopped serving rate limit configuration over xDS")
	return nil
}

// Publish makes configs, named version, the configuration every instance is
// sent. version is "<seq>-<hash>" (FormatVersion, NewVersion) and its
// sequence number must be greater than the last one published; publishing the
// current version again does nothing. Publish refuses configs whose response
// would exceed MaxMessageBytes, or whose names are empty or repeat, and then
// the configuration served stays as it was.
func (s *Server) Publish(version string, configs []*rlsconfv3.RateLimitConfig) error {
	seq, _, err := ParseVersion(version)
	if err != nil {
		return fmt.Errorf("publish: %w", err)
	}

	s.serveMu.Lock()
	defer s.serveMu.Unlock()
	if prev := s.published; prev != nil {
		if prev.version == version {
			return nil
		}
		if seq <= seqOf(prev.version) {
			return fmt.Errorf("publish version %q: its sequence number does not follow the published %q", version, prev.version)
		}
	}

	resources := make([]cachetypes.Resource, 0, len(configs))
	anys := make([]*anypb.Any, 0, len(configs))
	names := make(map[string]struct{}, len(configs))
	for i, c := range configs {
		if c == nil {
			return fmt.Errorf("publish version %q: config %d is nil", version, i)
		}
		// The cache holds resources by name: a repeated name would silently
		// drop a config and an empty one cannot be told apart.
		name := c.GetName()
		if name == "" {
			return fmt.Errorf("publish version %q: config %d (domain %q) has no name", version, i, c.GetDomain())
		}
		if _, dup := names[name]; dup {
			return fmt.Errorf("publish version %q: config name %q repeats", version, name)
		}
		names[name] = struct{}{}
		b, err := cachev3.MarshalResource(c)
		if err != nil {
			return fmt.Errorf("publish version %q: marshal config %q: %w", version, name, err)
		}
		resources = append(resources, c)
		anys = append(anys, &anypb.Any{TypeUrl: TypeURL, Value: b})
	}
	if size := responseSize(version, anys); size > s.maxBytes {
		return fmt.Errorf("publish version %q: its xDS response is %d bytes, over the %d-byte limit "+
			"(MaxMessageBytes, ratelimit's XDS_CLIENT_MAX_MSG_SIZE_IN_BYTES); still serving %q",
			version, size, s.maxBytes, s.servedVersion())
	}
	snap, err := cachev3.NewSnapshot(version, map[resourcev3.Type][]cachetypes.Resource{TypeURL: resources})
	if err != nil {
		return fmt.Errorf("publish version %q: %w", version, err)
	}

	if s.published != nil && !s.rejected(s.published.version) {
		s.lastGood = s.published
	}
	s.published = &publication{version: version, snapshot: snap}
	s.mu.Lock()
	s.publishedVers, s.publishedSeq = version, seq
	s.updateMetricsLocked()
	s.notifyLocked()
	s.mu.Unlock()
	return s.serveLocked()
}

// responseSize is the encoded size of the largest DiscoveryResponse that can
// carry anys: the nonce go-control-plane adds is a decimal int64.
func responseSize(version string, anys []*anypb.Any) int {
	return proto.Size(&discoveryv3.DiscoveryResponse{
		VersionInfo: version,
		Resources:   anys,
		TypeUrl:     TypeURL,
		Nonce:       strconv.FormatInt(math.MaxInt64, 10),
	})
}

// serveLocked sets the cache's snapshot to the one to serve: the published
// configuration unless a connected instance rejected it and an earlier one
// exists. Serving the earlier one gives an instance that starts now the
// configuration the rejecting instances kept, instead of one it would
// likely reject too and so start with none. When the rejecting instances go,
// the published configuration is tried again. s.serveMu must be held.
func (s *Server) serveLocked() error {
	want := s.published
	if want == nil {
		return nil
	}
	if s.lastGood != nil && s.rejected(want.version) {
		want = s.lastGood
	}
	served := s.servedVersion()
	if want.version == served {
		return nil
	}
	// SetSnapshot answers every open watch through a buffered channel and
	// never calls back into the callbacks, so it cannot wait on s.mu.
	if err := s.cache.SetSnapshot(context.Background(), snapshotKey, want.snapshot); err != nil {
		return fmt.Errorf("serve version %q: %w", want.version, err)
	}
	switch fallback := want != s.published; {
	case fallback && !s.fallback:
		s.log.Info("serving the last good rate limit configuration: a connected instance rejected the latest",
			"published", s.published.version, "serving", want.version)
	case !fallback && s.fallback:
		s.log.Info("serving the latest rate limit configuration again: no connected instance rejects it", "serving", want.version)
	}
	s.fallback = want != s.published
	s.mu.Lock()
	s.servedVers = want.version
	s.notifyLocked()
	s.mu.Unlock()
	return nil
}

// rejected reports whether a connected instance rejected version and has not
// acknowledged it or a later one since.
func (s *Server) rejected(version string) bool {
	seq := seqOf(version)
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, st := range s.streams {
		if st.subscribed && st.inst.LastNack != nil && st.inst.LastNack.Version == version && seqOf(st.inst.AckedVersion) < seq {
			return true
		}
	}
	return false
}

// reconsider re-chooses the served snapshot after a rejection or a
// disconnection changed the answer of rejected. Called without s.mu.
func (s *Server) reconsider() {
	s.serveMu.Lock()
	defer s.serveMu.Unlock()
	if err := s.serveLocked(); err != nil {
		s.log.Error(err, "choose the rate limit configuration to serve")
	}
}

// Versions returns the version Publish last accepted and the version being
// served, which differ while a connected instance rejects the published one.
func (s *Server) Versions() (published, served string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.publishedVers, s.servedVers
}

func (s *Server) servedVersion() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.servedVers
}

// cpLogger passes go-control-plane's messages to logr: its Info messages
// (such as a stale nonce skipped) are routine protocol traffic, so they go to
// V(1) and its Debug messages to V(2).
type cpLogger struct{ log logr.Logger }

// Formatting waits for Enabled: the cache logs every response it sends.
func (l cpLogger) Debugf(format string, args ...any) {
	if v := l.log.V(2); v.Enabled() {
		v.Info(fmt.Sprintf(format, args...))
	}
}

func (l cpLogger) Infof(format string, args ...any) {
	if v := l.log.V(1); v.Enabled() {
		v.Info(fmt.Sprintf(format, args...))
	}
}

func (l cpLogger) Warnf(format string, args ...any) { l.log.Info(fmt.Sprintf(format, args...)) }
func (l cpLogger) Errorf(format string, args ...any) {
	l.log.Error(fmt.Errorf(format, args...), "go-control-plane")
}
