// Package enforcement_test runs the whole enforcement path for real: the
// operator on a local control plane serves its configuration over xDS to
// envoyproxy/ratelimit (built from the module proxy), which counts in a real
// redis-server; the tests send ShouldRateLimit with the descriptors the
// rendered Envoy actions produce and assert the exact call the engine refuses.
package enforcement_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/encoding/protojson"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"sigs.k8s.io/controller-runtime/pkg/client"

	quotav1 "github.com/appquota/appquota/api/v1alpha1"
	"github.com/appquota/appquota/internal/cli"
	"github.com/appquota/appquota/internal/engine"
	"github.com/appquota/appquota/internal/localcluster"
	"github.com/appquota/appquota/internal/manifest"
	"github.com/appquota/appquota/internal/operatortest"
	"github.com/appquota/appquota/internal/ratelimit"
	"github.com/appquota/appquota/internal/supervise"
	"github.com/appquota/appquota/internal/wiring"
	"github.com/appquota/appquota/pkg/quotaconfig"
)

const namespace = "tenants"

var (
	cluster *localcluster.Cluster
	cl      client.Client
	opts    = wiring.DefaultOptions()
	rl      *engine.Ratelimit
	rlsConn rlsv3.RateLimitServiceClient
	// redisAddr is the redis-server every ratelimit of the tests counts in.
	redisAddr string
	// stopOperator stops the operator running now (TestFailover replaces it).
	stopOperator func()
)

func TestMain(m *testing.M) { os.Exit(run(m)) }

// run starts the control plane and the operator with its xDS server, applies
// the default catalog, then starts redis-server and ratelimit fed by the
// operator, and runs the tests.
func run(m *testing.M) int {
	fail := func(err error) int {
		fmt.Fprintln(os.Stderr, "enforcement:", err)
		return 1
	}
	ctx := context.Background()
	c, err := operatortest.StartCluster(localcluster.Options{})
	if err != nil {
		return fail(err)
	}
	defer func() { _ = c.Stop() }()
	cluster = c
	if cl, err = c.Client(); err != nil {
		return fail(err)
	}
	xdsAddr, err := supervise.FreeAddr()
	if err != nil {
		return fail(err)
	}
	opts.XDSBindAddress = xdsAddr
	// Single changes go out at once; the tests make one at a time.
	opts.MinWriteInterval = 100 * time.Millisecond
	if stopOperator, err = operatortest.Run(ctx, c, opts); err != nil {
		return fail(err)
	}
	defer func() { stopOperator() }()
	if err := applyCatalog(ctx); err != nil {
		return fail(err)
	}

	redisBin, err := engine.RedisBinary()
	if err != nil {
		return fail(err)
	}
	rlBin, err := engine.RatelimitBinary()
	if err != nil {
		return fail(err)
	}
	redis, err := engine.StartRedis(ctx, engine.RedisOptions{Bin: redisBin})
	if err != nil {
		return fail(err)
	}
	defer func() { _ = redis.Stop() }()
	redisAddr = redis.Addr()
	// Domain: StartRatelimit returns once ratelimit loaded the operator's
	// configuration.
	rl, err = engine.StartRatelimit(ctx, engine.RatelimitOptions{Bin: rlBin, RedisAddr: redis.Addr(), XDSAddr: xdsAddr,
		NodeID: "enforcement-test", Domain: opts.RateLimitDomain})
	if err != nil {
		return fail(err)
	}
	defer func() { _ = rl.Stop() }()
	conn, err := grpc.NewClient(rl.GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return fail(err)
	}
	defer conn.Close()
	rlsConn = rlsv3.NewRateLimitServiceClient(conn)
	return m.Run()
}

// applyCatalog creates the tenants namespace and the default QuotaProfile of
// config/samples.
func applyCatalog(ctx context.Context) error {
	if err := cluster.CreateNamespaces(ctx, namespace); err != nil {
		return err
	}
	objs, err := manifest.ReadFiles("../../config/catalog/default.yaml")
	if err != nil {
		return err
	}
	for i := range objs.QuotaProfiles {
		if err := cl.Create(ctx, &objs.QuotaProfiles[i]); err != nil {
			return fmt.Errorf("create QuotaProfile %s: %w", objs.QuotaProfiles[i].Name, err)
		}
	}
	return nil
}

// call is one API call as a gateway sees it.
type call struct {
	app, method, path string
	// cost is the call's number of targets (Messages limits); 0 means 1.
	cost uint64
}

