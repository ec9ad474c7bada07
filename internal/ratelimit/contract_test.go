package ratelimit_test

import (
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	ratelimitfilterv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ratelimit/v3"
	rlsconfv3 "github.com/envoyproxy/go-control-plane/ratelimit/config/ratelimit/v3"

	"github.com/appquota/appquota/internal/ratelimit"
	qc "github.com/appquota/appquota/pkg/quotaconfig"
)

// This file proves the descriptor contract without the engine: for every
// route of a document and a set of apps, the limits a stand-in for
// ratelimit's lookup finds for quotaconfig.Descriptors in Translate's
// configuration are the limits Resolve returns, and a stand-in for Envoy's
// rate-limit actions, run on EnvoyActions' routes with the gateway's headers,
// sends those same descriptors (and others only where they match nothing).
// The real engine and Envoy are tested elsewhere; these stand-ins follow
// their source and do only what this package generates.

// rlNode is one level of ratelimit's loaded configuration: children by
// "key_value", or "key" for a key-only entry, as src/config/config_impl.go
// stores them.
type rlNode struct {
	children map[string]*rlNode
	limit    *rlsconfv3.RateLimitPolicy
}

func loadRL(t testing.TB, cfg *rlsconfv3.RateLimitConfig) *rlNode {
	t.Helper()
	var load func(ds []*rlsconfv3.RateLimitDescriptor, at string) map[string]*rlNode
	load = func(ds []*rlsconfv3.RateLimitDescriptor, at string) map[string]*rlNode {
		m := map[string]*rlNode{}
		for _, d := range ds {
			k := d.Key
			if d.Value != "" {
				k += "_" + d.Value
			}
			if strings.HasSuffix(k, "*") {
				t.Fatalf("%s%s: a value ending in '*' is a wildcard to ratelimit", at, k)
			}
			if _, dup := m[k]; dup {
				t.Fatalf("%s%s: ratelimit refuses a duplicate descriptor", at, k)
			}
			m[k] = &rlNode{children: load(d.Descriptors, at+k+"."), limit: d.RateLimit}
		}
		return m
	}
	return &rlNode{children: load(cfg.Descriptors, cfg.Domain+".")}
}

// getLimit is GetLimit: at each level the entry's key and value, else its key
// alone; the limit only of the node the last entry reaches; no backtracking.
func (n *rlNode) getLimit(es []qc.Entry) *rlsconfv3.RateLimitPolicy {
	level := n.children
	var found *rlsconfv3.RateLimitPolicy
	for i, e := range es {
		next := level[e.Key+"_"+e.Value]
		if next == nil {
			next = level[e.Key]
		}
		if next != nil && next.limit != nil && i == len(es)-1 {
			found = next.limit
		}
		if next == nil || len(next.children) == 0 {
			break
		}
		level = next.children
	}
	return found
}

func lookup(t testing.TB, cfg *rlsconfv3.RateLimitConfig, es []qc.Entry) *rlsconfv3.RateLimitPolicy {
	return loadRL(t, cfg).getLimit(es)
}

// envoySim picks a route as Envoy's router does (first match, in order) and
// makes descriptors as its rate-limit filter does from the route's
// per-filter configuration.
type envoySim struct {
	routes []*routev3.Route
	res    []*regexp.Regexp
	domain string
}

func newEnvoySim(t testing.TB, routes []ratelimit.EnvoyRoute, opts ratelimit.Options) *envoySim {
	t.Helper()
	s := &envoySim{domain: opts.Domain}
	if s.domain == "" {
		s.domain = ratelimit.DefaultDomain
	}
	for _, r := range routes {
		rt, err := r.Route(opts)
		if err != nil {
			t.Fatal(err)
		}
		var re *regexp.Regexp
		if sr := rt.Match.GetSafeRegex(); sr != nil {
			// Envoy's safe_regex matches the whole path without the query.
			re = regexp.MustCompile("^(?:" + sr.Regex + ")$")
		} else if rt.Match.GetPrefix() != "/" {
			t.Fatalf("route %s: no safe_regex and prefix %q", rt.Name, rt.Match.GetPrefix())
		}
		s.routes = append(s.routes, rt)
		s.res = append(s.res, re)
	}
	return s
}

