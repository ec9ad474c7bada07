package docform_test

import (
	"cmp"
	"fmt"
	"math/rand/v2"
	"os"
	"reflect"
	"slices"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	quotav1 "github.com/appquota/appquota/api/v1alpha1"
	"github.com/appquota/appquota/internal/docform"
	"github.com/appquota/appquota/pkg/quotaconfig"
)

func TestUserParam(t *testing.T) {
	cases := map[string]string{
		"/app-id/{app_id}/users/{username}/x":                      "username",
		"/app-id/{app_id}/users/{userName}/user_channel":           "userName",
		"/app-id/{app_id}/users/{owner_username}/contacts/{uid}":   "owner_username",
		"/app-id/{app_id}/reaction/user/{userId}":                  "userId",
		"/app-id/{app_id}/chatgroups/{group_id}/users/{usernames}": "",
		"/app-id/{app_id}/messages/users":                          "",
	}
	for path, want := range cases {
		if got := docform.UserParam(quotav1.Route{Method: "GET", Path: path}); got != want {
			t.Errorf("UserParam(%s) = %q, want %q", path, got, want)
		}
	}
	explicit := quotav1.Route{Method: "GET", Path: "/a/{owner}/{username}", UserParam: "owner"}
	if got := docform.UserParam(explicit); got != "owner" {
		t.Errorf("explicit userParam: got %q", got)
	}
}