// liveConfig is the configuration the operator wrote, as a gateway loads it.
func liveConfig(t *testing.T) *quotaconfig.Config {
	t.Helper()
	doc, err := quotaconfig.LoadConfigMaps(opts.ConfigMapName, func(name string) (map[string]string, map[string][]byte, error) {
		var cm corev1.ConfigMap
		if err := cl.Get(context.Background(), types.NamespacedName{Namespace: opts.Namespace, Name: name}, &cm); err != nil {
			return nil, nil, err
		}
		return cm.Data, cm.BinaryData, nil
	})
	if err != nil {
		t.Fatalf("load the configuration: %v", err)
	}
	cfg, err := quotaconfig.Compile(doc)
	if err != nil {
		t.Fatalf("compile the configuration: %v", err)
	}
	return cfg
}

// request is what an Envoy gateway with the rendered route actions sends
// ratelimit for c.
func request(t *testing.T, cfg *quotaconfig.Config, c call) *rlsv3.RateLimitRequest {
	t.Helper()
	res := cfg.Resolve(c.app, c.method, c.path)
	cost := c.cost
	if cost == 0 {
		cost = 1
	}
	ds := quotaconfig.Descriptors(&res, c.app, c.method, cost)
	if len(ds) == 0 {
		t.Fatalf("%s %s for app %s: no descriptors (%+v)", c.method, c.path, c.app, res)
	}
	return ratelimit.Request(opts.RateLimitDomain, ds)
}

// firstRefused makes n calls and returns the 1-based number of the first
// the engine answers OVER_LIMIT, 0 when none. The calls are spread over no
// window boundary: withinWindow has waited for room.
func firstRefused(t *testing.T, cfg *quotaconfig.Config, c call, n int) int {
	t.Helper()
	req := request(t, cfg, c)
	for i := 1; i <= n; i++ {
		resp, err := rlsConn.ShouldRateLimit(context.Background(), req)
		if err != nil {
			t.Fatalf("ShouldRateLimit (call %d): %v", i, err)
		}
		if resp.GetOverallCode() == rlsv3.RateLimitResponse_OVER_LIMIT {
			return i
		}
	}
	return 0
}

// withinWindow waits, when less than need is left of the current window of
// length d (aligned to the Unix epoch, as ratelimit's are), for the next one
// to begin: the calls that follow then count in one window. need = d always
// waits for the next window.
func withinWindow(d, need time.Duration) {
	now := time.Now()
	if left := now.Truncate(d).Add(d).Sub(now); left < need {
		time.Sleep(left + 10*time.Millisecond) // waiting for the clock itself
	}
}

// expectRefused asserts that, in one window of length d, calls 1..want-1 of c
// pass and call want is refused (want 1: the first already is). A window of a
// second is a fresh one, since tests count an app's calls again after a
// change; longer windows are only counted once per app, from a fresh
// counter, and only need room for the calls.
func expectRefused(t *testing.T, cfg *quotaconfig.Config, d time.Duration, c call, want int) {
	t.Helper()
	if d <= time.Second {
		withinWindow(d, d) // waits for the next window to begin
	} else {
		withinWindow(d, 700*time.Millisecond)
	}
	if got := firstRefused(t, cfg, c, want+5); got != want {
		t.Errorf("%s %s for app %s (cost %d): first refused call %d, want %d", c.method, c.path, c.app, c.cost, got, want)
	}
}

// createAppQuota creates an AppQuota and waits until it is Enforced for its
// generation.
func createAppQuota(t *testing.T, name, appID string, overrides ...quotav1.Override) {
	t.Helper()
	a := &quotav1.AppQuota{ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name},
		Spec: quotav1.AppQuotaSpec{AppID: appID, Profile: "default", Overrides: overrides}}
	if err := cl.Create(context.Background(), a); err != nil {
		t.Fatalf("create AppQuota %s: %v", name, err)
	}
	waitEnforced(t, name, func(*quotav1.AppQuota) bool { return true })
}

// waitEnforced waits until AppQuota name is Enforced for its current
// generation and also satisfies more.
func waitEnforced(t *testing.T, name string, more func(*quotav1.AppQuota) bool) {
	t.Helper()
	var a quotav1.AppQuota
	err := wait.PollUntilContextTimeout(context.Background(), 50*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		if err := cl.Get(ctx, types.NamespacedName{Namespace: namespace, Name: name}, &a); err != nil {
			return false, err
		}
		c := meta.FindStatusCondition(a.Status.Conditions, quotav1.ConditionEnforced)
		return c != nil && c.Status == metav1.ConditionTrue && c.ObservedGeneration == a.Generation && more(&a), nil
	})
	if err != nil {
		t.Fatalf("AppQuota %s not Enforced: %v; conditions %+v", name, err, a.Status.Conditions)
	}
}

