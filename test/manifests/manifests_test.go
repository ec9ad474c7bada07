// Package manifests_test applies the repository's manifests to a real API server
// with the kubectl built alongside it, as a platform engineer would.
package manifests_test

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/appquota/appquota/internal/operatortest"

	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/appquota/appquota/internal/cli"
	"github.com/appquota/appquota/internal/localcluster"
	"github.com/appquota/appquota/internal/wiring"
)

var cluster *localcluster.Cluster

func TestMain(m *testing.M) {
	// The operator runs in-process, as in `make demo`, so applied samples are
	// rendered into the ConfigMap.
	opts := wiring.DefaultOptions()
	os.Exit(operatortest.RunTests(m, localcluster.Options{}, &opts, func(c *localcluster.Cluster) error {
		cluster = c
		return nil
	}))
}

func kubectl(t *testing.T, args ...string) string {
	t.Helper()
	cmd := exec.Command(cluster.Kubectl(), append([]string{"--kubeconfig", cluster.KubeconfigPath}, args...)...)
	cmd.Dir = "../.."
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("kubectl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// TestSamplesApply: the CRDs and every sample, the full default catalog included,
// are accepted by the API server, and come back as written.
func TestSamplesApply(t *testing.T) {
	out := kubectl(t, "apply", "--server-side", "-k", "config/samples")
	for _, want := range []string{
		"quotaprofile.quota.appquota.io/default serverside-applied",
		"appquota.quota.appquota.io/acme-chat serverside-applied",
		"appquota.quota.appquota.io/globex-campaign serverside-applied",
		"appquota.quota.appquota.io/initech-review serverside-applied",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("kubectl apply output lacks %q:\n%s", want, out)
		}
	}
	groups := kubectl(t, "get", "quotaprofile", "default", "-o", "jsonpath={range .spec.endpointGroups[*]}{.name}{\"\\n\"}{end}")
	if n := len(strings.Fields(groups)); n < 160 {
		t.Errorf("the stored default profile has %d endpoint groups; the catalog has over 160", n)
	}
	// The short names and the category work as documented.
	if out := kubectl(t, "get", "aq", "-n", "tenants", "-o", "name"); strings.Count(out, "appquota.quota.appquota.io/") != 3 {
		t.Errorf("kubectl get aq -n tenants: %q, want 3 AppQuotas", out)
	}
	if out := kubectl(t, "get", "qp", "-o", "name"); strings.TrimSpace(out) != "quotaprofile.quota.appquota.io/default" {
		t.Errorf("kubectl get qp -o name: %q, want the default profile", out)
	}
	header := strings.SplitN(kubectl(t, "get", "aq", "-n", "tenants"), "\n", 2)[0]
	if fields := strings.Join(strings.Fields(header), " "); fields != "NAME APP ID PROFILE OVERRIDES READY ENFORCED AGE" {
		t.Errorf("kubectl get aq columns: %q", fields)
	}
	header = strings.SplitN(kubectl(t, "get", "qp"), "\n", 2)[0]
	if fields := strings.Join(strings.Fields(header), " "); fields != "NAME GROUPS READY ENGINES IN SYNC AGE" {
		t.Errorf("kubectl get qp columns: %q", fields)
	}
}

// TestExplainDocumentsEveryField: `kubectl explain` shows a description for each
// field a user edits.
func TestExplainDocumentsEveryField(t *testing.T) {
	cases := map[string][]string{
		"appquota.spec":                           {"appID", "profile", "overrides"},
		"appquota.spec.overrides":                 {"group", "limits", "perCall", "expiresAt", "reason"},
		"appquota.spec.overrides.limits":          {"unit", "window", "scope", "max"},
		"appquota.status":                         {"conditions", "observedGeneration", "activeOverrides", "nextExpiry", "configHash", "lastChange"},
		"appquota.status.lastChange":              {"by", "at", "generation", "summary"},
		"quotaprofile.spec":                       {"fallback", "endpointGroups"},
		"quotaprofile.spec.endpointGroups":        {"name", "description", "restOnly", "routes", "limits", "perCall"},
		"quotaprofile.spec.endpointGroups.routes": {"method", "path", "userParam"},
	}
	for path, fields := range cases {
		out := kubectl(t, "explain", path)
		for _, f := range fields {
			// Each field's doc comment starts with its JSON name, so its description
			// line repeats it: "  appID\t<string> -required-\n    appID is ...".
			if !strings.Contains(out, "\n    "+f+" ") && !strings.Contains(out, "\n    "+f+",") {
				t.Errorf("kubectl explain %s: field %s has no description starting with its name:\n%s", path, f, out)
			}
		}
	}
}

// TestDefaultInstallBuilds: `kubectl apply -k config/default` has something
// complete to apply: the kustomization builds and holds the parts of an install.
func TestDefaultInstallBuilds(t *testing.T) {
	out := kubectl(t, "kustomize", "config/default")
	for _, want := range []string{
		"kind: CustomResourceDefinition",
		"name: appquotas.quota.appquota.io",
		"kind: Deployment",
		"name: appquota-controller-manager",
		"namespace: appquota-system",
		"kind: ClusterRole",
		"kind: Certificate",
		"secretName: webhook-server-cert",
		"name: appquota-webhook-service",
		"kind: ValidatingWebhookConfiguration",
		"cert-manager.io/inject-ca-from: appquota-system/appquota-serving-cert",
		"path: /validate-quota-appquota-io-v1alpha1-appquota",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("kubectl kustomize config/default lacks %q", want)
		}
	}
}

