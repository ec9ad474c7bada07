package audit_test

import (
	"strings"
	"testing"
	"time"

	"github.com/appquota/appquota/internal/audit"
	"github.com/appquota/appquota/pkg/quotaconfig"
)

func TestChanges(t *testing.T) {
	profiles := map[string]quotaconfig.Profile{"default": {Groups: []quotaconfig.Group{
		{Name: "messages", Limits: []quotaconfig.Limit{{Unit: "Requests", Window: "Second", Scope: "App", Max: 100}, {Unit: "Messages", Window: "Minute", Scope: "App", Max: 6000}}},
		{Name: "delete", Limits: []quotaconfig.Limit{{Unit: "Requests", Window: "Minute", Scope: "User", Max: 5}}},
	}}}
	until := time.Date(2027, 1, 31, 0, 0, 0, 0, time.UTC)
	app := func(o ...quotaconfig.Override) *quotaconfig.App {
		return &quotaconfig.App{Profile: "default", Overrides: o}
	}
	ov := func(group string, reason string, exp *time.Time, ls ...quotaconfig.Limit) quotaconfig.Override {
		return quotaconfig.Override{Group: group, Reason: reason, ExpiresAt: exp, Limits: ls}
	}
	rps := func(max int64) quotaconfig.Limit {
		return quotaconfig.Limit{Unit: "Requests", Window: "Second", Scope: "App", Max: max}
	}
	cases := []struct {
		name          string
		before, after *quotaconfig.App
		want          []string
	}{
		{"a new AppQuota raises from the default", nil, app(ov("messages", "SALES-42", &until, rps(500))),
			[]string{"alice raised app acme group messages Requests/Second from 100 to 500 until 2027-01-31T00:00:00Z: SALES-42"}},
		{"raised again", app(ov("messages", "SALES-42", nil, rps(500))), app(ov("messages", "SALES-43", nil, rps(800))),
			[]string{"alice raised app acme group messages Requests/Second from 500 to 800: SALES-43"}},
		{"lowered, no reason needed", app(), app(ov("messages", "", nil, rps(10))),
			[]string{"alice lowered app acme group messages Requests/Second from 100 to 10"}},
		{"blocked", app(), app(ov("messages", "abuse", nil, rps(0))),
			[]string{"alice blocked app acme group messages Requests/Second from 100 to 0 (blocked): abuse"}},
		{"unblocked by removing the override", app(ov("messages", "abuse", nil, rps(0))), app(),
			[]string{"alice unblocked app acme group messages Requests/Second from 0 (blocked) to 100"}},
		{"unlimited per user", app(), app(ov("delete", "VIP", nil, quotaconfig.Limit{Unit: "Requests", Window: "Minute", Scope: "User", Unlimited: true})),
			[]string{"alice raised app acme group delete Requests/Minute per User from 5 to unlimited: VIP"}},
		{"only a reason changed: nothing to tell", app(ov("messages", "a", nil, rps(500))), app(ov("messages", "b", nil, rps(500))), nil},
		{"an AppQuota deleted: back to the default", app(ov("messages", "SALES-42", nil, rps(500))), nil,
			[]string{"alice lowered app acme group messages Requests/Second from 500 to 100"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var got []string
			for _, c := range audit.Changes(profiles, "default", tc.before, tc.after) {
				got = append(got, c.Line("alice", "acme"))
			}
			if strings.Join(got, "\n") != strings.Join(tc.want, "\n") {
				t.Errorf("got\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(tc.want, "\n"))
			}
		})
	}
}

func TestSummary(t *testing.T) {
	rps := func(group string, from, to int64, reason string) audit.Change {
		return audit.Change{Group: group, Unit: "Requests", Window: "Second", Scope: "App",
			From: audit.Value{Max: from}, To: audit.Value{Max: to}, Reason: reason}
	}
	one := rps("messages", 100, 500, "SALES-42")
	const clause = "raised group messages Requests/Second from 100 to 500: SALES-42"
	three := []audit.Change{one, rps("users", 100, 10, ""), rps("recall", 100, 0, "abuse")}
	cases := []struct {
		name    string
		changes []audit.Change
		max     int
		want    string
	}{
		{"none", nil, 100, ""},
		{"one clause", []audit.Change{one}, 100, clause},
		{"all fit", three, 1024, clause + "; lowered group users Requests/Second from 100 to 10; " +
			"blocked group recall Requests/Second from 100 to 0 (blocked): abuse"},
		{"the rest counted", three, len(clause) + 20, clause + "; and 2 more"},
		{"one too long: cut, with the others counted", three, 30, "raised group me...; and 2 more"},
		{"one too long alone", []audit.Change{one}, 20, "raised group mess..."},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := audit.Summary(tc.changes, tc.max)
			if got != tc.want {
				t.Errorf("Summary(max %d) = %q, want %q", tc.max, got, tc.want)
			}
			if len(got) > tc.max {
				t.Errorf("%d bytes, over the %d allowed", len(got), tc.max)
			}
		})
	}
}