// requests is an override's limit on calls per app.
func requests(window quotav1.LimitWindow, max int64) quotav1.OverrideLimit {
	return quotav1.OverrideLimit{Unit: quotav1.UnitRequests, Window: window, Scope: quotav1.ScopeApp, Max: max}
}

// TestCatalogRows: the default profile's special rules, for apps without an
// AppQuota, each at its exact call.
func TestCatalogRows(t *testing.T) {
	cfg := liveConfig(t)
	t.Run("a default group: 100 calls/s", func(t *testing.T) {
		expectRefused(t, cfg, time.Second, call{app: "4000000001", method: "POST", path: "/app-id/4000000001/messages/recall"}, 101)
	})
	t.Run("broadcast: 1/min", func(t *testing.T) {
		expectRefused(t, cfg, time.Minute, call{app: "4000000002", method: "POST", path: "/app-id/4000000002/messages/users/broadcast"}, 2)
	})
	t.Run("delete conversation: 5/min per user, another user unaffected", func(t *testing.T) {
		withinWindow(time.Minute, 2*time.Second)
		alice := call{app: "4000000003", method: "DELETE", path: "/app-id/4000000003/users/alice/user_channel"}
		bob := call{app: "4000000003", method: "DELETE", path: "/app-id/4000000003/users/bob/user_channel"}
		if got := firstRefused(t, cfg, alice, 10); got != 6 {
			t.Errorf("alice: first refused call %d, want 6", got)
		}
		if got := firstRefused(t, cfg, bob, 5); got != 0 {
			t.Errorf("bob after alice was refused: call %d refused, want none of 5", got)
		}
	})
	t.Run("a shared budget: PUT and GET push binding draw on one 100/s", func(t *testing.T) {
		withinWindow(time.Second, 700*time.Millisecond)
		put := call{app: "4000000004", method: "PUT", path: "/app-id/4000000004/users/u1/push/binding"}
		get := call{app: "4000000004", method: "GET", path: "/app-id/4000000004/users/u1/push/binding"}
		if got := firstRefused(t, cfg, put, 60); got != 0 {
			t.Fatalf("PUT: call %d of 60 refused, want none", got)
		}
		if got := firstRefused(t, cfg, get, 50); got != 41 {
			t.Errorf("GET after 60 PUTs: first refused call %d, want 41", got)
		}
	})
	t.Run("message cost: 600 recipients a call against 6000 messages/min", func(t *testing.T) {
		expectRefused(t, cfg, time.Minute, call{app: "4000000005", method: "POST", path: "/app-id/4000000005/messages/users", cost: 600}, 11)
	})
}

// TestOverrides: an AppQuota's unlimited, raise, block, and day limit behind
// a raised minute limit.
func TestOverrides(t *testing.T) {
	createAppQuota(t, "e2e-raise", "5000000001", quotav1.Override{Group: "messages-broadcast-users",
		Limits: []quotav1.OverrideLimit{requests(quotav1.WindowMinute, 3)}, Reason: "raise"})
	createAppQuota(t, "e2e-block", "5000000002", quotav1.Override{Group: "messages-recall",
		Limits: []quotav1.OverrideLimit{requests(quotav1.WindowSecond, 0)}, Reason: "block"})
	createAppQuota(t, "e2e-day", "5000000003", quotav1.Override{Group: "messages-broadcast-users",
		Limits: []quotav1.OverrideLimit{requests(quotav1.WindowMinute, 1000)}, Reason: "the day limit bites first"})
	createAppQuota(t, "e2e-unlimited", "5000000006", quotav1.Override{Group: "messages-recall",
		Limits: []quotav1.OverrideLimit{{Unit: quotav1.UnitRequests, Window: quotav1.WindowSecond, Unlimited: true}}, Reason: "internal load test"})
	cfg := liveConfig(t)
	t.Run("unlimited: 150 calls in one second, past the profile's 100/s", func(t *testing.T) {
		withinWindow(time.Second, 700*time.Millisecond)
		c := call{app: "5000000006", method: "POST", path: "/app-id/5000000006/messages/recall"}
		if got := firstRefused(t, cfg, c, 150); got != 0 {
			t.Errorf("unlimited: call %d refused, want none of 150", got)
		}
	})
	t.Run("raise: broadcast 1/min to 3/min", func(t *testing.T) {
		expectRefused(t, cfg, time.Minute, call{app: "5000000001", method: "POST", path: "/app-id/5000000001/messages/users/broadcast"}, 4)
	})
	t.Run("block: max 0 refuses the first call", func(t *testing.T) {
		expectRefused(t, cfg, time.Second, call{app: "5000000002", method: "POST", path: "/app-id/5000000002/messages/recall"}, 1)
	})
	t.Run("broadcast: 50/day", func(t *testing.T) {
		expectRefused(t, cfg, 24*time.Hour, call{app: "5000000003", method: "POST", path: "/app-id/5000000003/messages/users/broadcast"}, 51)
	})
}

