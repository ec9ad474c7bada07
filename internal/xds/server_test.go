package xds_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/client/sotw/v3"
	rlsconfv3 "github.com/envoyproxy/go-control-plane/ratelimit/config/ratelimit/v3"
	"github.com/go-logr/logr/testr"
	"github.com/prometheus/client_golang/prometheus"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"sigs.k8s.io/controller-runtime/pkg/manager"

	"github.com/appquota/appquota/internal/xds"
)

// The manager runs the server as a runnable on every replica.
var (
	_ manager.Runnable               = (*xds.Server)(nil)
	_ manager.LeaderElectionRunnable = (*xds.Server)(nil)
)

// testTimeout bounds every wait on the server or a stream, so that a broken
// expectation fails the test instead of hanging it.
const testTimeout = 20 * time.Second

func testConfig(name, domain string) *rlsconfv3.RateLimitConfig {
	return &rlsconfv3.RateLimitConfig{
		Name:   name,
		Domain: domain,
		Descriptors: []*rlsconfv3.RateLimitDescriptor{{
			Key:       "app_id",
			Value:     "1122334455",
			RateLimit: &rlsconfv3.RateLimitPolicy{Unit: rlsconfv3.RateLimitUnit_SECOND, RequestsPerUnit: 100},
		}},
	}
}

type testServer struct {
	*xds.Server
	addr string
	reg  *prometheus.Registry
	// stop ends Serve and waits for it to return nil.
	stop func()
}

// serve starts a Server on a loopback port; the test's end stops it.
func serve(t *testing.T, opts xds.Options) *testServer {
	t.Helper()
	reg := prometheus.NewRegistry()
	opts.Log = testr.NewWithOptions(t, testr.Options{Verbosity: 1})
	opts.Registerer = reg
	s, err := xds.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- s.Serve(ctx, lis) }()
	stopped := false
	stop := func() {
		t.Helper()
		if stopped {
			return
		}
		stopped = true
		cancel()
		select {
		case err := <-served:
			if err != nil {
				t.Errorf("Serve returned %v after its context ended; want nil", err)
			}
		case <-time.After(testTimeout):
			t.Errorf("Serve did not return within %s of its context ending", testTimeout)
		}
	}
	t.Cleanup(stop)
	return &testServer{Server: s, addr: lis.Addr().String(), reg: reg, stop: stop}
}

func (s *testServer) publish(t *testing.T, version string, configs ...*rlsconfv3.RateLimitConfig) {
	t.Helper()
	if err := s.Publish(version, configs); err != nil {
		t.Fatalf("Publish(%q): %v", version, err)
	}
}

// waitFor waits until cond holds, re-checking it on each change the server
// announces.
func (s *testServer) waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	changed, unsubscribe := s.Subscribe()
	defer unsubscribe()
	deadline := time.NewTimer(testTimeout)
	defer deadline.Stop()
	for !cond() {
		select {
		case <-changed:
		case <-deadline.C:
			t.Fatalf("timed out waiting for %s; instances: %+v", what, s.Status())
		}
	}
}

// waitAcked waits until every connected instance accepted version or later
// and want of them are connected.
func (s *testServer) waitAcked(t *testing.T, version string, want int) xds.Rollout {
	t.Helper()
	var r xds.Rollout
	s.waitFor(t, fmt.Sprintf("%d instances to accept %s", want, version), func() bool {
		var err error
		r, err = s.Rollout(version)
		if err != nil {
			t.Fatal(err)
		}
		return r.Complete() && r.Connected == want
	})
	return r
}

// metrics returns the server's series as "name{label=value}" -> value.
func (s *testServer) metrics(t *testing.T) map[string]float64 {
	t.Helper()
	families, err := s.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, f := range families {
		for _, m := range f.GetMetric() {
			labels := make([]string, 0, len(m.GetLabel()))
			for _, l := range m.GetLabel() {
				labels = append(labels, l.GetName()+"="+l.GetValue())
			}
			key := f.GetName()
			if len(labels) > 0 {
				key += "{" + strings.Join(labels, ",") + "}"
			}
			switch {
			case m.GetGauge() != nil:
				out[key] = m.GetGauge().GetValue()
			case m.GetCounter() != nil:
				out[key] = m.GetCounter().GetValue()
			}
		}
	}
	return out
}

