package ratelimit

import (
	"cmp"
	"encoding/json"
	"fmt"
	"regexp"
	"slices"
	"strings"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	ratelimitfilterv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ratelimit/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/wrapperspb"
	"sigs.k8s.io/yaml"

	qc "github.com/appquota/appquota/pkg/quotaconfig"
)

// FilterName is the name EnvoyRoute.Route files the per-route configuration
// under: the HTTP connection manager's rate-limit filter must have this name.
const FilterName = "envoy.filters.http.ratelimit"

// CostFormat is the hits_addend of a Messages limit: the call's number of
// targets, which the gateway puts in quotaconfig.HeaderCost.
const CostFormat = "%REQ(" + qc.HeaderCost + ")%"

// EnvoyRoute is one Envoy route of the contract: the requests of Method whose
// path matches PathRegex, and the rate limits that make their descriptors.
//
// A request must reach the first EnvoyRoute (in EnvoyActions' order) that
// matches it, so Envoy's routes for these must keep that order: it makes
// Envoy's first match pick the route quotaconfig's Resolve picks (a literal
// segment before a parameter). The last EnvoyRoute is the catch-all, with no
// Method and no PathRegex: every request no other matches, counted by the
// fallback.
type EnvoyRoute struct {
	// Method is the request method; empty on the catch-all, which matches any.
	Method string
	// Template is the path template, e.g. /app-id/{app_id}/messages/users, as
	// Envoy's uri_template matcher also reads it; empty on the catch-all.
	Template string
	// PathRegex is an RE2 expression that matches exactly the paths Resolve
	// matches to Template (with one trailing '/' allowed), for Envoy's
	// safe_regex, which matches the whole path without the query string.
	PathRegex string
	// RateLimits are the route's rate limits, one per limit of each profile
	// (the profile's own for this route: its group's, or its fallback's when
	// none of its groups claims the route), each gated on the profile header so
	// that a request produces only its app's profile's descriptors.
	RateLimits []*routev3.RateLimit
}

// EnvoyActions returns the Envoy routes of doc's rate limits, in match order:
// every route template of every profile's groups (and, with several profiles,
// each overlap of two templates, so that first-match agrees with Resolve for
// apps of every profile), then the catch-all.
//
// The actions read the gateway's headers (quotaconfig.GatewayHeaders) and
// produce, for a call, the descriptors quotaconfig.Descriptors returns, plus
// one for each limit that only other apps' overrides give the group; those
// match nothing in Translate's configuration for this app. So the actions
// depend on the apps only through the kinds of limit their overrides add.
func EnvoyActions(doc *qc.Document, opts Options) ([]EnvoyRoute, error) {
	m, err := newModel(doc, opts)
	if err != nil {
		return nil, err
	}
	var methods []string
	for _, p := range m.profiles {
		for method := range p.routes {
			if !slices.Contains(methods, method) {
				methods = append(methods, method)
			}
		}
	}
	slices.Sort(methods)

	var out []EnvoyRoute
	for _, method := range methods {
		shapes, err := m.envoyShapes(method)
		if err != nil {
			return nil, err
		}
		for _, r := range shapes {
			er := EnvoyRoute{Method: method, Template: r.template(), PathRegex: r.regex()}
			for _, p := range m.profiles {
				if g := p.pick(method, r); g != nil {
					er.RateLimits = append(er.RateLimits, groupRateLimits(p.name, g)...)
				} else {
					er.RateLimits = append(er.RateLimits, fallbackRateLimits(p)...)
				}
			}
			out = append(out, er)
		}
	}
	catchAll := EnvoyRoute{}
	for _, p := range m.profiles {
		catchAll.RateLimits = append(catchAll.RateLimits, fallbackRateLimits(p)...)
	}
	return append(out, catchAll), nil
}

// Route returns r as an Envoy route without its action (the caller adds the
// cluster): the match, and the rate limits as the rate-limit filter's
// per-route configuration with the domain. The rate limits go there, not in
// the route action's rate_limits, because Envoy honours a rate limit's
// hits_addend only there.
func (r EnvoyRoute) Route(opts Options) (*routev3.Route, error) {
	per, err := anypb.New(&ratelimitfilterv3.RateLimitPerRoute{Domain: opts.domain(), RateLimits: r.RateLimits})
	if err != nil {
		return nil, fmt.Errorf("marshal rate limits of %s %s: %w", r.Method, r.Template, err)
	}
	rt := &routev3.Route{
		Name:                 "appquota-fallback",
		Match:                &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
		TypedPerFilterConfig: map[string]*anypb.Any{FilterName: per},
	}
	if r.Method != "" {
		rt.Name = "appquota " + r.Method + " " + r.Template
		rt.Match = &routev3.RouteMatch{
			PathSpecifier: &routev3.RouteMatch_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: r.PathRegex}},
			Headers: []*routev3.HeaderMatcher{{
				Name:                 ":method",
				HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: exact(r.Method)},
			}},
		}
	}
	return rt, nil
}

