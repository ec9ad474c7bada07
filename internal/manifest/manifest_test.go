package manifest_test

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	quotav1 "github.com/appquota/appquota/api/v1alpha1"
	"github.com/appquota/appquota/internal/manifest"
)

func write(t *testing.T, path, data string) string {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func names(objs *manifest.Objects) []string {
	out := make([]string, 0, len(objs.QuotaProfiles)+len(objs.AppQuotas))
	for _, p := range objs.QuotaProfiles {
		out = append(out, "QuotaProfile "+p.Name)
	}
	for _, a := range objs.AppQuotas {
		out = append(out, "AppQuota "+a.Namespace+"/"+a.Name)
	}
	return out
}

const profile = `apiVersion: quota.appquota.io/v1alpha1
kind: QuotaProfile
metadata: {name: gold}
spec:
  fallback: {limits: [{unit: Requests, window: Second, max: 100}]}
  endpointGroups:
  - name: a
    routes: [{method: GET, path: /a}]
    limits: [{unit: Requests, window: Second, max: 1}, {unit: Requests, window: Minute, max: 5, scope: User}]
`

const appQuota = `apiVersion: quota.appquota.io/v1alpha1
kind: AppQuota
metadata: {name: one, namespace: team}
spec:
  appID: "1"
  overrides: [{group: a, limits: [{unit: Requests, window: Second, max: 5}]}]
`

// TestStreams: every form kubectl reads, and what kubectl get writes, gives
// the same objects.
func TestStreams(t *testing.T) {
	want := []string{"QuotaProfile gold", "AppQuota team/one"}
	profileJSON := `{"apiVersion":"quota.appquota.io/v1alpha1","kind":"QuotaProfile","metadata":{"name":"gold"},"spec":{"fallback":{"limits":[{"unit":"Requests","window":"Second","max":100}]}}}`
	appQuotaJSON := `{"apiVersion":"quota.appquota.io/v1alpha1","kind":"AppQuota","metadata":{"name":"one","namespace":"team"},"spec":{"appID":"1"}}`
	for name, in := range map[string]string{
		"YAML stream":            "---\n# leading comment\n" + profile + "---\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: team}\n---\n" + appQuota + "---\n# trailing comment\n",
		"JSON stream":            profileJSON + "\n" + appQuotaJSON + "\n",
		"JSON List":              `{"apiVersion":"v1","kind":"List","metadata":{"resourceVersion":""},"items":[` + profileJSON + "," + appQuotaJSON + `]}`,
		"YAML List, then more":   "apiVersion: v1\nkind: List\nitems:\n- " + strings.ReplaceAll(strings.TrimSpace(profile), "\n", "\n  ") + "\n---\n" + appQuota,
		"a kind's own list":      `{"apiVersion":"quota.appquota.io/v1alpha1","kind":"QuotaProfileList","items":[{"metadata":{"name":"gold"},"spec":{"fallback":{"limits":[]}}}]}` + "\n" + appQuotaJSON,
		"JSON documents in YAML": profileJSON + "\n---\n" + appQuotaJSON + "\n",
	} {
		t.Run(name, func(t *testing.T) {
			objs, err := manifest.Read(strings.NewReader(in))
			if err != nil {
				t.Fatal(err)
			}
			if got := names(objs); !reflect.DeepEqual(got, want) {
				t.Errorf("read %q, want %q", got, want)
			}
		})
	}
}

// TestKubectlGetList reads what `kubectl get quotaprofiles,appquotas -A -o
// yaml` writes: a v1 List, items with metadata and status from the server.
func TestKubectlGetList(t *testing.T) {
	objs, err := manifest.ReadFiles("testdata/kubectl-get-list.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := names(objs), []string{"QuotaProfile default", "AppQuota tenants/acme-chat"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("read %q, want %q", got, want)
	}
	if a := objs.AppQuotas[0]; a.Spec.AppID != "1122334455" || a.Spec.Overrides[0].Limits[0].Max != 500 || a.Status.ActiveOverrides != 1 {
		t.Errorf("AppQuota read as %+v", a)
	}
}

// TestDefaults: absent fields get the API's defaults; fields given keep their
// value, an empty one included, as the API server leaves them.
func TestDefaults(t *testing.T) {
	objs, err := manifest.Read(strings.NewReader(profile + "---\n" + appQuota + `---
apiVersion: quota.appquota.io/v1alpha1
kind: AppQuota
metadata: {name: two, namespace: team}
spec: {appID: "2", profile: "", overrides: [{group: a, limits: [{unit: Requests, window: Second, max: 5, scope: User}]}]}
`))
	if err != nil {
		t.Fatal(err)
	}
	p := objs.QuotaProfiles[0].Spec
	if got := []quotav1.LimitScope{p.Fallback.Limits[0].Scope, p.EndpointGroups[0].Limits[0].Scope, p.EndpointGroups[0].Limits[1].Scope}; !reflect.DeepEqual(got, []quotav1.LimitScope{"App", "App", "User"}) {
		t.Errorf("QuotaProfile scopes %q, want App App User", got)
	}
	one, two := objs.AppQuotas[0].Spec, objs.AppQuotas[1].Spec
	if one.Profile != "default" || one.Overrides[0].Limits[0].Scope != "App" {
		t.Errorf("AppQuota one: profile %q, scope %q; want the defaults", one.Profile, one.Overrides[0].Limits[0].Scope)
	}
	if two.Profile != "" || two.Overrides[0].Limits[0].Scope != "User" {
		t.Errorf("AppQuota two: profile %q, scope %q; want them as given", two.Profile, two.Overrides[0].Limits[0].Scope)
	}
}

// TestSamples reads config/catalog and config/samples as kubectl -f would: the kustomization
// and the Namespace are not QuotaProfiles or AppQuotas.
func TestSamples(t *testing.T) {
	objs, err := manifest.ReadFiles("../../config/catalog", "../../config/samples")
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"QuotaProfile default", "AppQuota tenants/initech-review", "AppQuota tenants/acme-chat", "AppQuota tenants/globex-campaign"}
	if got := names(objs); !reflect.DeepEqual(got, want) {
		t.Errorf("read %q, want %q", got, want)
	}
	if len(objs.QuotaProfiles[0].Spec.EndpointGroups) < 160 {
		t.Errorf("the catalog has %d groups", len(objs.QuotaProfiles[0].Spec.EndpointGroups))
	}
}

