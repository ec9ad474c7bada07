package manifest

import (
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"testing"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"sigs.k8s.io/yaml"
)

// crdDefaults returns the default values in a CRD's schema, by path in the
// notation of fieldDefault.
func crdDefaults(t *testing.T, s *apiextensionsv1.JSONSchemaProps, path string, out map[string]any) {
	t.Helper()
	if s.Default != nil {
		var v any
		if err := json.Unmarshal(s.Default.Raw, &v); err != nil {
			t.Fatal(err)
		}
		out[path] = v
	}
	for name, p := range s.Properties {
		child := name
		if path != "" {
			child = path + "." + name
		}
		crdDefaults(t, &p, child, out)
	}
	if s.Items != nil && s.Items.Schema != nil {
		crdDefaults(t, s.Items.Schema, path+"[]", out)
	}
}

// TestDefaultsMatchCRDs: the defaults applied are exactly those of the CRDs
// the API server is given (generated from the +kubebuilder:default markers).
func TestDefaultsMatchCRDs(t *testing.T) {
	files, err := filepath.Glob("../../config/crd/bases/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no CRDs: %v", err)
	}
	kinds := make([]string, 0, len(files))
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var crd apiextensionsv1.CustomResourceDefinition
		if err := yaml.UnmarshalStrict(data, &crd); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		kind := crd.Spec.Names.Kind
		kinds = append(kinds, kind)
		for _, v := range crd.Spec.Versions {
			want := map[string]any{}
			crdDefaults(t, v.Schema.OpenAPIV3Schema, "", want)
			got := map[string]any{}
			for _, d := range defaults[kind] {
				got[d.path] = d.value
			}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("%s %s: defaults applied %v, the CRD's %v", kind, v.Name, got, want)
			}
		}
	}
	for kind := range defaults {
		if !slices.Contains(kinds, kind) {
			t.Errorf("defaults for %s, which has no CRD", kind)
		}
	}
}

// TestSetDefault: the walk into objects and lists, and what it leaves alone.
func TestSetDefault(t *testing.T) {
	var u map[string]any
	if err := json.Unmarshal([]byte(`{"spec":{"overrides":[{"limits":[{},{"scope":"User"},{"scope":null}]},{},{"limits":"x"}]}}`), &u); err != nil {
		t.Fatal(err)
	}
	applyDefaults("AppQuota", u)
	got, _ := json.Marshal(u)
	want := `{"spec":{"overrides":[{"limits":[{"scope":"App"},{"scope":"User"},{"scope":"App"}]},{},{"limits":"x"}],"profile":"default"}}`
	if string(got) != want {
		t.Errorf("defaulted to %s\nwant %s", got, want)
	}
	u = map[string]any{"metadata": map[string]any{}}
	applyDefaults("AppQuota", u)
	if _, ok := u["spec"]; ok {
		t.Errorf("a spec was made up: %v", u)
	}
}
