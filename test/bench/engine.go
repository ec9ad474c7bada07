package main

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	rlsconfv3 "github.com/envoyproxy/go-control-plane/ratelimit/config/ratelimit/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	quotav1 "github.com/appquota/appquota/api/v1alpha1"
	"github.com/appquota/appquota/internal/engine"
	"github.com/appquota/appquota/internal/localcluster"
	"github.com/appquota/appquota/internal/manifest"
	"github.com/appquota/appquota/internal/ratelimit"
	"github.com/appquota/appquota/internal/render"
	"github.com/appquota/appquota/internal/supervise"
	"github.com/appquota/appquota/internal/xds"
	"github.com/appquota/appquota/pkg/quotaconfig"
)

// The engine rows run the real envoyproxy/ratelimit and redis-server
// (internal/engine): enforced.go times an edit until the manager's xDS server
// reports it acknowledged, engineload.go what one configuration version costs
// the engine, and shouldratelimit.go the engine's answers, their latency with
// the full configuration and its throughput with one and two instances.
// This file holds what they share: the manager's xDS flags, the documents
// rendered offline, and feed, which hands a configuration to ratelimit
// directly.

// engineSmokeRows are the engine rows TestSmoke expects in the report.
var engineSmokeRows = []string{
	"Edit→Enforced, 100 apps, p50", "Edit→Enforced, 100 apps, p99", "Edit→Enforced: ConfigMap update, p99",
	"Edit→Enforced: engine load handed over directly, p99",
	"Edit→Enforced from the patch sent, p99", "Enforced after an engine instance connects, 100 apps",
	"xDS message, 100 apps", "xDS message, 300 apps", "Engine: one version, 100 apps, p50", "Engine: one version, 300 apps, p50",
	"Engine: CPU per version, 300 apps", "Engine: ratelimit RSS, 300 apps", "Delivered to ratelimit, 300 apps",
	"ShouldRateLimit, 300-app configuration, p50", "ShouldRateLimit, 300-app configuration, p99",
	"ShouldRateLimit throughput, one instance", "ShouldRateLimit throughput, two instances", "Counters exact across two instances",
}

// xdsFlags are the manager's flags for its xDS server on a loopback port
// found free, after localcluster.ManagerFlags' "0" (the last one wins); none
// when the engine rows are skipped.
func (b *bench) xdsFlags() ([]string, error) {
	if b.cfg.SkipEngine != "" {
		return nil, nil
	}
	addr, err := supervise.FreeAddr()
	if err != nil {
		return nil, err
	}
	b.xdsAddr = addr
	return []string{"--xds-bind-address", addr}, nil
}

// engineSkipped says in the report why the engine rows are not there.
func (b *bench) engineSkipped(rep *Report) bool {
	if b.cfg.SkipEngine == "" {
		return false
	}
	rep.Notes = append(rep.Notes,
		"The engine rows (edit→Enforced, engine versions, ShouldRateLimit, xDS message size) were skipped (-skip-engine): "+b.cfg.SkipEngine)
	return true
}

// engineProcs are a redis-server and the ratelimit instances counting in it.
type engineProcs struct {
	redis *engine.Redis
	rls   []*engine.Ratelimit
}

func startRedis(ctx context.Context) (*engineProcs, error) {
	r, err := engine.StartRedis(ctx, engine.RedisOptions{})
	if err != nil {
		return nil, err
	}
	return &engineProcs{redis: r}, nil
}

// ratelimit starts an instance fed over xDS from addr, returning once it has
// loaded domain.
func (p *engineProcs) ratelimit(ctx context.Context, addr, node, domain string) (*engine.Ratelimit, error) {
	rl, err := engine.StartRatelimit(ctx, engine.RatelimitOptions{RedisAddr: p.redis.Addr(), XDSAddr: addr, NodeID: node, Domain: domain,
		// Its info level logs each load, which a bench of many loads does not need.
		LogLevel: "warn"})
	if err != nil {
		return nil, err
	}
	p.rls = append(p.rls, rl)
	return rl, nil
}

func (p *engineProcs) stop() error {
	var errs []error
	for _, rl := range p.rls {
		errs = append(errs, rl.Stop())
	}
	p.rls = nil
	return errors.Join(append(errs, p.redis.Stop())...)
}

// feed is an xDS server of the operator's own package (internal/xds) in this
// process: it hands ratelimit a configuration directly, without the API
// server and the render loop in between, and tells when every instance has
// acknowledged it, which ratelimit does once the configuration is loaded.
type feed struct {
	srv     *xds.Server
	addr    string
	seq     uint64
	updated <-chan struct{}
	stop    func() error
}

// feedMaxBytes lets the feed serve configurations over gRPC's default 4 MiB:
// the instances' own limit decides what they take.
const feedMaxBytes = 64 << 20

func startFeed(ctx context.Context) (*feed, error) {
	srv, err := xds.New(xds.Options{MaxMessageBytes: feedMaxBytes})
	if err != nil {
		return nil, err
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ctx, lis) }()
	updated, unsubscribe := srv.Subscribe()
	return &feed{srv: srv, addr: lis.Addr().String(), updated: updated, stop: func() error {
		unsubscribe()
		cancel()
		return <-served
	}}, nil
}