// TestDirectories: a directory's .yaml, .yml and .json files in lexical
// order, its subdirectories only when recursive.
func TestDirectories(t *testing.T) {
	dir := t.TempDir()
	write(t, filepath.Join(dir, "b.yml"), appQuota)
	write(t, filepath.Join(dir, "a.json"), `{"apiVersion":"quota.appquota.io/v1alpha1","kind":"AppQuota","metadata":{"name":"zero","namespace":"team"},"spec":{"appID":"0"}}`)
	write(t, filepath.Join(dir, "c.yaml"), profile)
	write(t, filepath.Join(dir, "kustomization.yaml"), "resources: [c.yaml]\n")
	write(t, filepath.Join(dir, "notes.txt"), "not a manifest")
	write(t, filepath.Join(dir, "sub", "d.yaml"), strings.ReplaceAll(appQuota, "one", "deep"))
	objs, err := manifest.ReadFiles(dir)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := names(objs), []string{"QuotaProfile gold", "AppQuota team/zero", "AppQuota team/one"}; !reflect.DeepEqual(got, want) {
		t.Errorf("read %q, want %q", got, want)
	}
	objs, err = manifest.ReadPaths(true, dir, filepath.Join(dir, "c.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := names(objs), []string{"QuotaProfile gold", "QuotaProfile gold", "AppQuota team/zero", "AppQuota team/one", "AppQuota team/deep"}; !reflect.DeepEqual(got, want) {
		t.Errorf("read recursively %q, want %q", got, want)
	}
	if _, err := manifest.ReadFiles(filepath.Join(dir, "nope")); err == nil || !strings.Contains(err.Error(), "nope: no such file or directory") {
		t.Errorf("a missing path: %v", err)
	}
}

// TestErrors: an error names the file, the document and the List item.
func TestErrors(t *testing.T) {
	dir := t.TempDir()
	for name, tc := range map[string]struct{ data, want string }{
		"unknown field": {profile + "---\n" + strings.Replace(appQuota, "appID", "appId: x\n  appID", 1),
			`, document 2: AppQuota: unknown field "spec.appId"`},
		"in a List": {`{"apiVersion":"v1","kind":"List","items":[{"apiVersion":"v1","kind":"Namespace"},{"apiVersion":"quota.appquota.io/v1alpha1","kind":"AppQuota","spec":{"appID":1}}]}`,
			`, document 1, item 2: AppQuota: json: cannot unmarshal number into Go struct field AppQuotaSpec.spec.appID of type string`},
		"YAML syntax": {appQuota + "---\nkind: [\n",
			`, document 2: yaml: line 1: did not find expected node content`},
		"repeated key": {appQuota + "---\n" + strings.Replace(appQuota, "metadata:", "kind: AppQuota\nmetadata:", 1),
			", document 2: yaml: unmarshal errors:\n  line 3: key \"kind\" already set in map"},
		"not an object": {"- a\n- b\n", `, document 1: not an object`},
	} {
		path := write(t, filepath.Join(dir, strings.ReplaceAll(name, " ", "-")+".yaml"), tc.data)
		_, err := manifest.ReadFiles(path)
		if err == nil || !strings.HasPrefix(err.Error(), path+tc.want) {
			t.Errorf("%s: error %v\nwant it to start %q", name, err, path+tc.want)
		}
	}
}

// TestEach: objects of every kind, in order, each named for errors, the
// kind of a built-in list's items filled in.
func TestEach(t *testing.T) {
	in := `{"apiVersion":"v1","kind":"ConfigMapList","items":[{"metadata":{"name":"a"}},{"metadata":{"name":"b"}}]}
{"apiVersion":"v1","kind":"Secret"}
{"data":"a bare document"}`
	var got []string
	if err := manifest.Each(strings.NewReader(in), "f.json", func(o manifest.Object) error {
		got = append(got, o.Where+": "+o.APIVersion+" "+o.Kind)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	want := []string{"f.json, document 1, item 1: v1 ConfigMap", "f.json, document 1, item 2: v1 ConfigMap", "f.json, document 2: v1 Secret", "f.json, document 3:  "}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("objects %q, want %q", got, want)
	}
}
