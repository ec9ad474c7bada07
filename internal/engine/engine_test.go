package engine_test

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	rlcommon "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
	discoverygrpc "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	rlpb "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	rlconf "github.com/envoyproxy/go-control-plane/ratelimit/config/ratelimit/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/appquota/appquota/internal/engine"
)

// ratelimitBin and redisBin return the binaries' paths, building or
// installing them when the environment does not name them. A test that
// cannot get them fails: skipping would let a broken setup pass as green.
func ratelimitBin(t *testing.T) string {
	t.Helper()
	bin, err := engine.RatelimitBinary()
	if err != nil {
		t.Fatalf("get ratelimit (set RATELIMIT_BIN, or let hack/setup-ratelimit.sh build it): %v", err)
	}
	return bin
}

func redisBin(t *testing.T) string {
	t.Helper()
	bin, err := engine.RedisBinary()
	if err != nil {
		t.Fatalf("get redis-server (set REDIS_SERVER, or let hack/setup-redis.sh install it): %v", err)
	}
	return bin
}

func startRedis(ctx context.Context, t *testing.T, bin string) *engine.Redis {
	t.Helper()
	r, err := engine.StartRedis(ctx, engine.RedisOptions{Bin: bin})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("the end of redis-server's log:\n%s", r.Log())
		}
		if err := r.Stop(); err != nil {
			t.Errorf("stop redis-server: %v", err)
		}
	})
	return r
}

func startRatelimit(ctx context.Context, t *testing.T, opts engine.RatelimitOptions) (*engine.Ratelimit, rlpb.RateLimitServiceClient) {
	t.Helper()
	rl, err := engine.StartRatelimit(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("the end of ratelimit's log:\n%s", rl.Log())
		}
		if err := rl.Stop(); err != nil {
			t.Errorf("stop ratelimit: %v", err)
		}
	})
	conn, err := grpc.NewClient(rl.GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return rl, rlpb.NewRateLimitServiceClient(conn)
}

// descriptorKey is the descriptor key the tests' configurations limit.
const descriptorKey = "k"

// decide asks about one descriptor {descriptorKey: value} in domain and
// returns the overall code and the limit's remaining count.
func decide(ctx context.Context, c rlpb.RateLimitServiceClient, domain, value string) (rlpb.RateLimitResponse_Code, uint32, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	resp, err := c.ShouldRateLimit(ctx, &rlpb.RateLimitRequest{
		Domain:      domain,
		Descriptors: []*rlcommon.RateLimitDescriptor{{Entries: []*rlcommon.RateLimitDescriptor_Entry{{Key: descriptorKey, Value: value}}}},
	})
	if err != nil {
		return 0, 0, err
	}
	if len(resp.Statuses) != 1 {
		return 0, 0, fmt.Errorf("%d statuses for 1 descriptor", len(resp.Statuses))
	}
	return resp.OverallCode, resp.Statuses[0].LimitRemaining, nil
}

// expectCalls makes one call per entry of want and checks each answer.
func expectCalls(ctx context.Context, c rlpb.RateLimitServiceClient, domain, value string, want ...rlpb.RateLimitResponse_Code) error {
	for i, w := range want {
		code, remaining, err := decide(ctx, c, domain, value)
		if err != nil {
			return fmt.Errorf("call %d: %w", i+1, err)
		}
		if code != w {
			return fmt.Errorf("call %d: %v (remaining %d), want %v", i+1, code, remaining, w)
		}
	}
	return nil
}

// inOneWindow runs scenario, whose assertions hold only if all its calls fall
// in one fixed one-minute window of ratelimit's, until a run stays within one
// window: a run that crosses a boundary proves nothing either way. Each run
// gets its own descriptor value, so one run's counts are not another's.
func inOneWindow(t *testing.T, scenario func(value string) error) {
	t.Helper()
	window := func() int64 { return time.Now().Unix() / 60 }
	for attempt := 1; attempt <= 3; attempt++ {
		start := window()
		err := scenario(fmt.Sprintf("v%d", attempt))
		if window() == start {
			if err != nil {
				t.Fatal(err)
			}
			return
		}
		t.Logf("run %d crossed a minute boundary (%v); running it again", attempt, err)
	}
	t.Fatal("three runs each crossed a minute boundary")
}