func (s *testServer) wantMetrics(t *testing.T, want map[string]float64) {
	t.Helper()
	got := s.metrics(t)
	for k, v := range want {
		if g, ok := got[k]; !ok || g != v {
			t.Errorf("metric %s = %v (present %v), want %v; all: %v", k, g, ok, v, got)
		}
	}
	for k := range got {
		if _, ok := want[k]; !ok && strings.HasPrefix(k, "appquota_xds_version_lag") {
			t.Errorf("unexpected series %s = %v", k, got[k])
		}
	}
}

// adsClient is a ratelimit instance's side of the protocol, spoken on a real
// ADS stream the way ratelimit's go-control-plane client speaks it: every
// request names the node, carries the last accepted version and the nonce of
// the last response received.
type adsClient struct {
	t      *testing.T
	node   string
	conn   *grpc.ClientConn
	stream discoveryv3.AggregatedDiscoveryService_StreamAggregatedResourcesClient
	acked  string
	last   *discoveryv3.DiscoveryResponse
}

func connect(t *testing.T, addr, node string, opts ...grpc.DialOption) *adsClient {
	t.Helper()
	if len(opts) == 0 {
		opts = []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}
	}
	conn, err := grpc.NewClient(addr, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	t.Cleanup(cancel)
	stream, err := discoveryv3.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	c := &adsClient{t: t, node: node, conn: conn, stream: stream}
	c.send(nil)
	return c
}

func (c *adsClient) send(detail *rpcstatus.Status) {
	c.t.Helper()
	err := c.stream.Send(&discoveryv3.DiscoveryRequest{
		Node:          &corev3.Node{Id: c.node},
		VersionInfo:   c.acked,
		TypeUrl:       xds.TypeURL,
		ResponseNonce: c.last.GetNonce(),
		ErrorDetail:   detail,
	})
	if err != nil {
		c.t.Fatalf("%s: send: %v", c.node, err)
	}
}

// recv reads the next response, which must be version, and returns its
// configs.
func (c *adsClient) recv(version string) []*rlsconfv3.RateLimitConfig {
	c.t.Helper()
	resp, err := c.stream.Recv()
	if err != nil {
		c.t.Fatalf("%s: waiting for version %s: %v", c.node, version, err)
	}
	c.last = resp
	if resp.GetVersionInfo() != version || resp.GetTypeUrl() != xds.TypeURL {
		c.t.Fatalf("%s: got version %q of %s, want version %q of %s", c.node, resp.GetVersionInfo(), resp.GetTypeUrl(), version, xds.TypeURL)
	}
	out := make([]*rlsconfv3.RateLimitConfig, 0, len(resp.GetResources()))
	for _, a := range resp.GetResources() {
		cfg := &rlsconfv3.RateLimitConfig{}
		if err := a.UnmarshalTo(cfg); err != nil {
			c.t.Fatalf("%s: unmarshal resource: %v", c.node, err)
		}
		out = append(out, cfg)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].GetName() < out[j].GetName() })
	return out
}

func (c *adsClient) ack() {
	c.t.Helper()
	c.acked = c.last.GetVersionInfo()
	c.send(nil)
}

func (c *adsClient) nack(message string) {
	c.t.Helper()
	c.send(&rpcstatus.Status{Code: int32(codes.InvalidArgument), Message: message})
}

func (c *adsClient) close() {
	c.t.Helper()
	if err := c.conn.Close(); err != nil {
		c.t.Fatal(err)
	}
}

func names(configs []*rlsconfv3.RateLimitConfig) []string {
	out := make([]string, 0, len(configs))
	for _, c := range configs {
		out = append(out, c.GetName())
	}
	return out
}

