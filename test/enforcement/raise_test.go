package enforcement_test

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"

	quotav1 "github.com/appquota/appquota/api/v1alpha1"
	"github.com/appquota/appquota/internal/cli"
)

// runRaise runs `kubectl appquota raise APP GROUP --max max --window second`
// in-process, as a user would, and returns its output; --timeout bounds its
// wait below the test's own, so a wait that never ends fails as raise's
// error.
func runRaise(t *testing.T, app, group string, max int) string {
	t.Helper()
	var out, errOut strings.Builder
	args := []string{"raise", app, group, "--max", fmt.Sprint(max), "--window", "second", "--reason", "e2e raise",
		"--timeout", "45s", "--kubeconfig", cluster.KubeconfigPath, "-n", namespace}
	if code := cli.Run(context.Background(), args, &out, &errOut); code != 0 {
		t.Fatalf("raise --max %d exited %d:\n%s%s", max, code, out.String(), errOut.String())
	}
	return out.String()
}

// inForceNow asserts that AppQuota name is, as the command that just
// returned left it, Enforced=True at its current generation, that this is
// the generation raise waited for, and that raise printed that condition.
func inForceNow(t *testing.T, name, out string) *quotav1.AppQuota {
	t.Helper()
	var a quotav1.AppQuota
	if err := cl.Get(context.Background(), types.NamespacedName{Namespace: namespace, Name: name}, &a); err != nil {
		t.Fatal(err)
	}
	enforced := meta.FindStatusCondition(a.Status.Conditions, quotav1.ConditionEnforced)
	if enforced == nil || enforced.Status != metav1.ConditionTrue || enforced.ObservedGeneration != a.Generation {
		t.Fatalf("raise returned, but AppQuota %s generation %d is not Enforced: %+v", name, a.Generation, enforced)
	}
	for _, want := range []string{
		fmt.Sprintf("waiting up to 45s for generation %d to be Ready and Enforced\n", a.Generation),
		"Enforced: " + enforced.Message + "\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("raise's output lacks %q:\n%s", want, out)
		}
	}
	return &a
}

// shouldRateLimit sends one call of c to the engine and returns its answer.
func shouldRateLimit(t *testing.T, c call) rlsv3.RateLimitResponse_Code {
	t.Helper()
	resp, err := rlsConn.ShouldRateLimit(context.Background(), request(t, liveConfig(t), c))
	if err != nil {
		t.Fatalf("ShouldRateLimit: %v", err)
	}
	return resp.GetOverallCode()
}

// TestRaiseWaitsForEnforced: `kubectl appquota raise` returns only once the
// engine instance has acknowledged the generation it wrote: right after it
// returns, with no wait of the test's own, the engine answers by the new
// limit. Blocked first (max 0: the very next call is refused, where the
// profile's 100/s would pass it), then raised to 5/s (the next call passes,
// where the block would refuse it), which the engine then enforces at its
// sixth call in a second.
func TestRaiseWaitsForEnforced(t *testing.T) {
	const app, group = "5000000008", "messages-recall"
	c := call{app: app, method: "POST", path: "/app-id/5000000008/messages/recall"}

	out := runRaise(t, app, group, 0) // creates the AppQuota, named after the app
	a := inForceNow(t, app, out)
	if got := shouldRateLimit(t, c); got != rlsv3.RateLimitResponse_OVER_LIMIT {
		t.Fatalf("the first call after raise --max 0 returned: %v, want OVER_LIMIT", got)
	}

	out = runRaise(t, app, group, 5)
	raised := inForceNow(t, app, out)
	if raised.Generation <= a.Generation {
		t.Fatalf("the second raise left generation %d (was %d)", raised.Generation, a.Generation)
	}
	if got := shouldRateLimit(t, c); got != rlsv3.RateLimitResponse_OK {
		t.Fatalf("the first call after raise --max 5 returned: %v, want OK", got)
	}
	expectRefused(t, liveConfig(t), time.Second, c, 6)
	// The QuotaProfile's status.engine is reported apart from the AppQuotas
	// and paced (at most once a second); it must still end on a version at
	// least the one the raise went out in, with the instance in sync.
	enforced := meta.FindStatusCondition(raised.Status.Conditions, quotav1.ConditionEnforced)
	var since uint64
	_, rest, _ := strings.Cut(enforced.Message, "version ")
	if _, err := fmt.Sscanf(rest, "%d", &since); err != nil {
		t.Fatalf("Enforced message %q names no version: %v", enforced.Message, err)
	}
	var p quotav1.QuotaProfile
	err := wait.PollUntilContextTimeout(context.Background(), 50*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		if err := cl.Get(ctx, types.NamespacedName{Name: "default"}, &p); err != nil {
			return false, err
		}
		e := p.Status.Engine
		if e == nil || e.Connected != 1 || e.InSync != 1 {
			return false, nil
		}
		v, err := strconv.ParseUint(e.Version, 10, 64)
		return err == nil && v >= since, nil
	})
	if err != nil {
		t.Fatalf("QuotaProfile default: want 1 instance in sync with version %d or later: %v; engine status %+v", since, err, p.Status.Engine)
	}
}

