package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	rlsconfv3 "github.com/envoyproxy/go-control-plane/ratelimit/config/ratelimit/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	quotav1 "github.com/appquota/appquota/api/v1alpha1"
	"github.com/appquota/appquota/internal/engine"
	"github.com/appquota/appquota/internal/ratelimit"
	"github.com/appquota/appquota/internal/supervise"
	"github.com/appquota/appquota/pkg/quotaconfig"
)

// engineHits is how many calls the counter measurement makes before Redis
// restarts.
const engineHits = 5

// engineRestart is fault 8: with enforcement on (both replicas serve xDS
// when they lead, behind one address as the appquota-xds Service puts them;
// envoyproxy/ratelimit and redis-server as processes), ratelimit is
// SIGKILLed and started again, then Redis is. ratelimit must get the current
// configuration again, changes made while it was down included: every
// AppQuota Enforced again for its generation, and the configuration
// ratelimit loaded equal to a translation of the offline render. Across the
// Redis restart, the counters are measured with ShouldRateLimit calls.
func engineRestart(ctx context.Context, cfg Config, bin string) result {
	res := result{Fault: "Rate-limit engine restarts",
		Injection: fmt.Sprintf("on %d AppQuotas enforced by envoyproxy/ratelimit over xDS, with edits in flight: ratelimit SIGKILLed "+
			"and started again; redis-server SIGKILLed and started again (no persistence, as deployed); %d repeats", cfg.Apps, cfg.Repeats)}
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	h, err := newHarness(runCtx, cfg.Log, bin)
	if err != nil {
		res.Err = err
		return res
	}
	defer h.stop()
	svc, err := newXDSService()
	if err != nil {
		res.Err = err
		return res
	}
	defer svc.close()
	h.replicaArgs = [2][]string{{"--xds-bind-address", svc.backends[0]}, {"--xds-bind-address", svc.backends[1]}}
	if err := h.start(runCtx); err != nil {
		res.Err = err
		return res
	}
	e, err := startEngine(runCtx, h, svc.addr)
	if err != nil {
		res.Err = err
		return res
	}
	defer e.stop()
	apps := max(cfg.Apps, 3)
	if err := h.createApps(runCtx, 0, apps, cfg.Workers); err != nil {
		res.Err = err
		return res
	}
	// App 0 is the counters', app 1 the one whose Enforced is checked while
	// no engine is connected.
	o := &oracle{h: h, editor: newEditor(h, 2, apps)}
	if _, err := e.settle(runCtx, o, time.Now()); err != nil {
		res.Err = fmt.Errorf("before the fault: %w", err)
		return res
	}
	restartsBefore, conflictsBefore := h.restarts(), h.conflicts()
	var counters []counterMeasure
	for range cfg.Repeats {
		recovery, err := e.ratelimitOnce(runCtx, o)
		if err != nil {
			res.Err = fmt.Errorf("ratelimit restart: %w", err)
			break
		}
		res.Recovery = append(res.Recovery, recovery)
		recovery, m, err := e.redisOnce(runCtx, o)
		if err != nil {
			res.Err = fmt.Errorf("redis-server restart: %w", err)
			break
		}
		res.Recovery = append(res.Recovery, recovery)
		counters = append(counters, m)
	}
	res.Edits = o.editor.edits.Load()
	if res.Err == nil {
		_, res.Lost, res.Err = o.settle(runCtx, time.Now(), 2*time.Minute)
	}
	res.Note = counterNote(counters)
	res.Restarts = h.restarts() - restartsBefore
	res.Stale = h.conflicts() - conflictsBefore
	return res
}

// enforcement is the engine of a run: redis-server, ratelimit and a gRPC
// client of ratelimit.
type enforcement struct {
	h     *harness
	redis *engine.Redis
	rl    *engine.Ratelimit
	conn  *grpc.ClientConn
	rls   rlsv3.RateLimitServiceClient
}