func TestAck(t *testing.T) {
	s := serve(t, xds.Options{})
	// An instance that connects before the first Publish waits for it.
	a := connect(t, s.addr, "ratelimit-a")
	s.publish(t, "1-one", testConfig("chat", "chat"), testConfig("broadcast", "broadcast"))

	got := a.recv("1-one")
	if want := []string{"broadcast", "chat"}; !slices.Equal(names(got), want) {
		t.Fatalf("configs %v, want %v", names(got), want)
	}
	if !proto.Equal(got[1], testConfig("chat", "chat")) {
		t.Errorf("config chat arrived as %v", got[1])
	}
	r, err := s.Rollout("1-one")
	if err != nil {
		t.Fatal(err)
	}
	if r.Complete() {
		t.Errorf("Rollout(1-one) complete before any acknowledgement: %+v", r)
	}
	a.ack()
	s.waitAcked(t, "1-one", 1)

	instances := s.Status()
	if len(instances) != 1 {
		t.Fatalf("Status() = %+v, want one instance", instances)
	}
	inst := instances[0]
	if inst.NodeID != "ratelimit-a" || inst.AckedVersion != "1-one" || inst.SentVersion != "1-one" || inst.LastNack != nil {
		t.Errorf("instance %+v, want node ratelimit-a with 1-one sent and accepted, no rejection", inst)
	}
	if host, _, err := net.SplitHostPort(inst.RemoteAddr); err != nil || host != "127.0.0.1" {
		t.Errorf("RemoteAddr %q, want the client's loopback address", inst.RemoteAddr)
	}
	if inst.ConnectedSince.IsZero() || time.Since(inst.ConnectedSince) > testTimeout {
		t.Errorf("ConnectedSince %v", inst.ConnectedSince)
	}
	s.wantMetrics(t, map[string]float64{
		"appquota_xds_connected_instances":           1,
		"appquota_xds_version_lag{node=ratelimit-a}": 0,
		"appquota_xds_nacks_total":                   0,
	})

	// A new version: sent, not yet accepted, one version behind.
	s.publish(t, "2-two", testConfig("chat", "chat"))
	if got := names(a.recv("2-two")); !slices.Equal(got, []string{"chat"}) {
		t.Errorf("configs %v after removing broadcast, want [chat]", got)
	}
	s.waitFor(t, "2-two to be sent", func() bool { return s.Status()[0].SentVersion == "2-two" })
	r, err = s.Rollout("2-two")
	if err != nil {
		t.Fatal(err)
	}
	if r.Complete() || r.Connected != 1 || r.Acked != 0 || len(r.Pending) != 1 || len(r.Rejected) != 0 {
		t.Errorf("Rollout(2-two) before the acknowledgement = %+v, want one pending instance", r)
	}
	if r, _ := s.Rollout("1-one"); !r.Complete() {
		t.Errorf("Rollout(1-one) = %+v, want complete: the instance still runs it", r)
	}
	s.wantMetrics(t, map[string]float64{
		"appquota_xds_connected_instances":           1,
		"appquota_xds_version_lag{node=ratelimit-a}": 1,
		"appquota_xds_nacks_total":                   0,
	})
	a.ack()
	s.waitAcked(t, "2-two", 1)
	// Accepting 2 accepts everything up to it.
	if r, _ := s.Rollout("1-one"); !r.Complete() {
		t.Errorf("Rollout(1-one) = %+v after 2-two was accepted, want complete", r)
	}
	if _, err := s.Rollout("two"); err == nil {
		t.Error("Rollout of a malformed version: no error")
	}
}

