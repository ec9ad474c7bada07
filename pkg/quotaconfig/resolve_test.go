package quotaconfig_test

import (
	"fmt"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	qc "github.com/appquota/appquota/pkg/quotaconfig"
)

var expiry = time.Date(2027, 1, 31, 0, 0, 0, 0, time.UTC)

// resolveDoc is a hand-built document whose routes exercise the matcher: a
// literal and a parameter at one position, a literal branch that fails deeper,
// a shared budget, and a User-scoped limit.
func resolveDoc() *qc.Document {
	const app = "/app-id/{app_id}"
	return &qc.Document{
		Version:        qc.FormatVersion,
		DefaultProfile: "default",
		Profiles: map[string]qc.Profile{
			"default": {
				Fallback: []qc.Limit{lim("Requests", "Second", "App", 100)},
				Groups: []qc.Group{
					{Name: "chatrooms-get", Routes: []qc.Route{{Method: "GET", Path: app + "/chatrooms/{chatroom_id}"}},
						Limits: []qc.Limit{lim("Requests", "Second", "App", 100)}},
					{Name: "chatrooms-members-list", Routes: []qc.Route{{Method: "GET", Path: app + "/chatrooms/{chatroom_id}/users"}},
						Limits: []qc.Limit{lim("Requests", "Second", "App", 50)}},
					{Name: "chatrooms-super-admins-list", Routes: []qc.Route{{Method: "GET", Path: app + "/chatrooms/super_admin"}},
						Limits: []qc.Limit{lim("Requests", "Second", "App", 20)}},
					{Name: "chatrooms-super-admins-remove", Routes: []qc.Route{{Method: "DELETE", Path: app + "/chatrooms/super_admin/{superAdmin}"}},
						Limits: []qc.Limit{lim("Requests", "Second", "App", 10)}},
					{Name: "conversations-delete", Routes: []qc.Route{{Method: "DELETE", Path: app + "/users/{userName}/user_channel", UserParam: "userName"}},
						Limits: []qc.Limit{lim("Requests", "Second", "App", 100), lim("Requests", "Minute", "User", 5)}},
					{Name: "messages-broadcast-users", RestOnly: true, Routes: []qc.Route{{Method: "POST", Path: app + "/messages/users/broadcast"}},
						Limits: []qc.Limit{lim("Requests", "Minute", "App", 1), lim("Requests", "Day", "App", 50)}},
					{Name: "messages-send-users", RestOnly: true, Routes: []qc.Route{{Method: "POST", Path: app + "/messages/users"}},
						Limits: []qc.Limit{lim("Requests", "Second", "App", 100), lim("Messages", "Minute", "App", 6000)}, MaxTargets: 600},
					{Name: "push-binding", Routes: []qc.Route{
						{Method: "GET", Path: app + "/users/{userId}/push/binding", UserParam: "userId"},
						{Method: "PUT", Path: app + "/users/{userId}/push/binding", UserParam: "userId"},
					}, Limits: []qc.Limit{lim("Requests", "Second", "App", 100)}},
				},
			},
			"enterprise": {
				Fallback: []qc.Limit{lim("Requests", "Second", "App", 1000)},
				Groups: []qc.Group{
					{Name: "messages-send-users", Routes: []qc.Route{{Method: "POST", Path: app + "/messages/users"}},
						Limits: []qc.Limit{lim("Requests", "Second", "App", 2000)}},
				},
			},
		},
		Apps: map[string]qc.App{
			"plain": {Profile: "default"},
			"ent":   {Profile: "enterprise"},
			"raise": {Profile: "default", Overrides: []qc.Override{
				{Group: "conversations-delete", Limits: []qc.Limit{lim("Requests", "Minute", "User", 50)}},
				{Group: "messages-send-users", MaxTargets: 1000, Limits: []qc.Limit{
					lim("Requests", "Second", "App", 500),  // replaces the profile's 100/s
					lim("Requests", "Day", "App", 1000000), // added
				}},
			}},
			"blocked": {Profile: "default", Overrides: []qc.Override{
				{Group: "messages-broadcast-users", Limits: []qc.Limit{lim("Requests", "Minute", "App", 0)}},
			}},
			"temp": {Profile: "default", Overrides: []qc.Override{
				{Group: "messages-broadcast-users", Limits: []qc.Limit{lim("Requests", "Day", "App", 500)}, ExpiresAt: &expiry},
			}},
		},
	}
}