func startEngine(ctx context.Context, h *harness, xdsAddr string) (*enforcement, error) {
	redisBin, err := engine.RedisBinary()
	if err != nil {
		return nil, err
	}
	rlBin, err := engine.RatelimitBinary()
	if err != nil {
		return nil, err
	}
	e := &enforcement{h: h}
	if e.redis, err = engine.StartRedis(ctx, engine.RedisOptions{Bin: redisBin}); err != nil {
		return nil, err
	}
	// Domain: the start returns once ratelimit loaded the leader's
	// configuration, which needs a leader: allow for an election.
	if e.rl, err = engine.StartRatelimit(ctx, engine.RatelimitOptions{Bin: rlBin, RedisAddr: e.redis.Addr(), XDSAddr: xdsAddr,
		NodeID: "faults-engine", Domain: h.opts.RateLimitDomain, MaxMsgBytes: 16 << 20, ReadyTimeout: 2*leaseDuration + time.Minute}); err != nil {
		_ = e.redis.Stop()
		return nil, err
	}
	if e.conn, err = grpc.NewClient(e.rl.GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials())); err != nil {
		e.stop()
		return nil, fmt.Errorf("connect to ratelimit: %w", err)
	}
	e.rls = rlsv3.NewRateLimitServiceClient(e.conn)
	return e, nil
}

func (e *enforcement) stop() {
	if e.conn != nil {
		_ = e.conn.Close()
	}
	if e.rl != nil {
		_ = e.rl.Stop()
	}
	_ = e.redis.Stop()
}

// settle waits for the oracle, then for the engine: every AppQuota Enforced
// for its generation, and ratelimit's loaded configuration a translation of
// the stored one (which the oracle has just found equal to the offline
// render). The recovery is from since to the engine holding.
func (e *enforcement) settle(ctx context.Context, o *oracle, since time.Time) (time.Duration, error) {
	if _, lost, err := o.settle(ctx, since, 5*time.Minute); err != nil {
		return 0, err
	} else if lost > 0 {
		return 0, fmt.Errorf("%d acknowledged edits lost", lost)
	}
	var said string
	err := poll(ctx, "the engine to enforce the stored configuration", 3*time.Minute, func(ctx context.Context) (bool, error) {
		err := e.check(ctx)
		if err != nil && err.Error() != said {
			said = err.Error()
			fmt.Fprintf(e.h.log, "engine: %v\n", err)
		}
		return err == nil, err
	})
	return time.Since(since), err
}

// check is the engine's oracle.
func (e *enforcement) check(ctx context.Context) error {
	var apps quotav1.AppQuotaList
	if err := e.h.c.List(ctx, &apps); err != nil {
		return err
	}
	for i := range apps.Items {
		a := &apps.Items[i]
		c := meta.FindStatusCondition(a.Status.Conditions, quotav1.ConditionEnforced)
		if c == nil || c.ObservedGeneration != a.Generation || c.Status != metav1.ConditionTrue {
			return fmt.Errorf("AppQuota %s/%s is not Enforced=True for generation %d: %+v", a.Namespace, a.Name, a.Generation, c)
		}
	}
	doc, _, _, err := e.h.stored(ctx)
	if err != nil {
		return err
	}
	want, err := ratelimit.Translate(doc, ratelimit.Options{Domain: e.h.opts.RateLimitDomain})
	if err != nil {
		return fmt.Errorf("translate the stored configuration: %w", err)
	}
	loaded, err := e.rl.LoadedConfig(ctx)
	if err != nil {
		return err
	}
	return diffLimits(parseDump(loaded), dumpConfig(want))
}

