package quotaconfig_test

import (
	"cmp"
	"os"
	"reflect"
	"slices"
	"testing"

	qc "github.com/appquota/appquota/pkg/quotaconfig"
)

// defaultCatalog is the shipped "default" QuotaProfile as the controller
// renders it (internal/render's golden rendering of config/samples, which
// that package's tests keep current), so these tests resolve what gateways
// will actually see.
func defaultCatalog(tb testing.TB) qc.Profile {
	tb.Helper()
	data, err := os.ReadFile("../../internal/render/testdata/samples/document.golden.json")
	if err != nil {
		tb.Fatal(err)
	}
	d, err := qc.Parse(data)
	if err != nil {
		tb.Fatal(err)
	}
	p, ok := d.Profiles["default"]
	if !ok {
		tb.Fatal("the samples' rendering has no default profile")
	}
	return p
}

func catalogDoc(tb testing.TB) *qc.Document {
	return &qc.Document{
		Version:        qc.FormatVersion,
		DefaultProfile: "default",
		Profiles:       map[string]qc.Profile{"default": defaultCatalog(tb)},
	}
}

func TestDefaultCatalog(t *testing.T) {
	cfg, err := qc.Compile(catalogDoc(t))
	if err != nil {
		t.Fatal(err)
	}
	if n := len(cfg.Document().Profiles["default"].Groups); n != 166 {
		t.Errorf("catalog has %d groups, want 166", n)
	}

	type want struct {
		group, route, userParam, user string
		limits                        []qc.Limit
		maxTargets                    int32
		restOnly                      bool
	}
	perSecond := func(max int64) []qc.Limit { return []qc.Limit{lim("Requests", "Second", "App", max)} }
	tests := []struct {
		method, path string
		want         want
	}{
		// Multi-limit group with a per-call cap.
		{"POST", "/app-id/1/messages/users", want{group: "messages-send-users", route: "/app-id/{app_id}/messages/users",
			limits: []qc.Limit{lim("Requests", "Second", "App", 100), lim("Messages", "Minute", "App", 6000)}, maxTargets: 600, restOnly: true}},
		// Per-user limit: the user is the {userName} segment.
		{"DELETE", "/app-id/1/users/alice/user_channel", want{group: "conversations-delete", route: "/app-id/{app_id}/users/{userName}/user_channel",
			userParam: "userName", user: "alice", limits: []qc.Limit{lim("Requests", "Second", "App", 100), lim("Requests", "Minute", "User", 5)}}},
		// Shared budget: PUT and GET draw from one group.
		{"PUT", "/app-id/1/users/u1/push/binding", want{group: "push-binding", route: "/app-id/{app_id}/users/{userId}/push/binding",
			userParam: "userId", user: "u1", limits: perSecond(100)}},
		{"GET", "/app-id/1/users/u1/push/binding", want{group: "push-binding", route: "/app-id/{app_id}/users/{userId}/push/binding",
			userParam: "userId", user: "u1", limits: perSecond(100)}},
		// A literal segment beats a parameter at the same position.
		{"GET", "/app-id/1/chatrooms/super_admin", want{group: "chatrooms-super-admins-list", route: "/app-id/{app_id}/chatrooms/super_admin",
			limits: perSecond(100)}},
		{"GET", "/app-id/1/chatrooms/1234567", want{group: "chatrooms-get", route: "/app-id/{app_id}/chatrooms/{chatroom_id}",
			limits: perSecond(100)}},
		{"POST", "/app-id/1/chatrooms/super_admin", want{group: "chatrooms-super-admins-add", route: "/app-id/{app_id}/chatrooms/super_admin",
			limits: perSecond(100)}},
		{"DELETE", "/app-id/1/chatrooms/super_admin/bob", want{group: "chatrooms-super-admins-remove", route: "/app-id/{app_id}/chatrooms/super_admin/{superAdmin}",
			limits: perSecond(100)}},
		// The query string is ignored.
		{"GET", "/app-id/1/chatgroups?limit=10&cursor=x", want{group: "chatgroups-list", route: "/app-id/{app_id}/chatgroups",
			limits: perSecond(100)}},
		// Routes no group claims fall back to 100 calls/s.
		{"GET", "/app-id/1/no/such/route", want{limits: perSecond(100)}},
		{"PATCH", "/app-id/1/messages/users", want{limits: perSecond(100)}},
	}
	for _, tt := range tests {
		t.Run(tt.method+" "+tt.path, func(t *testing.T) {
			r := cfg.Resolve("1", tt.method, tt.path)
			got := want{group: r.Group, route: r.Route, userParam: r.UserParam, user: r.User,
				limits: sortedLimits(r.Limits), maxTargets: r.MaxTargets, restOnly: r.RestOnly}
			tt.want.limits = sortedLimits(tt.want.limits)
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got  %+v\nwant %+v", got, tt.want)
			}
			if r.Profile != "default" || r.Fallback != (tt.want.group == "") || r.Blocked || r.Override != nil {
				t.Errorf("Profile %q, Fallback %v, Blocked %v, Override %v", r.Profile, r.Fallback, r.Blocked, r.Override)
			}
		})
	}
}

// sortedLimits orders a copy of ls, so expectations do not depend on the order
// render chooses.
func sortedLimits(ls []qc.Limit) []qc.Limit {
	out := slices.Clone(ls)
	slices.SortFunc(out, func(a, b qc.Limit) int {
		return cmp.Or(cmp.Compare(a.Unit, b.Unit), cmp.Compare(a.Window, b.Window), cmp.Compare(a.Scope, b.Scope))
	})
	return out
}

// TestDefaultCatalogEveryRoute resolves every route of the catalog, with its
// parameters filled in, back to its own group: no route is shadowed by another.
func TestDefaultCatalogEveryRoute(t *testing.T) {
	cfg, err := qc.Compile(catalogDoc(t))
	if err != nil {
		t.Fatal(err)
	}
	for _, g := range cfg.Document().Profiles["default"].Groups {
		for _, r := range g.Routes {
			path := instantiate(r.Path, "42")
			got := cfg.Resolve("42", r.Method, path)
			if got.Group != g.Name || got.Route != r.Path {
				t.Errorf("%s %s resolved to group %q route %q, want %q %q", r.Method, path, got.Group, got.Route, g.Name, r.Path)
			}
			if r.UserParam != "" && got.User != "v-"+r.UserParam {
				t.Errorf("%s %s: User = %q, want %q", r.Method, path, got.User, "v-"+r.UserParam)
			}
		}
	}
}

func TestDefaultCatalogDoesNotAllocate(t *testing.T) {
	cfg, err := qc.Compile(catalogDoc(t))
	if err != nil {
		t.Fatal(err)
	}
	var sink qc.Result
	if n := testing.AllocsPerRun(100, func() {
		sink = cfg.Resolve("1", "DELETE", "/app-id/1/chatrooms/12345/blocks/users/alice,bob?x=1")
	}); n != 0 {
		t.Errorf("%v allocs/op, want 0", n)
	}
	_ = sink
}
