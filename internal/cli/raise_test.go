package cli_test

import (
	"context"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	quotav1 "github.com/appquota/appquota/api/v1alpha1"
	"github.com/appquota/appquota/internal/localcluster"
)

// kubectl runs the kubectl built with the control plane against cluster,
// with stdin when not empty, and fails the test when it fails.
func kubectl(t *testing.T, cluster *localcluster.Cluster, stdin string, args ...string) []byte {
	t.Helper()
	cmd := exec.Command(cluster.Kubectl(), append([]string{"--kubeconfig", cluster.KubeconfigPath}, args...)...)
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("kubectl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// withCatalog starts the live cluster, applies the default catalog (as the
// samples do) and creates namespace ns.
func withCatalog(t *testing.T, ns string) *localcluster.Cluster {
	t.Helper()
	cluster := liveCluster(t)
	kubectl(t, cluster, "", "apply", "--server-side", "-k", "../../config/catalog")
	if err := cluster.CreateNamespaces(context.Background(), ns); err != nil {
		t.Fatal(err)
	}
	return cluster
}

func getAppQuota(t *testing.T, cluster *localcluster.Cluster, ns, name string) *quotav1.AppQuota {
	t.Helper()
	c, err := cluster.Client()
	if err != nil {
		t.Fatal(err)
	}
	var a quotav1.AppQuota
	if err := c.Get(context.Background(), types.NamespacedName{Namespace: ns, Name: name}, &a); err != nil {
		t.Fatal(err)
	}
	return &a
}

func override(a *quotav1.AppQuota, group string) *quotav1.Override {
	for i := range a.Spec.Overrides {
		if a.Spec.Overrides[i].Group == group {
			return &a.Spec.Overrides[i]
		}
	}
	return nil
}

// limitsOf is an override's limits as "Unit/Window/Scope=max", sorted.
func limitsOf(o *quotav1.Override) []string {
	if o == nil {
		return nil
	}
	var out []string
	for _, l := range o.Limits {
		out = append(out, string(l.Unit)+"/"+string(l.Window)+"/"+string(l.Scope)+"="+strconv.FormatInt(l.Max, 10))
	}
	slices.Sort(out)
	return out
}

// assertInForce: the AppQuota's status describes its current generation and
// says Ready, as raise's wait promised before it returned.
func assertInForce(t *testing.T, a *quotav1.AppQuota) {
	t.Helper()
	ready := meta.FindStatusCondition(a.Status.Conditions, quotav1.ConditionReady)
	if ready == nil || ready.Status != metav1.ConditionTrue || ready.ObservedGeneration != a.Generation {
		t.Errorf("raise returned before AppQuota %s was Ready at generation %d: %+v", a.Key(), a.Generation, ready)
	}
	enforced := meta.FindStatusCondition(a.Status.Conditions, quotav1.ConditionEnforced)
	if enforced == nil || enforced.ObservedGeneration != a.Generation || enforced.Reason != quotav1.ReasonNoEngineConnected {
		t.Errorf("AppQuota %s: Enforced %+v, want Unknown/NoEngineConnected at generation %d (no engine in this test)", a.Key(), enforced, a.Generation)
	}
}

// TestRaiseCreates: an app without an AppQuota gets one, named after it,
// with the override; raise prints the limits before and after and returns
// once the controller has the new generation Ready.
func TestRaiseCreates(t *testing.T) {
	const ns = "raise-create"
	cluster := withCatalog(t, ns)
	out, stderr, code := run("raise", "7100000001", "messages-send-users", "--max", "500", "--window", "second",
		"--reason", "SALES-1 launch", "--until", "2099-01-31", "--kubeconfig", cluster.KubeconfigPath, "-n", ns)
	if code != 0 {
		t.Fatalf("exit %d: %s%s", code, out, stderr)
	}
	for _, want := range []string{
		"AppQuota raise-create/7100000001 (app 7100000001), group messages-send-users:",
		"before: 100 Requests/Second per app (profile), 6000 Messages/Minute per app (profile); at most 600 targets (profile)",
		"after:  500 Requests/Second per app (override), 6000 Messages/Minute per app (profile); at most 600 targets (profile); until 2099-01-31T00:00:00Z",
		"appquota.quota.appquota.io/7100000001 serverside-applied\n",
		"Enforced: not waited for: ",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	a := getAppQuota(t, cluster, ns, "7100000001")
	o := override(a, "messages-send-users")
	if a.Spec.AppID != "7100000001" || o == nil || o.Reason != "SALES-1 launch" || o.ExpiresAt == nil || o.ExpiresAt.UTC().Format("2006-01-02") != "2099-01-31" ||
		!slices.Equal(limitsOf(o), []string{"Requests/Second/App=500"}) {
		t.Errorf("the AppQuota created: %+v", a.Spec)
	}
	managers := map[string]bool{}
	for _, e := range a.ManagedFields {
		managers[e.Manager+"/"+string(e.Operation)] = true
	}
	if !managers["kubectl-appquota/Apply"] {
		t.Errorf("managed fields %v: want kubectl-appquota's Apply", managers)
	}
	assertInForce(t, a)

	// Raised again without --until: the raise has no end now.
	if out, stderr, code := run("raise", "7100000001", "messages-send-users", "--max", "600", "--window", "second",
		"--reason", "SALES-1 renewed", "--kubeconfig", cluster.KubeconfigPath, "-n", ns); code != 0 {
		t.Fatalf("raise again: exit %d: %s%s", code, out, stderr)
	}
	a = getAppQuota(t, cluster, ns, "7100000001")
	if o := override(a, "messages-send-users"); o == nil || o.ExpiresAt != nil || o.Reason != "SALES-1 renewed" ||
		!slices.Equal(limitsOf(o), []string{"Requests/Second/App=600"}) {
		t.Errorf("raised again without --until: %+v", o)
	}
	assertInForce(t, a)
}

// TestRaiseKeepsOthers: raise changes only its group's override (and in it
// only the limit of its window and scope), whoever set the others: kubectl,
// or an earlier raise of another group or window.
func TestRaiseKeepsOthers(t *testing.T) {
	const ns = "raise-keep"
	cluster := withCatalog(t, ns)
	kubectl(t, cluster, `apiVersion: quota.appquota.io/v1alpha1
kind: AppQuota
metadata: {name: acme, namespace: raise-keep}
spec:
  appID: "7100000002"
  overrides:
  - group: users-register
    limits: [{unit: Requests, window: Second, max: 300}]
    reason: "set by kubectl"
`, "apply", "--server-side", "-f", "-")
	raise := func(group, window, max string, extra ...string) (string, string, int) {
		args := append([]string{"raise", "7100000002", group, "--max", max, "--window", window, "--reason", "SALES-2",
			"--kubeconfig", cluster.KubeconfigPath, "-n", ns}, extra...)
		return run(args...)
	}
	for _, step := range [][]string{
		{"messages-send-users", "second", "400"},
		{"messages-send-users", "minute", "9000"}, // another window of the same group: the second's stays
		{"messages-recall", "second", "50"},       // another group: messages-send-users stays
	} {
		if out, stderr, code := raise(step[0], step[1], step[2]); code != 0 {
			t.Fatalf("raise %v: exit %d: %s%s", step, code, out, stderr)
		}
	}
	a := getAppQuota(t, cluster, ns, "acme")
	want := map[string][]string{
		"users-register":      {"Requests/Second/App=300"},
		"messages-send-users": {"Requests/Minute/App=9000", "Requests/Second/App=400"},
		"messages-recall":     {"Requests/Second/App=50"},
	}
	for group, limits := range want {
		if got := limitsOf(override(a, group)); !slices.Equal(got, limits) {
			t.Errorf("group %s: limits %v, want %v", group, got, limits)
		}
	}
	if o := override(a, "users-register"); o == nil || o.Reason != "set by kubectl" {
		t.Errorf("kubectl's override changed: %+v", o)
	}
	assertInForce(t, a)

	// kubectl owns users-register's Requests/Second: a conflict, unless forced.
	out, stderr, code := raise("users-register", "second", "350")
	if code != 1 || !strings.Contains(stderr, "conflict") || !strings.Contains(stderr, "--force-conflicts takes them over") {
		t.Errorf("raise over kubectl's limit: exit %d, %s%s; want a conflict naming --force-conflicts", code, out, stderr)
	}
	if got := limitsOf(override(getAppQuota(t, cluster, ns, "acme"), "users-register")); !slices.Equal(got, want["users-register"]) {
		t.Errorf("after the refused raise, users-register has %v", got)
	}
	if out, stderr, code := raise("users-register", "second", "350", "--force-conflicts"); code != 0 {
		t.Fatalf("raise --force-conflicts: exit %d: %s%s", code, out, stderr)
	}
	a = getAppQuota(t, cluster, ns, "acme")
	if got := limitsOf(override(a, "users-register")); !slices.Equal(got, []string{"Requests/Second/App=350"}) {
		t.Errorf("after --force-conflicts, users-register has %v", got)
	}
	if got := limitsOf(override(a, "messages-send-users")); !slices.Equal(got, want["messages-send-users"]) {
		t.Errorf("after --force-conflicts, messages-send-users has %v", got)
	}
}

// TestRaiseDryRun: --dry-run=server goes through the API server (and its
// webhook) and stores nothing; --dry-run=client does not write either.
func TestRaiseDryRun(t *testing.T) {
	const ns = "raise-dry"
	cluster := withCatalog(t, ns)
	kubectl(t, cluster, `apiVersion: quota.appquota.io/v1alpha1
kind: AppQuota
metadata: {name: dry, namespace: raise-dry}
spec: {appID: "7100000003"}
`, "apply", "--server-side", "-f", "-")
	// The manager's status write would change the resourceVersion too: it
	// comes first.
	kubectl(t, cluster, "", "wait", "--for=condition=Ready", "appquota/dry", "-n", ns, "--timeout=2m")
	before := getAppQuota(t, cluster, ns, "dry")
	for _, mode := range []string{"server", "client"} {
		out, stderr, code := run("raise", "7100000003", "messages-send-users", "--max", "700", "--window", "second", "--reason", "trial",
			"--dry-run="+mode, "--kubeconfig", cluster.KubeconfigPath, "-n", ns)
		if code != 0 {
			t.Fatalf("--dry-run=%s: exit %d: %s%s", mode, code, out, stderr)
		}
		if !strings.Contains(out, "after:  700 Requests/Second per app (override)") || !strings.Contains(out, "dry run)") {
			t.Errorf("--dry-run=%s output:\n%s", mode, out)
		}
		after := getAppQuota(t, cluster, ns, "dry")
		if after.ResourceVersion != before.ResourceVersion || len(after.Spec.Overrides) != 0 {
			t.Errorf("--dry-run=%s changed the AppQuota: resourceVersion %s -> %s, overrides %+v", mode, before.ResourceVersion, after.ResourceVersion, after.Spec.Overrides)
		}
	}
	// With -o, stdout is the object as the server would store it.
	out, stderr, code := run("raise", "7100000003", "messages-send-users", "--max", "700", "--window", "second", "--reason", "trial",
		"--dry-run=server", "-o", "jsonpath={.spec.overrides[0].limits[0].max}", "--kubeconfig", cluster.KubeconfigPath, "-n", ns)
	if code != 0 || out != "700" || !strings.Contains(stderr, "before: ") {
		t.Errorf("-o jsonpath: exit %d, stdout %q, stderr %s", code, out, stderr)
	}
}

// TestRaiseRefused: what the flags lack is named before anything is sent;
// what the webhook refuses is its message, with exit 1.
func TestRaiseRefused(t *testing.T) {
	const ns = "raise-refused"
	cluster := withCatalog(t, ns)
	base := []string{"raise", "7100000004", "messages-send-users", "--kubeconfig", cluster.KubeconfigPath, "-n", ns}
	cases := []struct {
		name string
		args []string
		want string
	}{
		{"no reason", []string{"--max", "5", "--window", "second"}, `error: required flag(s) "reason" not set`},
		{"empty reason", []string{"--max", "5", "--window", "second", "--reason", " "}, "error: --reason: must not be empty"},
		{"bad window", []string{"--max", "5", "--window", "fortnight", "--reason", "x"}, `error: --window "fortnight": want one of second, minute, hour, day`},
		{"bad scope", []string{"--max", "5", "--window", "second", "--scope", "team", "--reason", "x"}, `error: --scope "team": want one of app, user`},
		{"bad dry-run", []string{"--max", "5", "--window", "second", "--reason", "x", "--dry-run=maybe"}, `error: --dry-run "maybe": want one of none, client, server`},
		{"bad until", []string{"--max", "5", "--window", "second", "--reason", "x", "--until", "soon"}, `error: --until "soon": want a date`},
	}
	for _, tc := range cases {
		out, stderr, code := run(append(slices.Clone(base), tc.args...)...)
		if code != 1 || !strings.HasPrefix(stderr, tc.want) {
			t.Errorf("%s: exit %d, stderr %q, stdout %q; want exit 1 and %q", tc.name, code, stderr, out, tc.want)
		}
	}
	out, stderr, code := run("raise", "7100000004", "no-such-group", "--max", "5", "--window", "second", "--reason", "x",
		"--kubeconfig", cluster.KubeconfigPath, "-n", ns)
	if code != 1 || !strings.Contains(stderr, "denied the request") || !strings.Contains(stderr, `not a group of QuotaProfile "default"`) {
		t.Errorf("an unknown group: exit %d, %s%s; want the webhook's message", code, out, stderr)
	}
	out, stderr, code = run("raise", "7100000004", "messages-send-users", "--max", "5", "--window", "second", "--reason", "x",
		"--until", "2001-01-01", "--kubeconfig", cluster.KubeconfigPath, "-n", ns)
	if code != 1 || !strings.Contains(stderr, "spec.overrides[0].expiresAt") {
		t.Errorf("an expiry in the past: exit %d, %s%s; want the webhook's message naming expiresAt", code, out, stderr)
	}
	c, err := cluster.Client()
	if err != nil {
		t.Fatal(err)
	}
	var list quotav1.AppQuotaList
	if err := c.List(context.Background(), &list); err != nil {
		t.Fatal(err)
	}
	for _, a := range list.Items {
		if a.Namespace == ns {
			t.Errorf("a refused raise created AppQuota %s", a.Key())
		}
	}
}