// dumpConfig lists a configuration's limits as ratelimit's /rlconfig does,
// without the shadow and quota modes (neither is used): "domain.key_value
// ...: unit=UNIT requests_per_unit=N", sorted.
func dumpConfig(cfg *rlsconfv3.RateLimitConfig) []string {
	var out []string
	var walk func(prefix string, ds []*rlsconfv3.RateLimitDescriptor)
	walk = func(prefix string, ds []*rlsconfv3.RateLimitDescriptor) {
		for _, d := range ds {
			key := prefix + d.GetKey()
			if d.GetValue() != "" {
				key += "_" + d.GetValue()
			}
			if p := d.GetRateLimit(); p != nil {
				out = append(out, fmt.Sprintf("%s: unit=%s requests_per_unit=%d", key, p.GetUnit(), p.GetRequestsPerUnit()))
			}
			walk(key+".", d.GetDescriptors())
		}
	}
	walk(cfg.GetDomain()+".", cfg.GetDescriptors())
	slices.Sort(out)
	return out
}

// parseDump reads /rlconfig's lines into dumpConfig's form.
func parseDump(dump string) []string {
	var out []string
	for line := range strings.Lines(dump) {
		if line = strings.TrimSpace(line); line == "" {
			continue
		}
		if i := strings.Index(line, ", shadow_mode"); i >= 0 {
			line = line[:i]
		}
		out = append(out, line)
	}
	slices.Sort(out)
	return out
}

// diffLimits names up to three limits in one list and not the other.
func diffLimits(got, want []string) error {
	var missing, extra []string
	i, j := 0, 0
	for i < len(got) || j < len(want) {
		switch {
		case j == len(want) || i < len(got) && got[i] < want[j]:
			extra = append(extra, got[i])
			i++
		case i == len(got) || want[j] < got[i]:
			missing = append(missing, want[j])
			j++
		default:
			i++
			j++
		}
	}
	if len(missing) == 0 && len(extra) == 0 {
		return nil
	}
	return fmt.Errorf("ratelimit's loaded configuration differs from the render: %d limits missing (e.g. %q), %d not in the render (e.g. %q)",
		len(missing), missing[:min(3, len(missing))], len(extra), extra[:min(3, len(extra))])
}

// ratelimitOnce SIGKILLs ratelimit, lets edits change the configuration
// while it is down, starts it again and waits for the engine's oracle.
func (e *enforcement) ratelimitOnce(ctx context.Context, o *oracle) (time.Duration, error) {
	stopEdits := o.editor.run(ctx, 2)
	defer stopEdits()
	if err := e.rl.Kill(); err != nil {
		return 0, err
	}
	// Changes while no engine is connected: the new instance must get them.
	edits := o.editor.edits.Load()
	if err := poll(ctx, "edits while ratelimit is down", time.Minute, func(context.Context) (bool, error) {
		return o.editor.edits.Load() >= edits+4, nil
	}); err != nil {
		return 0, err
	}
	if err := e.notEnforcedWhileDown(ctx, o); err != nil {
		return 0, err
	}
	// The recovery counts from the start of the new process: the time it
	// was down is the fault's, chosen here.
	started := time.Now()
	if err := e.rl.Restart(ctx); err != nil {
		return 0, err
	}
	stopEdits()
	return e.settle(ctx, o, started)
}

// notEnforcedWhileDown edits app 1 while no ratelimit is connected and
// checks that once the change is stored (Ready for its generation) it is not
// reported Enforced: nothing could have acknowledged it.
func (e *enforcement) notEnforcedWhileDown(ctx context.Context, o *oracle) error {
	if err := o.editor.edit(ctx, 1); err != nil {
		return err
	}
	key := client.ObjectKey{Namespace: appNamespace, Name: appName(1)}
	if err := e.h.waitReady(ctx, key, metav1.ConditionTrue); err != nil {
		return err
	}
	var a quotav1.AppQuota
	if err := e.h.c.Get(ctx, key, &a); err != nil {
		return err
	}
	if c := meta.FindStatusCondition(a.Status.Conditions, quotav1.ConditionEnforced); c != nil &&
		c.ObservedGeneration == a.Generation && c.Status == metav1.ConditionTrue {
		return fmt.Errorf("AppQuota %s reports Enforced=True for generation %d, stored while no ratelimit was connected: %+v", key, a.Generation, c)
	}
	return nil
}