// TestExpiryFallsBackToTheDefault: a temporary raise is enforced until its
// expiresAt, then the profile's limit is, once the AppQuota says so.
func TestExpiryFallsBackToTheDefault(t *testing.T) {
	expires := metav1.NewTime(time.Now().Add(6 * time.Second).Truncate(time.Second))
	createAppQuota(t, "e2e-expiry", "5000000004", quotav1.Override{Group: "messages-recall",
		Limits:    []quotav1.OverrideLimit{requests(quotav1.WindowSecond, 3)},
		ExpiresAt: &expires, Reason: "temporary"})
	c := call{app: "5000000004", method: "POST", path: "/app-id/5000000004/messages/recall"}
	expectRefused(t, liveConfig(t), time.Second, c, 4)
	waitEnforced(t, "e2e-expiry", func(a *quotav1.AppQuota) bool { return a.Status.ActiveOverrides == 0 })
	if time.Now().Before(expires.Time) {
		t.Fatalf("the override left before its expiresAt %v", expires.Time)
	}
	expectRefused(t, liveConfig(t), time.Second, c, 101)
}

// TestRaiseWithKubectl: a raise made with kubectl is enforced once the
// AppQuota is Enforced, as `kubectl wait --for=condition=Enforced` reports.
func TestRaiseWithKubectl(t *testing.T) {
	createAppQuota(t, "e2e-kubectl", "5000000005", quotav1.Override{Group: "messages-recall",
		Limits: []quotav1.OverrideLimit{requests(quotav1.WindowSecond, 3)}, Reason: "trial"})
	c := call{app: "5000000005", method: "POST", path: "/app-id/5000000005/messages/recall"}
	expectRefused(t, liveConfig(t), time.Second, c, 4)

	kubectl(t, "-n", namespace, "patch", "appquota", "e2e-kubectl", "--type=json",
		`-p=[{"op":"replace","path":"/spec/overrides/0/limits/0/max","value":7}]`)
	var a quotav1.AppQuota
	if err := cl.Get(context.Background(), types.NamespacedName{Namespace: namespace, Name: "e2e-kubectl"}, &a); err != nil {
		t.Fatal(err)
	}
	// As a user would wait; then the condition must describe the new
	// generation (kubectl may have seen the old one's).
	kubectl(t, "-n", namespace, "wait", "--for=condition=Enforced", "appquota/e2e-kubectl", "--timeout=60s")
	waitEnforced(t, "e2e-kubectl", func(got *quotav1.AppQuota) bool { return got.Generation == a.Generation })
	expectRefused(t, liveConfig(t), time.Second, c, 8)
}

