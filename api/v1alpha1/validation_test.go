package v1alpha1_test

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/appquota/appquota/internal/operatortest"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	quotav1 "github.com/appquota/appquota/api/v1alpha1"
	"github.com/appquota/appquota/internal/localcluster"
)

// These tests send objects to a real kube-apiserver, so what they assert is what
// the OpenAPI schema and the CEL rules generated from api/v1alpha1's markers do,
// word for word as `kubectl apply` prints it.

var k8s client.Client

func TestMain(m *testing.M) {
	// The schema and CEL rules alone: no webhook (test/webhook covers it).
	os.Exit(operatortest.RunTests(m, localcluster.Options{SkipWebhooks: true}, nil, func(c *localcluster.Cluster) error {
		var err error
		k8s, err = c.Client()
		return err
	}))
}

func validProfile(name string) *quotav1.QuotaProfile {
	return &quotav1.QuotaProfile{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: quotav1.QuotaProfileSpec{
			Fallback: quotav1.Fallback{Limits: []quotav1.Limit{{Unit: quotav1.UnitRequests, Window: quotav1.WindowSecond, Max: 100}}},
			EndpointGroups: []quotav1.EndpointGroup{{
				Name:   "messages-send-users",
				Routes: []quotav1.Route{{Method: "POST", Path: "/app-id/{app_id}/messages/users"}},
				Limits: []quotav1.Limit{
					{Unit: quotav1.UnitRequests, Window: quotav1.WindowSecond, Max: 100},
					{Unit: quotav1.UnitMessages, Window: quotav1.WindowMinute, Max: 6000},
				},
				PerCall: &quotav1.PerCall{MaxTargets: 600},
			}, {
				Name:   "conversations-delete",
				Routes: []quotav1.Route{{Method: "DELETE", Path: "/app-id/{app_id}/users/{userName}/user_channel"}},
				Limits: []quotav1.Limit{
					{Unit: quotav1.UnitRequests, Window: quotav1.WindowMinute, Scope: quotav1.ScopeUser, Max: 5},
					{Unit: quotav1.UnitRequests, Window: quotav1.WindowSecond, Max: 100},
				},
			}},
		},
	}
}

func validAppQuota(name string) *quotav1.AppQuota {
	return &quotav1.AppQuota{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"},
		Spec: quotav1.AppQuotaSpec{
			AppID: "1122334455",
			Overrides: []quotav1.Override{{
				Group:   "messages-send-users",
				Limits:  []quotav1.OverrideLimit{{Unit: quotav1.UnitRequests, Window: quotav1.WindowSecond, Max: 500}},
				PerCall: &quotav1.PerCall{MaxTargets: 1000},
				Reason:  "SALES-1234",
			}},
		},
	}
}

// segmentRule is the message of the route path's segment rule.
const segmentRule = "each segment between '/' must be a non-empty literal without '{', '}' or '#', or exactly one parameter {name} (a letter or '_', then letters, digits, '_')"

// notChecked is what the API server appends when schema errors (enum, required,
// maxItems) stop it from evaluating the CEL rules; users see it after the cause.
const notChecked = ", <nil>: Invalid value: null: some validation rules were not checked because the object was invalid; correct the existing errors to complete validation]"

// userMessage is the error text after `Kind.group "name" is invalid: `, without
// the API server's note about unchecked CEL rules.
func userMessage(err error, kind, name string) string {
	msg := strings.TrimPrefix(err.Error(), fmt.Sprintf("%s.quota.appquota.io %q is invalid: ", kind, name))
	if strings.HasPrefix(msg, "[") && strings.HasSuffix(msg, notChecked) {
		msg = strings.TrimSuffix(strings.TrimPrefix(msg, "["), notChecked)
	}
	return msg
}