// redisOnce measures app 0's counter, SIGKILLs redis-server and starts it
// again (empty, as deployed: no snapshot, no append-only file), counts the
// calls ratelimit answers with an error until it counts again, and measures
// the counter again.
func (e *enforcement) redisOnce(ctx context.Context, o *oracle) (time.Duration, counterMeasure, error) {
	doc, _, _, err := e.h.stored(ctx)
	if err != nil {
		return 0, counterMeasure{}, err
	}
	cfg, err := quotaconfig.Compile(doc)
	if err != nil {
		return 0, counterMeasure{}, err
	}
	req, max, err := e.callOf(cfg, 0)
	if err != nil {
		return 0, counterMeasure{}, err
	}
	hour := time.Now().Truncate(time.Hour)
	var before uint32
	for range engineHits {
		if before, err = e.remaining(ctx, req, max); err != nil {
			return 0, counterMeasure{}, err
		}
	}
	if err := e.redis.Kill(); err != nil {
		return 0, counterMeasure{}, err
	}
	started := time.Now()
	if err := e.redis.Restart(ctx); err != nil {
		return 0, counterMeasure{}, err
	}
	failed, rlRestarts := 0, 0
	var after uint32
	if err := poll(ctx, "ratelimit to count in the new Redis", time.Minute, func(ctx context.Context) (bool, error) {
		// ratelimit may exit when Redis fails it: start it again as its
		// Deployment would.
		if e.rl.Exited() {
			rlRestarts++
			if err := e.rl.Restart(ctx); err != nil {
				return false, err
			}
		}
		var err error
		after, err = e.remaining(ctx, req, max)
		if err != nil {
			failed++
		}
		return err == nil, err
	}); err != nil {
		return 0, counterMeasure{}, err
	}
	if !time.Now().Truncate(time.Hour).Equal(hour) {
		return 0, counterMeasure{}, errors.New("the counters' hour window ended during the measurement: run again")
	}
	recovery, err := e.settle(ctx, o, started)
	if err != nil {
		return 0, counterMeasure{}, err
	}
	m := counterMeasure{max: max, before: before, after: after, failed: failed, exits: rlRestarts}
	switch after {
	case max - 1:
		m.reset = true
	case before - 1:
	default:
		return 0, m, fmt.Errorf("counter neither reset nor kept: %d of %d/hour left after %d calls, %d after one more call across the Redis restart",
			before, max, engineHits, after)
	}
	return recovery, m, nil
}

// counterMeasure is what one Redis restart did to app 0's hourly counter.
type counterMeasure struct {
	max, before, after uint32 // the limit, what was left before the restart and after one call past it
	reset              bool   // after is max-1: counting started again from zero
	failed             int    // calls answered with an error before ratelimit counted again
	exits              int    // times ratelimit exited meanwhile
}

// counterNote sums up the Redis restarts for the result.
func counterNote(ms []counterMeasure) string {
	if len(ms) == 0 {
		return ""
	}
	resets, exits := 0, 0
	var failed []string
	for _, m := range ms {
		if m.reset {
			resets++
		}
		exits += m.exits
		failed = append(failed, strconv.Itoa(m.failed))
	}
	m := ms[len(ms)-1]
	return fmt.Sprintf("Redis restarts: counters reset in %d of %d (e.g. %d of %d/hour left before, %d after one more call); "+
		"calls answered with an error before counting again: %s; ratelimit exits: %d",
		resets, len(ms), m.before, m.max, m.after, strings.Join(failed, ", "), exits)
}

// callOf is a call of app i on a route of its overridden group, and the
// override's max (per hour).
func (e *enforcement) callOf(cfg *quotaconfig.Config, i int) (*rlsv3.RateLimitRequest, uint32, error) {
	a := e.h.appQuota(i)
	group := a.Spec.Overrides[0].Group
	doc := cfg.Document()
	for _, g := range doc.Profiles[doc.DefaultProfile].Groups {
		if g.Name != group || len(g.Routes) == 0 {
			continue
		}
		route := g.Routes[0]
		path := fillParams(route.Path, a.Spec.AppID)
		res := cfg.Resolve(a.Spec.AppID, route.Method, path)
		ds := quotaconfig.Descriptors(&res, a.Spec.AppID, route.Method, 1)
		if len(ds) == 0 {
			return nil, 0, fmt.Errorf("%s %s for app %s: no descriptors", route.Method, path, a.Spec.AppID)
		}
		return ratelimit.Request(e.h.opts.RateLimitDomain, ds), uint32(a.Spec.Overrides[0].Limits[0].Max), nil
	}
	return nil, 0, fmt.Errorf("group %s has no route in the stored configuration", group)
}

