package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"runtime"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	rlsconfv3 "github.com/envoyproxy/go-control-plane/ratelimit/config/ratelimit/v3"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/appquota/appquota/internal/engine"
	"github.com/appquota/appquota/internal/ratelimit"
	qc "github.com/appquota/appquota/pkg/quotaconfig"
)

// rlConcurrency is how many calls the throughput and exactness runs keep in
// flight.
const rlConcurrency = 16

// exactExtra is how many calls over the limit the exactness run makes.
const exactExtra = 100

// The ShouldRateLimit rows' notes.
const (
	noteRLExact = "Exactness: one app's override limit (L requests an hour) asked for L+100 times at once, 16 calls in " +
		"flight, round robin across the two instances sharing one Redis: exactly L answers OK, or the bench " +
		"fails."
)

// rlCall is one gateway request and what its answer must say.
type rlCall struct {
	req *rlsv3.RateLimitRequest
	app int
	// hour is the index of the descriptor of the app's override (requests
	// an hour), -1 if none.
	hour int
}

// rlCalls are the requests of count calls of bench apps from, from+1, ...
// (modulo the apps): each to a route of the group its override is in, with
// the app-scoped descriptors the gateway sends for it.
func (b *bench) rlCalls(doc *qc.Document, from, count int) ([]rlCall, error) {
	compiled, err := qc.Compile(doc)
	if err != nil {
		return nil, err
	}
	groups := map[string][]qc.Route{}
	for _, g := range doc.Profiles[b.opts.DefaultProfile].Groups {
		groups[g.Name] = g.Routes
	}
	chosen := map[string]qc.Route{}
	n := len(doc.Apps)
	out := make([]rlCall, 0, count)
	for k := range count {
		i := (from + k) % n
		id, g := appID(i), b.groups[i%len(b.groups)]
		rt, ok := chosen[g]
		var res qc.Result
		if ok {
			res = compiled.Resolve(id, rt.Method, fillPath(rt.Path, id))
		}
		for _, r := range groups[g] {
			if ok {
				break
			}
			if res = compiled.Resolve(id, r.Method, fillPath(r.Path, id)); res.Group == g {
				rt, ok, chosen[g] = r, true, r
			}
		}
		if !ok || res.Group != g {
			return nil, fmt.Errorf("no route of group %s resolves to it", g)
		}
		var keep []qc.Descriptor
		for _, d := range qc.Descriptors(&res, id, rt.Method, 1) {
			if len(d.Entries) == 4 { // profile, group, limit, app
				keep = append(keep, d)
			}
		}
		c := rlCall{app: i, hour: -1}
		for j, d := range keep {
			if d.Entries[2].Value == "requests-hour" {
				c.hour = j
			}
		}
		c.req = ratelimit.Request(b.opts.RateLimitDomain, keep)
		out = append(out, c)
	}
	return out, nil
}

// fillPath is a path of template: {app_id} is id, every other parameter u1.
func fillPath(template, id string) string {
	segs := strings.Split(template, "/")
	for i, s := range segs {
		switch {
		case s == "{app_id}":
			segs[i] = id
		case strings.HasPrefix(s, "{"):
			segs[i] = "u1"
		}
	}
	return strings.Join(segs, "/")
}

// check asserts an answer: OK, each descriptor matched a limit, the app's
// override its own with the full configuration, the one rule's otherwise.
func (c rlCall) check(resp *rlsv3.RateLimitResponse, full bool) error {
	if resp.GetOverallCode() != rlsv3.RateLimitResponse_OK {
		return fmt.Errorf("app %s: %v, want OK", appID(c.app), resp.GetOverallCode())
	}
	if len(resp.GetStatuses()) != len(c.req.GetDescriptors()) {
		return fmt.Errorf("app %s: %d statuses for %d descriptors", appID(c.app), len(resp.GetStatuses()), len(c.req.GetDescriptors()))
	}
	for j, st := range resp.GetStatuses() {
		got := st.GetCurrentLimit().GetRequestsPerUnit()
		switch {
		case st.GetCurrentLimit() == nil:
			return fmt.Errorf("app %s: descriptor %d matched no limit", appID(c.app), j)
		case full && j == c.hour && got != uint32(1000+c.app):
			return fmt.Errorf("app %s: its override matched a limit of %d, want %d", appID(c.app), got, 1000+c.app)
		case !full && got != oneRuleMax:
			return fmt.Errorf("app %s: descriptor %d matched a limit of %d, want the one rule's", appID(c.app), j, got)
		}
	}
	return nil
}