func TestQuotaProfileSchemaRejections(t *testing.T) {
	cases := []struct {
		name   string
		mutate func(p *quotav1.QuotaProfile)
		want   string // the error kubectl prints after `QuotaProfile.quota.appquota.io "<name>" is invalid: `
	}{
		{"method not an HTTP method", func(p *quotav1.QuotaProfile) {
			p.Spec.EndpointGroups[0].Routes[0].Method = "post"
		}, `spec.endpointGroups[0].routes[0].method: Unsupported value: "post": supported values: "GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"`},
		{"path without leading slash", func(p *quotav1.QuotaProfile) {
			p.Spec.EndpointGroups[0].Routes[0].Path = "app-id/{app_id}/messages/users"
		}, `spec.endpointGroups[0].routes[0].path: Invalid value: "app-id/{app_id}/messages/users": must start with '/'`},
		{"path with a query string", func(p *quotav1.QuotaProfile) {
			p.Spec.EndpointGroups[0].Routes[0].Path = "/app-id/{app_id}/chatgroups?limit={N}"
		}, `spec.endpointGroups[0].routes[0].path: Invalid value: "/app-id/{app_id}/chatgroups?limit={N}": must not contain a query string ('?'): gateways match the path only`},
		{"path with a malformed parameter", func(p *quotav1.QuotaProfile) {
			p.Spec.EndpointGroups[0].Routes[0].Path = "/app-id/{app id}/messages/users"
		}, `spec.endpointGroups[0].routes[0].path: Invalid value: "/app-id/{app id}/messages/users": ` + segmentRule},
		{"path with a parameter inside a segment", func(p *quotav1.QuotaProfile) {
			p.Spec.EndpointGroups[0].Routes[0].Path = "/app-id/{app_id}/chatmessages/${time}"
		}, `spec.endpointGroups[0].routes[0].path: Invalid value: "/app-id/{app_id}/chatmessages/${time}": ` + segmentRule},
		{"path with an empty segment", func(p *quotav1.QuotaProfile) {
			p.Spec.EndpointGroups[0].Routes[0].Path = "/app-id//messages"
		}, `spec.endpointGroups[0].routes[0].path: Invalid value: "/app-id//messages": ` + segmentRule},
		{"group name not a DNS label", func(p *quotav1.QuotaProfile) {
			p.Spec.EndpointGroups[0].Name = "Messages_Send"
		}, `spec.endpointGroups[0].name: Invalid value: "Messages_Send": must be a DNS label: lower-case letters, digits and '-', starting and ending with a letter or digit`},
		{"duplicate group names", func(p *quotav1.QuotaProfile) {
			p.Spec.EndpointGroups[1].Name = p.Spec.EndpointGroups[0].Name
		}, `spec.endpointGroups[1]: Duplicate value: {"name":"messages-send-users"}`},
		{"duplicate route in a group", func(p *quotav1.QuotaProfile) {
			g := &p.Spec.EndpointGroups[0]
			g.Routes = append(g.Routes, g.Routes[0])
		}, `spec.endpointGroups[0].routes[1]: Duplicate value: {"method":"POST","path":"/app-id/{app_id}/messages/users"}`},
		{"duplicate limit key", func(p *quotav1.QuotaProfile) {
			g := &p.Spec.EndpointGroups[0]
			g.Limits = append(g.Limits, quotav1.Limit{Unit: quotav1.UnitRequests, Window: quotav1.WindowSecond, Max: 5})
		}, `spec.endpointGroups[0].limits[2]: Duplicate value: {"scope":"App","unit":"Requests","window":"Second"}`},
		{"max zero in a profile", func(p *quotav1.QuotaProfile) {
			p.Spec.EndpointGroups[0].Limits[0].Max = 0
		}, `spec.endpointGroups[0].limits[0].max: Invalid value: 0: spec.endpointGroups[0].limits[0].max in body should be greater than or equal to 1`},
		{"bad unit", func(p *quotav1.QuotaProfile) {
			p.Spec.EndpointGroups[0].Limits[0].Unit = "Calls"
		}, `spec.endpointGroups[0].limits[0].unit: Unsupported value: "Calls": supported values: "Requests", "Messages"`},
		{"bad window", func(p *quotav1.QuotaProfile) {
			p.Spec.EndpointGroups[0].Limits[0].Window = "Week"
		}, `spec.endpointGroups[0].limits[0].window: Unsupported value: "Week": supported values: "Second", "Minute", "Hour", "Day"`},
		{"bad scope", func(p *quotav1.QuotaProfile) {
			p.Spec.EndpointGroups[0].Limits[0].Scope = "Tenant"
		}, `spec.endpointGroups[0].limits[0].scope: Unsupported value: "Tenant": supported values: "App", "User"`},
		{"perCall maxTargets zero", func(p *quotav1.QuotaProfile) {
			p.Spec.EndpointGroups[0].PerCall.MaxTargets = 0
		}, `spec.endpointGroups[0].perCall.maxTargets: Invalid value: 0: spec.endpointGroups[0].perCall.maxTargets in body should be greater than or equal to 1`},
		{"User scope without a user parameter", func(p *quotav1.QuotaProfile) {
			p.Spec.EndpointGroups[0].Limits[0].Scope = quotav1.ScopeUser
		}, `spec.endpointGroups[0].routes: Invalid value: a limit with scope User needs a user parameter in every route: set userParam, or name the parameter {username}, {userName}, {userId}, {user_id}, {uid} or {owner_username}`},
		{"userParam not in the path", func(p *quotav1.QuotaProfile) {
			p.Spec.EndpointGroups[1].Routes[0].UserParam = "owner"
		}, `spec.endpointGroups[1].routes[0].userParam: Invalid value: userParam must name a parameter of path, written {userParam} in it`},
		{"User scope in the fallback", func(p *quotav1.QuotaProfile) {
			p.Spec.Fallback.Limits[0].Scope = quotav1.ScopeUser
		}, `spec.fallback.limits: Invalid value: fallback limits must have scope App: an unclaimed route has no known user parameter`},
		{"no fallback limits", func(p *quotav1.QuotaProfile) {
			p.Spec.Fallback.Limits = nil
		}, `spec.fallback.limits: Required value`},
		{"group without routes", func(p *quotav1.QuotaProfile) {
			p.Spec.EndpointGroups[0].Routes = nil
		}, `spec.endpointGroups[0].routes: Required value`},
		{"too many routes in a group", func(p *quotav1.QuotaProfile) {
			g := &p.Spec.EndpointGroups[0]
			for i := range 8 {
				g.Routes = append(g.Routes, quotav1.Route{Method: "GET", Path: fmt.Sprintf("/r/%d", i)})
			}
		}, `spec.endpointGroups[0].routes: Too many: 9: must have at most 8 items`},
		{"too many groups", func(p *quotav1.QuotaProfile) {
			for i := range 255 {
				p.Spec.EndpointGroups = append(p.Spec.EndpointGroups, quotav1.EndpointGroup{
					Name:   fmt.Sprintf("g-%d", i),
					Routes: []quotav1.Route{{Method: "GET", Path: fmt.Sprintf("/g/%d", i)}},
					Limits: []quotav1.Limit{{Unit: quotav1.UnitRequests, Window: quotav1.WindowSecond, Max: 1}},
				})
			}
		}, `spec.endpointGroups: Too many: 257: must have at most 256 items`},
	}
	ctx := context.Background()
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := validProfile(fmt.Sprintf("bad-%d", i))
			tc.mutate(p)
			err := k8s.Create(ctx, p)
			if err == nil {
				_ = k8s.Delete(ctx, p)
				t.Fatalf("created; want rejection %q", tc.want)
			}
			if got := userMessage(err, "QuotaProfile", p.Name); got != tc.want {
				t.Errorf("got  %s\nwant %s", got, tc.want)
			}
		})
	}
}