func (s *envoySim) descriptors(t testing.TB, method, path string, headers map[string]string) []qc.Descriptor {
	t.Helper()
	if i := strings.IndexByte(path, '?'); i >= 0 {
		path = path[:i]
	}
	var rt *routev3.Route
	for i, r := range s.routes {
		if s.res[i] != nil && !s.res[i].MatchString(path) {
			continue
		}
		if !headersMatch(r.Match.Headers, method, headers) {
			continue
		}
		rt = r
		break
	}
	if rt == nil {
		t.Fatalf("%s %s: no route (the catch-all should match)", method, path)
	}
	var per ratelimitfilterv3.RateLimitPerRoute
	if err := rt.TypedPerFilterConfig[ratelimit.FilterName].UnmarshalTo(&per); err != nil {
		t.Fatalf("route %s: %v", rt.Name, err)
	}
	if per.Domain != s.domain {
		t.Fatalf("route %s: domain %q, want %q", rt.Name, per.Domain, s.domain)
	}
	var out []qc.Descriptor
	for _, rl := range per.RateLimits {
		if d, ok := envoyDescriptor(t, rl, method, headers); ok {
			out = append(out, d)
		}
	}
	return out
}

func headerValue(name, method string, headers map[string]string) (string, bool) {
	if name == ":method" {
		return method, true
	}
	v, ok := headers[name]
	return v, ok
}

func headersMatch(ms []*routev3.HeaderMatcher, method string, headers map[string]string) bool {
	for _, m := range ms {
		v, ok := headerValue(m.Name, method, headers)
		if !ok || v != m.GetStringMatch().GetExact() {
			return false
		}
	}
	return true
}

// envoyDescriptor runs one rate limit's actions in order; an action that
// cannot append its entry drops the descriptor, as Envoy does.
func envoyDescriptor(t testing.TB, rl *routev3.RateLimit, method string, headers map[string]string) (qc.Descriptor, bool) {
	var d qc.Descriptor
	for _, a := range rl.Actions {
		switch a := a.ActionSpecifier.(type) {
		case *routev3.RateLimit_Action_HeaderValueMatch_:
			h := a.HeaderValueMatch
			expect := h.ExpectMatch == nil || h.ExpectMatch.Value
			if headersMatch(h.Headers, method, headers) != expect {
				return d, false
			}
			d.Entries = append(d.Entries, qc.Entry{Key: h.DescriptorKey, Value: h.DescriptorValue})
		case *routev3.RateLimit_Action_GenericKey_:
			d.Entries = append(d.Entries, qc.Entry{Key: a.GenericKey.DescriptorKey, Value: a.GenericKey.DescriptorValue})
		case *routev3.RateLimit_Action_RequestHeaders_:
			v, ok := headerValue(a.RequestHeaders.HeaderName, method, headers)
			if !ok {
				return d, false
			}
			d.Entries = append(d.Entries, qc.Entry{Key: a.RequestHeaders.DescriptorKey, Value: v})
		default:
			t.Fatalf("action %T is not modelled", a)
		}
	}
	switch h := rl.HitsAddend; {
	case h == nil:
		d.HitsAddend = 1
	case h.Number != nil:
		d.HitsAddend = h.Number.Value
	default:
		name, ok := strings.CutPrefix(h.Format, "%REQ(")
		name, ok2 := strings.CutSuffix(name, ")%")
		if !ok || !ok2 {
			t.Fatalf("hits_addend format %q is not modelled", h.Format)
		}
		v, err := strconv.ParseUint(headers[name], 10, 64)
		if err != nil {
			// Envoy ignores a descriptor whose hits_addend does not format.
			return d, false
		}
		d.HitsAddend = v
	}
	return d, true
}

func descKey(d qc.Descriptor) string {
	var b strings.Builder
	for _, e := range d.Entries {
		b.WriteString(e.Key + "=" + e.Value + ";")
	}
	return b.String() + " hits=" + strconv.FormatUint(d.HitsAddend, 10)
}

var units = map[string]rlsconfv3.RateLimitUnit{
	"Second": rlsconfv3.RateLimitUnit_SECOND, "Minute": rlsconfv3.RateLimitUnit_MINUTE,
	"Hour": rlsconfv3.RateLimitUnit_HOUR, "Day": rlsconfv3.RateLimitUnit_DAY,
}

type call struct{ app, method, path string }

// contractCost is every call's number of targets: messages-send-users' cap.
const contractCost = 600

// coverage counts what the calls exercised, so the test fails if a change to
// the documents stops it from checking a rule.
type coverage struct {
	calls, descriptors, fallback, user, messages, blocked, override, extra, noProfile int
}

