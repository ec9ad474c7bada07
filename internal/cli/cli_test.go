package cli_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/appquota/appquota/internal/operatortest"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	quotav1 "github.com/appquota/appquota/api/v1alpha1"
	"github.com/appquota/appquota/internal/cli"
	"github.com/appquota/appquota/internal/layout"
	"github.com/appquota/appquota/internal/localcluster"
	"github.com/appquota/appquota/internal/manifest"
	"github.com/appquota/appquota/internal/wiring"
	"github.com/appquota/appquota/pkg/quotaconfig"
)

func run(args ...string) (stdout, stderr string, code int) {
	var out, errOut bytes.Buffer
	code = cli.Run(context.Background(), args, &out, &errOut)
	return out.String(), errOut.String(), code
}

// rendered writes the document rendered from config/samples into a directory
// laid out like a mounted ConfigMap and returns the directory.
func rendered(t *testing.T) string {
	t.Helper()
	doc, stderr, code := run("render", "-f", "../../config/catalog", "-f", "../../config/samples")
	if code != 0 {
		t.Fatalf("render: %s", stderr)
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "limits.json"), []byte(doc), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestExplainText(t *testing.T) {
	dir := rendered(t)
	cases := []struct {
		name string
		args []string
		want []string
	}{
		{"raised app", []string{"explain", "1122334455", "POST", "/app-id/1122334455/messages/users"}, []string{
			`App 1122334455 (AppQuota tenants/acme-chat), profile "default"`,
			"500 Requests/Second per app   (override)",
			"6000 Messages/Minute per app  (profile)",
			"at most 1000 targets          (override)",
			"override:  SALES-1234 enterprise upgrade, no expiry",
		}},
		{"app without AppQuota, per-user row", []string{"explain", "777", "delete", "/app-id/777/users/alice/user_channel"}, []string{
			`App 777 (no AppQuota: the default profile applies), profile "default"`,
			"5 Requests/Minute per user   (profile)",
			"user:    alice (path parameter {userName})",
		}},
		{"unknown route falls back", []string{"explain", "777", "GET", "/app-id/777/not/a/route?x=1"}, []string{
			"group:   (none: no group claims this route; the profile's fallback applies, counted per method and path)",
			"100 Requests/Second per app  (fallback)",
		}},
		{"temporary raise", []string{"explain", "5566778899", "POST", "/app-id/5566778899/messages/users/broadcast"}, []string{
			"1 Requests/Minute per app  (profile)",
			"500 Requests/Day per app   (override)",
			"until 2027-01-31T00:00:00Z",
		}},
		{"block", []string{"explain", "9988776655", "POST", "/app-id/9988776655/messages/chatrooms/broadcast"}, []string{
			"blocked:   yes: a limit of 0 refuses every call",
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			out, stderr, code := run(append(tc.args, "--config", dir)...)
			if code != 0 {
				t.Fatalf("exit %d: %s", code, stderr)
			}
			for _, w := range tc.want {
				if !strings.Contains(out, w) {
					t.Errorf("output lacks %q:\n%s", w, out)
				}
			}
		})
	}
}

func TestList(t *testing.T) {
	out, stderr, code := run("list", "5566778899", "--config", rendered(t))
	if code != 0 {
		t.Fatal(stderr)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 167 { // header + every group of the default catalog
		t.Errorf("list printed %d lines, want 167", len(lines))
	}
	if !strings.Contains(out, "override until 2027-01-31T00:00:00Z") {
		t.Errorf("list does not show the temporary raise:\n%s", out)
	}
}

func TestErrors(t *testing.T) {
	dir := rendered(t)
	bad := filepath.Join(t.TempDir(), "bad.json")
	if err := os.WriteFile(bad, []byte(`{"version":"v0"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	appQuota := `apiVersion: quota.appquota.io/v1alpha1
kind: AppQuota
metadata: {name: x, namespace: team}
spec:
  appID: "1"
  overrides: [{group: nope, limits: [{unit: Requests, window: Second, max: 1}]}]
`
	badManifest := writeFile(t, filepath.Join(t.TempDir(), "aq.yaml"), []byte(`apiVersion: quota.appquota.io/v1alpha1
kind: QuotaProfile
metadata: {name: default}
spec: {fallback: {limits: [{unit: Requests, window: Second, max: 100}]}}
---
`+appQuota))
	noProfile := writeFile(t, filepath.Join(t.TempDir(), "aq.yaml"), []byte(appQuota))
	otherProfile := writeFile(t, filepath.Join(t.TempDir(), "gold.yaml"), []byte(`apiVersion: quota.appquota.io/v1alpha1
kind: QuotaProfile
metadata: {name: gold}
spec: {fallback: {limits: [{unit: Requests, window: Second, max: 100}]}}
`))
	empty := writeFile(t, filepath.Join(t.TempDir(), "empty.yaml"), []byte("apiVersion: v1\nkind: List\nitems: []\n"))
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"frobnicate"}, `error: unknown command "frobnicate" for "kubectl appquota"`},
		{[]string{"explain", "1", "GET", "--config", dir}, "error: explain APP_ID METHOD PATH: want 3 arguments, got 2 (1 GET); see --help"},
		{[]string{"explain", "1", "GET", "/x", "--config", dir, "-o", "wide"}, `error: --output "wide": want one of text, json, yaml, kyaml, name, go-template,`},
		{[]string{"check", "1", "GET", "/x", "--config", dir, "-o", "yaml"}, `error: --output "yaml": want text or json`},
		{[]string{"render", "-f", "../../config/catalog", "--now", "tomorrow"}, `error: --now "tomorrow": want an RFC 3339 instant`},
		{[]string{"explain", "1", "GET", "/x", "--config", "/does/not/exist"}, "error: stat /does/not/exist: no such file or directory"},
		{[]string{"explain", "1", "GET", "/x", "--config", bad}, "error: " + bad + `: version: "v0" is not "quota.appquota.io/v1"`},
		{[]string{"render"}, "error: render: -f DIR_OR_FILE is required"},
		{[]string{"render", "-f", badManifest}, `error: invalid objects:
  AppQuota team/x: spec.overrides[0].group: Invalid value: "nope": not a group of QuotaProfile "default"`},
		// Never an empty configuration: apps without an AppQuota would have no limits.
		{[]string{"render", "-f", noProfile}, `error: no QuotaProfile "default" in ` + noProfile + ` (it has no QuotaProfile and 1 AppQuotas): apps without an AppQuota use it; --default-profile names another`},
		{[]string{"render", "-f", empty, "-f", otherProfile}, `error: no QuotaProfile "default" in ` + empty + ", " + otherProfile + ` (it has QuotaProfiles gold and 0 AppQuotas): apps without an AppQuota use it; --default-profile names another`},
		{[]string{"validate", "-f", "../../config/samples/nope.yaml"}, "error: stat ../../config/samples/nope.yaml: no such file or directory"},
	}
	for _, tc := range cases {
		_, stderr, code := run(tc.args...)
		if code != 1 || !strings.HasPrefix(stderr, tc.want) {
			t.Errorf("%v: exit %d, stderr %q; want exit 1 and %q", tc.args, code, stderr, tc.want)
		}
	}
}

func TestValidate(t *testing.T) {
	out, stderr, code := run("validate", "-f", "../../config/catalog", "-f", "../../config/samples")
	if code != 0 {
		t.Fatalf("the samples do not validate: %s%s", out, stderr)
	}
	for _, want := range []string{
		"Warning: AppQuota tenants/initech-review: spec.overrides[0].limits[0]: max 0 blocks group messages-broadcast-chatrooms for app 9988776655",
		"Warning: AppQuota tenants/initech-review: spec.overrides[1].limits[0]: lowers Requests/Second for group messages-send-users from the profile's 100 to 20",
		"1 QuotaProfiles and 3 AppQuotas are valid",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("validate output lacks %q:\n%s", want, out)
		}
	}

	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "bad.yaml"), []byte(`apiVersion: quota.appquota.io/v1alpha1
kind: QuotaProfile
metadata: {name: default}
spec:
  fallback: {limits: [{unit: Requests, window: Second, max: 100}]}
  endpointGroups:
  - {name: a, routes: [{method: GET, path: "/x/{a}"}], limits: [{unit: Requests, window: Second, max: 1}]}
---
apiVersion: quota.appquota.io/v1alpha1
kind: AppQuota
metadata: {name: one, namespace: team}
spec: {appID: "1", overrides: [{group: b, limits: [{unit: Requests, window: Second, max: 5}]}]}
---
apiVersion: quota.appquota.io/v1alpha1
kind: AppQuota
metadata: {name: two, namespace: team}
spec: {appID: "1"}
`), 0o644); err != nil {
		t.Fatal(err)
	}
	// The same AppQuota twice (an edit applied after the original) does not
	// claim its own appID: the webhook would take the second for an update.
	again := writeFile(t, filepath.Join(t.TempDir(), "again.yaml"), []byte(`apiVersion: quota.appquota.io/v1alpha1
kind: AppQuota
metadata: {name: one, namespace: team}
spec: {appID: "1"}
`))
	if out, stderr, code := run("validate", "-f", "../../config/catalog/default.yaml", "-f", again, "-f", again); code != 0 || !strings.Contains(out, "1 QuotaProfiles and 2 AppQuotas are valid") {
		t.Errorf("the same AppQuota twice: exit %d, %s%s", code, out, stderr)
	}
	out, stderr, code = run("validate", "-f", dir)
	want := `AppQuota team/one is invalid: spec.overrides[0].group: Invalid value: "b": not a group of QuotaProfile "default"
AppQuota team/two is invalid: spec.appID: Invalid value: "1": already claimed by AppQuota one in this namespace; an app may have only one AppQuota
`
	if code != 1 || out != want || stderr != "error: 2 of 3 objects are invalid\n" {
		t.Errorf("exit %d\nstdout:\n%s\nstderr: %s\nwant stdout:\n%s", code, out, stderr, want)
	}
}

// TestReadsEveryForm: the CLI reads the document plain, compressed, from a
// mounted directory either way, and from a ConfigMap manifest either way.
func TestReadsEveryForm(t *testing.T) {
	plain, _, code := run("render", "-f", "../../config/catalog", "-f", "../../config/samples")
	if code != 0 {
		t.Fatal("render failed")
	}
	gz, err := layout.Compress([]byte(plain))
	if err != nil {
		t.Fatal(err)
	}
	hash := quotaconfig.Hash([]byte(plain))
	// As the controller stores it: in gzip members, which a reader must all read.
	parsed, err := quotaconfig.Parse([]byte(plain))
	if err != nil {
		t.Fatal(err)
	}
	members, err := layout.CompressDocument(parsed)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	write := func(name string, data []byte) string {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	write("plain/limits.json", []byte(plain))
	write("plain/limits.sha256", []byte(hash))
	write("gz/limits.json.gz", gz)
	write("gz/limits.sha256", []byte(hash))
	write("members/limits.sha256", []byte(hash))
	write("badhash/limits.json.gz", gz)
	write("badhash/limits.sha256", []byte("sha256:00"))
	cmGz, _ := yaml.Marshal(map[string]any{"apiVersion": "v1", "kind": "ConfigMap",
		"data": map[string]string{"limits.sha256": hash}, "binaryData": map[string][]byte{"limits.json.gz": gz}})
	forms := map[string]string{
		"plain file":          write("limits.json", []byte(plain)),
		"gzip file":           write("limits.json.gz", gz),
		"gzip members":        write("members/limits.json.gz", members),
		"mounted, members":    filepath.Join(dir, "members"),
		"mounted, plain":      filepath.Join(dir, "plain"),
		"mounted, compressed": filepath.Join(dir, "gz"),
		"ConfigMap, gzip":     write("cm.yaml", cmGz),
	}
	for name, path := range forms {
		out, stderr, code := run("explain", "1122334455", "POST", "/app-id/1122334455/messages/users", "--config", path)
		if code != 0 || !strings.Contains(out, "500 Requests/Second per app") {
			t.Errorf("%s: exit %d, %s%s", name, code, out, stderr)
		}
	}
	if _, stderr, code := run("explain", "1", "GET", "/x", "--config", filepath.Join(dir, "badhash")); code != 1 || !strings.Contains(stderr, `limits.sha256 is "sha256:00" but`) {
		t.Errorf("a hash mismatch: exit %d, %s", code, stderr)
	}
}

// sharded splits the document rendered from config/samples into n shards and
// returns its index ConfigMap (index under limits.json) and shard ConfigMaps,
// named as the controller names them.
func sharded(t *testing.T, n int) []*corev1.ConfigMap {
	t.Helper()
	plain, stderr, code := run("render", "-f", "../../config/catalog", "-f", "../../config/samples")
	if code != 0 {
		t.Fatalf("render: %s", stderr)
	}
	doc, err := quotaconfig.Parse([]byte(plain))
	if err != nil {
		t.Fatal(err)
	}
	return splitConfigMaps(t, doc, n)
}

func splitConfigMaps(t *testing.T, doc *quotaconfig.Document, n int) []*corev1.ConfigMap {
	t.Helper()
	name := func(i int) string { return fmt.Sprintf("appquota-limits-shard-%d", i) }
	index, shards, err := layout.Split(doc, n, name)
	if err != nil {
		t.Fatal(err)
	}
	cms := make([]*corev1.ConfigMap, 0, 1+len(shards))
	cms = append(cms, &corev1.ConfigMap{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "ConfigMap"},
		ObjectMeta: metav1.ObjectMeta{Name: "appquota-limits", Namespace: "appquota-system"},
		Data:       map[string]string{quotaconfig.DataKey: string(index), quotaconfig.HashKey: quotaconfig.Hash(index)},
	})
	for i, gz := range shards {
		cms = append(cms, &corev1.ConfigMap{
			TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "ConfigMap"},
			ObjectMeta: metav1.ObjectMeta{Name: name(i), Namespace: "appquota-system"},
			BinaryData: map[string][]byte{layout.ShardKey(i, n): gz},
		})
	}
	return cms
}

// mount writes ConfigMaps into a new directory as one projected volume would.
func mount(t *testing.T, cms []*corev1.ConfigMap) string {
	t.Helper()
	dir := t.TempDir()
	for _, cm := range cms {
		for k, v := range cm.Data {
			writeFile(t, filepath.Join(dir, k), []byte(v))
		}
		for k, v := range cm.BinaryData {
			writeFile(t, filepath.Join(dir, k), v)
		}
	}
	return dir
}

func writeFile(t *testing.T, path string, data []byte) string {
	t.Helper()
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func marshal(t *testing.T, v any, asJSON bool) []byte {
	t.Helper()
	var b []byte
	var err error
	if asJSON {
		b, err = json.Marshal(v)
	} else {
		b, err = yaml.Marshal(v)
	}
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestReadsShardedForms: --config follows a sharded configuration in every
// file form, and names what is missing when it cannot.
func TestReadsShardedForms(t *testing.T) {
	cms := sharded(t, 4)
	dir := t.TempDir()
	list := func(kind string, items []*corev1.ConfigMap) map[string]any {
		return map[string]any{"apiVersion": "v1", "kind": kind, "items": items}
	}
	var stream []byte
	for _, cm := range cms {
		stream = append(append(stream, marshal(t, cm, false)...), "---\n"...)
	}
	// The API server's ConfigMapList leaves out its items' kind.
	bare := make([]map[string]any, 0, len(cms))
	for _, cm := range cms {
		bare = append(bare, map[string]any{"metadata": cm.ObjectMeta, "data": cm.Data, "binaryData": cm.BinaryData})
	}
	gzIndex := mount(t, cms)
	gz, err := layout.Compress([]byte(cms[0].Data[quotaconfig.DataKey]))
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(gzIndex, quotaconfig.GzipDataKey), gz)
	if err := os.Remove(filepath.Join(gzIndex, quotaconfig.DataKey)); err != nil {
		t.Fatal(err)
	}
	mounted := mount(t, cms)
	renamed := slices.Clone(cms)
	renamed[0] = cms[0].DeepCopy()
	renamed[0].Name = "limits"

	forms := map[string][]string{
		"mounted directory":                 {mounted},
		"mounted directory, gzip index":     {gzIndex},
		"the index file, shards next to it": {filepath.Join(mounted, quotaconfig.DataKey)},
		"kubectl get -o yaml (List)":        {writeFile(t, filepath.Join(dir, "list.yaml"), marshal(t, list("List", cms), false))},
		"kubectl get -o json (List)":        {writeFile(t, filepath.Join(dir, "list.json"), marshal(t, list("List", cms), true))},
		"--- separated ConfigMaps":          {writeFile(t, filepath.Join(dir, "stream.yaml"), stream)},
		"index under another name":          {writeFile(t, filepath.Join(dir, "renamed.yaml"), marshal(t, list("List", renamed), false))},
		"index named by --configmap":        {writeFile(t, filepath.Join(dir, "renamed2.yaml"), marshal(t, list("List", renamed), false)), "--configmap", "limits"},
	}
	forms["ConfigMapList, items without kind"] = []string{writeFile(t, filepath.Join(dir, "cml.json"), marshal(t, map[string]any{"apiVersion": "v1", "kind": "ConfigMapList", "items": bare}, true))}
	for name, args := range forms {
		out, stderr, code := run(append([]string{"explain", "1122334455", "POST", "/app-id/1122334455/messages/users", "--config"}, args...)...)
		if code != 0 || !strings.Contains(out, "500 Requests/Second per app   (override)") {
			t.Errorf("%s: exit %d, %s%s", name, code, out, stderr)
		}
	}

	// What is missing is named.
	noShard := mount(t, cms)
	if err := os.Remove(filepath.Join(noShard, layout.ShardKey(2, 4))); err != nil {
		t.Fatal(err)
	}
	other, err := quotaconfig.Parse([]byte(cms[0].Data[quotaconfig.DataKey]))
	if err != nil {
		t.Fatal(err)
	}
	other.Apps = map[string]quotaconfig.App{"1122334455": {Profile: "default"}}
	other.Shards = nil
	stale := append([]*corev1.ConfigMap(nil), cms...)
	stale[1+quotaconfig.ShardOf("1122334455", 4)] = splitConfigMaps(t, other, 4)[1+quotaconfig.ShardOf("1122334455", 4)]
	another := cms[0].DeepCopy()
	another.Name = "other"
	twoDocs := []*corev1.ConfigMap{renamed[0], another}
	cases := map[string]struct {
		path, want string
	}{
		"a shard file missing": {noShard,
			"shard 2 (ConfigMap appquota-limits-shard-2, key limits-2-of-4.json.gz): not in " + noShard + " (does the volume mount ConfigMap appquota-limits-shard-2?)"},
		"a shard ConfigMap missing": {writeFile(t, filepath.Join(dir, "missing.yaml"), marshal(t, list("List", append(cms[:3:3], cms[4])), false)),
			"shard 2 (ConfigMap appquota-limits-shard-2, key limits-2-of-4.json.gz): ConfigMap appquota-limits-shard-2 is not in the file"},
		"a shard not matching the index": {writeFile(t, filepath.Join(dir, "stale.yaml"), marshal(t, list("List", stale), false)),
			"not the index's"},
		"the index file alone": {writeFile(t, filepath.Join(t.TempDir(), "limits.json"), []byte(cms[0].Data[quotaconfig.DataKey])),
			"shard 0 (ConfigMap appquota-limits-shard-0, key limits-0-of-4.json.gz): open "},
		"two candidate indexes": {writeFile(t, filepath.Join(dir, "two.yaml"), marshal(t, list("List", twoDocs), false)),
			"no ConfigMap appquota-limits, and several hold a document (limits, other): choose with --configmap"},
		"no ConfigMap at all": {writeFile(t, filepath.Join(dir, "none.yaml"), []byte("apiVersion: v1\nkind: Secret\n")),
			`no ConfigMap appquota-limits, nor any ConfigMap with data "limits.json" or binaryData "limits.json.gz"`},
	}
	for name, tc := range cases {
		_, stderr, code := run("explain", "1", "GET", "/x", "--config", tc.path)
		if code != 1 || !strings.Contains(stderr, tc.want) {
			t.Errorf("%s: exit %d, %s\nwant an error containing %q", name, code, stderr, tc.want)
		}
	}
}

// live is the control plane of the tests that need one, with the operator
// running in this process (raise waits on its statuses, its webhook admits
// AppQuotas), started by the first of them and stopped when all have run.
// The operator writes its ConfigMap into a namespace of its own, so that
// the ConfigMaps TestLiveSharded writes into appquota-system stay its own.
var live struct {
	once         sync.Once
	cluster      *localcluster.Cluster
	stopOperator func()
	err          error
}

// operatorNamespace is the in-process operator's namespace.
const operatorNamespace = "appquota-cli-test"

func liveCluster(t *testing.T) *localcluster.Cluster {
	t.Helper()
	live.once.Do(func() {
		live.cluster, live.err = operatortest.StartCluster(localcluster.Options{})
		if live.err != nil {
			return
		}
		opts := wiring.DefaultOptions()
		opts.Namespace = operatorNamespace
		live.stopOperator, live.err = operatortest.Run(context.Background(), live.cluster, opts)
	})
	if live.err != nil {
		t.Fatal(live.err)
	}
	return live.cluster
}

func TestMain(m *testing.M) {
	code := m.Run()
	if live.stopOperator != nil {
		live.stopOperator()
	}
	if live.cluster != nil {
		if err := live.cluster.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			code = 1
		}
	}
	os.Exit(code)
}

// TestRenderKubectlList renders what `kubectl get quotaprofiles,appquotas -A
// -o yaml` wrote (testdata/kubectl-get-all.yaml, from a real API server):
// a List, whose items are the objects, with the server's defaults and
// metadata. The same List in JSON (-o json) renders the same.
func TestRenderKubectlList(t *testing.T) {
	data, err := os.ReadFile("testdata/kubectl-get-all.yaml")
	if err != nil {
		t.Fatal(err)
	}
	asJSON, err := yaml.YAMLToJSON(data)
	if err != nil {
		t.Fatal(err)
	}
	jsonList := writeFile(t, filepath.Join(t.TempDir(), "all.json"), asJSON)
	doc, stderr, code := run("render", "-f", "testdata/kubectl-get-all.yaml", "--now", "2026-01-01T00:00:00Z")
	if code != 0 {
		t.Fatalf("render: exit %d, %s", code, stderr)
	}
	if fromJSON, stderr, code := run("render", "-f", jsonList, "--now", "2026-01-01T00:00:00Z"); code != 0 || fromJSON != doc {
		t.Errorf("render of the List in JSON: exit %d, %s\n%s\nwant\n%s", code, stderr, fromJSON, doc)
	}
	config := writeFile(t, filepath.Join(t.TempDir(), "limits.json"), []byte(doc))
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"1122334455", "GET", "/app-id/1122334455/users/bob"}, "500 Requests/Second per app  (override)"},
		{[]string{"777", "DELETE", "/app-id/777/users/alice"}, "5 Requests/Minute per user  (profile)"},
	} {
		out, stderr, code := run(append(append([]string{"explain"}, tc.args...), "--config", config)...)
		if code != 0 || !strings.Contains(out, tc.want) {
			t.Errorf("explain %v: exit %d, %s%s\nwant %q", tc.args, code, out, stderr, tc.want)
		}
	}
	if out, stderr, code := run("list", "1122334455", "--config", config); code != 0 || strings.Count(out, "\n") != 3 {
		t.Errorf("list: exit %d, %s%s; want a header and the profile's two groups", code, out, stderr)
	}
}

// TestRenderFromCluster is the new user's path: apply the samples, save them
// with kubectl get, and render the file. It renders what the samples
// themselves render, and the objects read from either are the same: the
// defaults applied to the samples are the API server's.
func TestRenderFromCluster(t *testing.T) {
	cluster := liveCluster(t)
	kubectl := func(args ...string) []byte {
		t.Helper()
		out, err := exec.Command(cluster.Kubectl(), append([]string{"--kubeconfig", cluster.KubeconfigPath}, args...)...).Output()
		if err != nil {
			t.Fatalf("kubectl %s: %v", strings.Join(args, " "), err)
		}
		return out
	}
	kubectl("apply", "--server-side", "-k", "../../config/samples")
	dir := t.TempDir()
	saved := map[string]string{
		"-o yaml": writeFile(t, filepath.Join(dir, "all.yaml"), kubectl("get", "quotaprofiles,appquotas", "-A", "-o", "yaml")),
		"-o json": writeFile(t, filepath.Join(dir, "all.json"), kubectl("get", "quotaprofiles,appquotas", "-A", "-o", "json")),
	}
	want, stderr, code := run("render", "-f", "../../config/catalog", "-f", "../../config/samples", "--now", "2026-01-01T00:00:00Z")
	if code != 0 {
		t.Fatalf("render -f config/samples: %s", stderr)
	}
	samples, err := manifest.ReadFiles("../../config/catalog", "../../config/samples")
	if err != nil {
		t.Fatal(err)
	}
	for form, path := range saved {
		got, stderr, code := run("render", "-f", path, "--now", "2026-01-01T00:00:00Z")
		if code != 0 || got != want {
			t.Errorf("kubectl get %s, rendered: exit %d, %s; the document differs from config/samples' (%d and %d bytes)", form, code, stderr, len(got), len(want))
		}
		fromServer, err := manifest.ReadFiles(path)
		if err != nil {
			t.Fatal(err)
		}
		if len(fromServer.QuotaProfiles) != 1 || !equality.Semantic.DeepEqual(fromServer.QuotaProfiles[0].Spec, samples.QuotaProfiles[0].Spec) {
			t.Errorf("kubectl get %s: the QuotaProfile differs from the sample's as defaulted", form)
		}
		specs := map[string]quotav1.AppQuotaSpec{}
		for _, a := range fromServer.AppQuotas {
			specs[a.Name] = a.Spec
		}
		for _, a := range samples.AppQuotas {
			if !equality.Semantic.DeepEqual(specs[a.Name], a.Spec) {
				t.Errorf("kubectl get %s: AppQuota %s is %+v on the server, %+v as read and defaulted", form, a.Name, specs[a.Name], a.Spec)
			}
		}
	}
}

// TestLiveSharded reads a sharded configuration from a real API server: the
// index and each shard are ConfigMaps in the namespace given.
func TestLiveSharded(t *testing.T) {
	cluster := liveCluster(t)
	ctx := context.Background()
	if err := cluster.CreateNamespaces(ctx, "appquota-system"); err != nil {
		t.Fatal(err)
	}
	c, err := cluster.Client()
	if err != nil {
		t.Fatal(err)
	}
	cms := sharded(t, 4)
	for _, cm := range cms {
		if err := c.Create(ctx, cm); err != nil {
			t.Fatal(err)
		}
	}
	explain := func() (string, string, int) {
		return run("explain", "1122334455", "POST", "/app-id/1122334455/messages/users", "--kubeconfig", cluster.KubeconfigPath)
	}
	out, stderr, code := explain()
	if code != 0 || !strings.Contains(out, "500 Requests/Second per app   (override)") {
		t.Fatalf("exit %d, %s%s", code, out, stderr)
	}

	if err := c.Delete(ctx, cms[3]); err != nil {
		t.Fatal(err)
	}
	_, stderr, code = explain()
	want := `error: ConfigMap appquota-system/appquota-limits: shard 2 (ConfigMap appquota-limits-shard-2, key limits-2-of-4.json.gz): read ConfigMap appquota-system/appquota-limits-shard-2: configmaps "appquota-limits-shard-2" not found`
	if code != 1 || !strings.HasPrefix(stderr, want) {
		t.Errorf("a shard deleted: exit %d, %s\nwant %s", code, stderr, want)
	}
	_, stderr, code = run("explain", "1", "GET", "/x", "--kubeconfig", cluster.KubeconfigPath, "--configmap", "nope")
	want = `error: read ConfigMap appquota-system/nope: configmaps "nope" not found`
	if code != 1 || !strings.HasPrefix(stderr, want) {
		t.Errorf("no index: exit %d, %s\nwant %s", code, stderr, want)
	}
}