func TestNack(t *testing.T) {
	s := serve(t, xds.Options{})
	s.publish(t, "1-good", testConfig("chat", "chat"))
	a := connect(t, s.addr, "ratelimit-a")
	a.recv("1-good")
	a.ack()
	s.waitAcked(t, "1-good", 1)

	s.publish(t, "2-bad", testConfig("chat", "chat"), testConfig("broadcast", ""))
	a.recv("2-bad")
	const reason = "error loading config: broadcast: config file cannot have empty domain"
	a.nack(reason)

	// The instance keeps 1-good; the server goes back to serving it, so the
	// next response the instance gets is 1-good, not 2-bad straight back.
	a.recv("1-good")
	a.ack()
	s.waitFor(t, "the rejection to be recorded", func() bool {
		st := s.Status()
		return len(st) == 1 && st[0].LastNack != nil && st[0].AckedVersion == "1-good"
	})
	inst := s.Status()[0]
	if inst.LastNack.Version != "2-bad" || inst.LastNack.Message != reason || inst.LastNack.At.IsZero() {
		t.Errorf("LastNack = %+v, want 2-bad with %q", inst.LastNack, reason)
	}
	if published, served := s.Versions(); published != "2-bad" || served != "1-good" {
		t.Errorf("Versions() = %q, %q; want 2-bad published, 1-good served", published, served)
	}
	r, err := s.Rollout("2-bad")
	if err != nil {
		t.Fatal(err)
	}
	if r.Complete() || r.Connected != 1 || len(r.Rejected) != 1 || r.Rejected[0].LastNack.Message != reason {
		t.Errorf("Rollout(2-bad) = %+v, want the instance rejecting it with %q", r, reason)
	}
	s.wantMetrics(t, map[string]float64{
		"appquota_xds_connected_instances":           1,
		"appquota_xds_version_lag{node=ratelimit-a}": 1,
		"appquota_xds_nacks_total":                   1,
	})

	// A new instance gets the last good version, which it can run, not the
	// one its peer rejected.
	b := connect(t, s.addr, "ratelimit-b")
	b.recv("1-good")
	b.ack()
	s.waitAcked(t, "1-good", 2)
	if r, _ := s.Rollout("2-bad"); r.Acked != 0 || len(r.Rejected) != 1 || len(r.Pending) != 1 {
		t.Errorf("Rollout(2-bad) = %+v, want one rejecting and one pending", r)
	}

	// The fix reaches both.
	s.publish(t, "3-fixed", testConfig("chat", "chat"), testConfig("broadcast", "broadcast"))
	a.recv("3-fixed")
	a.ack()
	b.recv("3-fixed")
	b.ack()
	s.waitAcked(t, "3-fixed", 2)
	if published, served := s.Versions(); published != "3-fixed" || served != "3-fixed" {
		t.Errorf("Versions() = %q, %q; want 3-fixed for both", published, served)
	}
	if r, _ := s.Rollout("2-bad"); !r.Complete() {
		t.Errorf("Rollout(2-bad) = %+v after both accepted 3-fixed, want complete", r)
	}
}

// TestRejectingInstanceLeaves: two instances, one rejects; when it leaves it
// is forgotten, and the published version is served again.
func TestRejectingInstanceLeaves(t *testing.T) {
	s := serve(t, xds.Options{})
	s.publish(t, "1-a", testConfig("chat", "chat"))
	old := connect(t, s.addr, "ratelimit-old")
	cur := connect(t, s.addr, "ratelimit-new")
	for _, c := range []*adsClient{old, cur} {
		c.recv("1-a")
		c.ack()
	}
	s.waitAcked(t, "1-a", 2)

	s.publish(t, "2-b", testConfig("chat", "chat"))
	old.recv("2-b")
	old.nack("unknown field")
	old.recv("1-a")
	old.ack()
	// cur accepts 2-b, and then follows the server back to 1-a.
	cur.recv("2-b")
	cur.ack()
	cur.recv("1-a")
	cur.ack()
	s.waitFor(t, "both to run 1-a", func() bool {
		st := s.Status()
		return len(st) == 2 && st[0].AckedVersion == "1-a" && st[1].AckedVersion == "1-a"
	})

	old.close()
	s.waitFor(t, "the rejecting instance to be forgotten", func() bool { return len(s.Status()) == 1 })
	if st := s.Status(); st[0].NodeID != "ratelimit-new" {
		t.Fatalf("Status() = %+v, want only ratelimit-new", st)
	}
	cur.recv("2-b")
	cur.ack()
	s.waitAcked(t, "2-b", 1)
	if published, served := s.Versions(); published != "2-b" || served != "2-b" {
		t.Errorf("Versions() = %q, %q; want 2-b for both", published, served)
	}
	s.wantMetrics(t, map[string]float64{
		"appquota_xds_connected_instances":             1,
		"appquota_xds_version_lag{node=ratelimit-new}": 0,
		"appquota_xds_nacks_total":                     1,
	})
}

