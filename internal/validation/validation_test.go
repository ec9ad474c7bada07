package validation_test

import (
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	quotav1 "github.com/appquota/appquota/api/v1alpha1"
	"github.com/appquota/appquota/internal/validation"
)

func profile(groups ...quotav1.EndpointGroup) *quotav1.QuotaProfile {
	return &quotav1.QuotaProfile{
		ObjectMeta: metav1.ObjectMeta{Name: "default"},
		Spec: quotav1.QuotaProfileSpec{
			Fallback:       quotav1.Fallback{Limits: []quotav1.Limit{{Unit: quotav1.UnitRequests, Window: quotav1.WindowSecond, Max: 100}}},
			EndpointGroups: groups,
		},
	}
}

func group(name string, routes ...quotav1.Route) quotav1.EndpointGroup {
	return quotav1.EndpointGroup{
		Name:   name,
		Routes: routes,
		Limits: []quotav1.Limit{{Unit: quotav1.UnitRequests, Window: quotav1.WindowSecond, Max: 100}},
	}
}

func route(method, path string) quotav1.Route {
	return quotav1.Route{Method: quotav1.HTTPMethod(method), Path: path}
}

func TestQuotaProfile(t *testing.T) {
	cases := []struct {
		name string
		p    *quotav1.QuotaProfile
		want string
	}{
		{"valid: literal and parameter siblings are distinct", profile(
			group("chatrooms-get", route("GET", "/app-id/{app_id}/chatrooms/{chatroom_id}")),
			group("superadmins-list", route("GET", "/app-id/{app_id}/chatrooms/super_admin")),
			group("chatrooms-put", route("PUT", "/app-id/{app_id}/chatrooms/{chatroom_id}")),
		), ""},
		{"same template in two groups", profile(
			group("members-remove", route("DELETE", "/app-id/{app_id}/chatgroups/{group_id}/users/{username}")),
			group("members-remove-batch", route("DELETE", "/app-id/{app_id}/chatgroups/{group_id}/users/{usernames}")),
		), `spec.endpointGroups[1].routes[0].path: Invalid value: "/app-id/{app_id}/chatgroups/{group_id}/users/{usernames}": DELETE /app-id/{app_id}/chatgroups/{group_id}/users/{usernames} cannot be told apart by a gateway from spec.endpointGroups[0].routes[0] in group "members-remove" (same method and template once parameter names are ignored); merge them into one group`},
		{"same template twice in one group", profile(
			group("g", route("PUT", "/a/{x}"), route("PUT", "/a/{y}")),
		), `spec.endpointGroups[0].routes[1].path: Invalid value: "/a/{y}": PUT /a/{y} cannot be told apart by a gateway from spec.endpointGroups[0].routes[0] in the same group (same method and template once parameter names are ignored); merge them into one group`},
		{"broken template", profile(group("g", route("GET", "/a/{x}{y}"))),
			`spec.endpointGroups[0].routes[0].path: Invalid value: "/a/{x}{y}": must start with '/', have no query string, and each segment must be a non-empty literal or exactly one parameter {name}`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := validation.QuotaProfile(tc.p).ToAggregate()
			switch {
			case tc.want == "" && got != nil:
				t.Errorf("got %v, want no error", got)
			case tc.want != "" && (got == nil || got.Error() != tc.want):
				t.Errorf("got  %v\nwant %s", got, tc.want)
			}
		})
	}
}