func TestResolve(t *testing.T) {
	cfg, err := qc.Compile(resolveDoc())
	if err != nil {
		t.Fatal(err)
	}
	before, after := expiry.Add(-time.Second), expiry

	fallback := []qc.Limit{lim("Requests", "Second", "App", 100)}
	tests := []struct {
		name                string
		app, method, path   string
		now                 time.Time
		want                qc.Result
		wantOverrideOfGroup string // Result.Override's group; "" for none
	}{
		{
			name: "param route", app: "plain", method: "GET", path: "/app-id/1/chatrooms/42",
			want: qc.Result{Profile: "default", Group: "chatrooms-get", Route: "/app-id/{app_id}/chatrooms/{chatroom_id}",
				Path: "/app-id/1/chatrooms/42", Limits: []qc.Limit{lim("Requests", "Second", "App", 100)}},
		},
		{
			name: "literal beats param", app: "plain", method: "GET", path: "/app-id/1/chatrooms/super_admin",
			want: qc.Result{Profile: "default", Group: "chatrooms-super-admins-list", Route: "/app-id/{app_id}/chatrooms/super_admin",
				Path: "/app-id/1/chatrooms/super_admin", Limits: []qc.Limit{lim("Requests", "Second", "App", 20)}},
		},
		{
			name: "literal branch fails deeper: back to the param", app: "plain", method: "GET", path: "/app-id/1/chatrooms/super_admin/users",
			want: qc.Result{Profile: "default", Group: "chatrooms-members-list", Route: "/app-id/{app_id}/chatrooms/{chatroom_id}/users",
				Path: "/app-id/1/chatrooms/super_admin/users", Limits: []qc.Limit{lim("Requests", "Second", "App", 50)}},
		},
		{
			name: "literal-only branch under another method", app: "plain", method: "DELETE", path: "/app-id/1/chatrooms/super_admin/bob",
			want: qc.Result{Profile: "default", Group: "chatrooms-super-admins-remove", Route: "/app-id/{app_id}/chatrooms/super_admin/{superAdmin}",
				Path: "/app-id/1/chatrooms/super_admin/bob", Limits: []qc.Limit{lim("Requests", "Second", "App", 10)}},
		},
		{
			name: "query string ignored", app: "plain", method: "GET", path: "/app-id/1/chatrooms/42?limit=10&cursor=x/y",
			want: qc.Result{Profile: "default", Group: "chatrooms-get", Route: "/app-id/{app_id}/chatrooms/{chatroom_id}",
				Path: "/app-id/1/chatrooms/42", Limits: []qc.Limit{lim("Requests", "Second", "App", 100)}},
		},
		{
			name: "one trailing slash ignored", app: "plain", method: "GET", path: "/app-id/1/chatrooms/42/?x=1",
			want: qc.Result{Profile: "default", Group: "chatrooms-get", Route: "/app-id/{app_id}/chatrooms/{chatroom_id}",
				Path: "/app-id/1/chatrooms/42", Limits: []qc.Limit{lim("Requests", "Second", "App", 100)}},
		},
		{
			name: "two trailing slashes: an empty segment, fallback", app: "plain", method: "GET", path: "/app-id/1/chatrooms/42//",
			want: qc.Result{Profile: "default", Fallback: true, Path: "/app-id/1/chatrooms/42/", Limits: fallback},
		},
		{
			name: "empty segment never matches a param", app: "plain", method: "GET", path: "/app-id//chatrooms/42",
			want: qc.Result{Profile: "default", Fallback: true, Path: "/app-id//chatrooms/42", Limits: fallback},
		},
		{
			name: "method mismatch: fallback", app: "plain", method: "POST", path: "/app-id/1/chatrooms/42",
			want: qc.Result{Profile: "default", Fallback: true, Path: "/app-id/1/chatrooms/42", Limits: fallback},
		},
		{
			name: "lower-case method: fallback", app: "plain", method: "get", path: "/app-id/1/chatrooms/42",
			want: qc.Result{Profile: "default", Fallback: true, Path: "/app-id/1/chatrooms/42", Limits: fallback},
		},
		{
			name: "unknown route: fallback", app: "plain", method: "GET", path: "/app-id/1/nothing/here",
			want: qc.Result{Profile: "default", Fallback: true, Path: "/app-id/1/nothing/here", Limits: fallback},
		},
		{
			name: "prefix of a route: fallback", app: "plain", method: "GET", path: "/app-id/1/chatrooms",
			want: qc.Result{Profile: "default", Fallback: true, Path: "/app-id/1/chatrooms", Limits: fallback},
		},
		{
			name: "relative path: fallback", app: "plain", method: "GET", path: "app-id/1/chatrooms/42",
			want: qc.Result{Profile: "default", Fallback: true, Path: "app-id/1/chatrooms/42", Limits: fallback},
		},
		{
			name: "root path: fallback", app: "plain", method: "GET", path: "/",
			want: qc.Result{Profile: "default", Fallback: true, Path: "/", Limits: fallback},
		},
		{
			name: "unknown app: default profile", app: "nobody", method: "POST", path: "/app-id/nobody/messages/users",
			want: qc.Result{Profile: "default", Group: "messages-send-users", Route: "/app-id/{app_id}/messages/users", Path: "/app-id/nobody/messages/users",
				Limits: []qc.Limit{lim("Requests", "Second", "App", 100), lim("Messages", "Minute", "App", 6000)}, MaxTargets: 600, RestOnly: true},
		},
		{
			name: "app on another profile", app: "ent", method: "POST", path: "/app-id/ent/messages/users",
			want: qc.Result{Profile: "enterprise", Group: "messages-send-users", Route: "/app-id/{app_id}/messages/users", Path: "/app-id/ent/messages/users",
				Limits: []qc.Limit{lim("Requests", "Second", "App", 2000)}},
		},
		{
			name: "fallback of another profile", app: "ent", method: "GET", path: "/app-id/ent/chatrooms/42",
			want: qc.Result{Profile: "enterprise", Fallback: true, Path: "/app-id/ent/chatrooms/42", Limits: []qc.Limit{lim("Requests", "Second", "App", 1000)}},
		},
		{
			name: "override: replace, add, maxTargets", app: "raise", method: "POST", path: "/app-id/raise/messages/users",
			want: qc.Result{Profile: "default", Group: "messages-send-users", Route: "/app-id/{app_id}/messages/users", Path: "/app-id/raise/messages/users",
				Limits:     []qc.Limit{lim("Requests", "Second", "App", 500), lim("Messages", "Minute", "App", 6000), lim("Requests", "Day", "App", 1000000)},
				MaxTargets: 1000, RestOnly: true},
			wantOverrideOfGroup: "messages-send-users",
		},
		{
			name: "override of another group leaves this one alone", app: "raise", method: "GET", path: "/app-id/raise/chatrooms/super_admin",
			want: qc.Result{Profile: "default", Group: "chatrooms-super-admins-list", Route: "/app-id/{app_id}/chatrooms/super_admin",
				Path: "/app-id/raise/chatrooms/super_admin", Limits: []qc.Limit{lim("Requests", "Second", "App", 20)}},
		},
		{
			name: "user-scoped limit: User is the path segment", app: "plain", method: "DELETE", path: "/app-id/1/users/alice/user_channel",
			want: qc.Result{Profile: "default", Group: "conversations-delete", Route: "/app-id/{app_id}/users/{userName}/user_channel",
				Path: "/app-id/1/users/alice/user_channel", Limits: []qc.Limit{lim("Requests", "Second", "App", 100), lim("Requests", "Minute", "User", 5)},
				UserParam: "userName", User: "alice"},
		},
		{
			name: "user-scoped override", app: "raise", method: "DELETE", path: "/app-id/raise/users/bob/user_channel/",
			want: qc.Result{Profile: "default", Group: "conversations-delete", Route: "/app-id/{app_id}/users/{userName}/user_channel",
				Path: "/app-id/raise/users/bob/user_channel", Limits: []qc.Limit{lim("Requests", "Second", "App", 100), lim("Requests", "Minute", "User", 50)},
				UserParam: "userName", User: "bob"},
			wantOverrideOfGroup: "conversations-delete",
		},
		{
			name: "shared budget: PUT", app: "plain", method: "PUT", path: "/app-id/1/users/u1/push/binding",
			want: qc.Result{Profile: "default", Group: "push-binding", Route: "/app-id/{app_id}/users/{userId}/push/binding",
				Path: "/app-id/1/users/u1/push/binding", Limits: []qc.Limit{lim("Requests", "Second", "App", 100)}, UserParam: "userId", User: "u1"},
		},
		{
			name: "shared budget: GET", app: "plain", method: "GET", path: "/app-id/1/users/u1/push/binding",
			want: qc.Result{Profile: "default", Group: "push-binding", Route: "/app-id/{app_id}/users/{userId}/push/binding",
				Path: "/app-id/1/users/u1/push/binding", Limits: []qc.Limit{lim("Requests", "Second", "App", 100)}, UserParam: "userId", User: "u1"},
		},
		{
			name: "block: max 0", app: "blocked", method: "POST", path: "/app-id/blocked/messages/users/broadcast",
			want: qc.Result{Profile: "default", Group: "messages-broadcast-users", Route: "/app-id/{app_id}/messages/users/broadcast",
				Path: "/app-id/blocked/messages/users/broadcast", Limits: []qc.Limit{lim("Requests", "Minute", "App", 0), lim("Requests", "Day", "App", 50)},
				RestOnly: true, Blocked: true},
			wantOverrideOfGroup: "messages-broadcast-users",
		},
		{
			name: "override before its expiry", app: "temp", method: "POST", path: "/app-id/temp/messages/users/broadcast", now: before,
			want: qc.Result{Profile: "default", Group: "messages-broadcast-users", Route: "/app-id/{app_id}/messages/users/broadcast",
				Path: "/app-id/temp/messages/users/broadcast", Limits: []qc.Limit{lim("Requests", "Minute", "App", 1), lim("Requests", "Day", "App", 500)},
				RestOnly: true},
			wantOverrideOfGroup: "messages-broadcast-users",
		},
		{
			name: "override at its expiry: ignored", app: "temp", method: "POST", path: "/app-id/temp/messages/users/broadcast", now: after,
			want: qc.Result{Profile: "default", Group: "messages-broadcast-users", Route: "/app-id/{app_id}/messages/users/broadcast",
				Path: "/app-id/temp/messages/users/broadcast", Limits: []qc.Limit{lim("Requests", "Minute", "App", 1), lim("Requests", "Day", "App", 50)},
				RestOnly: true},
		},
		{
			name: "override long after its expiry: ignored", app: "temp", method: "POST", path: "/app-id/temp/messages/users/broadcast", now: after.AddDate(1, 0, 0),
			want: qc.Result{Profile: "default", Group: "messages-broadcast-users", Route: "/app-id/{app_id}/messages/users/broadcast",
				Path: "/app-id/temp/messages/users/broadcast", Limits: []qc.Limit{lim("Requests", "Minute", "App", 1), lim("Requests", "Day", "App", 50)},
				RestOnly: true},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			now := tt.now
			if now.IsZero() {
				now = before
			}
			got := cfg.ResolveAt(tt.app, tt.method, tt.path, now)
			checkResult(t, got, tt.want, tt.wantOverrideOfGroup)
		})
	}
}

