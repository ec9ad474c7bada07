package validation_test

import (
	"encoding/json"
	"os"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	quotav1 "github.com/appquota/appquota/api/v1alpha1"
	"github.com/appquota/appquota/internal/render"
	"github.com/appquota/appquota/internal/validation"
	"github.com/appquota/appquota/pkg/quotaconfig"
)

func catalog(f *testing.F) *quotav1.QuotaProfile {
	data, err := os.ReadFile("../../config/samples/quota_v1alpha1_quotaprofile.yaml")
	if err != nil {
		f.Fatal(err)
	}
	var p quotav1.QuotaProfile
	if err := yaml.UnmarshalStrict(data, &p); err != nil {
		f.Fatal(err)
	}
	return &p
}

var fuzzNow = time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)

// FuzzAppQuota: whatever spec arrives (the schema may have been bypassed, or
// changed since the object was stored), validation never panics, and what it
// accepts renders into a document gateways accept, with the app in it.
// `go test` runs the seeds; `make fuzz` explores.
func FuzzAppQuota(f *testing.F) {
	p := catalog(f)
	for _, seed := range []string{
		`{"appID":"1122334455","profile":"default","overrides":[{"group":"messages-send-users","limits":[{"unit":"Requests","window":"Second","max":500}],"perCall":{"maxTargets":1000}}]}`,
		`{"appID":"1","overrides":[{"group":"messages-broadcast-users","limits":[{"unit":"Requests","window":"Day","max":0}],"expiresAt":"2027-01-31T00:00:00Z"}]}`,
		`{"appID":"2","overrides":[{"group":"conversations-delete","limits":[{"unit":"Requests","window":"Minute","scope":"User","max":9}]}]}`,
		`{"appID":"3","overrides":[{"group":"messages-send-users","limits":[{"unit":"Calls","window":"Week","scope":"Tenant","max":-5}]}]}`,
		`{"appID":"","overrides":[{"group":"users-register"}]}`,
		`{"appID":"4","overrides":[{"group":"users-register","perCall":{"maxTargets":-1}},{"group":"users-register","limits":[{"unit":"Requests","window":"Second","max":1},{"unit":"Requests","window":"Second","max":2}]}]}`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var spec quotav1.AppQuotaSpec
		if err := json.Unmarshal(data, &spec); err != nil {
			return
		}
		a := &quotav1.AppQuota{
			ObjectMeta: metav1.ObjectMeta{Name: "fuzz", Namespace: "ns", Generation: 1},
			Spec:       spec,
		}
		ref := validation.Reference{}
		if spec.Profile == "" || spec.Profile == p.Name {
			ref.Profile = p
		}
		_, errs := validation.AppQuotaAdmission(nil, a, ref, fuzzNow)
		if len(errs) > 0 {
			return
		}
		res, err := render.Render(render.Input{DefaultProfile: "default", Profiles: []quotav1.QuotaProfile{*p}, AppQuotas: []*quotav1.AppQuota{a}, Now: fuzzNow})
		if err != nil {
			t.Fatalf("accepted %s, but render failed: %v", data, err)
		}
		if o := res.Apps["ns/fuzz"]; !o.Valid {
			t.Fatalf("accepted %s, but the renderer refused it: %s", data, o.Message)
		}
		if _, err := quotaconfig.Load(res.Data); err != nil {
			t.Fatalf("accepted %s, but gateways would refuse the document: %v", data, err)
		}
	})
}

// FuzzQuotaProfile: the same for profiles.
func FuzzQuotaProfile(f *testing.F) {
	data, err := json.Marshal(catalog(f).Spec)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(data)
	for _, seed := range []string{
		`{"fallback":{"limits":[{"unit":"Requests","window":"Second","max":100}]}}`,
		`{"fallback":{"limits":[{"unit":"Requests","window":"Second","scope":"User","max":0}]},"endpointGroups":[{"name":"","routes":[{"method":"get","path":"a//{x}{y}?q"}],"limits":[]}]}`,
		`{"fallback":{"limits":[{"unit":"Requests","window":"Second","max":1}]},"endpointGroups":[{"name":"g","routes":[{"method":"GET","path":"/a/{u}","userParam":"v"}],"limits":[{"unit":"Requests","window":"Minute","scope":"User","max":1}]}]}`,
		`{"fallback":{"limits":[{"unit":"Requests","window":"Second","max":1}]},"endpointGroups":[{"name":"g","routes":[{"method":"GET","path":"/a/{x}"}],"limits":[{"unit":"Requests","window":"Second","max":1}]},{"name":"g","routes":[{"method":"GET","path":"/a/{y}"}],"limits":[{"unit":"Requests","window":"Second","max":1}]}]}`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var spec quotav1.QuotaProfileSpec
		if err := json.Unmarshal(data, &spec); err != nil {
			return
		}
		p := &quotav1.QuotaProfile{ObjectMeta: metav1.ObjectMeta{Name: "default"}, Spec: spec}
		if errs := validation.QuotaProfile(p); len(errs) > 0 {
			return
		}
		res, err := render.Render(render.Input{DefaultProfile: "default", Profiles: []quotav1.QuotaProfile{*p}, Now: fuzzNow})
		if err != nil {
			t.Fatalf("accepted %s, but render failed: %v", data, err)
		}
		if _, err := quotaconfig.Load(res.Data); err != nil {
			t.Fatalf("accepted %s, but gateways would refuse the document: %v", data, err)
		}
	})
}