func TestAppQuotaSchemaRejections(t *testing.T) {
	cases := []struct {
		name   string
		mutate func(a *quotav1.AppQuota)
		want   string
	}{
		{"appID missing", func(a *quotav1.AppQuota) { a.Spec.AppID = "" }, `spec.appID: Invalid value: "": must be letters, digits, '.', '_' or '-', starting with a letter or digit`},
		{"appID with a space", func(a *quotav1.AppQuota) { a.Spec.AppID = "acme chat" }, `spec.appID: Invalid value: "acme chat": must be letters, digits, '.', '_' or '-', starting with a letter or digit`},
		{"appID too long", func(a *quotav1.AppQuota) { a.Spec.AppID = strings.Repeat("1", 65) }, `spec.appID: Too long: may not be more than 64 bytes`},
		{"profile not a DNS name", func(a *quotav1.AppQuota) { a.Spec.Profile = "Default_Profile" }, `spec.profile: Invalid value: "Default_Profile": must be a QuotaProfile name: lower-case letters, digits, '-' and '.', starting and ending with a letter or digit`},
		{"override without limits or perCall", func(a *quotav1.AppQuota) {
			a.Spec.Overrides[0].Limits, a.Spec.Overrides[0].PerCall = nil, nil
		}, `spec.overrides[0]: Invalid value: an override must set limits, perCall or both`},
		{"duplicate override group", func(a *quotav1.AppQuota) {
			a.Spec.Overrides = append(a.Spec.Overrides, a.Spec.Overrides[0])
		}, `spec.overrides[1]: Duplicate value: {"group":"messages-send-users"}`},
		{"negative max", func(a *quotav1.AppQuota) { a.Spec.Overrides[0].Limits[0].Max = -1 }, `spec.overrides[0].limits[0].max: Invalid value: -1: spec.overrides[0].limits[0].max in body should be greater than or equal to 0`},
		{"bad unit", func(a *quotav1.AppQuota) { a.Spec.Overrides[0].Limits[0].Unit = "Calls" }, `spec.overrides[0].limits[0].unit: Unsupported value: "Calls": supported values: "Requests", "Messages"`},
		{"bad window", func(a *quotav1.AppQuota) { a.Spec.Overrides[0].Limits[0].Window = "Week" }, `spec.overrides[0].limits[0].window: Unsupported value: "Week": supported values: "Second", "Minute", "Hour", "Day"`},
		{"duplicate limit key", func(a *quotav1.AppQuota) {
			o := &a.Spec.Overrides[0]
			o.Limits = append(o.Limits, quotav1.OverrideLimit{Unit: quotav1.UnitRequests, Window: quotav1.WindowSecond, Scope: quotav1.ScopeApp, Max: 1})
		}, `spec.overrides[0].limits[1]: Duplicate value: {"scope":"App","unit":"Requests","window":"Second"}`},
		{"perCall maxTargets zero", func(a *quotav1.AppQuota) { a.Spec.Overrides[0].PerCall.MaxTargets = 0 }, `spec.overrides[0].perCall.maxTargets: Invalid value: 0: spec.overrides[0].perCall.maxTargets in body should be greater than or equal to 1`},
		{"perCall maxTargets too large", func(a *quotav1.AppQuota) { a.Spec.Overrides[0].PerCall.MaxTargets = 100001 }, `spec.overrides[0].perCall.maxTargets: Invalid value: 100001: spec.overrides[0].perCall.maxTargets in body should be less than or equal to 100000`},
		{"reason too long", func(a *quotav1.AppQuota) { a.Spec.Overrides[0].Reason = strings.Repeat("x", 257) }, `spec.overrides[0].reason: Too long: may not be more than 256 bytes`},
		{"group not a DNS label", func(a *quotav1.AppQuota) { a.Spec.Overrides[0].Group = "Messages Send" }, `spec.overrides[0].group: Invalid value: "Messages Send": must be a DNS label: lower-case letters, digits and '-', starting and ending with a letter or digit`},
		{"too many overrides", func(a *quotav1.AppQuota) {
			for i := range 128 {
				a.Spec.Overrides = append(a.Spec.Overrides, quotav1.Override{
					Group:  fmt.Sprintf("g-%d", i),
					Limits: []quotav1.OverrideLimit{{Unit: quotav1.UnitRequests, Window: quotav1.WindowSecond, Max: 1}},
				})
			}
		}, `spec.overrides: Too many: 129: must have at most 128 items`},
	}
	ctx := context.Background()
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			a := validAppQuota(fmt.Sprintf("bad-%d", i))
			tc.mutate(a)
			err := k8s.Create(ctx, a)
			if err == nil {
				_ = k8s.Delete(ctx, a)
				t.Fatalf("created; want rejection %q", tc.want)
			}
			if got := userMessage(err, "AppQuota", a.Name); got != tc.want {
				t.Errorf("got  %s\nwant %s", got, tc.want)
			}
		})
	}
}