func checkResult(t *testing.T, got, want qc.Result, wantOverrideOfGroup string) {
	t.Helper()
	switch {
	case wantOverrideOfGroup == "" && got.Override != nil:
		t.Errorf("Override = %+v, want nil", got.Override)
	case wantOverrideOfGroup != "" && (got.Override == nil || got.Override.Group != wantOverrideOfGroup):
		t.Errorf("Override = %+v, want the override of %q", got.Override, wantOverrideOfGroup)
	}
	got.Override = nil
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got  %+v\nwant %+v", got, want)
	}
}

// TestResolveUsesTheClock checks that Resolve reads the clock only for
// overrides with an expiry, and then correctly: the fixture's expiry is in 2027,
// so build one relative to now instead.
func TestResolveUsesTheClock(t *testing.T) {
	for _, tc := range []struct {
		name    string
		expires time.Time
		want    int64
	}{
		{"in force", time.Now().Add(time.Hour), 500},
		{"expired", time.Now().Add(-time.Hour), 50},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := resolveDoc()
			d.Apps["temp"].Overrides[0].ExpiresAt = &tc.expires
			cfg, err := qc.Compile(d)
			if err != nil {
				t.Fatal(err)
			}
			r := cfg.Resolve("temp", "POST", "/app-id/temp/messages/users/broadcast")
			if got := r.Limits[1].Max; got != tc.want {
				t.Errorf("daily limit = %d, want %d", got, tc.want)
			}
		})
	}
}