func TestAppQuota(t *testing.T) {
	p := profile(
		group("messages-send-users", route("POST", "/app-id/{app_id}/messages/users")),
		group("conversations-delete", route("DELETE", "/app-id/{app_id}/users/{userName}/user_channel")),
	)
	userLimit := []quotav1.OverrideLimit{{Unit: quotav1.UnitRequests, Window: quotav1.WindowMinute, Scope: quotav1.ScopeUser, Max: 10}}
	cases := []struct {
		name      string
		overrides []quotav1.Override
		ref       validation.Reference
		want      string
	}{
		{"valid, per-user limit on a route with a user", []quotav1.Override{{Group: "conversations-delete", Limits: userLimit}},
			validation.Reference{Profile: p}, ""},
		{"missing profile", nil, validation.Reference{},
			`spec.profile: Invalid value: "default": no QuotaProfile of that name exists`},
		{"typo in group", []quotav1.Override{{Group: "messages-send-user", Limits: userLimit[:0]}}, validation.Reference{Profile: p},
			`spec.overrides[0].group: Invalid value: "messages-send-user": not a group of QuotaProfile "default"; did you mean "messages-send-users"?`},
		{"unknown group, nothing close", []quotav1.Override{{Group: "totally-different"}}, validation.Reference{Profile: p},
			`spec.overrides[0].group: Invalid value: "totally-different": not a group of QuotaProfile "default"`},
		{"per-user limit on a route without a user", []quotav1.Override{{Group: "messages-send-users", Limits: userLimit}}, validation.Reference{Profile: p},
			`spec.overrides[0].limits[0].scope: Invalid value: "User": group "messages-send-users" has a route without a user parameter (POST /app-id/{app_id}/messages/users); use scope App`},
		{"duplicate appID in another namespace: the owner is not named", nil, validation.Reference{Profile: p, AppIDOwner: "team-a/acme"},
			`spec.appID: Invalid value: "123": already claimed by an AppQuota in another namespace; an app may have only one AppQuota`},
		{"duplicate appID in the same namespace", nil, validation.Reference{Profile: p, AppIDOwner: "team-b/acme"},
			`spec.appID: Invalid value: "123": already claimed by AppQuota acme in this namespace; an app may have only one AppQuota`},
		{"raise without a reason", []quotav1.Override{{Group: "messages-send-users", Limits: []quotav1.OverrideLimit{{Unit: quotav1.UnitRequests, Window: quotav1.WindowSecond, Max: 101}}}},
			validation.Reference{Profile: p},
			`spec.overrides[0].reason: Required value: required when an override raises a limit above its QuotaProfile's (Requests/Second of group "messages-send-users" in QuotaProfile "default": 100 to 101): name the ticket or contract, at most 256 characters`},
		{"unlimited without a reason", []quotav1.Override{{Group: "messages-send-users", Limits: []quotav1.OverrideLimit{{Unit: quotav1.UnitRequests, Window: quotav1.WindowSecond, Unlimited: true}}}},
			validation.Reference{Profile: p},
			`spec.overrides[0].reason: Required value: required when an override raises a limit above its QuotaProfile's (Requests/Second of group "messages-send-users" in QuotaProfile "default": 100 to unlimited): name the ticket or contract, at most 256 characters`},
		{"raise with a reason", []quotav1.Override{{Group: "messages-send-users", Reason: "SALES-1", Limits: []quotav1.OverrideLimit{{Unit: quotav1.UnitRequests, Window: quotav1.WindowSecond, Max: 101}}}},
			validation.Reference{Profile: p}, ""},
		{"lower, block or a new window need no reason", []quotav1.Override{{Group: "messages-send-users", Limits: []quotav1.OverrideLimit{
			{Unit: quotav1.UnitRequests, Window: quotav1.WindowSecond, Max: 0}, {Unit: quotav1.UnitRequests, Window: quotav1.WindowDay, Max: 1e6}}}},
			validation.Reference{Profile: p}, ""},
		{"namespace granted the ID", nil, validation.Reference{Profile: p, Grant: &validation.Grant{Namespace: "team-b", Annotated: true, Entries: []string{"1*"}}}, ""},
		{"namespace not granted the ID", nil, validation.Reference{Profile: p, Grant: &validation.Grant{Namespace: "team-b", Annotated: true, Entries: []string{"acme", "acme-*"}}},
			`spec.appID: Forbidden: namespace "team-b" may not claim app ID "123": its quota.appquota.io/app-ids annotation allows only "acme,acme-*"; ask the platform team to grant it`},
		{"namespace without a grant", nil, validation.Reference{Profile: p, Grant: &validation.Grant{Namespace: "team-b"}},
			`spec.appID: Forbidden: namespace "team-b" may not claim app ID "123": it has no quota.appquota.io/app-ids annotation, so it may claim none; the platform team grants app IDs to a namespace with that annotation (exact IDs, or prefixes ending in '*')`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			a := &quotav1.AppQuota{ObjectMeta: metav1.ObjectMeta{Namespace: "team-b", Name: "mine"},
				Spec: quotav1.AppQuotaSpec{AppID: "123", Profile: "default", Overrides: tc.overrides}}
			got := validation.AppQuota(a, tc.ref).ToAggregate()
			switch {
			case tc.want == "" && got != nil:
				t.Errorf("got %v, want no error", got)
			case tc.want != "" && (got == nil || got.Error() != tc.want):
				t.Errorf("got  %v\nwant %s", got, tc.want)
			}
		})
	}
}