func TestDisconnect(t *testing.T) {
	s := serve(t, xds.Options{})
	s.publish(t, "1-a", testConfig("chat", "chat"))
	// Two instances with one node ID, as ratelimit replicas sharing
	// CONFIG_GRPC_XDS_NODE_ID are: two instances, one lag series.
	a := connect(t, s.addr, "default")
	b := connect(t, s.addr, "default")
	a.recv("1-a")
	a.ack()
	b.recv("1-a")
	b.ack()
	s.waitAcked(t, "1-a", 2)
	st := s.Status()
	if st[0].StreamID == st[1].StreamID || st[0].StreamID > st[1].StreamID {
		t.Errorf("Status() = %+v, want two streams sorted by ID", st)
	}
	s.publish(t, "2-b", testConfig("chat", "chat"))
	a.recv("2-b")
	a.ack()
	s.waitFor(t, "a to accept 2-b", func() bool {
		r, _ := s.Rollout("2-b")
		return r.Acked == 1
	})
	// The worst of the node's instances.
	s.wantMetrics(t, map[string]float64{
		"appquota_xds_connected_instances":       2,
		"appquota_xds_version_lag{node=default}": 1,
	})

	b.close()
	r := s.waitAcked(t, "2-b", 1)
	if r.Connected != 1 {
		t.Errorf("Rollout(2-b) = %+v, want the one remaining instance", r)
	}
	a.close()
	s.waitFor(t, "no instance", func() bool { return len(s.Status()) == 0 })
	if r, _ := s.Rollout("2-b"); r.Complete() || r.Connected != 0 {
		t.Errorf("Rollout(2-b) with nobody connected = %+v, want incomplete", r)
	}
	s.wantMetrics(t, map[string]float64{
		"appquota_xds_connected_instances": 0,
		"appquota_xds_nacks_total":         0,
	})
}

func TestOversized(t *testing.T) {
	const limit = 4096
	s := serve(t, xds.Options{MaxMessageBytes: limit})
	s.publish(t, "1-small", testConfig("chat", "chat"))
	a := connect(t, s.addr, "ratelimit-a")
	a.recv("1-small")
	a.ack()

	big := testConfig("chat", "chat")
	big.Descriptors[0].Value = strings.Repeat("x", limit)
	err := s.Publish("2-big", []*rlsconfv3.RateLimitConfig{big})
	if err == nil {
		t.Fatal("Publish of a configuration over the limit: no error")
	}
	for _, want := range []string{"2-big", "4096-byte limit", "still serving \"1-small\""} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
	if _, err := fmt.Sscanf(err.Error()[strings.Index(err.Error(), "response is "):], "response is %d bytes", new(int)); err != nil {
		t.Errorf("error %q does not give the size: %v", err, err)
	}
	if published, served := s.Versions(); published != "1-small" || served != "1-small" {
		t.Errorf("Versions() = %q, %q after a refused Publish; want 1-small for both", published, served)
	}
	// The last good configuration is still what a new instance gets.
	b := connect(t, s.addr, "ratelimit-b")
	b.recv("1-small")
	b.ack()
	s.waitAcked(t, "1-small", 2)
	// The refusal used no sequence number: the next one is still free.
	s.publish(t, "2-next", testConfig("chat", "chat"))
	a.recv("2-next")
	b.recv("2-next")
}