// TestRaiseWithoutEngine: with the manager serving xDS but no ratelimit
// instance connected, Enforced is Unknown/NoEngineConnected and raise does
// not wait for it: it returns once the generation is Ready and says why it
// did not wait. Then ratelimit is started again, and the raise is enforced
// once it has connected.
func TestRaiseWithoutEngine(t *testing.T) {
	const app, group = "5000000009", "messages-recall"
	if err := rl.Stop(); err != nil {
		t.Fatalf("stop ratelimit: %v", err)
	}
	defer restartRatelimit(t)
	waitEngines(t, 0)

	out := runRaise(t, app, group, 7)
	var a quotav1.AppQuota
	if err := cl.Get(context.Background(), types.NamespacedName{Namespace: namespace, Name: app}, &a); err != nil {
		t.Fatal(err)
	}
	ready := meta.FindStatusCondition(a.Status.Conditions, quotav1.ConditionReady)
	enforced := meta.FindStatusCondition(a.Status.Conditions, quotav1.ConditionEnforced)
	if ready == nil || ready.Status != metav1.ConditionTrue || ready.ObservedGeneration != a.Generation {
		t.Errorf("raise returned before generation %d was Ready: %+v", a.Generation, ready)
	}
	if enforced == nil || enforced.Status != metav1.ConditionUnknown || enforced.Reason != quotav1.ReasonNoEngineConnected ||
		enforced.ObservedGeneration != a.Generation {
		t.Fatalf("with no ratelimit connected, Enforced %+v, want Unknown/NoEngineConnected at generation %d", enforced, a.Generation)
	}
	if want := "Enforced: not waited for: " + enforced.Message + "\n"; !strings.Contains(out, want) {
		t.Errorf("raise's output lacks %q:\n%s", want, out)
	}

	restartRatelimit(t)
	waitEnforced(t, app, func(got *quotav1.AppQuota) bool { return got.Generation == a.Generation })
	expectRefused(t, liveConfig(t), time.Second, call{app: app, method: "POST", path: "/app-id/5000000009/messages/recall"}, 8)
}

// waitEngines waits until the QuotaProfile reports n connected engine
// instances: the manager has seen ratelimit's stream end (or begin).
func waitEngines(t *testing.T, n int32) {
	t.Helper()
	var p quotav1.QuotaProfile
	err := wait.PollUntilContextTimeout(context.Background(), 50*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		if err := cl.Get(ctx, types.NamespacedName{Name: "default"}, &p); err != nil {
			return false, err
		}
		return p.Status.Engine != nil && p.Status.Engine.Connected == n, nil
	})
	if err != nil {
		t.Fatalf("QuotaProfile default: want %d connected engine instances: %v; engine status %+v", n, err, p.Status.Engine)
	}
}

// restartRatelimit starts ratelimit again on its ports, unless it runs, and
// waits until the manager counts it connected.
func restartRatelimit(t *testing.T) {
	t.Helper()
	if !rl.Exited() {
		return
	}
	if err := rl.Restart(context.Background()); err != nil {
		t.Fatalf("start ratelimit again: %v", err)
	}
	waitEngines(t, 1)
}