// TestCLIRenderMatchesTheController: `kubectl appquota render` on the manifests
// gives byte for byte what the controller wrote for the same objects, and
// `kubectl appquota explain` answers from the live ConfigMap through the
// kubeconfig, before and after an edit with kubectl.
func TestCLIRenderMatchesTheController(t *testing.T) {
	kubectl(t, "apply", "--server-side", "-k", "config/samples")
	ctx := context.Background()
	var offline, stderr bytes.Buffer
	if code := cli.Run(ctx, []string{"render", "-f", "../../config/catalog", "-f", "../../config/samples"}, &offline, &stderr); code != 0 {
		t.Fatalf("render: %s", stderr.String())
	}
	var live string
	deadline := time.Now().Add(20 * time.Second)
	for {
		out, err := exec.Command(cluster.Kubectl(), "--kubeconfig", cluster.KubeconfigPath, "-n", "appquota-system",
			"get", "configmap", "appquota-limits", "-o", `jsonpath={.data.limits\.json}`).Output()
		live = string(out)
		if err == nil && live == offline.String() {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the ConfigMap never matched the offline render:\n live:    %.300s\n offline: %.300s", live, offline.String())
		}
		time.Sleep(100 * time.Millisecond)
	}

	explain := func() string {
		var out bytes.Buffer
		stderr.Reset()
		if code := cli.Run(ctx, []string{"explain", "1122334455", "POST", "/app-id/1122334455/messages/users", "--kubeconfig", cluster.KubeconfigPath}, &out, &stderr); code != 0 {
			t.Fatalf("explain: %s", stderr.String())
		}
		return out.String()
	}
	if out := explain(); !strings.Contains(out, "500 Requests/Second per app") || !strings.Contains(out, "AppQuota tenants/acme-chat") {
		t.Errorf("explain before the edit:\n%s", out)
	}
	kubectl(t, "-n", "tenants", "patch", "appquota", "acme-chat", "--type=json",
		"-p", `[{"op":"replace","path":"/spec/overrides/0/limits/0/max","value":900}]`)
	deadline = time.Now().Add(20 * time.Second)
	for out := explain(); !strings.Contains(out, "900 Requests/Second per app"); out = explain() {
		if time.Now().After(deadline) {
			t.Fatalf("explain never showed the edit:\n%s", out)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestManagerMemoryLimit: the manager's GOMEMLIMIT is set, in the Go runtime's
// syntax, and leaves headroom under the container's memory limit, so that the
// garbage collector holds the heap down before the kernel kills the Pod.
func TestManagerMemoryLimit(t *testing.T) {
	env, limit, err := operatortest.ManagerEnv("../..")
	if err != nil {
		t.Fatal(err)
	}
	soft, ok := env["GOMEMLIMIT"]
	if !ok {
		t.Fatal("config/manager/manager.yaml sets no GOMEMLIMIT on the manager")
	}
	// Go writes binary units as KiB, MiB, GiB; Kubernetes as Ki, Mi, Gi.
	q, err := resource.ParseQuantity(strings.TrimSuffix(soft, "B"))
	if err != nil || !strings.HasSuffix(soft, "iB") {
		t.Fatalf("GOMEMLIMIT=%q is not a size in binary units such as 256MiB: %v", soft, err)
	}
	if limit.IsZero() || q.Value() > limit.Value()*3/4 {
		t.Errorf("GOMEMLIMIT=%s leaves too little headroom under the memory limit %s (at most three quarters of it)", soft, limit.String())
	}
}
