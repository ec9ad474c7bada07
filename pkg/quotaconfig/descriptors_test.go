package quotaconfig_test

import (
	"reflect"
	"testing"

	qc "github.com/appquota/appquota/pkg/quotaconfig"
)

// descDoc is a document with one of each kind of rule the descriptor contract
// covers; it is built here, not from the API types, so the gateway package's
// tests stay free of them.
func descDoc() *qc.Document {
	l := func(unit, window, scope string, max int64) qc.Limit {
		return qc.Limit{Unit: unit, Window: window, Scope: scope, Max: max}
	}
	const app = "/app-id/{app_id}"
	return &qc.Document{
		Version:        qc.FormatVersion,
		DefaultProfile: "default",
		Profiles: map[string]qc.Profile{
			"default": {
				Fallback: []qc.Limit{l("Requests", "Second", "App", 100)},
				Groups: []qc.Group{
					{Name: "conversations-delete", Routes: []qc.Route{{Method: "DELETE", Path: app + "/users/{userName}/user_channel", UserParam: "userName"}},
						Limits: []qc.Limit{l("Requests", "Second", "App", 100), l("Requests", "Minute", "User", 5)}},
					{Name: "messages-broadcast-users", Routes: []qc.Route{{Method: "POST", Path: app + "/messages/users/broadcast"}},
						Limits: []qc.Limit{l("Requests", "Minute", "App", 1), l("Requests", "Day", "App", 50)}},
					{Name: "messages-send-users", Routes: []qc.Route{{Method: "POST", Path: app + "/messages/users"}},
						Limits: []qc.Limit{l("Requests", "Second", "App", 100), l("Messages", "Minute", "App", 6000)}, MaxTargets: 600},
					{Name: "push-binding", Routes: []qc.Route{
						{Method: "GET", Path: app + "/users/{userId}/push/binding", UserParam: "userId"},
						{Method: "PUT", Path: app + "/users/{userId}/push/binding", UserParam: "userId"},
					}, Limits: []qc.Limit{l("Requests", "Second", "App", 100)}},
				},
			},
			"gold": {
				Fallback: []qc.Limit{l("Requests", "Second", "App", 1000)},
				Groups: []qc.Group{
					{Name: "messages-send-users", Routes: []qc.Route{{Method: "POST", Path: app + "/messages/users"}},
						Limits: []qc.Limit{l("Requests", "Second", "App", 2000)}},
				},
			},
		},
		Apps: map[string]qc.App{
			"raised": {Profile: "default", Overrides: []qc.Override{
				{Group: "messages-send-users", Limits: []qc.Limit{l("Requests", "Second", "App", 500), l("Requests", "Hour", "App", 90000)}},
			}},
			"blocked": {Profile: "default", Overrides: []qc.Override{
				{Group: "messages-broadcast-users", Limits: []qc.Limit{l("Requests", "Minute", "App", 0)}},
			}},
			"goldapp": {Profile: "gold"},
		},
	}
}