// checkContract resolves each call, builds its descriptors with the helper,
// looks them up in the translated configuration and compares the limits with
// Resolve's; then runs the Envoy actions and compares the descriptors.
func checkContract(t *testing.T, doc *qc.Document, now time.Time, calls []call) coverage {
	t.Helper()
	opts := ratelimit.Options{Now: now}
	cfg, err := ratelimit.Translate(doc, opts)
	if err != nil {
		t.Fatal(err)
	}
	rl := loadRL(t, cfg)
	routes, err := ratelimit.EnvoyActions(doc, opts)
	if err != nil {
		t.Fatal(err)
	}
	envoy := newEnvoySim(t, routes, opts)
	compiled, err := qc.Compile(doc)
	if err != nil {
		t.Fatal(err)
	}
	var cov coverage
	for _, c := range calls {
		at := fmt.Sprintf("app %s %s %s", c.app, c.method, c.path)
		r := compiled.ResolveAt(c.app, c.method, c.path, now)
		want := qc.Descriptors(&r, c.app, c.method, contractCost)
		cov.calls++
		if r.Profile == "" {
			cov.noProfile++
		}
		if len(want) != len(r.Limits) {
			t.Errorf("%s: %d descriptors for %d limits", at, len(want), len(r.Limits))
		}
		for _, d := range want {
			lv := d.Entries[len(d.Entries)-2].Value // limit, then app
			if d.Entries[len(d.Entries)-1].Key == qc.DescriptorUser {
				lv = d.Entries[len(d.Entries)-3].Value
				cov.user++
			}
			i := slices.IndexFunc(r.Limits, func(l qc.Limit) bool { return qc.LimitValue(l) == lv })
			if i < 0 {
				t.Errorf("%s: descriptor %s is of no limit of %v", at, descKey(d), r.Limits)
				continue
			}
			l := r.Limits[i]
			got := rl.getLimit(d.Entries)
			switch {
			case got == nil:
				t.Errorf("%s: descriptor %s matches no limit; Resolve says %d/%s", at, descKey(d), l.Max, l.Window)
			case got.Unlimited || int64(got.RequestsPerUnit) != l.Max || got.Unit != units[l.Window]:
				t.Errorf("%s: descriptor %s matches %d/%s (unlimited %v); Resolve says %d/%s",
					at, descKey(d), got.RequestsPerUnit, got.Unit, got.Unlimited, l.Max, l.Window)
			}
			if l.Unit == qc.UnitMessages {
				cov.messages++
				if d.HitsAddend != contractCost {
					t.Errorf("%s: %s consumes %d, want the cost %d", at, descKey(d), d.HitsAddend, contractCost)
				}
			} else if d.HitsAddend != 1 {
				t.Errorf("%s: %s consumes %d, want 1", at, descKey(d), d.HitsAddend)
			}
			cov.descriptors++
		}
		if r.Fallback {
			cov.fallback++
		}
		if r.Blocked {
			cov.blocked++
		}
		if r.Override != nil {
			cov.override++
		}

		headers := map[string]string{}
		for _, h := range qc.GatewayHeaders(&r, c.app, contractCost) {
			headers[h.Key] = h.Value
		}
		fromEnvoy := envoy.descriptors(t, c.method, c.path, headers)
		sent := map[string]bool{}
		for _, d := range fromEnvoy {
			sent[descKey(d)] = true
		}
		mine := map[string]bool{}
		for _, d := range want {
			mine[descKey(d)] = true
			if !sent[descKey(d)] {
				t.Errorf("%s: Envoy does not send %s; it sends %v", at, descKey(d), fromEnvoy)
			}
		}
		for _, d := range fromEnvoy {
			if mine[descKey(d)] {
				continue
			}
			cov.extra++
			if got := rl.getLimit(d.Entries); got != nil {
				t.Errorf("%s: Envoy also sends %s, which matches %d/%s", at, descKey(d), got.RequestsPerUnit, got.Unit)
			}
		}
	}
	return cov
}