func TestAppQuotaAppIDIsImmutable(t *testing.T) {
	ctx := context.Background()
	a := validAppQuota("immutable")
	if err := k8s.Create(ctx, a); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = k8s.Delete(ctx, a) })
	a.Spec.AppID = "999"
	err := k8s.Update(ctx, a)
	if err == nil {
		t.Fatal("appID changed; want rejection")
	}
	want := `spec.appID: Invalid value: "999": appID is immutable: create a new AppQuota for another app`
	if got := userMessage(err, "AppQuota", a.Name); got != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}
}

// TestValidEdgeCasesAccepted guards against rules that reject too much: the edge
// cases users rely on must be accepted, and defaults must be filled in.
func TestValidEdgeCasesAccepted(t *testing.T) {
	ctx := context.Background()

	p := validProfile("edge")
	// An explicit userParam with a name the convention would not find.
	p.Spec.EndpointGroups = append(p.Spec.EndpointGroups, quotav1.EndpointGroup{
		Name:   "contacts-add",
		Routes: []quotav1.Route{{Method: "POST", Path: "/app-id/{app_id}/users/{owner}/contacts/users/{friend}", UserParam: "owner"}},
		Limits: []quotav1.Limit{{Unit: quotav1.UnitRequests, Window: quotav1.WindowMinute, Scope: quotav1.ScopeUser, Max: 5}},
	})
	if err := k8s.Create(ctx, p); err != nil {
		t.Fatalf("valid profile rejected: %v", err)
	}
	t.Cleanup(func() { _ = k8s.Delete(ctx, p) })

	a := validAppQuota("edge")
	a.Spec.Overrides = append(a.Spec.Overrides,
		// A block.
		quotav1.Override{Group: "conversations-delete", Limits: []quotav1.OverrideLimit{{Unit: quotav1.UnitRequests, Window: quotav1.WindowSecond, Max: 0}}},
		// A new window on a group, and only a perCall change on another.
		quotav1.Override{Group: "contacts-add", Limits: []quotav1.OverrideLimit{{Unit: quotav1.UnitRequests, Window: quotav1.WindowDay, Max: 1000}}},
		quotav1.Override{Group: "chatgroups-create", PerCall: &quotav1.PerCall{MaxTargets: 5}},
	)
	if err := k8s.Create(ctx, a); err != nil {
		t.Fatalf("valid AppQuota rejected: %v", err)
	}
	t.Cleanup(func() { _ = k8s.Delete(ctx, a) })

	var got quotav1.AppQuota
	if err := k8s.Get(ctx, client.ObjectKeyFromObject(a), &got); err != nil {
		t.Fatal(err)
	}
	if got.Spec.Profile != quotav1.DefaultProfileName {
		t.Errorf("spec.profile defaulted to %q, want %q", got.Spec.Profile, quotav1.DefaultProfileName)
	}
	if s := got.Spec.Overrides[0].Limits[0].Scope; s != quotav1.ScopeApp {
		t.Errorf("limit scope defaulted to %q, want App", s)
	}
}

// TestUnlimitedNeedsMaxZero: unlimited lifts a limit, so a max beside it is
// refused with the field named; unlimited with max 0 is accepted.
func TestUnlimitedNeedsMaxZero(t *testing.T) {
	ctx := context.Background()
	a := validAppQuota("unlimited-max")
	a.Spec.Overrides = []quotav1.Override{{Group: "conversations-delete",
		Limits: []quotav1.OverrideLimit{{Unit: quotav1.UnitRequests, Window: quotav1.WindowSecond, Max: 5, Unlimited: true}}}}
	err := k8s.Create(ctx, a, client.DryRunAll)
	want := `spec.overrides[0].limits[0].max: Invalid value: max must be 0 when unlimited is true: unlimited lifts the limit, so no max applies`
	if got := userMessage(err, "AppQuota", a.Name); got != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}
	a.Spec.Overrides[0].Limits[0].Max = 0
	if err := k8s.Create(ctx, a, client.DryRunAll); err != nil {
		t.Errorf("unlimited with max 0 refused: %v", err)
	}
}