// fillParams puts the app ID in {app_id} and a value in every other
// parameter of a route template.
func fillParams(template, appID string) string {
	segs := strings.Split(template, "/")
	for i, s := range segs {
		if strings.HasPrefix(s, "{") && strings.HasSuffix(s, "}") {
			segs[i] = "p1"
			if s == "{app_id}" {
				segs[i] = appID
			}
		}
	}
	return strings.Join(segs, "/")
}

// remaining makes one call and returns what is left of the hourly limit of
// max.
func (e *enforcement) remaining(ctx context.Context, req *rlsv3.RateLimitRequest, max uint32) (uint32, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	resp, err := e.rls.ShouldRateLimit(ctx, req)
	if err != nil {
		return 0, fmt.Errorf("ShouldRateLimit: %w", err)
	}
	for _, st := range resp.GetStatuses() {
		if l := st.GetCurrentLimit(); l.GetUnit() == rlsv3.RateLimitResponse_RateLimit_HOUR && l.GetRequestsPerUnit() == max {
			return st.GetLimitRemaining(), nil
		}
	}
	return 0, fmt.Errorf("no status for the %d/hour limit in %v", max, resp)
}

// xdsService is the appquota-xds Service of a cluster on loopback: one
// address in front of both replicas' xDS ports. Only the leader listens
// there, so a connection is forwarded to the first backend that accepts it,
// starting from a different one each time as a Service spreads them.
type xdsService struct {
	addr     string
	backends [2]string
	l        net.Listener
	next     atomic.Int64
	mu       sync.Mutex
	conns    map[net.Conn]bool
}

func newXDSService() (*xdsService, error) {
	s := &xdsService{conns: map[net.Conn]bool{}}
	for i := range s.backends {
		addr, err := supervise.FreeAddr()
		if err != nil {
			return nil, err
		}
		s.backends[i] = addr
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("listen for the xDS service: %w", err)
	}
	s.l, s.addr = l, l.Addr().String()
	go s.serve()
	return s, nil
}

func (s *xdsService) serve() {
	for {
		in, err := s.l.Accept()
		if err != nil {
			return
		}
		go s.forward(in)
	}
}

func (s *xdsService) forward(in net.Conn) {
	start := int(s.next.Add(1))
	var out net.Conn
	for k := range s.backends {
		c, err := net.DialTimeout("tcp", s.backends[(start+k)%len(s.backends)], time.Second)
		if err == nil {
			out = c
			break
		}
	}
	if out == nil {
		_ = in.Close() // as a Service with no ready endpoint: ratelimit dials again
		return
	}
	if !s.track(in, out) {
		return
	}
	done := make(chan struct{}, 2)
	pipe := func(dst, src net.Conn) {
		_, _ = io.Copy(dst, src)
		done <- struct{}{}
	}
	go pipe(out, in)
	go pipe(in, out)
	<-done // either side ending ends both, as a dead backend resets the client's connection
	s.untrack(in, out)
}

func (s *xdsService) track(cs ...net.Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.conns == nil {
		for _, c := range cs {
			_ = c.Close()
		}
		return false
	}
	for _, c := range cs {
		s.conns[c] = true
	}
	return true
}

func (s *xdsService) untrack(cs ...net.Conn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, c := range cs {
		_ = c.Close()
		delete(s.conns, c)
	}
}

func (s *xdsService) close() {
	_ = s.l.Close()
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.conns {
		_ = c.Close()
	}
	s.conns = nil
}