// routeCalls is one call of each app to each route of every profile, with the
// app's ID in {app_id}, "alice" as the user, and each other parameter a value
// of its own; and calls no group claims.
func routeCalls(doc *qc.Document, apps []string, extra ...call) []call {
	var calls []call
	for _, app := range apps {
		for _, name := range slices.Sorted(maps.Keys(doc.Profiles)) {
			for _, g := range doc.Profiles[name].Groups {
				for _, r := range g.Routes {
					calls = append(calls, call{app, r.Method, instantiate(r, app)})
				}
			}
		}
		calls = append(calls,
			call{app, "GET", "/app-id/" + app + "/no-group-claims-this"},
			call{app, "GET", "/app-id/" + app + "/no-group-claims-this/?page=2"},
			call{app, "PATCH", "/app-id/" + app + "/messages/users"},
			call{app, "TRACE", "/app-id/" + app + "/messages/users"},
			call{app, "POST", "/app-id/" + app + "/messages/users/?x=1"},
			call{app, "DELETE", "/app-id/" + app + "/users/bob/user_channel/"},
		)
		for _, c := range extra {
			calls = append(calls, call{app, c.method, strings.ReplaceAll(c.path, "{app}", app)})
		}
	}
	return calls
}

func instantiate(r qc.Route, app string) string {
	segs := strings.Split(r.Path, "/")
	for i, s := range segs {
		switch {
		case s == "{app_id}":
			segs[i] = app
		case r.UserParam != "" && s == "{"+r.UserParam+"}":
			segs[i] = "alice"
		case strings.HasPrefix(s, "{"):
			segs[i] = "v" + strconv.Itoa(i)
		}
	}
	return strings.Join(segs, "/")
}

func appIDs(doc *qc.Document, more ...string) []string {
	return append(slices.Sorted(maps.Keys(doc.Apps)), more...)
}

// samplesWithApps is the rendered samples (a raise, a block, a temporary
// raise) plus apps for the rules they lack: a per-user raise, a limit the
// profile lacks, an override equal to the profile.
func samplesWithApps(t *testing.T) *qc.Document {
	doc := loadDoc(t, "samples.document.json")
	l := func(unit, window, scope string, max int64) qc.Limit {
		return qc.Limit{Unit: unit, Window: window, Scope: scope, Max: max}
	}
	doc.Apps["2233445566"] = qc.App{Profile: "default", Overrides: []qc.Override{
		{Group: "conversations-delete", Limits: []qc.Limit{l("Requests", "Minute", "User", 20)}},
		{Group: "messages-send-users", Limits: []qc.Limit{l("Requests", "Second", "App", 100), l("Requests", "Hour", "App", 100000)}},
		{Group: "users-register", MaxTargets: 10},
	}}
	return doc
}

func TestContractSamples(t *testing.T) {
	doc := samplesWithApps(t)
	before := time.Date(2026, 7, 1, 0, 0, 0, 0, time.UTC)
	after := time.Date(2027, 2, 1, 0, 0, 0, 0, time.UTC) // the temporary raise has expired
	for _, now := range []time.Time{before, after} {
		t.Run(now.Format("2006-01-02"), func(t *testing.T) {
			cov := checkContract(t, doc, now, routeCalls(doc, appIDs(doc, "1000000001")))
			t.Logf("%+v", cov)
			if cov.calls < 800 || cov.fallback == 0 || cov.user == 0 || cov.messages == 0 ||
				cov.blocked == 0 || cov.override == 0 || cov.extra == 0 {
				t.Errorf("the calls miss a rule: %+v", cov)
			}
		})
	}
}

// TestContractProfiles adds a second profile whose templates overlap the
// first's differently (so Envoy needs a route for the overlap), apps on it,
// and a default profile the document lacks.
func TestContractProfiles(t *testing.T) {
	doc := loadDoc(t, "profiles.document.json")
	crossing := []call{
		{method: "GET", path: "/app-id/{app}/chatrooms/super_admin/users"}, // both profiles' groups
		{method: "GET", path: "/app-id/{app}/chatrooms/room1/users"},       // default's group, gold's fallback
		{method: "GET", path: "/app-id/{app}/groups/super_admin/users"},    // gold's group, default's fallback
		{method: "GET", path: "/app-id/{app}/chatrooms/super_admin"},       // a literal in default, a parameter in gold
	}
	for _, now := range []time.Time{goldenNow, time.Date(2027, 2, 1, 0, 0, 0, 0, time.UTC)} {
		t.Run(now.Format("2006-01-02"), func(t *testing.T) {
			cov := checkContract(t, doc, now, routeCalls(doc, appIDs(doc, "1000000001"), crossing...))
			t.Logf("%+v", cov)
			if cov.fallback == 0 || cov.user == 0 || cov.messages == 0 || cov.blocked == 0 || cov.override == 0 || cov.extra == 0 {
				t.Errorf("the calls miss a rule: %+v", cov)
			}
		})
	}
	t.Run("default profile missing", func(t *testing.T) {
		doc := loadDoc(t, "profiles.document.json")
		doc.DefaultProfile = "absent"
		cov := checkContract(t, doc, goldenNow, routeCalls(doc, []string{"1000000001", "7788990011"}, crossing...))
		if cov.noProfile == 0 {
			t.Errorf("no call without a profile: %+v", cov)
		}
	})
}

