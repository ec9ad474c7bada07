package v1alpha1_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"reflect"
	"slices"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	quotav1 "github.com/appquota/appquota/api/v1alpha1"
)

// undefaulted returns an AppQuota and a QuotaProfile with every field the CRDs
// default left unset, each in a list of more than one element.
func undefaulted() (*quotav1.AppQuota, *quotav1.QuotaProfile) {
	rps := quotav1.OverrideLimit{Unit: quotav1.UnitRequests, Window: quotav1.WindowSecond, Max: 1}
	rpm := quotav1.OverrideLimit{Unit: quotav1.UnitRequests, Window: quotav1.WindowMinute, Max: 1}
	a := &quotav1.AppQuota{
		ObjectMeta: metav1.ObjectMeta{Name: "defaults", Namespace: "default"},
		Spec: quotav1.AppQuotaSpec{AppID: "1", Overrides: []quotav1.Override{
			{Group: "a", Limits: []quotav1.OverrideLimit{rps, rpm}},
			{Group: "b", Limits: []quotav1.OverrideLimit{rps}},
		}},
	}
	lims := []quotav1.Limit{
		{Unit: quotav1.UnitRequests, Window: quotav1.WindowSecond, Max: 1},
		{Unit: quotav1.UnitMessages, Window: quotav1.WindowSecond, Max: 1},
	}
	group := func(name string) quotav1.EndpointGroup {
		return quotav1.EndpointGroup{Name: name, Routes: []quotav1.Route{{Method: "GET", Path: "/" + name}}, Limits: slices.Clone(lims)}
	}
	p := &quotav1.QuotaProfile{
		ObjectMeta: metav1.ObjectMeta{Name: "defaults"},
		Spec: quotav1.QuotaProfileSpec{
			Fallback:       quotav1.Fallback{Limits: slices.Clone(lims)},
			EndpointGroups: []quotav1.EndpointGroup{group("a"), group("b")},
		},
	}
	return a, p
}

// TestDefaultsAreTheCRDs: SetDefaults sets every default of the generated
// CRDs, to the CRD's value, and the API server defaults an object exactly as
// SetDefaults does. A new +kubebuilder:default marker fails the first part
// until SetDefaults (and undefaulted, when the field is new) knows it.
func TestDefaultsAreTheCRDs(t *testing.T) {
	a, p := undefaulted()
	for _, tc := range []struct {
		crd string
		obj interface {
			client.Object
			SetDefaults()
		}
	}{
		{"quota.appquota.io_appquotas.yaml", a},
		{"quota.appquota.io_quotaprofiles.yaml", p},
	} {
		t.Run(tc.crd, func(t *testing.T) {
			defaults := crdDefaults(t, "../../config/crd/bases/"+tc.crd)
			if len(defaults) == 0 {
				t.Fatal("no defaults found in the CRD")
			}
			local := tc.obj.DeepCopyObject().(interface {
				client.Object
				SetDefaults()
			})
			local.SetDefaults()
			data, err := json.Marshal(local)
			if err != nil {
				t.Fatal(err)
			}
			var doc any
			if err := json.Unmarshal(data, &doc); err != nil {
				t.Fatal(err)
			}
			for path, want := range defaults {
				values := valuesAt(doc, strings.Split(path, "."))
				if len(values) == 0 {
					t.Errorf("%s: unset after SetDefaults, or missing from undefaulted's objects", path)
				}
				for _, v := range values {
					if !reflect.DeepEqual(v, want) {
						t.Errorf("%s: SetDefaults gives %v, the CRD defaults it to %v", path, v, want)
					}
				}
			}

			// The API server's defaulting, from a dry run.
			server := tc.obj.DeepCopyObject().(client.Object)
			if err := k8s.Create(context.Background(), server, client.DryRunAll); err != nil {
				t.Fatalf("dry-run create: %v", err)
			}
			if got, want := specOf(t, server), specOf(t, local); got != want {
				t.Errorf("the API server defaults the spec to\n%s\nSetDefaults to\n%s", got, want)
			}
		})
	}
}

func specOf(t *testing.T, o client.Object) string {
	t.Helper()
	var spec any
	switch o := o.(type) {
	case *quotav1.AppQuota:
		spec = o.Spec
	case *quotav1.QuotaProfile:
		spec = o.Spec
	}
	data, err := json.Marshal(spec)
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

// crdDefaults returns the defaults of a CRD's schema by path, lists marked
// with "[]": spec.overrides[].limits[].scope.
func crdDefaults(t *testing.T, file string) map[string]any {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var crd struct {
		Spec struct {
			Versions []struct {
				Schema struct {
					OpenAPIV3Schema map[string]any `json:"openAPIV3Schema"`
				} `json:"schema"`
			} `json:"versions"`
		} `json:"spec"`
	}
	if err := yaml.Unmarshal(data, &crd); err != nil {
		t.Fatal(err)
	}
	out := map[string]any{}
	var walk func(path string, schema map[string]any)
	walk = func(path string, schema map[string]any) {
		if d, ok := schema["default"]; ok {
			out[path] = d
		}
		if props, ok := schema["properties"].(map[string]any); ok {
			for name, sub := range props {
				p := name
				if path != "" {
					p = path + "." + name
				}
				walk(p, sub.(map[string]any))
			}
		}
		if items, ok := schema["items"].(map[string]any); ok {
			walk(path+"[]", items)
		}
	}
	for _, v := range crd.Spec.Versions {
		walk("", v.Schema.OpenAPIV3Schema)
	}
	return out
}

// valuesAt returns the values at path in a decoded JSON document, one per
// element of each list on the way.
func valuesAt(doc any, path []string) []any {
	if len(path) == 0 {
		return []any{doc}
	}
	m, ok := doc.(map[string]any)
	if !ok {
		return nil
	}
	name, list := strings.CutSuffix(path[0], "[]")
	v, ok := m[name]
	if !ok {
		return nil
	}
	if !list {
		return valuesAt(v, path[1:])
	}
	items, ok := v.([]any)
	if !ok {
		panic(fmt.Sprintf("%s is not a list", name))
	}
	var out []any
	for _, item := range items {
		out = append(out, valuesAt(item, path[1:])...)
	}
	return out
}

func TestKey(t *testing.T) {
	a := &quotav1.AppQuota{ObjectMeta: metav1.ObjectMeta{Namespace: "team-a", Name: "chat"}}
	if got := a.Key(); got != "team-a/chat" {
		t.Errorf("Key() = %q", got)
	}
	if ns, name := quotav1.SplitKey(a.Key()); ns != "team-a" || name != "chat" {
		t.Errorf("SplitKey(%q) = %q, %q", a.Key(), ns, name)
	}
}

func TestProfileName(t *testing.T) {
	a := &quotav1.AppQuota{}
	if got := a.ProfileName(); got != quotav1.DefaultProfileName {
		t.Errorf("unset: %q", got)
	}
	a.Spec.Profile = "gold"
	if got := a.ProfileName(); got != "gold" {
		t.Errorf("set: %q", got)
	}
}