func TestDescriptors(t *testing.T) {
	cfg, err := qc.Compile(descDoc())
	if err != nil {
		t.Fatal(err)
	}
	type e = qc.Entry
	group := func(profile, group, limit, app string, more ...e) []e {
		return append([]e{{"profile", profile}, {"group", group}, {"limit", limit}, {"app", app}}, more...)
	}
	tests := []struct {
		name                string
		app, method, path   string
		cost                uint64
		want                []qc.Descriptor
		wantHeaders         []qc.Entry
		wantBlocked, noUser bool
	}{
		{
			name: "two windows of one group are two chains",
			app:  "1", method: "POST", path: "/app-id/1/messages/users/broadcast",
			want: []qc.Descriptor{
				{Entries: group("default", "messages-broadcast-users", "requests-minute", "1"), HitsAddend: 1},
				{Entries: group("default", "messages-broadcast-users", "requests-day", "1"), HitsAddend: 1},
			},
		},
		{
			name: "messages consume the cost, requests 1",
			app:  "1", method: "POST", path: "/app-id/1/messages/users", cost: 600,
			want: []qc.Descriptor{
				{Entries: group("default", "messages-send-users", "requests-second", "1"), HitsAddend: 1},
				{Entries: group("default", "messages-send-users", "messages-minute", "1"), HitsAddend: 600},
			},
			wantHeaders: []qc.Entry{
				{"x-appquota-app-id", "1"}, {"x-appquota-profile", "default"},
				{"x-appquota-path", "/app-id/1/messages/users"}, {"x-appquota-cost", "600"},
			},
		},
		{
			name: "a per-user counter beside the per-app one",
			app:  "1", method: "DELETE", path: "/app-id/1/users/alice/user_channel",
			want: []qc.Descriptor{
				{Entries: group("default", "conversations-delete", "requests-second", "1"), HitsAddend: 1},
				{Entries: group("default", "conversations-delete", "requests-minute-user", "1", e{"user", "alice"}), HitsAddend: 1},
			},
			wantHeaders: []qc.Entry{
				{"x-appquota-app-id", "1"}, {"x-appquota-profile", "default"},
				{"x-appquota-path", "/app-id/1/users/alice/user_channel"}, {"x-appquota-cost", "0"},
				{"x-appquota-user", "alice"},
			},
		},
		{
			name: "shared budget: the group's other route gives the same descriptor",
			app:  "1", method: "PUT", path: "/app-id/1/users/bob/push/binding/",
			want: []qc.Descriptor{{Entries: group("default", "push-binding", "requests-second", "1"), HitsAddend: 1}},
		},
		{
			name: "fallback: method and path without query and trailing slash",
			app:  "1", method: "GET", path: "/app-id/1/unknown/?x=1",
			want: []qc.Descriptor{{Entries: []e{
				{"profile", "default"}, {"method", "GET"}, {"path", "/app-id/1/unknown"}, {"limit", "requests-second"}, {"app", "1"},
			}, HitsAddend: 1}},
		},
		{
			name: "an override changes the limits, not the descriptors of the limits it keeps",
			app:  "raised", method: "POST", path: "/app-id/raised/messages/users", cost: 3,
			want: []qc.Descriptor{
				{Entries: group("default", "messages-send-users", "requests-second", "raised"), HitsAddend: 1},
				{Entries: group("default", "messages-send-users", "messages-minute", "raised"), HitsAddend: 3},
				{Entries: group("default", "messages-send-users", "requests-hour", "raised"), HitsAddend: 1},
			},
		},
		{
			name: "blocked keeps its descriptors",
			app:  "blocked", method: "POST", path: "/app-id/blocked/messages/users/broadcast",
			want: []qc.Descriptor{
				{Entries: group("default", "messages-broadcast-users", "requests-minute", "blocked"), HitsAddend: 1},
				{Entries: group("default", "messages-broadcast-users", "requests-day", "blocked"), HitsAddend: 1},
			},
			wantBlocked: true,
		},
		{
			name: "another profile is an entry, not a copy per app",
			app:  "goldapp", method: "POST", path: "/app-id/goldapp/messages/users", cost: 5,
			want: []qc.Descriptor{{Entries: group("gold", "messages-send-users", "requests-second", "goldapp"), HitsAddend: 1}},
		},
		{
			name: "the profile's own fallback",
			app:  "goldapp", method: "DELETE", path: "/app-id/goldapp/users/alice/user_channel",
			want: []qc.Descriptor{{Entries: []e{
				{"profile", "gold"}, {"method", "DELETE"}, {"path", "/app-id/goldapp/users/alice/user_channel"},
				{"limit", "requests-second"}, {"app", "goldapp"},
			}, HitsAddend: 1}},
		},
		{name: "no app, no descriptors", app: "", method: "POST", path: "/app-id/x/messages/users"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := cfg.Resolve(tt.app, tt.method, tt.path)
			if r.Blocked != tt.wantBlocked {
				t.Errorf("Blocked = %v, want %v", r.Blocked, tt.wantBlocked)
			}
			got := qc.Descriptors(&r, tt.app, tt.method, tt.cost)
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Descriptors:\n got %v\nwant %v", got, tt.want)
			}
			if tt.wantHeaders != nil {
				if got := qc.GatewayHeaders(&r, tt.app, tt.cost); !reflect.DeepEqual(got, tt.wantHeaders) {
					t.Errorf("GatewayHeaders:\n got %v\nwant %v", got, tt.wantHeaders)
				}
			}
			if tt.want == nil && qc.GatewayHeaders(&r, tt.app, tt.cost) != nil {
				t.Errorf("GatewayHeaders = %v, want none", qc.GatewayHeaders(&r, tt.app, tt.cost))
			}
		})
	}
}