func kubectl(t *testing.T, args ...string) {
	t.Helper()
	cmd := exec.Command(cluster.Kubectl(), append([]string{"--kubeconfig", cluster.KubeconfigPath}, args...)...)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("kubectl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// TestCheckCommand: `kubectl appquota check` builds the descriptors from the
// live configuration and prints the engine's answer to each call.
func TestCheckCommand(t *testing.T) {
	var out, errOut strings.Builder
	args := []string{"check", "4000000010", "post", "/app-id/4000000010/messages/users/broadcast", "--hits", "3",
		"--kubeconfig", cluster.KubeconfigPath, "-n", opts.Namespace, "--ratelimit-address", rl.GRPCAddr(), "-o", "json"}
	withinWindow(time.Minute, 2*time.Second)
	if code := cli.Run(context.Background(), args, &out, &errOut); code != 0 {
		t.Fatalf("check exited %d: %s", code, errOut.String())
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	codes := make([]string, 0, len(lines))
	for _, l := range lines {
		var resp rlsv3.RateLimitResponse
		if err := protojson.Unmarshal([]byte(l), &resp); err != nil {
			t.Fatalf("line %q is not a RateLimitResponse: %v", l, err)
		}
		codes = append(codes, resp.GetOverallCode().String())
	}
	if want := []string{"OK", "OVER_LIMIT", "OVER_LIMIT"}; !slices.Equal(codes, want) {
		t.Errorf("broadcast 1/min, 3 calls: %v, want %v", codes, want)
	}
}

// TestRenderedFileLoads: the file `kubectl appquota render --ratelimit`
// prints is one envoyproxy/ratelimit loads in file mode, and enforces as
// the xDS configuration does.
func TestRenderedFileLoads(t *testing.T) {
	var out, errOut strings.Builder
	if code := cli.Run(context.Background(), []string{"render", "--ratelimit", "-f", "../../config/catalog", "-f", "../../config/samples"}, &out, &errOut); code != 0 {
		t.Fatalf("render --ratelimit exited %d: %s", code, errOut.String())
	}
	dir := filepath.Join(t.TempDir(), "config")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "appquota.yaml"), []byte(out.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	bin, err := engine.RatelimitBinary()
	if err != nil {
		t.Fatal(err)
	}
	fileRL, err := engine.StartRatelimit(context.Background(), engine.RatelimitOptions{Bin: bin, RedisAddr: redisAddr, FileConfigDir: dir, Domain: opts.RateLimitDomain})
	if err != nil {
		t.Fatalf("ratelimit does not load the rendered file: %v", err)
	}
	defer func() { _ = fileRL.Stop() }()
	// acme-chat (config/samples) has messages-send-users raised to 500/s; the
	// gateway's side reads the document rendered from the same manifests.
	var doc strings.Builder
	if code := cli.Run(context.Background(), []string{"render", "-f", "../../config/catalog", "-f", "../../config/samples"}, &doc, &errOut); code != 0 {
		t.Fatalf("render exited %d: %s", code, errOut.String())
	}
	limits := filepath.Join(t.TempDir(), "limits.json")
	if err := os.WriteFile(limits, []byte(doc.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	var answers strings.Builder
	args := []string{"check", "1122334455", "POST", "/app-id/1122334455/messages/users", "--config", limits, "--ratelimit-address", fileRL.GRPCAddr(), "-o", "json"}
	if code := cli.Run(context.Background(), args, &answers, &errOut); code != 0 {
		t.Fatalf("check against the file-mode engine exited %d: %s", code, errOut.String())
	}
	var resp rlsv3.RateLimitResponse
	if err := protojson.Unmarshal([]byte(strings.TrimSpace(answers.String())), &resp); err != nil {
		t.Fatal(err)
	}
	perUnit := make([]uint32, 0, len(resp.GetStatuses()))
	for _, st := range resp.GetStatuses() {
		perUnit = append(perUnit, st.GetCurrentLimit().GetRequestsPerUnit())
	}
	if resp.GetOverallCode() != rlsv3.RateLimitResponse_OK || !slices.Contains(perUnit, 500) {
		t.Errorf("acme-chat's first call: %v with limits %v, want OK under the raised 500/s", resp.GetOverallCode(), perUnit)
	}
}

// TestFailover: when the manager serving xDS goes away, ratelimit keeps
// enforcing its last configuration; a new manager on the service's address
// hands it the current one, and the AppQuotas report Enforced again.
func TestFailover(t *testing.T) {
	createAppQuota(t, "e2e-failover", "5000000007", quotav1.Override{Group: "messages-recall",
		Limits: []quotav1.OverrideLimit{requests(quotav1.WindowSecond, 3)}, Reason: "failover"})
	c := call{app: "5000000007", method: "POST", path: "/app-id/5000000007/messages/recall"}
	cfg := liveConfig(t)
	expectRefused(t, cfg, time.Second, c, 4)

	stopOperator()
	expectRefused(t, cfg, time.Second, c, 4) // the last configuration, with no manager
	var err error
	if stopOperator, err = operatortest.Run(context.Background(), cluster, opts); err != nil {
		t.Fatalf("start the new manager: %v", err)
	}
	kubectl(t, "-n", namespace, "patch", "appquota", "e2e-failover", "--type=json",
		`-p=[{"op":"replace","path":"/spec/overrides/0/limits/0/max","value":6}]`)
	var a quotav1.AppQuota
	if err := cl.Get(context.Background(), types.NamespacedName{Namespace: namespace, Name: "e2e-failover"}, &a); err != nil {
		t.Fatal(err)
	}
	waitEnforced(t, "e2e-failover", func(got *quotav1.AppQuota) bool { return got.Status.ObservedGeneration == a.Generation })
	expectRefused(t, liveConfig(t), time.Second, c, 7)
}
