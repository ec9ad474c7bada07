package validation_test

import (
	"encoding/json"
	"os"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	quotav1 "github.com/appquota/appquota/api/v1alpha1"
	"github.com/appquota/appquota/internal/docform"
	"github.com/appquota/appquota/internal/render"
	"github.com/appquota/appquota/internal/validation"
	"github.com/appquota/appquota/pkg/quotaconfig"
)

func catalog(f *testing.F) *quotav1.QuotaProfile {
	data, err := os.ReadFile("../../config/catalog/default.yaml")
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

// The seed corpus is testdata/fuzz/<FuzzTarget>/, one JSON spec per file,
// named for what it exercises; api/v1alpha1's TestCELAgreesWithGo sends the
// same corpus to the API server.

// FuzzAppQuota: whatever spec arrives (the schema may have been bypassed, or
// changed since the object was stored), validation never panics; what the
// document's rules refuse, it refuses; and what it accepts renders into a
// document gateways accept, with the app in it. `go test` runs the seeds;
// `make fuzz` explores.
func FuzzAppQuota(f *testing.F) {
	p := catalog(f)
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
		if ref.Profile != nil {
			app := quotaconfig.App{Profile: a.ProfileName()}
			for _, o := range spec.Overrides {
				app.Overrides = append(app.Overrides, docform.Override(o))
			}
			doc := &quotaconfig.Document{
				Version: quotaconfig.FormatVersion, DefaultProfile: p.Name,
				Profiles: map[string]quotaconfig.Profile{p.Name: docform.Profile(p)},
				Apps:     map[string]quotaconfig.App{spec.AppID: app},
			}
			if err := doc.Validate(); err != nil && len(errs) == 0 {
				t.Fatalf("accepted %s, which the document's rules refuse: %v", data, err)
			}
		}
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

// FuzzQuotaProfile: the same for profiles; the catalog is a seed too.
func FuzzQuotaProfile(f *testing.F) {
	data, err := json.Marshal(catalog(f).Spec)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(data)
	f.Fuzz(func(t *testing.T, data []byte) {
		var spec quotav1.QuotaProfileSpec
		if err := json.Unmarshal(data, &spec); err != nil {
			return
		}
		p := &quotav1.QuotaProfile{ObjectMeta: metav1.ObjectMeta{Name: "default"}, Spec: spec}
		errs := validation.QuotaProfile(p)
		doc := &quotaconfig.Document{Version: quotaconfig.FormatVersion, DefaultProfile: p.Name, Profiles: map[string]quotaconfig.Profile{p.Name: docform.Profile(p)}}
		if err := doc.Validate(); err != nil && len(errs) == 0 {
			t.Fatalf("accepted %s, which the document's rules refuse: %v", data, err)
		}
		if len(errs) > 0 {
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