// TestLimitMatchesClient finds the largest configuration Publish accepts under
// a limit and has a client whose gRPC receive limit is that limit, as
// ratelimit's XDS_CLIENT_MAX_MSG_SIZE_IN_BYTES sets it, receive it: Publish
// must never let through what the client would refuse.
func TestLimitMatchesClient(t *testing.T) {
	const limit = 2000
	padded := func(n int) *rlsconfv3.RateLimitConfig {
		c := testConfig("chat", "chat")
		c.Descriptors[0].Value = strings.Repeat("x", n)
		return c
	}
	probe, err := xds.New(xds.Options{MaxMessageBytes: limit})
	if err != nil {
		t.Fatal(err)
	}
	seq := uint64(0)
	fits := func(n int) bool {
		seq++
		return probe.Publish(xds.FormatVersion(seq, "probe"), []*rlsconfv3.RateLimitConfig{padded(n)}) == nil
	}
	lo, hi := 0, limit
	if !fits(lo) || fits(hi) {
		t.Fatalf("padding 0 fits: %v, padding %d fits: %v; want only the first", fits(lo), hi, fits(hi))
	}
	for hi-lo > 1 {
		if mid := (lo + hi) / 2; fits(mid) {
			lo = mid
		} else {
			hi = mid
		}
	}

	s := serve(t, xds.Options{MaxMessageBytes: limit})
	version := xds.FormatVersion(seq+1, "probe")
	s.publish(t, version, padded(lo))
	c := connect(t, s.addr, "ratelimit-a",
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(limit)))
	c.recv(version)
	size := proto.Size(c.last)
	if size > limit || size < limit-40 {
		t.Errorf("largest accepted response is %d bytes; want at most %d and within the nonce's length of it", size, limit)
	}
}

func TestPublishRefuses(t *testing.T) {
	s, err := xds.New(xds.Options{})
	if err != nil {
		t.Fatal(err)
	}
	chat := testConfig("chat", "chat")
	if err := s.Publish("5-a", []*rlsconfv3.RateLimitConfig{chat}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		version string
		configs []*rlsconfv3.RateLimitConfig
		want    string
	}{
		{"abc", nil, "want <sequence>-<hash>"},
		{"5-b", nil, "does not follow the published \"5-a\""},
		{"4-a", nil, "does not follow the published \"5-a\""},
		{"6-a", []*rlsconfv3.RateLimitConfig{chat, testConfig("chat", "other")}, "config name \"chat\" repeats"},
		{"6-a", []*rlsconfv3.RateLimitConfig{testConfig("", "chat")}, "config 0 (domain \"chat\") has no name"},
		{"6-a", []*rlsconfv3.RateLimitConfig{chat, nil}, "config 1 is nil"},
	} {
		err := s.Publish(tc.version, tc.configs)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Publish(%q, %d configs) = %v, want an error containing %q", tc.version, len(tc.configs), err, tc.want)
		}
	}
	// The current version again is a no-op, whatever the configs: the
	// caller publishes on every render, changed or not.
	if err := s.Publish("5-a", nil); err != nil {
		t.Errorf("Publish of the current version again: %v", err)
	}
	if published, served := s.Versions(); published != "5-a" || served != "5-a" {
		t.Errorf("Versions() = %q, %q; want 5-a", published, served)
	}
	if _, err := xds.New(xds.Options{MaxMessageBytes: -1}); err == nil {
		t.Error("New with a negative MaxMessageBytes: no error")
	}
}

func TestMetricsRegisterOnce(t *testing.T) {
	reg := prometheus.NewRegistry()
	if _, err := xds.New(xds.Options{Registerer: reg}); err != nil {
		t.Fatal(err)
	}
	_, err := xds.New(xds.Options{Registerer: reg})
	var already prometheus.AlreadyRegisteredError
	if !errors.As(err, &already) {
		t.Errorf("second New on one registry: %v, want AlreadyRegisteredError", err)
	}
}