func TestResolveProfileMissing(t *testing.T) {
	d := resolveDoc()
	d.DefaultProfile = "basic" // not in Profiles: no QuotaProfile "basic" yet
	d.Apps["early"] = qc.App{Profile: "basic", Overrides: []qc.Override{{Group: "messages-send-users", MaxTargets: 5}}}
	cfg, err := qc.Compile(d)
	if err != nil {
		t.Fatal(err)
	}
	for _, app := range []string{"early", "nobody"} {
		got := cfg.Resolve(app, "POST", "/app-id/x/messages/users?y=1")
		checkResult(t, got, qc.Result{Path: "/app-id/x/messages/users"}, "")
	}
	// Apps on a profile that exists are unaffected.
	got := cfg.Resolve("ent", "POST", "/app-id/ent/messages/users")
	if got.Profile != "enterprise" || got.Group != "messages-send-users" {
		t.Errorf("ent: %+v", got)
	}
}

// TestResolveLimitsAreClipped checks that a caller appending to Result.Limits
// (which it must not, but might) cannot change what others resolve.
func TestResolveLimitsAreClipped(t *testing.T) {
	cfg, err := qc.Compile(resolveDoc())
	if err != nil {
		t.Fatal(err)
	}
	for _, app := range []string{"plain", "raise"} {
		r := cfg.Resolve(app, "POST", "/app-id/1/messages/users")
		n := len(r.Limits)
		_ = append(r.Limits, lim("Messages", "Day", "App", 1))
		if r2 := cfg.Resolve(app, "POST", "/app-id/1/messages/users"); len(r2.Limits) != n || !reflect.DeepEqual(r2.Limits, r.Limits) {
			t.Errorf("%s: limits changed to %+v", app, r2.Limits)
		}
	}
}