// EnvoyYAML prints routes as a YAML list of Envoy routes (EnvoyRoute.Route),
// in order, in Envoy's field names: what `kubectl appquota render` shows and
// an operator pastes under a virtual host, adding each route's action.
func EnvoyYAML(routes []EnvoyRoute, opts Options) ([]byte, error) {
	list := make([]json.RawMessage, 0, len(routes))
	for _, r := range routes {
		rt, err := r.Route(opts)
		if err != nil {
			return nil, err
		}
		// protojson varies its whitespace on purpose; the conversion to YAML
		// below removes it, so the output stays byte-for-byte stable.
		b, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(rt)
		if err != nil {
			return nil, fmt.Errorf("marshal route %s: %w", rt.Name, err)
		}
		list = append(list, b)
	}
	js, err := json.Marshal(list)
	if err != nil {
		return nil, fmt.Errorf("marshal routes: %w", err)
	}
	y, err := yaml.JSONToYAML(js)
	if err != nil {
		return nil, fmt.Errorf("convert routes to YAML: %w", err)
	}
	return y, nil
}

// groupRateLimits are the rate limits of group g of profile p: one descriptor
// per limit, entries profile, group, limit, app (and user).
func groupRateLimits(p string, g *group) []*routev3.RateLimit {
	out := make([]*routev3.RateLimit, 0, len(g.chains))
	for _, c := range g.chains {
		actions := []*routev3.RateLimit_Action{
			profileAction(p),
			genericKey(qc.DescriptorGroup, g.name),
			genericKey(qc.DescriptorLimit, qc.LimitValue(c.limit)),
			requestHeader(qc.HeaderApp, qc.DescriptorApp),
		}
		if c.limit.Scope == qc.ScopeUser {
			actions = append(actions, requestHeader(qc.HeaderUser, qc.DescriptorUser))
		}
		out = append(out, &routev3.RateLimit{Actions: actions, HitsAddend: hits(c.limit)})
	}
	return out
}

// fallbackRateLimits are the rate limits of p's fallback: entries profile,
// method, path, limit, app, so that each unclaimed route counts separately.
func fallbackRateLimits(p *profile) []*routev3.RateLimit {
	out := make([]*routev3.RateLimit, 0, len(p.fallback))
	for _, l := range p.fallback {
		out = append(out, &routev3.RateLimit{
			Actions: []*routev3.RateLimit_Action{
				profileAction(p.name),
				requestHeader(":method", qc.DescriptorMethod),
				requestHeader(qc.HeaderPath, qc.DescriptorPath),
				genericKey(qc.DescriptorLimit, qc.LimitValue(l)),
				requestHeader(qc.HeaderApp, qc.DescriptorApp),
			},
			HitsAddend: hits(l),
		})
	}
	return out
}

// profileAction is the profile entry, appended only when the gateway's
// profile header names profile p: without it, a descriptor of another
// profile's group of the same name would count this app's calls.
func profileAction(p string) *routev3.RateLimit_Action {
	return &routev3.RateLimit_Action{ActionSpecifier: &routev3.RateLimit_Action_HeaderValueMatch_{
		HeaderValueMatch: &routev3.RateLimit_Action_HeaderValueMatch{
			DescriptorKey:   qc.DescriptorProfile,
			DescriptorValue: p,
			Headers: []*routev3.HeaderMatcher{{
				Name:                 qc.HeaderProfile,
				HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: exact(p)},
			}},
		},
	}}
}

func genericKey(key, value string) *routev3.RateLimit_Action {
	return &routev3.RateLimit_Action{ActionSpecifier: &routev3.RateLimit_Action_GenericKey_{
		GenericKey: &routev3.RateLimit_Action_GenericKey{DescriptorKey: key, DescriptorValue: value},
	}}
}

// requestHeader appends the header's value as key. A missing header drops the
// descriptor (skip_if_absent is false), as quotaconfig.Descriptors does.
func requestHeader(header, key string) *routev3.RateLimit_Action {
	return &routev3.RateLimit_Action{ActionSpecifier: &routev3.RateLimit_Action_RequestHeaders_{
		RequestHeaders: &routev3.RateLimit_Action_RequestHeaders{HeaderName: header, DescriptorKey: key},
	}}
}

// hits is 1 for Requests and the cost header for Messages, always explicit:
// a descriptor without it would take the request-wide hits_addend, which other
// filters may set.
func hits(l qc.Limit) *routev3.RateLimit_HitsAddend {
	if l.Unit == qc.UnitMessages {
		return &routev3.RateLimit_HitsAddend{Format: CostFormat}
	}
	return &routev3.RateLimit_HitsAddend{Number: wrapperspb.UInt64(1)}
}

func exact(s string) *matcherv3.StringMatcher {
	return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: s}}
}

// Route templates, for matching in Resolve's order.

// route is one template of a profile, claimed by the group named group.
type route struct {
	segs  template
	group string
}

// seg is one template segment: a literal, or a parameter with its name.
type seg struct {
	param bool
	text  string // the literal, or the parameter's name
}

func parseTemplate(path string) template {
	parts := strings.Split(strings.TrimPrefix(path, "/"), "/")
	segs := make(template, len(parts))
	for i, s := range parts {
		if len(s) > 2 && s[0] == '{' && s[len(s)-1] == '}' {
			segs[i] = seg{param: true, text: s[1 : len(s)-1]}
		} else {
			segs[i] = seg{text: s}
		}
	}
	return segs
}

