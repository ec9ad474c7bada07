package quotaconfig_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"

	qc "github.com/appquota/appquota/pkg/quotaconfig"
)

func lim(unit, window, scope string, max int64) qc.Limit {
	return qc.Limit{Unit: unit, Window: window, Scope: scope, Max: max}
}

// validDoc is a small document that passes Validate; each bad case below
// breaks one thing in it.
func validDoc() *qc.Document {
	return &qc.Document{
		Version:        qc.FormatVersion,
		DefaultProfile: "default",
		Profiles: map[string]qc.Profile{
			"default": {
				Fallback: []qc.Limit{lim("Requests", "Second", "App", 100)},
				Groups: []qc.Group{
					{
						Name:   "conversations-delete",
						Routes: []qc.Route{{Method: "DELETE", Path: "/app-id/{app_id}/users/{userName}/user_channel", UserParam: "userName"}},
						Limits: []qc.Limit{lim("Requests", "Minute", "User", 5), lim("Requests", "Second", "App", 100)},
					},
					{
						Name:       "messages-send-users",
						RestOnly:   true,
						Routes:     []qc.Route{{Method: "POST", Path: "/app-id/{app_id}/messages/users"}},
						Limits:     []qc.Limit{lim("Requests", "Second", "App", 100), lim("Messages", "Minute", "App", 6000)},
						MaxTargets: 600,
					},
				},
			},
		},
		Apps: map[string]qc.App{
			"123": {Profile: "default", Overrides: []qc.Override{{Group: "messages-send-users", Limits: []qc.Limit{lim("Requests", "Second", "App", 500)}}}},
		},
	}
}

func mustJSON(t *testing.T, d *qc.Document) []byte {
	t.Helper()
	data, err := json.Marshal(d)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

const (
	dflt   = `profiles["default"]`
	grp0   = dflt + `.groups[0]`
	grp1   = dflt + `.groups[1]`
	route1 = grp1 + `.routes[0]`
	app123 = `apps["123"]`
)

func TestParseValid(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(d *qc.Document)
	}{
		{"as is", func(d *qc.Document) {}},
		{"no apps", func(d *qc.Document) { d.Apps = nil }},
		{"default profile absent", func(d *qc.Document) {
			d.DefaultProfile = "gold"
		}},
		{"app names the absent default profile, with overrides", func(d *qc.Document) {
			d.DefaultProfile = "gold"
			d.Apps["123"] = qc.App{Profile: "gold", Overrides: []qc.Override{{Group: "anything", MaxTargets: 5}}}
		}},
		{"override max 0 blocks", func(d *qc.Document) {
			d.Apps["123"].Overrides[0].Limits[0].Max = 0
		}},
		{"override adds a User limit to a group whose routes have a user parameter", func(d *qc.Document) {
			d.Apps["123"] = qc.App{Profile: "default", Overrides: []qc.Override{{Group: "conversations-delete", Limits: []qc.Limit{lim("Requests", "Day", "User", 50)}}}}
		}},
		{"same template under another method", func(d *qc.Document) {
			g := &d.Profiles["default"].Groups[1]
			g.Routes = append(g.Routes, qc.Route{Method: "GET", Path: "/app-id/{app_id}/messages/users"})
		}},
		{"literal and parameter at one position", func(d *qc.Document) {
			g := &d.Profiles["default"].Groups[1]
			g.Routes = append(g.Routes, qc.Route{Method: "POST", Path: "/app-id/{app_id}/messages/{kind}"})
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := validDoc()
			tt.mutate(d)
			if _, err := qc.Parse(mustJSON(t, d)); err != nil {
				t.Fatalf("Parse: %v", err)
			}
		})
	}
}