func TestResolveConcurrent(t *testing.T) {
	cfg, err := qc.Compile(resolveDoc())
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 1000 {
				if r := cfg.Resolve("raise", "POST", "/app-id/raise/messages/users"); r.MaxTargets != 1000 {
					t.Errorf("MaxTargets = %d", r.MaxTargets)
					return
				}
			}
		})
	}
	wg.Wait()
}

func TestResolveDoesNotAllocate(t *testing.T) {
	cfg, err := qc.Compile(resolveDoc())
	if err != nil {
		t.Fatal(err)
	}
	calls := []struct{ app, method, path string }{
		{"plain", "GET", "/app-id/1/chatrooms/42?limit=10"},
		{"plain", "GET", "/app-id/1/chatrooms/super_admin/users"},
		{"raise", "POST", "/app-id/raise/messages/users"},
		{"temp", "POST", "/app-id/temp/messages/users/broadcast"},
		{"nobody", "DELETE", "/app-id/nobody/users/alice/user_channel/"},
		{"plain", "PATCH", "/app-id/1/unknown"},
	}
	now := time.Now()
	var sink qc.Result
	for _, c := range calls {
		if n := testing.AllocsPerRun(100, func() { sink = cfg.ResolveAt(c.app, c.method, c.path, now) }); n != 0 {
			t.Errorf("ResolveAt(%q, %q, %q): %v allocs/op, want 0", c.app, c.method, c.path, n)
		}
		if n := testing.AllocsPerRun(100, func() { sink = cfg.Resolve(c.app, c.method, c.path) }); n != 0 {
			t.Errorf("Resolve(%q, %q, %q): %v allocs/op, want 0", c.app, c.method, c.path, n)
		}
	}
	_ = sink
}