func dialRatelimit(rl *engine.Ratelimit) (rlsv3.RateLimitServiceClient, func(), error) {
	conn, err := grpc.NewClient(rl.GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, nil, err
	}
	return rlsv3.NewRateLimitServiceClient(conn), func() { _ = conn.Close() }, nil
}

// shouldRateLimit measures ShouldRateLimit's latency with the full
// configuration (full, of doc) and with one rule (one) on instance rl, then
// throughput with one and two instances, and asserts the counters exact
// across two.
func (b *bench) shouldRateLimit(ctx context.Context, rep *Report, procs *engineProcs, f *feed, rl *engine.Ratelimit,
	doc *qc.Document, full, one *rlsconfv3.RateLimitConfig) error {
	n := len(doc.Apps)
	calls := cmp.Or(b.cfg.EngineCalls, 200)
	perRound := max(calls/2, 1)
	const warmUp = 50
	fmt.Fprintf(b.log, "ShouldRateLimit: %d calls with each configuration, %d apps\n", 2*perRound, n)
	reqs, err := b.rlCalls(doc, 0, 4*perRound+4*warmUp)
	if err != nil {
		return err
	}
	client, closeConn, err := dialRatelimit(rl)
	if err != nil {
		return err
	}
	defer closeConn()
	var fullLat, oneLat []time.Duration
	for round := range 4 {
		isFull := round%2 == 0
		cfg := one
		if isFull {
			cfg = full
		}
		if _, err := f.publish(ctx, cfg, 1); err != nil {
			return err
		}
		// Each round its own apps, so that no counter is near its limit.
		mine := reqs[round*perRound : (round+1)*perRound]
		for _, c := range reqs[4*perRound+round*warmUp:][:warmUp] {
			if _, err := client.ShouldRateLimit(ctx, c.req); err != nil {
				return fmt.Errorf("ShouldRateLimit (warm-up): %w", err)
			}
		}
		for _, c := range mine {
			start := time.Now()
			resp, err := client.ShouldRateLimit(ctx, c.req)
			d := time.Since(start)
			if err != nil {
				return fmt.Errorf("ShouldRateLimit: %w", err)
			}
			if err := c.check(resp, isFull); err != nil {
				return fmt.Errorf("ShouldRateLimit with the %s configuration: %w", map[bool]string{true: "full", false: "one-rule"}[isFull], err)
			}
			if isFull {
				fullLat = append(fullLat, d)
			} else {
				oneLat = append(oneLat, d)
			}
		}
	}
	noteRLLatency := fmt.Sprintf("ShouldRateLimit: one call at a time from the bench to one ratelimit instance (no local cache: every "+
		"decision counts in Redis), %d calls with each configuration: the gateway's request "+
		"(quotaconfig.Descriptors, its app-scoped descriptors, each its own counter) for a call of a bench "+
		"app to a route of the group its override is in, a different app each call; with the full "+
		"configuration of that many apps, then with a configuration of one rule that every such descriptor "+
		"matches, on the same instance and Redis, in four alternating rounds after %d calls of warm-up each. "+
		"Every answer asserted OK with each descriptor matched: with the full configuration, the app's "+
		"override its own limit. Run after the manager and the control plane stopped. Ratio: in brackets its "+
		"95%% bootstrap interval.", 2*perRound, warmUp)
	f50, f99, o50, o99 := quantile(fullLat, 0.5), quantile(fullLat, 0.99), quantile(oneLat, 0.5), quantile(oneLat, 0.99)
	ratio := over(f99, o99)
	label := fmt.Sprintf("ShouldRateLimit, %d-app configuration", n)
	rep.add(
		Row{Name: label + ", p50", Notes: []string{noteRLLatency}, Measured: us(f50), Baseline: "one rule " + us(o50),
			Ratio: fmt.Sprintf("%.2fx", over(f50, o50))},
		Row{Name: label + ", p99", Notes: []string{noteRLLatency}, Measured: us(f99), Baseline: "one rule " + us(o99),
			Ratio: ratioWithInterval(ratio, fullLat, oneLat), Target: "≤ 1.2x", Met: met(ratio <= 1.2)},
	)

	// Throughput: the full configuration, one instance, then two sharing Redis.
	if _, err := f.publish(ctx, full, 1); err != nil {
		return err
	}
	// Started without a domain to wait for: its readiness probe would read
	// /rlconfig, which takes longer than the probe allows with 100,000 apps.
	// It serves once it has loaded a configuration, and the feed serves the
	// full one alone; the feed then says both run it.
	rl2, err := procs.ratelimit(ctx, f.addr, "bench-2", "")
	if err != nil {
		return err
	}
	if err := f.waitAcked(ctx, 2); err != nil {
		return err
	}
	client2, closeConn2, err := dialRatelimit(rl2)
	if err != nil {
		return err
	}
	defer closeConn2()
	loadReqs, err := b.rlCalls(doc, 0, min(n, 20_000))
	if err != nil {
		return err
	}
	duration := cmp.Or(b.cfg.EngineLoad, time.Second)
	fmt.Fprintf(b.log, "ShouldRateLimit throughput: %s with one instance, then two\n", duration)
	var rates [2]float64
	for i, clients := range [][]rlsv3.RateLimitServiceClient{{client}, {client, client2}} {
		if err := procs.redis.FlushAll(ctx); err != nil {
			return err
		}
		rate, overLimit, err := throughput(ctx, clients, loadReqs, duration)
		if err != nil {
			return err
		}
		rates[i] = rate
		if overLimit > 0 {
			rep.Notes = append(rep.Notes, fmt.Sprintf("ShouldRateLimit throughput with %d instance(s): %d answers were OVER_LIMIT "+
				"(an app called again within a limit's window: %d apps for the run).", i+1, overLimit, len(loadReqs)))
		}
	}
	noteThroughput := fmt.Sprintf("Throughput: %d calls in flight for %s, the gateway's requests with the full configuration of %d apps"+
		" (a different app each call, %d in turn), against one instance, then round robin against two "+
		"instances sharing one Redis (counters emptied before each); the bench, ratelimit and redis-server on"+
		" the same %d cores.",
		rlConcurrency, duration, n, len(loadReqs), runtime.NumCPU())
	rep.add(
		Row{Name: "ShouldRateLimit throughput, one instance", Notes: []string{noteThroughput}, Measured: fmt.Sprintf("%.0f calls/s", rates[0])},
		Row{Name: "ShouldRateLimit throughput, two instances", Notes: []string{noteThroughput}, Measured: fmt.Sprintf("%.0f calls/s", rates[1]),
			Baseline: fmt.Sprintf("one instance %.0f calls/s", rates[0]), Ratio: fmt.Sprintf("%.2fx", rates[1]/rates[0])},
	)
	return exactAcrossInstances(ctx, rep, procs.redis, []rlsv3.RateLimitServiceClient{client, client2}, reqs[0])
}