// TestRatelimitClient speaks to the server with the client ratelimit itself
// uses (go-control-plane's pkg/client/sotw/v3), including its reconnection:
// the first request on the new stream carries the old stream's nonce and
// version. With an empty configuration the cache would see nothing to send
// for that version and the instance would never show as acknowledged.
func TestRatelimitClient(t *testing.T) {
	s := serve(t, xds.Options{})
	s.publish(t, "1-empty")
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	client := newRatelimitClient(ctx, "ratelimit")

	for round := range 2 {
		conn, err := grpc.NewClient(s.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		if err := client.InitConnect(conn); err != nil {
			t.Fatalf("round %d: InitConnect: %v", round, err)
		}
		resp, err := client.Fetch()
		if err != nil {
			t.Fatalf("round %d: Fetch: %v", round, err)
		}
		if len(resp.Resources) != 0 {
			t.Errorf("round %d: %d resources, want none", round, len(resp.Resources))
		}
		if err := client.Ack(); err != nil {
			t.Fatal(err)
		}
		s.waitAcked(t, "1-empty", 1)
		conn.Close()
		s.waitFor(t, "the stream to close", func() bool { return len(s.Status()) == 0 })
	}
}

func newRatelimitClient(ctx context.Context, node string) sotw.ADSClient {
	return sotw.NewADSClient(ctx, &corev3.Node{Id: node}, xds.TypeURL)
}

func TestRefusesOtherTypesAndDelta(t *testing.T) {
	s := serve(t, xds.Options{})
	s.publish(t, "1-a", testConfig("chat", "chat"))
	conn, err := grpc.NewClient(s.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	ads := discoveryv3.NewAggregatedDiscoveryServiceClient(conn)

	// An Envoy pointed here by mistake is told, not left waiting.
	stream, err := ads.StreamAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&discoveryv3.DiscoveryRequest{Node: &corev3.Node{Id: "envoy"}, TypeUrl: "type.googleapis.com/envoy.config.cluster.v3.Cluster"}); err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "serves only "+xds.TypeURL) {
		t.Errorf("clusters requested: %v, want InvalidArgument naming %s", err, xds.TypeURL)
	}

	delta, err := ads.DeltaAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// The server may end the stream before this arrives; Recv tells why.
	_ = delta.Send(&discoveryv3.DeltaDiscoveryRequest{Node: &corev3.Node{Id: "ratelimit"}, TypeUrl: xds.TypeURL})
	if _, err := delta.Recv(); status.Code(err) != codes.Unimplemented {
		t.Errorf("delta stream: %v, want Unimplemented", err)
	}
	if st := s.Status(); len(st) != 0 {
		t.Errorf("Status() = %+v, want no instance", st)
	}
}

func TestGracefulStop(t *testing.T) {
	s := serve(t, xds.Options{})
	s.publish(t, "1-a", testConfig("chat", "chat"))
	a := connect(t, s.addr, "ratelimit-a")
	a.recv("1-a")
	a.ack()
	s.waitAcked(t, "1-a", 1)

	// The stream is open; stopping must end it rather than wait for the
	// client to leave.
	s.stop()
	if _, err := a.stream.Recv(); err == nil {
		t.Error("Recv after the server stopped: no error")
	}
	if st := s.Status(); len(st) != 0 {
		t.Errorf("Status() after stop = %+v, want no instance", st)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Serve(context.Background(), lis); err == nil || !strings.Contains(err.Error(), "already served") {
		t.Errorf("second Serve: %v, want an error", err)
	}
}

func TestStartNeedsAddress(t *testing.T) {
	s, err := xds.New(xds.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if s.NeedLeaderElection() {
		t.Error("NeedLeaderElection() = true; every replica must serve")
	}
	if err := s.Start(context.Background()); err == nil || !strings.Contains(err.Error(), "no address") {
		t.Errorf("Start without an address: %v", err)
	}
}
