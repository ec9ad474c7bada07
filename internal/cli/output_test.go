package cli_test

import (
	"context"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/appquota/appquota/internal/cli"
	"github.com/appquota/appquota/pkg/quotaconfig"
)

// TestOutputFormats: explain and list print objects with cli-runtime's
// printers: each explanation named after its group, list's in a List.
func TestOutputFormats(t *testing.T) {
	dir := rendered(t)
	explain := []string{"explain", "1122334455", "POST", "/app-id/1122334455/messages/users", "--config", dir}
	list := []string{"list", "1122334455", "--config", dir}
	cases := []struct {
		name string
		args []string
		want func(string) bool
	}{
		{"explain -o name", append(explain, "-o", "name"), func(s string) bool {
			return s == "explanation.cli.appquota.io/messages-send-users\n"
		}},
		{"explain -o jsonpath", append(explain, "-o", "jsonpath={.limits[0].max} {.limits[0].from} {.maxTargets}"), func(s string) bool {
			return s == "500 override 1000"
		}},
		{"explain -o yaml", append(explain, "-o", "yaml"), func(s string) bool {
			return strings.HasPrefix(s, "apiVersion: cli.appquota.io/v1alpha1\n") && strings.Contains(s, "\nkind: Explanation\n") &&
				strings.Contains(s, "\n  name: messages-send-users\n") && strings.Contains(s, "\nappQuota: tenants/acme-chat\n")
		}},
		{"list -o name", append(list, "-o", "name"), func(s string) bool {
			lines := strings.Split(strings.TrimSpace(s), "\n")
			for _, l := range lines {
				if !strings.HasPrefix(l, "explanation.cli.appquota.io/") {
					return false
				}
			}
			return len(lines) == 166 && strings.Contains(s, "explanation.cli.appquota.io/users-register\n")
		}},
		{"list -o yaml", append(list, "-o", "yaml"), func(s string) bool {
			return strings.HasPrefix(s, "apiVersion: v1\nitems:\n") && strings.Contains(s, "\nkind: List\n") && strings.Count(s, "kind: Explanation\n") == 166
		}},
		{"list -o jsonpath", append(list, "-o", `jsonpath={range .items[?(@.group=="users-register")]}{.limits[0].max}{end}`), func(s string) bool {
			return s == "300"
		}},
		{"list -o go-template", append(list, "-o", "go-template={{len .items}}"), func(s string) bool { return s == "166" }},
	}
	for _, tc := range cases {
		out, stderr, code := run(tc.args...)
		if code != 0 || !tc.want(out) {
			t.Errorf("%s: exit %d, %s\nstdout:\n%.2000s", tc.name, code, stderr, out)
		}
	}
	// -o json keeps explain's fields at the top, as before the printers.
	out, stderr, code := run(append(explain, "-o", "json")...)
	var e cli.Explanation
	if err := json.Unmarshal([]byte(out), &e); code != 0 || err != nil || e.Group != "messages-send-users" || e.AppQuota != "tenants/acme-chat" {
		t.Errorf("-o json: exit %d, %v, %s\n%s", code, err, stderr, out)
	}
}

// TestConnectionFlags: the plugin connects as kubectl would with the same
// flags: --kubeconfig, its current context, --context, the context's
// namespace, -n and --server.
func TestConnectionFlags(t *testing.T) {
	const ns, ctxNS = "conn-flags", "conn-flags-context"
	cluster := withCatalog(t, ns)
	if err := cluster.CreateNamespaces(context.Background(), ctxNS); err != nil {
		t.Fatal(err)
	}
	c, err := cluster.Client()
	if err != nil {
		t.Fatal(err)
	}
	doc, stderr, code := run("render", "-f", "../../config/catalog", "-f", "../../config/samples")
	if code != 0 {
		t.Fatal(stderr)
	}
	if err := c.Create(context.Background(), &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: "appquota-limits", Namespace: ns},
		Data:       map[string]string{quotaconfig.DataKey: doc, quotaconfig.HashKey: quotaconfig.Hash([]byte(doc))},
	}); err != nil {
		t.Fatal(err)
	}

	// A kubeconfig whose current context reaches no server, and two that
	// reach the cluster, one with a namespace.
	cfg, err := clientcmd.LoadFromFile(cluster.KubeconfigPath)
	if err != nil {
		t.Fatal(err)
	}
	good := cfg.Contexts[cfg.CurrentContext]
	cfg.Clusters["nowhere"] = &clientcmdapi.Cluster{Server: "https://127.0.0.1:1"}
	cfg.Contexts["unreachable"] = &clientcmdapi.Context{Cluster: "nowhere", AuthInfo: good.AuthInfo}
	cfg.Contexts["good"] = good.DeepCopy()
	withNS := good.DeepCopy()
	withNS.Namespace = ctxNS
	cfg.Contexts["good-ns"] = withNS
	cfg.CurrentContext = "unreachable"
	kubeconfig := filepath.Join(t.TempDir(), "kubeconfig")
	if err := clientcmd.WriteToFile(*cfg, kubeconfig); err != nil {
		t.Fatal(err)
	}

	explain := []string{"explain", "1122334455", "POST", "/app-id/1122334455/messages/users", "--kubeconfig", kubeconfig, "-n", ns}
	if out, stderr, code := run(explain...); code != 1 || !strings.Contains(stderr, "127.0.0.1:1") {
		t.Errorf("the current context, unreachable: exit %d, %s%s; want an error naming its server", code, out, stderr)
	}
	if out, stderr, code := run(append(explain, "--context", "good")...); code != 0 || !strings.Contains(out, "500 Requests/Second per app   (override)") {
		t.Errorf("--context good: exit %d, %s%s", code, out, stderr)
	}
	if out, stderr, code := run(append(explain, "--context", "good", "--server", "https://127.0.0.1:1")...); code != 1 || !strings.Contains(stderr, "127.0.0.1:1") {
		t.Errorf("--server over the context's: exit %d, %s%s", code, out, stderr)
	}
	// Without -n, explain reads the manager's namespace, not the context's.
	if _, stderr, code := run("explain", "1", "GET", "/x", "--kubeconfig", kubeconfig, "--context", "good-ns"); code != 1 ||
		!strings.Contains(stderr, "ConfigMap appquota-system/appquota-limits") {
		t.Errorf("explain without -n: exit %d, %s; want it to read appquota-system", code, stderr)
	}
	// raise writes into the context's namespace, as kubectl apply would.
	out, stderr, code := run("raise", "7300000001", "users-register", "--max", "150", "--window", "second", "--reason", "x",
		"--dry-run=server", "-o", "jsonpath={.metadata.namespace}", "--kubeconfig", kubeconfig, "--context", "good-ns")
	if code != 0 || out != ctxNS {
		t.Errorf("raise --context good-ns: exit %d, namespace %q, %s; want %s", code, out, stderr, ctxNS)
	}
}
