package cli_test

import (
	"path/filepath"
	"strings"
	"testing"
)

// TestDiff: diff exits 0 when the manifests change no app's limits, 1 with
// each change when they do, and 2 when they cannot be applied.
func TestDiff(t *testing.T) {
	const ns = "diff"
	cluster := withCatalog(t, ns)
	appQuota := func(appID, max string) string {
		return `apiVersion: quota.appquota.io/v1alpha1
kind: AppQuota
metadata: {name: app-` + appID + `}
spec:
  appID: "` + appID + `"
  overrides:
  - group: messages-send-users
    limits: [{unit: Requests, window: Second, max: ` + max + `}]
    reason: SALES-3
`
	}
	kubectl(t, cluster, appQuota("7200000001", "300"), "apply", "--server-side", "-n", ns, "-f", "-")
	dir := t.TempDir()
	same := writeFile(t, filepath.Join(dir, "same.yaml"), []byte(appQuota("7200000001", "300")))
	raised := writeFile(t, filepath.Join(dir, "raised.yaml"), []byte(appQuota("7200000001", "600")))
	newApp := writeFile(t, filepath.Join(dir, "new.yaml"), []byte(appQuota("7200000002", "250")))
	invalid := writeFile(t, filepath.Join(dir, "invalid.yaml"), []byte(strings.Replace(appQuota("7200000003", "5"), "messages-send-users", "no-such-group", 1)))
	diff := func(args ...string) (string, string, int) {
		return run(append([]string{"diff", "--kubeconfig", cluster.KubeconfigPath, "-n", ns}, args...)...)
	}

	if out, stderr, code := diff("-f", same); code != 0 || out != "" {
		t.Errorf("the live object again: exit %d, stdout %q, stderr %q; want exit 0 and nothing", code, out, stderr)
	}
	out, stderr, code := diff("-f", raised, "-f", newApp)
	want := `app 7200000001 (AppQuota diff/app-7200000001), group messages-send-users:
  - 300 Requests/Second per app (override), 6000 Messages/Minute per app (profile); at most 600 targets (profile)
  + 600 Requests/Second per app (override), 6000 Messages/Minute per app (profile); at most 600 targets (profile)
app 7200000002 (AppQuota diff/app-7200000002), group messages-send-users:
  - 100 Requests/Second per app (profile), 6000 Messages/Minute per app (profile); at most 600 targets (profile)
  + 250 Requests/Second per app (override), 6000 Messages/Minute per app (profile); at most 600 targets (profile)
`
	if code != 1 || out != want {
		t.Errorf("a raise and a new app: exit %d, stderr %q, stdout:\n%s\nwant exit 1 and:\n%s", code, stderr, out, want)
	}
	out, stderr, code = diff("-f", raised, "-f", invalid)
	if code != 2 || !strings.Contains(stderr, `invalid objects:
  AppQuota diff/app-7200000003: spec.overrides[0].group: Invalid value: "no-such-group": not a group of QuotaProfile "default"`) {
		t.Errorf("an invalid manifest: exit %d, stdout %q, stderr %q; want exit 2 naming it", code, out, stderr)
	}
	out, stderr, code = diff("-f", raised, "-o", "name")
	if code != 1 || out != "limitchange.cli.appquota.io/7200000001.messages-send-users\n" {
		t.Errorf("-o name: exit %d, stdout %q, stderr %q", code, out, stderr)
	}
	if _, stderr, code := diff("-f", filepath.Join(dir, "nope.yaml")); code != 2 || !strings.Contains(stderr, "no such file") {
		t.Errorf("a missing file: exit %d, %s; want exit 2", code, stderr)
	}
	// The live object is untouched: diff writes nothing.
	if out, _, code := diff("-f", same); code != 0 || out != "" {
		t.Errorf("after the diffs, the live object changed: exit %d, %s", code, out)
	}
}