// TestResolveManyApps checks the app index: every app finds its own entry
// whatever its ID's length (IDs too long for a slot take another path), and IDs
// it does not hold fall to the default profile.
func TestResolveManyApps(t *testing.T) {
	d := resolveDoc()
	const numbered = 5000
	ids := make([]string, 0, 4+2*numbered)
	ids = append(ids, "a", strings.Repeat("x", 46), strings.Repeat("y", 47), strings.Repeat("z", 64))
	for i := range numbered {
		ids = append(ids, strconv.Itoa(i), fmt.Sprintf("%036d", i))
	}
	for i, id := range ids {
		d.Apps[id] = qc.App{Profile: "default", Overrides: []qc.Override{{Group: "messages-send-users", MaxTargets: int32(i + 1)}}}
	}
	cfg, err := qc.Compile(d)
	if err != nil {
		t.Fatal(err)
	}
	for i, id := range ids {
		r := cfg.Resolve(id, "POST", "/app-id/"+id+"/messages/users")
		if r.MaxTargets != int32(i+1) || r.Override == nil {
			t.Fatalf("app %q: MaxTargets %d, Override %v; want %d and its override", id, r.MaxTargets, r.Override, i+1)
		}
	}
	for _, id := range []string{"", "b", strings.Repeat("x", 45), strings.Repeat("z", 63), "5000", fmt.Sprintf("%036d", 5000)} {
		r := cfg.Resolve(id, "POST", "/app-id/x/messages/users")
		if r.Profile != "default" || r.MaxTargets != 600 || r.Override != nil {
			t.Errorf("unknown app %q: %+v", id, r)
		}
	}
}

// TestResolveUserParamAtAnyDepth checks User for user parameters at every
// segment index, including those deeper than Resolve notes while matching,
// which it finds by scanning the path again.
func TestResolveUserParamAtAnyDepth(t *testing.T) {
	prof := qc.Profile{Fallback: []qc.Limit{lim("Requests", "Second", "App", 100)}}
	for depth := 1; depth <= 15; depth++ {
		tmpl := "/app-id/{app_id}" + strings.Repeat("/x", depth-1) + "/{u}/end"
		prof.Groups = append(prof.Groups, qc.Group{
			Name:   fmt.Sprintf("depth-%d", depth),
			Routes: []qc.Route{{Method: "GET", Path: tmpl, UserParam: "u"}},
			Limits: []qc.Limit{lim("Requests", "Minute", "User", 5)},
		})
	}
	cfg, err := qc.Compile(&qc.Document{Version: qc.FormatVersion, DefaultProfile: "default", Profiles: map[string]qc.Profile{"default": prof}})
	if err != nil {
		t.Fatal(err)
	}
	for depth := 1; depth <= 15; depth++ {
		user := fmt.Sprintf("user%d", depth)
		path := "/app-id/1" + strings.Repeat("/x", depth-1) + "/" + user + "/end"
		got := cfg.Resolve("1", "GET", path)
		if want := fmt.Sprintf("depth-%d", depth); got.Group != want || got.User != user {
			t.Errorf("Resolve(%q): group %q, user %q; want %q, %q", path, got.Group, got.User, want, user)
		}
	}
}