// TestRoundTripSamples: the default catalog converted to the document and
// back is the catalog as the API server stores it, less what the document does
// not hold (descriptions) and in the document's order; and converted again it
// is the same document.
func TestRoundTripSamples(t *testing.T) {
	data, err := os.ReadFile("../../config/catalog/default.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var p quotav1.QuotaProfile
	if err := yaml.UnmarshalStrict(data, &p); err != nil {
		t.Fatal(err)
	}
	roundTrip(t, &p)
}

// TestRoundTripGenerated does the same for generated profiles: every field,
// explicit and conventional user parameters, per-call caps or none.
func TestRoundTripGenerated(t *testing.T) {
	rng := rand.New(rand.NewPCG(27, 3))
	for i := range 500 {
		p := randomProfile(rng, fmt.Sprintf("p-%d", i))
		if !t.Run(p.Name, func(t *testing.T) { roundTrip(t, p) }) {
			return
		}
	}
}

func roundTrip(t *testing.T, p *quotav1.QuotaProfile) {
	t.Helper()
	doc := docform.Profile(p)
	back := docform.APIProfile(p.Name, doc)
	if again := docform.Profile(back); !reflect.DeepEqual(again, doc) {
		t.Fatalf("document -> API -> document changed it:\n got %+v\nwant %+v", again, doc)
	}
	if want := canonical(p); !reflect.DeepEqual(back, want) {
		t.Fatalf("API -> document -> API:\n got %+v\nwant %+v", back.Spec, want.Spec)
	}
}

// canonical is p as APIProfile returns it: defaulted, without descriptions,
// in the document's order, userParam only where the convention would not
// find it.
func canonical(in *quotav1.QuotaProfile) *quotav1.QuotaProfile {
	p := &quotav1.QuotaProfile{}
	p.Name = in.Name
	p.Spec = *in.Spec.DeepCopy()
	p.SetDefaults()
	byLimit := func(x, y quotav1.Limit) int {
		return cmp.Or(cmp.Compare(y.Unit, x.Unit), cmp.Compare(quotaconfig.WindowSeconds(string(x.Window)), quotaconfig.WindowSeconds(string(y.Window))), cmp.Compare(x.Scope, y.Scope))
	}
	slices.SortFunc(p.Spec.Fallback.Limits, byLimit)
	for i := range p.Spec.EndpointGroups {
		g := &p.Spec.EndpointGroups[i]
		g.Description = ""
		slices.SortFunc(g.Limits, byLimit)
		slices.SortFunc(g.Routes, func(x, y quotav1.Route) int {
			return cmp.Or(cmp.Compare(x.Path, y.Path), cmp.Compare(x.Method, y.Method))
		})
		for j := range g.Routes {
			if r := &g.Routes[j]; r.UserParam == quotaconfig.ConventionalUserParam(r.Path) {
				r.UserParam = ""
			}
		}
	}
	slices.SortFunc(p.Spec.EndpointGroups, func(x, y quotav1.EndpointGroup) int { return cmp.Compare(x.Name, y.Name) })
	return p
}

func randomProfile(rng *rand.Rand, name string) *quotav1.QuotaProfile {
	pick := func(xs ...string) string { return xs[rng.IntN(len(xs))] }
	limits := func() []quotav1.Limit {
		var out []quotav1.Limit
		seen := map[string]bool{}
		for range 1 + rng.IntN(4) {
			l := quotav1.Limit{
				Unit:   quotav1.LimitUnit(pick("Requests", "Messages")),
				Window: quotav1.LimitWindow(pick("Second", "Minute", "Hour", "Day")),
				Scope:  quotav1.LimitScope(pick("", "App", "User")),
				Max:    1 + rng.Int64N(1e9),
			}
			if k := fmt.Sprint(l.Unit, l.Window, l.ScopeOrDefault()); !seen[k] {
				seen[k] = true
				out = append(out, l)
			}
		}
		return out
	}
	p := &quotav1.QuotaProfile{}
	p.Name = name
	for _, l := range limits() {
		l.Scope = quotav1.LimitScope(pick("", "App"))
		p.Spec.Fallback.Limits = append(p.Spec.Fallback.Limits, l)
	}
	names := map[string]bool{}
	for range rng.IntN(6) {
		g := quotav1.EndpointGroup{
			Name:        fmt.Sprintf("g-%d", rng.IntN(100)),
			Description: pick("", "sends a message"),
			RestOnly:    rng.IntN(2) == 0,
			Limits:      limits(),
		}
		if names[g.Name] {
			continue
		}
		names[g.Name] = true
		if rng.IntN(2) == 0 {
			g.PerCall = &quotav1.PerCall{MaxTargets: 1 + rng.Int32N(100000)}
		}
		for range 1 + rng.IntN(3) {
			var segs, params []string
			for k := range 1 + rng.IntN(5) {
				if rng.IntN(2) == 0 {
					segs = append(segs, pick("users", "messages", "chatgroups", "app-id"))
				} else {
					p := pick("username", "userId", "UID", "owner", "group_id", "x") + fmt.Sprint(k)
					if rng.IntN(2) == 0 {
						p = pick("username", "userId", "uid", "owner_username")
					}
					segs = append(segs, "{"+p+"}")
					params = append(params, p)
				}
			}
			r := quotav1.Route{Method: quotav1.HTTPMethod(pick("GET", "POST", "DELETE")), Path: "/" + strings.Join(segs, "/")}
			if slices.ContainsFunc(g.Routes, func(o quotav1.Route) bool { return o.Method == r.Method && o.Path == r.Path }) {
				continue
			}
			if len(params) > 0 && rng.IntN(2) == 0 {
				r.UserParam = params[rng.IntN(len(params))]
			}
			g.Routes = append(g.Routes, r)
		}
		p.Spec.EndpointGroups = append(p.Spec.EndpointGroups, g)
	}
	return p
}

// TestAPIProfileIsComplete: nothing the document holds is lost on the way
// back (the inverse this replaced dropped the fallback and maxTargets).
func TestAPIProfileIsComplete(t *testing.T) {
	doc := quotaconfig.Profile{
		Fallback: []quotaconfig.Limit{{Unit: "Requests", Window: "Second", Scope: "App", Max: 100}},
		Groups: []quotaconfig.Group{{
			Name: "contacts-add", RestOnly: true, MaxTargets: 7,
			Routes: []quotaconfig.Route{
				{Method: "POST", Path: "/app-id/{app_id}/users/{owner}/contacts/users/{friend}", UserParam: "owner"},
				{Method: "PUT", Path: "/app-id/{app_id}/users/{username}/contacts", UserParam: "username"},
			},
			Limits: []quotaconfig.Limit{{Unit: "Requests", Window: "Minute", Scope: "User", Max: 5}},
		}},
	}
	got := docform.APIProfile("default", doc)
	want := quotav1.QuotaProfileSpec{
		Fallback: quotav1.Fallback{Limits: []quotav1.Limit{{Unit: "Requests", Window: "Second", Scope: "App", Max: 100}}},
		EndpointGroups: []quotav1.EndpointGroup{{
			Name: "contacts-add", RestOnly: true, PerCall: &quotav1.PerCall{MaxTargets: 7},
			Routes: []quotav1.Route{
				{Method: "POST", Path: "/app-id/{app_id}/users/{owner}/contacts/users/{friend}", UserParam: "owner"},
				{Method: "PUT", Path: "/app-id/{app_id}/users/{username}/contacts"},
			},
			Limits: []quotav1.Limit{{Unit: "Requests", Window: "Minute", Scope: "User", Max: 5}},
		}},
	}
	if got.Name != "default" || !reflect.DeepEqual(got.Spec, want) {
		t.Errorf("APIProfile:\n got %s %+v\nwant default %+v", got.Name, got.Spec, want)
	}
}