const fileConfig = `domain: test
descriptors:
  - key: ` + descriptorKey + `
    rate_limit:
      unit: minute
      requests_per_unit: 2
`

// TestRatelimitCountsInRedis: the real ratelimit, configured from a file,
// allows the first two calls a minute and refuses the third; the counts live
// in the real redis-server (a ratelimit crash keeps them, a Redis restart
// empties them).
func TestRatelimitCountsInRedis(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	rlBin := ratelimitBin(t)
	redis := startRedis(ctx, t, redisBin(t))

	dir := filepath.Join(t.TempDir(), "config")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "test.yaml"), []byte(fileConfig), 0o644); err != nil {
		t.Fatal(err)
	}
	rl, client := startRatelimit(ctx, t, engine.RatelimitOptions{Bin: rlBin, RedisAddr: redis.Addr(), FileConfigDir: dir, Domain: "test"})

	if keys, err := redis.Do(ctx, "DBSIZE"); err != nil || keys != "0" {
		t.Fatalf("before any call Redis holds %q keys (%v), want 0: the readiness probe must count nothing", keys, err)
	}

	inOneWindow(t, func(v string) error {
		if err := redis.FlushAll(ctx); err != nil {
			return err
		}
		if err := expectCalls(ctx, client, "test", v, rlpb.RateLimitResponse_OK, rlpb.RateLimitResponse_OK, rlpb.RateLimitResponse_OVER_LIMIT); err != nil {
			return fmt.Errorf("2 per minute: %w", err)
		}
		if keys, err := redis.Do(ctx, "DBSIZE"); err != nil || keys != "1" {
			return fmt.Errorf("after the calls Redis holds %q keys (%v), want 1, the counter", keys, err)
		}

		// A crashed ratelimit comes back to the same count: it keeps none of its own.
		if err := rl.Kill(); err != nil {
			return err
		}
		if err := rl.Restart(ctx); err != nil {
			return err
		}
		if err := expectCalls(ctx, client, "test", v, rlpb.RateLimitResponse_OVER_LIMIT); err != nil {
			return fmt.Errorf("after ratelimit's restart: %w", err)
		}

		// A Redis restart loses every count.
		if err := redis.Restart(ctx); err != nil {
			return err
		}
		if keys, err := redis.Do(ctx, "DBSIZE"); err != nil || keys != "0" {
			return fmt.Errorf("after its restart Redis holds %q keys (%v), want 0", keys, err)
		}
		// ratelimit's pooled connections (REDIS_POOL_SIZE, 10) died with the old
		// redis-server, and each fails one call before it is replaced. Calls on
		// another counter use them up; a failed call counts nothing.
		failed, succeeded := 0, 0
		var last error
		err := wait.PollUntilContextTimeout(ctx, 10*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
			if _, _, last = decide(ctx, client, "test", v+"-warm-up"); last != nil {
				failed, succeeded = failed+1, 0
			} else {
				succeeded++
			}
			return succeeded == 20, nil
		})
		if err != nil {
			return fmt.Errorf("ratelimit did not answer 20 calls in a row after Redis's restart: %w; last: %w", err, last)
		}
		t.Logf("after Redis's restart, %d calls failed before 20 in a row succeeded", failed)
		code, remaining, err := decide(ctx, client, "test", v)
		if err != nil {
			return fmt.Errorf("first call after Redis's restart: %w", err)
		}
		if code != rlpb.RateLimitResponse_OK || remaining != 1 {
			return fmt.Errorf("first call after Redis's restart: %v with %d remaining, want OK with 1: the count was not reset", code, remaining)
		}
		return expectCalls(ctx, client, "test", v, rlpb.RateLimitResponse_OK, rlpb.RateLimitResponse_OVER_LIMIT)
	})
}