// TestScenarios pins the catalog's rules to numbers, through the whole chain:
// Resolve, the helper's descriptors, the translated configuration.
func TestScenarios(t *testing.T) {
	doc := samplesWithApps(t)
	now := goldenNow
	cfg, err := ratelimit.Translate(doc, ratelimit.Options{Now: now})
	if err != nil {
		t.Fatal(err)
	}
	rl := loadRL(t, cfg)
	compiled, err := qc.Compile(doc)
	if err != nil {
		t.Fatal(err)
	}
	type limit struct {
		value string
		max   uint32
		hits  uint64
	}
	tests := []struct {
		name              string
		app, method, path string
		cost              uint64
		want              []limit
	}{
		{"default app: 100 calls/s and 6000 messages/min; 600 recipients consume 600",
			"1000000001", "POST", "/app-id/1000000001/messages/users", 600,
			[]limit{{"requests-second", 100, 1}, {"messages-minute", 6000, 600}}},
		{"raised app: 500 calls/s, messages unchanged",
			"1122334455", "POST", "/app-id/1122334455/messages/users", 600,
			[]limit{{"requests-second", 500, 1}, {"messages-minute", 6000, 600}}},
		{"blocked group: 0 per minute and per day",
			"9988776655", "POST", "/app-id/9988776655/messages/chatrooms/broadcast", 1,
			[]limit{{"requests-minute", 0, 1}, {"requests-day", 0, 1}}},
		{"lowered app: 20 calls/s",
			"9988776655", "POST", "/app-id/9988776655/messages/users", 1,
			[]limit{{"requests-second", 20, 1}, {"messages-minute", 6000, 1}}},
		{"broadcast: 1/min and 50/day, each its own chain",
			"1000000001", "POST", "/app-id/1000000001/messages/users/broadcast", 1,
			[]limit{{"requests-minute", 1, 1}, {"requests-day", 50, 1}}},
		{"temporary raise: 500/day until it expires, 1/min kept",
			"5566778899", "POST", "/app-id/5566778899/messages/users/broadcast", 1,
			[]limit{{"requests-minute", 1, 1}, {"requests-day", 500, 1}}},
		{"delete conversation: 100/s per app and 5/min per user",
			"1000000001", "DELETE", "/app-id/1000000001/users/alice/user_channel", 1,
			[]limit{{"requests-second", 100, 1}, {"requests-minute-user", 5, 1}}},
		{"per-user raise",
			"2233445566", "DELETE", "/app-id/2233445566/users/alice/user_channel", 1,
			[]limit{{"requests-second", 100, 1}, {"requests-minute-user", 20, 1}}},
		{"an hourly limit only this app's override has",
			"2233445566", "POST", "/app-id/2233445566/messages/users", 7,
			[]limit{{"requests-second", 100, 1}, {"messages-minute", 6000, 7}, {"requests-hour", 100000, 1}}},
		{"fallback: 100/s for a route no group claims",
			"1000000001", "GET", "/app-id/1000000001/nothing/here", 1,
			[]limit{{"requests-second", 100, 1}}},
		{"group messages: 20 messages/s and 20 calls/s, 3 groups consume 3",
			"1000000001", "POST", "/app-id/1000000001/messages/chatgroups", 3,
			[]limit{{"requests-second", 20, 1}, {"messages-second", 20, 3}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := compiled.ResolveAt(tt.app, tt.method, tt.path, now)
			var got []limit
			for _, d := range qc.Descriptors(&r, tt.app, tt.method, tt.cost) {
				p := rl.getLimit(d.Entries)
				if p == nil {
					t.Fatalf("%s matches nothing", descKey(d))
				}
				value := ""
				for _, e := range d.Entries {
					if e.Key == qc.DescriptorLimit {
						value = e.Value
					}
				}
				got = append(got, limit{value, p.RequestsPerUnit, d.HitsAddend})
			}
			slices.SortFunc(got, func(a, b limit) int { return strings.Compare(a.value, b.value) })
			want := slices.Clone(tt.want)
			slices.SortFunc(want, func(a, b limit) int { return strings.Compare(a.value, b.value) })
			if !slices.Equal(got, want) {
				t.Errorf("got %v, want %v", got, want)
			}
		})
	}
}