// publish serves cfg as the next version and returns the time from the
// Publish call until instances instances (every connected one) acknowledged
// it; with instances 0 it returns at once. The version's name is computed
// before the clock starts.
func (f *feed) publish(ctx context.Context, cfg *rlsconfv3.RateLimitConfig, instances int) (time.Duration, error) {
	f.seq++
	configs := []*rlsconfv3.RateLimitConfig{cfg}
	version, err := xds.NewVersion(f.seq, configs)
	if err != nil {
		return 0, err
	}
	for drained := false; !drained; {
		select {
		case <-f.updated:
		default:
			drained = true
		}
	}
	start := time.Now()
	if err := f.srv.Publish(version, configs); err != nil {
		return 0, err
	}
	if instances == 0 {
		return 0, nil
	}
	if err := f.waitVersion(ctx, version, instances); err != nil {
		return 0, err
	}
	return time.Since(start), nil
}

// waitAcked waits until instances instances (every connected one)
// acknowledged the version published last.
func (f *feed) waitAcked(ctx context.Context, instances int) error {
	published, _ := f.srv.Versions()
	return f.waitVersion(ctx, published, instances)
}

// waitVersion waits until instances instances (every connected one)
// acknowledged version, or a later one.
func (f *feed) waitVersion(ctx context.Context, version string, instances int) error {
	timeout := time.NewTimer(3 * time.Minute)
	defer timeout.Stop()
	for {
		r, err := f.srv.Rollout(version)
		if err != nil {
			return err
		}
		if r.Complete() && r.Connected >= instances {
			return nil
		}
		if len(r.Rejected) > 0 {
			return fmt.Errorf("ratelimit rejected version %s: %s", version, r.Rejected[0].LastNack.Message)
		}
		select {
		case <-f.updated:
		case <-timeout.C:
			return fmt.Errorf("version %s not acknowledged by %d instances within 3 minutes (%d of %d connected did)",
				version, instances, r.Acked, r.Connected)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// offlineDocument renders the document of n bench AppQuotas (appQuota: one
// override each) with the default catalog, as the controller renders it.
func (b *bench) offlineDocument(n int) (*quotaconfig.Document, error) {
	root, err := localcluster.RepoRoot()
	if err != nil {
		return nil, err
	}
	objs, err := manifest.ReadFiles(filepath.Join(root, "config", "catalog", "default.yaml"))
	if err != nil {
		return nil, err
	}
	apps := make([]quotav1.AppQuota, n)
	for i := range n {
		apps[i] = *b.appQuota(i)
	}
	res, err := render.Render(render.Input{DefaultProfile: b.opts.DefaultProfile, Profiles: objs.QuotaProfiles,
		AppQuotas: render.Pointers(apps), Now: time.Now()})
	if err != nil {
		return nil, err
	}
	return res.Document, nil
}

func (b *bench) translate(doc *quotaconfig.Document) (*rlsconfv3.RateLimitConfig, error) {
	return ratelimit.Translate(doc, ratelimit.Options{Domain: b.opts.RateLimitDomain, Now: time.Now()})
}

// withMax returns doc with app i's override limit set to max, the rest
// shared with doc: a new version of the same configuration.
func withMax(doc *quotaconfig.Document, id string, max int64) *quotaconfig.Document {
	d := *doc
	d.Apps = make(map[string]quotaconfig.App, len(doc.Apps))
	for k, v := range doc.Apps {
		d.Apps[k] = v
	}
	a := d.Apps[id]
	a.Overrides = append([]quotaconfig.Override(nil), a.Overrides...)
	a.Overrides[0].Limits = append([]quotaconfig.Limit(nil), a.Overrides[0].Limits...)
	a.Overrides[0].Limits[0].Max = max
	d.Apps[id] = a
	return &d
}

// responseSize is what internal/xds checks against the instances' limit: the
// DiscoveryResponse that carries cfg, with the longest nonce.
func responseSize(version string, cfg *rlsconfv3.RateLimitConfig) (int, error) {
	b, err := proto.Marshal(cfg)
	if err != nil {
		return 0, err
	}
	return proto.Size(&discoveryv3.DiscoveryResponse{
		VersionInfo: version,
		Resources:   []*anypb.Any{{TypeUrl: xds.TypeURL, Value: b}},
		TypeUrl:     xds.TypeURL,
		Nonce:       strconv.FormatInt(math.MaxInt64, 10),
	}), nil
}

// cpuTime is a process's user and system CPU time so far, from /proc.
func cpuTime(pid int) (time.Duration, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name, in parentheses, may hold spaces: fields count after it.
	s := string(data)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	if len(f) < 13 {
		return 0, fmt.Errorf("short /proc/%d/stat", pid)
	}
	utime, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, err
	}
	// USER_HZ is 100 on Linux.
	return time.Duration(utime+stime) * 10 * time.Millisecond, nil
}