func TestParseInvalid(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(d *qc.Document)
		raw    string // used instead of the mutated validDoc when set
		want   string
	}{
		{
			name: "not JSON",
			raw:  `{"version": `,
			want: "invalid JSON: unexpected EOF",
		},
		{
			name: "unknown top-level field",
			raw:  `{"version":"quota.appquota.io/v1","defaultProfile":"default","profiles":{},"extra":1}`,
			want: `invalid JSON: json: unknown field "extra"`,
		},
		{
			name: "unknown field in a limit",
			raw:  `{"version":"quota.appquota.io/v1","defaultProfile":"default","profiles":{"default":{"fallback":[{"unit":"Requests","window":"Second","scope":"App","max":1,"burst":5}]}}}`,
			want: `invalid JSON: json: unknown field "burst"`,
		},
		{
			name: "data after the document",
			raw:  `{"version":"quota.appquota.io/v1","defaultProfile":"default","profiles":{}} {}`,
			want: "invalid JSON: data after the document",
		},
		{
			name: "wrong type",
			raw:  `{"version":"quota.appquota.io/v1","defaultProfile":"default","profiles":{"default":{"fallback":[{"unit":"Requests","window":"Second","scope":"App","max":"100"}]}}}`,
			want: `invalid JSON: json: cannot unmarshal string into Go struct field Limit.profiles.fallback.max of type int64`,
		},
		{
			name:   "version",
			mutate: func(d *qc.Document) { d.Version = "quota.appquota.io/v2" },
			want:   `version: "quota.appquota.io/v2" is not "quota.appquota.io/v1"`,
		},
		{
			name:   "no default profile name",
			mutate: func(d *qc.Document) { d.DefaultProfile = "" },
			want:   `defaultProfile: must not be empty`,
		},
		{
			name: "empty profile name",
			mutate: func(d *qc.Document) {
				d.Profiles[""] = qc.Profile{Fallback: []qc.Limit{lim("Requests", "Second", "App", 1)}}
			},
			want: `profiles[""]: a profile name must not be empty`,
		},
		{
			name:   "no fallback",
			mutate: func(d *qc.Document) { setFallback(d, nil) },
			want:   dflt + `.fallback: must not be empty`,
		},
		{
			name:   "fallback scoped to users",
			mutate: func(d *qc.Document) { setFallback(d, []qc.Limit{lim("Requests", "Second", "User", 100)}) },
			want:   dflt + `.fallback[0].scope: must be App: a route no group claims has no user parameter`,
		},
		{
			name:   "fallback max 0",
			mutate: func(d *qc.Document) { setFallback(d, []qc.Limit{lim("Requests", "Second", "App", 0)}) },
			want:   dflt + `.fallback[0].max: 0 is below 1`,
		},
		{
			name:   "empty group name",
			mutate: func(d *qc.Document) { d.Profiles["default"].Groups[1].Name = ""; d.Apps = nil },
			want:   grp1 + `.name: must not be empty`,
		},
		{
			name:   "duplicate group name",
			mutate: func(d *qc.Document) { d.Profiles["default"].Groups[1].Name = "conversations-delete"; d.Apps = nil },
			want:   grp1 + `.name: "conversations-delete" duplicates groups[0]`,
		},
		{
			name:   "group without routes",
			mutate: func(d *qc.Document) { d.Profiles["default"].Groups[1].Routes = nil },
			want:   grp1 + `.routes: must not be empty`,
		},
		{
			name:   "group without limits",
			mutate: func(d *qc.Document) { d.Profiles["default"].Groups[1].Limits = nil },
			want:   grp1 + `.limits: must not be empty`,
		},
		{
			name:   "negative maxTargets",
			mutate: func(d *qc.Document) { d.Profiles["default"].Groups[1].MaxTargets = -1 },
			want:   grp1 + `.maxTargets: -1 is below 0`,
		},
		{
			name:   "lower-case method",
			mutate: func(d *qc.Document) { d.Profiles["default"].Groups[1].Routes[0].Method = "post" },
			want:   route1 + `.method: "post" is not one of GET, POST, PUT, PATCH, DELETE, HEAD, OPTIONS`,
		},
		{
			name:   "unknown method",
			mutate: func(d *qc.Document) { d.Profiles["default"].Groups[1].Routes[0].Method = "TRACE" },
			want:   route1 + `.method: "TRACE" is not one of GET, POST, PUT, PATCH, DELETE, HEAD, OPTIONS`,
		},
		{
			name: "path without leading slash",
			mutate: func(d *qc.Document) {
				d.Profiles["default"].Groups[1].Routes[0].Path = "app-id/{app_id}/messages/users"
			},
			want: route1 + `.path: "app-id/{app_id}/messages/users" must start with '/'`,
		},
		{
			name: "path with query string",
			mutate: func(d *qc.Document) {
				d.Profiles["default"].Groups[1].Routes[0].Path = "/app-id/{app_id}/messages/users?limit=1"
			},
			want: route1 + `.path: "/app-id/{app_id}/messages/users?limit=1" must not contain a query string ('?'): gateways match the path only`,
		},
		{
			name:   "empty segment",
			mutate: func(d *qc.Document) { d.Profiles["default"].Groups[1].Routes[0].Path = "/app-id//messages/users" },
			want:   route1 + `.path: "/app-id//messages/users" has an empty segment`,
		},
		{
			name: "trailing slash",
			mutate: func(d *qc.Document) {
				d.Profiles["default"].Groups[1].Routes[0].Path = "/app-id/{app_id}/messages/users/"
			},
			want: route1 + `.path: "/app-id/{app_id}/messages/users/" has an empty segment`,
		},
		{
			name: "parameter inside a segment",
			mutate: func(d *qc.Document) {
				d.Profiles["default"].Groups[1].Routes[0].Path = "/app-id/{app_id}/messages/${time}"
			},
			want: route1 + `.path: "/app-id/{app_id}/messages/${time}" has segment "${time}", which is neither a literal (no '{', '}', '#') nor exactly one parameter {name}`,
		},
		{
			name:   "two parameters in a segment",
			mutate: func(d *qc.Document) { d.Profiles["default"].Groups[1].Routes[0].Path = "/app-id/{a}{b}/messages/users" },
			want:   route1 + `.path: "/app-id/{a}{b}/messages/users" has segment "{a}{b}", which is neither a literal (no '{', '}', '#') nor exactly one parameter {name}`,
		},
		{
			name: "parameter that is not a name",
			mutate: func(d *qc.Document) {
				d.Profiles["default"].Groups[1].Routes[0].Path = "/app-id/{app id}/messages/users"
			},
			want: route1 + `.path: "/app-id/{app id}/messages/users" has segment "{app id}", which is neither a literal (no '{', '}', '#') nor exactly one parameter {name}`,
		},
		{
			name:   "parameter starting with a digit",
			mutate: func(d *qc.Document) { d.Profiles["default"].Groups[1].Routes[0].Path = "/app-id/{1app}/messages/users" },
			want:   route1 + `.path: "/app-id/{1app}/messages/users" has segment "{1app}", which is neither a literal (no '{', '}', '#') nor exactly one parameter {name}`,
		},
		{
			name:   "userParam not in the path",
			mutate: func(d *qc.Document) { d.Profiles["default"].Groups[1].Routes[0].UserParam = "username" },
			want:   route1 + `.userParam: "username" is not a parameter of "/app-id/{app_id}/messages/users"`,
		},
		{
			name:   "userParam naming a literal",
			mutate: func(d *qc.Document) { d.Profiles["default"].Groups[1].Routes[0].UserParam = "users" },
			want:   route1 + `.userParam: "users" is not a parameter of "/app-id/{app_id}/messages/users"`,
		},
		{
			name:   "User-scoped limit without a user parameter",
			mutate: func(d *qc.Document) { d.Profiles["default"].Groups[0].Routes[0].UserParam = "" },
			want:   grp0 + `.routes[0].userParam: must be set: the group has a limit with scope User`,
		},
		{
			name:   "unknown unit, window and scope",
			mutate: func(d *qc.Document) { d.Profiles["default"].Groups[1].Limits[0] = lim("Calls", "Week", "", 1) },
			want: grp1 + `.limits[0].unit: "Calls" is not one of Requests, Messages` + "\n" +
				grp1 + `.limits[0].window: "Week" is not one of Second, Minute, Hour, Day` + "\n" +
				grp1 + `.limits[0].scope: "" is not one of App, User`,
		},
		{
			name:   "duplicate limit key",
			mutate: func(d *qc.Document) { d.Profiles["default"].Groups[1].Limits[1] = lim("Requests", "Second", "App", 5) },
			want:   grp1 + `.limits[1]: duplicates limits[0] (Requests/Second/App): one limit per unit, window and scope`,
		},
		{
			name:   "profile max 0",
			mutate: func(d *qc.Document) { d.Profiles["default"].Groups[1].Limits[1].Max = 0 },
			want:   grp1 + `.limits[1].max: 0 is below 1`,
		},
		{
			name: "two routes in one group a gateway cannot tell apart",
			mutate: func(d *qc.Document) {
				g := &d.Profiles["default"].Groups[0]
				g.Routes = append(g.Routes, qc.Route{Method: "DELETE", Path: "/app-id/{appid}/users/{username}/user_channel", UserParam: "username"})
			},
			want: grp0 + `.routes[1]: DELETE "/app-id/{appid}/users/{username}/user_channel" cannot be told apart from groups[0].routes[0] (DELETE "/app-id/{app_id}/users/{userName}/user_channel"): same method and template once parameter names are ignored`,
		},
		{
			name: "two groups claiming one route",
			mutate: func(d *qc.Document) {
				g := &d.Profiles["default"].Groups[1]
				g.Routes = append(g.Routes, qc.Route{Method: "DELETE", Path: "/app-id/{id}/users/{u}/user_channel"})
			},
			want: grp1 + `.routes[1]: DELETE "/app-id/{id}/users/{u}/user_channel" cannot be told apart from groups[0].routes[0] (DELETE "/app-id/{app_id}/users/{userName}/user_channel"): same method and template once parameter names are ignored`,
		},
		{
			name:   "empty app ID",
			mutate: func(d *qc.Document) { d.Apps[""] = qc.App{Profile: "default"} },
			want:   `apps[""]: an app ID must not be empty`,
		},
		{
			name: "fallback with a duplicate limit",
			mutate: func(d *qc.Document) {
				setFallback(d, []qc.Limit{lim("Requests", "Second", "App", 1), lim("Requests", "Second", "App", 2)})
			},
			want: dflt + `.fallback[1]: duplicates fallback[0] (Requests/Second/App): one limit per unit, window and scope`,
		},
		{
			name:   "app profile missing",
			mutate: func(d *qc.Document) { d.Apps["123"] = qc.App{Profile: "gold"} },
			want:   app123 + `.profile: "gold" does not exist`,
		},
		{
			name:   "app profile empty",
			mutate: func(d *qc.Document) { d.Apps["123"] = qc.App{} },
			want:   app123 + `.profile: must not be empty`,
		},
		{
			name:   "override of a group the profile lacks",
			mutate: func(d *qc.Document) { d.Apps["123"].Overrides[0].Group = "x" },
			want:   app123 + `.overrides[0].group: "x" is not a group of profile "default"`,
		},
		{
			name: "two overrides of one group",
			mutate: func(d *qc.Document) {
				a := d.Apps["123"]
				a.Overrides = append(a.Overrides, qc.Override{Group: "messages-send-users", MaxTargets: 10})
				d.Apps["123"] = a
			},
			want: app123 + `.overrides[1].group: "messages-send-users" duplicates overrides[0]`,
		},
		{
			name:   "override without a group",
			mutate: func(d *qc.Document) { d.Apps["123"].Overrides[0].Group = "" },
			want:   app123 + `.overrides[0].group: must not be empty`,
		},
		{
			name:   "override max below 0",
			mutate: func(d *qc.Document) { d.Apps["123"].Overrides[0].Limits[0].Max = -1 },
			want:   app123 + `.overrides[0].limits[0].max: -1 is below 0`,
		},
		{
			name:   "override with a duplicate limit",
			mutate: func(d *qc.Document) { o := &d.Apps["123"].Overrides[0]; o.Limits = append(o.Limits, o.Limits[0]) },
			want:   app123 + `.overrides[0].limits[1]: duplicates limits[0] (Requests/Second/App): one limit per unit, window and scope`,
		},
		{
			name:   "override with a bad unit",
			mutate: func(d *qc.Document) { d.Apps["123"].Overrides[0].Limits[0].Unit = "requests" },
			want:   app123 + `.overrides[0].limits[0].unit: "requests" is not one of Requests, Messages`,
		},
		{
			name:   "override with negative maxTargets",
			mutate: func(d *qc.Document) { d.Apps["123"].Overrides[0].MaxTargets = -5 },
			want:   app123 + `.overrides[0].maxTargets: -5 is below 0`,
		},
		{
			name:   "override adds a User limit to routes without a user parameter",
			mutate: func(d *qc.Document) { d.Apps["123"].Overrides[0].Limits[0].Scope = "User" },
			want:   app123 + `.overrides[0].limits[0].scope: User needs a user parameter, and route POST "/app-id/{app_id}/messages/users" of group "messages-send-users" has none`,
		},
		{
			name: "several errors, in document order",
			mutate: func(d *qc.Document) {
				d.Version = ""
				d.Profiles["default"].Groups[1].Routes[0].Method = "get"
				d.Apps["123"].Overrides[0].Group = "x"
				d.Apps["9"] = qc.App{Profile: "gold"}
			},
			want: `version: "" is not "quota.appquota.io/v1"` + "\n" +
				route1 + `.method: "get" is not one of GET, POST, PUT, PATCH, DELETE, HEAD, OPTIONS` + "\n" +
				app123 + `.overrides[0].group: "x" is not a group of profile "default"` + "\n" +
				`apps["9"].profile: "gold" does not exist`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			data := []byte(tt.raw)
			if tt.raw == "" {
				d := validDoc()
				tt.mutate(d)
				data = mustJSON(t, d)
			}
			got, err := qc.Parse(data)
			if err == nil {
				t.Fatalf("Parse succeeded (%+v), want error:\n%s", got, tt.want)
			}
			if err.Error() != tt.want {
				t.Fatalf("Parse error:\n%s\nwant:\n%s", err, tt.want)
			}
		})
	}
}