type template []seg

func (t template) template() string {
	var b strings.Builder
	for _, s := range t {
		b.WriteByte('/')
		if s.param {
			b.WriteString("{" + s.text + "}")
		} else {
			b.WriteString(s.text)
		}
	}
	return b.String()
}

// regex matches what Resolve matches: each parameter one non-empty segment,
// literals byte for byte, and one trailing '/', which Resolve drops.
func (t template) regex() string {
	var b strings.Builder
	for _, s := range t {
		b.WriteByte('/')
		if s.param {
			b.WriteString("[^/]+")
		} else {
			b.WriteString(regexp.QuoteMeta(s.text))
		}
	}
	b.WriteString("/?")
	return b.String()
}

// shape is the template with parameter names erased: two templates of one
// shape match the same paths.
func (t template) shape() string {
	var b strings.Builder
	for _, s := range t {
		b.WriteByte('/')
		if s.param {
			b.WriteString("{}")
		} else {
			b.WriteString(s.text)
		}
	}
	return b.String()
}

// matchOrder is the order in which first-match picks what Resolve picks: at
// the first segment where two templates differ, a literal before a parameter.
// Resolve tries the literal branch first and the parameter branch only if the
// literal fails, which is a depth-first walk in this order; among the
// templates that match one path, it finds the first. Templates of different
// lengths, or with different literals at one segment, never match one path, so
// their order only needs to be fixed.
func matchOrder(a, b template) int {
	for i := range min(len(a), len(b)) {
		switch {
		case a[i].param != b[i].param:
			if a[i].param {
				return 1
			}
			return -1
		case !a[i].param && a[i].text != b[i].text:
			return cmp.Compare(a[i].text, b[i].text)
		}
	}
	return cmp.Compare(len(a), len(b))
}

// contains reports whether every path r matches, t matches too.
func contains(t, r template) bool {
	if len(t) != len(r) {
		return false
	}
	for i := range t {
		if !t[i].param && (r[i].param || r[i].text != t[i].text) {
			return false
		}
	}
	return true
}

// intersect returns the template of the paths both a and b match, if any,
// with a's parameter names.
func intersect(a, b template) (template, bool) {
	if len(a) != len(b) {
		return nil, false
	}
	out := make(template, len(a))
	for i := range a {
		switch {
		case a[i].param && !b[i].param:
			out[i] = b[i]
		case !a[i].param && !b[i].param && a[i].text != b[i].text:
			return nil, false
		default:
			out[i] = a[i]
		}
	}
	return out, true
}

func profileRoutes(p *qc.Profile) map[string][]route {
	byMethod := map[string][]route{}
	for gi := range p.Groups {
		for _, r := range p.Groups[gi].Routes {
			byMethod[r.Method] = append(byMethod[r.Method], route{segs: parseTemplate(r.Path), group: p.Groups[gi].Name})
		}
	}
	for _, rs := range byMethod {
		slices.SortFunc(rs, func(a, b route) int { return matchOrder(a.segs, b.segs) })
	}
	return byMethod
}

// pick returns the group whose route Resolve picks for every path of r (r is
// one of the shapes envoyShapes returns), nil for the fallback.
func (p *profile) pick(method string, r template) *group {
	for _, rt := range p.routes[method] {
		if contains(rt.segs, r) {
			return p.byName[rt.group]
		}
	}
	return nil
}

// maxShapes bounds the overlaps envoyShapes adds: a handful of profiles with
// the catalog's templates add none or a few, and a set that grows past this
// is a sign of profiles that cannot be served by one route table.
const maxShapes = 10000

// envoyShapes returns the templates of method to give Envoy, in match order.
// With one profile, they are its templates: first-match in matchOrder is
// Resolve. With several, a template of one profile can overlap another's
// (/a/x/{p} and /a/{q}/y): a path in the overlap reaches the one Envoy route
// first in order, but the second profile's Resolve picks by the path, not by
// that route. Adding every overlap as a route of its own (until no new one
// appears) makes each route lie within one template or none of every profile,
// so its rate limits are the same for every path that reaches it.
func (m *model) envoyShapes(method string) ([]template, error) {
	seen := map[string]bool{}
	var shapes []template
	add := func(t template) {
		if k := t.shape(); !seen[k] {
			seen[k] = true
			shapes = append(shapes, t)
		}
	}
	for _, p := range m.profiles {
		for _, r := range p.routes[method] {
			add(r.segs)
		}
	}
	if len(m.profiles) > 1 {
		for i := 0; i < len(shapes); i++ {
			for j := 0; j < i; j++ {
				if t, ok := intersect(shapes[j], shapes[i]); ok {
					add(t)
				}
			}
			if len(shapes) > maxShapes {
				return nil, fmt.Errorf("route %s templates: their overlaps across profiles make more than %d Envoy routes", method, maxShapes)
			}
		}
	}
	slices.SortStableFunc(shapes, matchOrder)
	return shapes, nil
}