// TestDescriptorsNoProfile: an app whose profile is not in the document (the
// default QuotaProfile may not exist yet) resolves to nothing, and sends
// nothing: the gateway applies its own policy.
func TestDescriptorsNoProfile(t *testing.T) {
	d := descDoc()
	d.DefaultProfile = "absent"
	cfg, err := qc.Compile(d)
	if err != nil {
		t.Fatal(err)
	}
	r := cfg.Resolve("unknown", "POST", "/app-id/unknown/messages/users")
	if got := qc.Descriptors(&r, "unknown", "POST", 1); got != nil {
		t.Errorf("Descriptors = %v, want none", got)
	}
	if got := qc.GatewayHeaders(&r, "unknown", 1); got != nil {
		t.Errorf("GatewayHeaders = %v, want none", got)
	}
}

// TestDescriptorsCounters checks the counting rules through the descriptors:
// equal entries are one Redis counter (ratelimit keys a counter by domain,
// entries and window start), different entries are different counters.
func TestDescriptorsCounters(t *testing.T) {
	cfg, err := qc.Compile(descDoc())
	if err != nil {
		t.Fatal(err)
	}
	key := func(app, method, path string, i int) string {
		r := cfg.Resolve(app, method, path)
		ds := qc.Descriptors(&r, app, method, 1)
		if i >= len(ds) {
			t.Fatalf("%s %s %s: %d descriptors, want more than %d", app, method, path, len(ds), i)
		}
		return entriesKey(ds[i].Entries)
	}
	tests := []struct {
		name string
		a, b string
		same bool
	}{
		{"routes of one group share a budget",
			key("1", "GET", "/app-id/1/users/u/push/binding", 0), key("1", "PUT", "/app-id/1/users/v/push/binding", 0), true},
		{"apps count separately",
			key("1", "GET", "/app-id/1/users/u/push/binding", 0), key("2", "GET", "/app-id/2/users/u/push/binding", 0), false},
		{"users count separately",
			key("1", "DELETE", "/app-id/1/users/alice/user_channel", 1), key("1", "DELETE", "/app-id/1/users/bob/user_channel", 1), false},
		{"windows of one group count separately",
			key("1", "POST", "/app-id/1/messages/users/broadcast", 0), key("1", "POST", "/app-id/1/messages/users/broadcast", 1), false},
		{"units of one window count separately",
			key("1", "POST", "/app-id/1/messages/users", 0), key("1", "POST", "/app-id/1/messages/users", 1), false},
		{"unclaimed routes count separately",
			key("1", "GET", "/app-id/1/a", 0), key("1", "GET", "/app-id/1/b", 0), false},
		{"an unclaimed method of a claimed path counts on its own",
			key("1", "POST", "/app-id/1/users/u/push/binding", 0), key("1", "PATCH", "/app-id/1/users/u/push/binding", 0), false},
		{"an unclaimed route with or without query and trailing slash is one counter",
			key("1", "GET", "/app-id/1/a/?q=1", 0), key("1", "GET", "/app-id/1/a", 0), true},
	}
	for _, tt := range tests {
		if (tt.a == tt.b) != tt.same {
			t.Errorf("%s: %q and %q: same counter = %v, want %v", tt.name, tt.a, tt.b, tt.a == tt.b, tt.same)
		}
	}
}

func entriesKey(es []qc.Entry) string {
	s := ""
	for _, e := range es {
		s += e.Key + "_" + e.Value + "_"
	}
	return s
}

func TestLimitValue(t *testing.T) {
	tests := []struct {
		l    qc.Limit
		want string
	}{
		{qc.Limit{Unit: "Requests", Window: "Second", Scope: "App"}, "requests-second"},
		{qc.Limit{Unit: "Messages", Window: "Minute", Scope: "App"}, "messages-minute"},
		{qc.Limit{Unit: "Requests", Window: "Minute", Scope: "User"}, "requests-minute-user"},
		{qc.Limit{Unit: "Requests", Window: "Day", Scope: "App"}, "requests-day"},
	}
	for _, tt := range tests {
		if got := qc.LimitValue(tt.l); got != tt.want {
			t.Errorf("LimitValue(%v) = %q, want %q", tt.l, got, tt.want)
		}
	}
}

func BenchmarkDescriptors(b *testing.B) {
	cfg, err := qc.Compile(descDoc())
	if err != nil {
		b.Fatal(err)
	}
	r := cfg.Resolve("raised", "POST", "/app-id/raised/messages/users")
	b.ReportAllocs()
	for b.Loop() {
		_ = qc.Descriptors(&r, "raised", "POST", 600)
	}
}