// TestRaiseCeiling: an override may lower, block or raise a limit up to the
// ceiling its profile sets, not above it, and not to unlimited; limits
// without a ceiling, or with another key, are not bound by it.
func TestRaiseCeiling(t *testing.T) {
	g := group("messages-send-users", route("POST", "/app-id/{app_id}/messages/users"))
	g.Limits[0].RaiseCeiling = 500
	p := profile(g)
	lim := func(max int64, unlimited bool) quotav1.OverrideLimit {
		return quotav1.OverrideLimit{Unit: quotav1.UnitRequests, Window: quotav1.WindowSecond, Max: max, Unlimited: unlimited}
	}
	const above = `above the raise ceiling of 500 Requests/Second that QuotaProfile "default" sets for group "messages-send-users"; ` +
		`lowering and blocking are allowed, raising further needs the platform team to raise the ceiling`
	cases := []struct {
		name string
		l    quotav1.OverrideLimit
		want string
	}{
		{"raise to the ceiling", lim(500, false), ""},
		{"lower", lim(10, false), ""},
		{"block", lim(0, false), ""},
		{"raise above", lim(501, false), `spec.overrides[0].limits[0].max: Invalid value: 501: ` + above},
		{"unlimited", lim(0, true), `spec.overrides[0].limits[0].unlimited: Invalid value: true: ` + above},
		{"another window, no ceiling", quotav1.OverrideLimit{Unit: quotav1.UnitRequests, Window: quotav1.WindowMinute, Max: 100000}, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			a := &quotav1.AppQuota{Spec: quotav1.AppQuotaSpec{AppID: "123", Profile: "default",
				Overrides: []quotav1.Override{{Group: "messages-send-users", Reason: "SALES-42", Limits: []quotav1.OverrideLimit{tc.l}}}}}
			got := validation.AppQuota(a, validation.Reference{Profile: p}).ToAggregate()
			switch {
			case tc.want == "" && got != nil:
				t.Errorf("got %v, want no error", got)
			case tc.want != "" && (got == nil || got.Error() != tc.want):
				t.Errorf("got  %v\nwant %s", got, tc.want)
			}
		})
	}
}

// TestGrantAllows: the annotation's entries, as the CEL rule in
// config/policy reads them too (test/webhook checks the two agree).
func TestGrantAllows(t *testing.T) {
	cases := []struct {
		annotation string
		present    bool
		appID      string
		want       bool
	}{
		{"", false, "acme", false},
		{"", true, "acme", false},
		{"acme", true, "acme", true},
		{"acme", true, "acme2", false},
		{" acme , beta ", true, "beta", true},
		{"acme-*", true, "acme-eu", true},
		{"acme-*", true, "acme", false},
		{"*", true, "anything", true},
		{",,", true, "acme", false},
		{"1*,2", true, "19", true},
	}
	for _, tc := range cases {
		ann := map[string]string{}
		if tc.present {
			ann[quotav1.AppIDsAnnotation] = tc.annotation
		}
		if got := validation.ParseGrant("ns", ann).Allows(tc.appID); got != tc.want {
			t.Errorf("grant %q (present %v) allows %q: got %v, want %v", tc.annotation, tc.present, tc.appID, got, tc.want)
		}
	}
}