// throughput keeps rlConcurrency calls in flight for d, round robin over
// clients and reqs, and returns the calls answered per second and how many
// of them were OVER_LIMIT.
func throughput(ctx context.Context, clients []rlsv3.RateLimitServiceClient, reqs []rlCall, d time.Duration) (float64, int64, error) {
	var next, overLimit atomic.Int64
	start := time.Now()
	deadline := start.Add(d)
	var g errgroup.Group
	for range rlConcurrency {
		g.Go(func() error {
			for time.Now().Before(deadline) {
				k := next.Add(1) - 1
				resp, err := clients[k%int64(len(clients))].ShouldRateLimit(ctx, reqs[k%int64(len(reqs))].req)
				if err != nil {
					return fmt.Errorf("ShouldRateLimit under load: %w", err)
				}
				if resp.GetOverallCode() == rlsv3.RateLimitResponse_OVER_LIMIT {
					overLimit.Add(1)
				}
			}
			return nil
		})
	}
	err := g.Wait()
	return float64(next.Load()) / time.Since(start).Seconds(), overLimit.Load(), err
}

// exactAcrossInstances asks for the override of c's app, limit L an hour,
// L+exactExtra times at once across clients, and fails unless exactly L are
// allowed. A run that crosses an hour boundary proves nothing: it is run again.
func exactAcrossInstances(ctx context.Context, rep *Report, redis *engine.Redis, clients []rlsv3.RateLimitServiceClient, c rlCall) error {
	if c.hour < 0 {
		return errors.New("exactness: the call has no override descriptor")
	}
	req := &rlsv3.RateLimitRequest{Domain: c.req.GetDomain(), Descriptors: c.req.GetDescriptors()[c.hour : c.hour+1]}
	limit := 1000 + c.app
	total := limit + exactExtra
	for attempt := 1; attempt <= 3; attempt++ {
		if err := redis.FlushAll(ctx); err != nil {
			return err
		}
		hour := time.Now().Unix() / 3600
		var next, ok, overLimit atomic.Int64
		var g errgroup.Group
		for range rlConcurrency {
			g.Go(func() error {
				for k := next.Add(1) - 1; k < int64(total); k = next.Add(1) - 1 {
					resp, err := clients[k%int64(len(clients))].ShouldRateLimit(ctx, req)
					if err != nil {
						return fmt.Errorf("exactness: %w", err)
					}
					switch resp.GetOverallCode() {
					case rlsv3.RateLimitResponse_OK:
						ok.Add(1)
					case rlsv3.RateLimitResponse_OVER_LIMIT:
						overLimit.Add(1)
					}
				}
				return nil
			})
		}
		if err := g.Wait(); err != nil {
			return err
		}
		if time.Now().Unix()/3600 != hour {
			continue
		}
		exact := ok.Load() == int64(limit) && overLimit.Load() == exactExtra
		rep.add(Row{Name: "Counters exact across two instances", Notes: []string{noteRLExact},
			Measured: fmt.Sprintf("%d of %d calls allowed", ok.Load(), total), Baseline: fmt.Sprintf("limit %d", limit),
			Target: "exactly the limit", Met: met(exact)})
		if !exact {
			return fmt.Errorf("exactness: %d calls allowed and %d refused across two instances, want %d and %d",
				ok.Load(), overLimit.Load(), limit, exactExtra)
		}
		return nil
	}
	return errors.New("exactness: three runs each crossed an hour boundary")
}

// ratioWithInterval formats ratio, of the p99s of num and den, with its 95%
// bootstrap interval: the ratio over 2,000 resamples of both sides, with
// replacement, as the other rows' intervals (stats.go) are drawn.
func ratioWithInterval(ratio float64, num, den []time.Duration) string {
	const resamples = 2000
	rng := rand.New(rand.NewPCG(1, 2))
	draw := func(from []time.Duration) []time.Duration {
		to := make([]time.Duration, len(from))
		for i := range to {
			to[i] = from[rng.IntN(len(from))]
		}
		return to
	}
	ratios := make([]float64, resamples)
	for i := range ratios {
		ratios[i] = over(quantile(draw(num), 0.99), quantile(draw(den), 0.99))
	}
	slices.Sort(ratios)
	return fmt.Sprintf("%.2fx (%.2f-%.2fx)", ratio, ratios[resamples*25/1000], ratios[resamples*975/1000-1])
}

// us formats a duration in microseconds under 10 ms.
func us(d time.Duration) string {
	if d < 10*time.Millisecond {
		return fmt.Sprintf("%.0f µs", float64(d.Nanoseconds())/1e3)
	}
	return ms(d)
}