func setFallback(d *qc.Document, ls []qc.Limit) {
	p := d.Profiles["default"]
	p.Fallback = ls
	d.Profiles["default"] = p
}

// TestValidateFieldErrors checks that each problem is a *FieldError a caller
// can attribute to an object, and that a huge number of problems is capped.
func TestValidateFieldErrors(t *testing.T) {
	d := validDoc()
	for i := range 60 {
		d.Apps[fmt.Sprintf("app%02d", i)] = qc.App{Profile: "gold"}
	}
	err := d.Validate()
	if err == nil {
		t.Fatal("Validate succeeded")
	}
	errs := err.(interface{ Unwrap() []error }).Unwrap()
	if len(errs) != 51 {
		t.Fatalf("got %d errors, want 50 and a count of the rest", len(errs))
	}
	var fe *qc.FieldError
	if !errors.As(errs[0], &fe) || fe.Field != `apps["app00"].profile` || fe.Detail != `"gold" does not exist` {
		t.Errorf("first error = %#v", errs[0])
	}
	if got, want := errs[50].Error(), "and 10 more errors"; got != want {
		t.Errorf("last error = %q, want %q", got, want)
	}
	if n := strings.Count(err.Error(), "\n"); n != 50 {
		t.Errorf("error has %d lines, want 51", n+1)
	}
}

// TestValidateApps checks that ValidateApps refuses what Validate refuses in
// the apps it is given, with the same errors, and looks at no other app.
func TestValidateApps(t *testing.T) {
	d := validDoc()
	if err := d.ValidateApps([]string{"123", "gone"}); err != nil {
		t.Fatalf("valid apps: %v", err)
	}
	d.Apps["456"] = qc.App{Profile: "default", Overrides: []qc.Override{{Group: "nope", Limits: []qc.Limit{lim("Requests", "Second", "App", -1)}}}}
	whole := d.Validate()
	if whole == nil {
		t.Fatal("Validate took app 456: the case tests nothing")
	}
	err := d.ValidateApps([]string{"123", "456"})
	if err == nil || err.Error() != whole.Error() {
		t.Fatalf("ValidateApps: %v\nValidate:     %v", err, whole)
	}
	if err := d.ValidateApps([]string{"123"}); err != nil {
		t.Fatalf("app 123 alone: %v", err)
	}
}