// TestRatelimitFromXDS: ratelimit takes its configuration from an xDS server
// (go-control-plane's, as the operator's will be) for the node it names, and
// applies a new snapshot without a restart.
func TestRatelimitFromXDS(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	rlBin := ratelimitBin(t)
	redis := startRedis(ctx, t, redisBin(t))

	const node = "engine-test"
	snapshots := cachev3.NewSnapshotCache(true, cachev3.IDHash{}, nil)
	setLimit := func(version string, perMinute uint32) {
		t.Helper()
		snap, err := cachev3.NewSnapshot(version, map[resource.Type][]types.Resource{
			resource.RateLimitConfigType: {&rlconf.RateLimitConfig{
				Name:   "xds",
				Domain: "xds",
				Descriptors: []*rlconf.RateLimitDescriptor{{
					Key:       descriptorKey,
					RateLimit: &rlconf.RateLimitPolicy{Unit: rlconf.RateLimitUnit_MINUTE, RequestsPerUnit: perMinute},
				}},
			}},
		})
		if err != nil {
			t.Fatal(err)
		}
		if err := snapshots.SetSnapshot(ctx, node, snap); err != nil {
			t.Fatal(err)
		}
	}
	setLimit("1", 1)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	discoverygrpc.RegisterAggregatedDiscoveryServiceServer(srv, serverv3.NewServer(ctx, snapshots, nil))
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)

	rl, client := startRatelimit(ctx, t, engine.RatelimitOptions{
		Bin: rlBin, RedisAddr: redis.Addr(), XDSAddr: lis.Addr().String(), NodeID: node, Domain: "xds", MaxMsgBytes: 64 << 20,
	})

	inOneWindow(t, func(v string) error {
		return expectCalls(ctx, client, "xds", v+"-1", rlpb.RateLimitResponse_OK, rlpb.RateLimitResponse_OVER_LIMIT)
	})

	setLimit("2", 3)
	var config string
	if err := wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		config, err = rl.LoadedConfig(ctx)
		return err == nil && strings.Contains(config, "requests_per_unit=3"), nil
	}); err != nil {
		t.Fatalf("ratelimit did not load the second snapshot: %v; it has:\n%s", err, config)
	}
	inOneWindow(t, func(v string) error {
		return expectCalls(ctx, client, "xds", v+"-3", rlpb.RateLimitResponse_OK, rlpb.RateLimitResponse_OK, rlpb.RateLimitResponse_OK, rlpb.RateLimitResponse_OVER_LIMIT)
	})
}

// TestStartRatelimitReportsAConfigItCannotLoad: a configuration ratelimit
// rejects ends the wait with ratelimit's own words, not a bare timeout.
func TestStartRatelimitReportsAConfigItCannotLoad(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	rlBin := ratelimitBin(t)
	redis := startRedis(ctx, t, redisBin(t))
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "bad.yaml"), []byte("domain: test\ndescriptors:\n  - key: k\n    rate_limit: {unit: fortnight, requests_per_unit: 2}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	rl, err := engine.StartRatelimit(ctx, engine.RatelimitOptions{Bin: rlBin, RedisAddr: redis.Addr(), FileConfigDir: dir, ReadyTimeout: 5 * time.Second})
	if err == nil {
		_ = rl.Stop()
		t.Fatal("StartRatelimit succeeded with a unit ratelimit does not know")
	}
	for _, want := range []string{"ratelimit must answer ShouldRateLimit", "no rate limit configuration loaded", "fortnight"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("the error lacks %q:\n%v", want, err)
		}
	}
}

// TestRedisDo: the small RESP client reads each kind of reply it claims to.
func TestRedisDo(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	redis := startRedis(ctx, t, redisBin(t))
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"SET", "a", "x y\r\nz"}, "OK"},
		{[]string{"GET", "a"}, "x y\r\nz"},
		{[]string{"GET", "missing"}, ""},
		{[]string{"INCR", "n"}, "1"},
		{[]string{"DBSIZE"}, "2"},
	} {
		if got, err := redis.Do(ctx, tc.args...); err != nil || got != tc.want {
			t.Errorf("%q = %q, %v; want %q", tc.args, got, err, tc.want)
		}
	}
	if _, err := redis.Do(ctx, "INCR", "a"); err == nil || !strings.Contains(err.Error(), "not an integer") {
		t.Errorf("INCR of a string: %v, want Redis's error", err)
	}
	if err := redis.FlushAll(ctx); err != nil {
		t.Fatal(err)
	}
	if got, err := redis.Do(ctx, "DBSIZE"); err != nil || got != "0" {
		t.Errorf("DBSIZE after FlushAll = %q, %v; want 0", got, err)
	}
	if _, err := redis.Do(ctx, "KEYS", "*"); err == nil || !strings.Contains(err.Error(), "unsupported reply") {
		t.Errorf("an array reply: %v, want it refused", err)
	}
}
