package quotaconfig

import (
	"errors"
	"slices"
	"strings"
	"time"
)

// Config is a Document compiled for resolving: route tries per profile and
// method, and per app the precomputed effect of each override. A gateway
// resolves every request against it, so everything that can be decided once per
// document is decided in Compile and Resolve only walks and picks.
//
// A Config never changes after Compile and is safe for concurrent use; a new
// document means a new Config (see Watcher).
type Config struct {
	doc  *Document
	def  *profile // nil when the default profile is not in the document
	apps *appTable
}

// Result is what applies to one call.
//
// Counters: for a group (Fallback false) a gateway keys its counters by
// (app, Profile, Group, limit), plus User for User-scoped limits, so every route
// of a group draws from one budget. For the fallback (Fallback true) every
// unclaimed route counts separately, as the profile's fallback is "N calls per
// route": key by (app, method, Path) and limit. Path has the query and a
// trailing '/' removed, so "/a/b/?x=1" and "/a/b" share a counter, as they
// resolve alike.
type Result struct {
	// Profile is the profile the app uses. It is empty when that profile is not
	// in the document (the default QuotaProfile may not exist yet); then nothing
	// else is set but Path, and the gateway decides what to enforce (e.g. its own
	// built-in default, or nothing).
	Profile string
	// Group is the endpoint group that claims the route; empty for the fallback.
	Group string
	// Fallback is true when no group claims the route.
	Fallback bool
	// Route is the matched template, e.g. /app-id/{app_id}/users/{username};
	// empty for the fallback.
	Route string
	// Path is the request path without query string and trailing '/': a
	// substring of the path passed in.
	Path string
	// Limits are the effective limits: the group's (or the fallback's), with the
	// override's replacing those with the same (unit, window, scope) and the
	// override's others appended. The slice is shared by every call that
	// resolves alike: callers must not modify it.
	Limits []Limit
	// MaxTargets is the per-call cap on targets; 0 means none.
	MaxTargets int32
	// RestOnly is the group's restOnly: only REST calls count against it.
	RestOnly bool
	// Blocked is true when some effective limit has Max 0: the app may not call
	// the group at all, and a gateway can refuse without counting.
	Blocked bool
	// UserParam is the route's user parameter, empty when it has none.
	UserParam string
	// User is that parameter's value in Path (a substring of it), the key for
	// User-scoped limits. It is set whenever the route has a user parameter,
	// whether or not an effective limit is User-scoped.
	User string
	// Override is the app's override that applied, nil if none (or expired). It
	// points into the Config's document: callers must not modify it.
	Override *Override
}

// Compile validates d and compiles it. The Config keeps d (Document returns
// it) and shares its slices with Results, so d must not be modified afterwards.
func Compile(d *Document) (*Config, error) {
	if err := d.Validate(); err != nil {
		return nil, err
	}
	if len(d.Shards) > 0 {
		// Compiling the index alone would give every app the default profile.
		return nil, errors.New("the document is a sharded index: " +
			"assemble it with its shards first (LoadConfigMaps, Assemble, or a Watcher on the mounted directory)")
	}
	profiles := make(map[string]*profile, len(d.Profiles))
	groups := make(map[string]map[string]int, len(d.Profiles))
	for name, p := range d.Profiles {
		profiles[name], groups[name] = compileProfile(name, p)
	}
	return &Config{
		doc:  d,
		def:  profiles[d.DefaultProfile],
		apps: newAppTable(d.Apps, profiles, groups),
	}, nil
}

// Load parses, validates and compiles a document.
func Load(data []byte) (*Config, error) {
	d, err := Parse(data)
	if err != nil {
		return nil, err
	}
	return Compile(d)
}

// Document returns the document the Config was compiled from. It is shared:
// callers must not modify it.
func (c *Config) Document() *Document { return c.doc }

// Resolve is ResolveAt at the current time.
func (c *Config) Resolve(appID, method, path string) Result {
	return c.resolve(appID, method, path, time.Time{}, false)
}

// ResolveAt returns what applies to a call of app appID to method and path, with
// overrides that expire at or before now ignored: the controller removes
// expired overrides from the document, but a gateway must not keep a raise
// alive just because the controller is late.
//
// An app with no entry in the document uses the default profile. Precedence is
// the app's override of the group, then the group, then the profile's fallback.
// Matching: method must be equal (case-sensitive; anything but the CRD's
// methods falls back); path is compared byte for byte, without decoding, after
// removing the query string and one trailing '/'; a literal segment beats a
// {param} at the first segment where two templates differ, and a literal branch
// that fails deeper falls back to the parameter branch.
//
// ResolveAt does not allocate.
func (c *Config) ResolveAt(appID, method, path string, now time.Time) Result {
	return c.resolve(appID, method, path, now, true)
}

// resolve reads the clock only when an override with an expiry is involved,
// which keeps time.Now off the path of most calls.
func (c *Config) resolve(appID, method, path string, now time.Time, haveNow bool) Result {
	path = trimPath(path)
	res := Result{Path: path}
	a, known := c.apps.get(appID)
	p := c.def
	if known {
		p = a.prof
	}
	if p == nil {
		return res
	}
	var rt *route
	var starts segStarts
	if m := methodIndex(method); m >= 0 && p.roots[m] != nil && len(path) > 0 && path[0] == '/' {
		rt = p.roots[m].match(path, 0, 0, &starts)
	}
	if rt == nil {
		p.fallback.fill(&res)
		return res
	}
	e := &p.groups[rt.group]
	if o := a.find(rt.group); o != nil {
		if !o.hasExpiry {
			e = &o.effect
		} else {
			if !haveNow {
				now = time.Now()
			}
			if o.expires.After(now) {
				e = &o.effect
			}
		}
	}
	e.fill(&res)
	res.Route = rt.template
	if rt.userSeg >= 0 {
		res.UserParam = rt.userParam
		if rt.userSeg < len(starts) {
			res.User, _ = segment(path, starts[rt.userSeg])
		} else {
			res.User = nthSegment(path, rt.userSeg)
		}
	}
	return res
}

// trimPath drops what matching ignores: the query string and one trailing '/'.
func trimPath(p string) string {
	if i := strings.IndexByte(p, '?'); i >= 0 {
		p = p[:i]
	}
	if len(p) > 1 && p[len(p)-1] == '/' {
		p = p[:len(p)-1]
	}
	return p
}

// nthSegment returns segment n (0-based) of a path that a template with at
// least n+1 segments matched.
func nthSegment(path string, n int) string {
	i := 0
	for ; n > 0; n-- {
		_, i = segment(path, i)
	}
	seg, _ := segment(path, i)
	return seg
}

// numMethods is len(methods); methodIndex indexes a profile's tries.
const numMethods = 7

func methodIndex(m string) int {
	switch m {
	case "GET":
		return 0
	case "POST":
		return 1
	case "PUT":
		return 2
	case "PATCH":
		return 3
	case "DELETE":
		return 4
	case "HEAD":
		return 5
	case "OPTIONS":
		return 6
	}
	return -1
}

// profile is one compiled profile.
type profile struct {
	roots    [numMethods]*node
	groups   []effect // by index in Profile.Groups
	fallback effect
}

// effect is everything a Result takes from a group (or the fallback) for one
// app, computed once so Resolve only copies it.
type effect struct {
	profile    string
	group      string
	limits     []Limit
	maxTargets int32
	restOnly   bool
	blocked    bool
	fallback   bool
	override   *Override
}

func (e *effect) fill(r *Result) {
	r.Profile = e.profile
	r.Group = e.group
	r.Fallback = e.fallback
	r.Limits = e.limits
	r.MaxTargets = e.maxTargets
	r.RestOnly = e.restOnly
	r.Blocked = e.blocked
	r.Override = e.override
}

// app is one app's compiled entry, as appTable returns it.
type app struct {
	prof      *profile      // nil when the app's profile is not in the document
	overrides []appOverride // sorted by group
	// groups has bit g%64 set for each overridden group g. Most calls are to
	// groups an app has not overridden, and with 100,000 apps the overrides are
	// rarely in cache: the mask, stored in the app's slot, saves that miss.
	groups uint64
}

// appOverride is the effect of one override. The effect without it is the
// profile's, so an override with an expiry needs no second copy: Resolve picks
// between the two by time.
type appOverride struct {
	group     int
	hasExpiry bool
	expires   time.Time
	effect    effect
}

// find returns the override of group g, nil if none.
func (a *app) find(g int) *appOverride {
	if a.groups&(1<<(uint(g)&63)) == 0 {
		return nil
	}
	lo, hi := 0, len(a.overrides)
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		switch o := &a.overrides[m]; {
		case o.group == g:
			return o
		case o.group < g:
			lo = m + 1
		default:
			hi = m
		}
	}
	return nil
}

// route is one template's terminal in a trie.
type route struct {
	template  string
	group     int
	userParam string
	userSeg   int // index of the user parameter's segment, -1 if none
}

// node is a trie node; each edge is one path segment.
type node struct {
	lits  []edge
	table []edge // lits by segHash, open addressing, when there are many
	param *node
	route *route
}

type edge struct {
	seg  string
	next *node
}

// scanUpTo is the literal fan-out up to which a linear scan beats hashing. The
// catalog's nodes under /app-id/{app_id}/ have dozens of literals.
const scanUpTo = 4

func (n *node) child(seg string) *node {
	if n.table == nil {
		for i := range n.lits {
			if n.lits[i].seg == seg {
				return n.lits[i].next
			}
		}
		return nil
	}
	mask := uint32(len(n.table) - 1)
	for h := segHash(seg) & mask; ; h = (h + 1) & mask {
		e := &n.table[h]
		if e.next == nil {
			return nil
		}
		if e.seg == seg {
			return e.next
		}
	}
}

// segHash is a hash for telling a node's literals apart: they are few and
// known at compile time, so length and three bytes do, and cost far less than
// hashing the whole segment as a Go map would.
func segHash(seg string) uint32 {
	n := uint32(len(seg))
	if n == 0 {
		return 0
	}
	return n*0x9E3779B1 ^ uint32(seg[0])*0x85EBCA77 ^ uint32(seg[n-1])*0xC2B2AE3D ^ uint32(seg[n/2])*0x27D4EB2F
}

// match returns the route matching path[i:], where path[i] is '/' or i is
// len(path). It tries the literal child first and the parameter child if the
// literal branch fails at any depth.
//
// It notes where path's segment depth starts in starts[depth], for the first
// len(starts) segments: whichever branch matches, segment k of the path is the
// template's segment k, so Resolve finds the user's segment without scanning
// the path again.
func (n *node) match(path string, i, depth int, starts *segStarts) *route {
	if i == len(path) {
		return n.route
	}
	seg, next := segment(path, i)
	if seg == "" {
		return nil
	}
	if depth < len(starts) {
		starts[depth] = i
	}
	if c := n.child(seg); c != nil {
		if r := c.match(path, next, depth+1, starts); r != nil {
			return r
		}
	}
	if n.param != nil {
		return n.param.match(path, next, depth+1, starts)
	}
	return nil
}

// segStarts holds where a path's first segments start (the index of the '/'
// before each). The catalog's templates have up to nine segments; a user
// parameter deeper than this holds is found by scanning the path again.
type segStarts [12]int

func (n *node) insert(path string, r *route) {
	for i := 0; i < len(path); {
		seg, next := segment(path, i)
		if isParam(seg) {
			if n.param == nil {
				n.param = &node{}
			}
			n = n.param
		} else {
			c := n.child(seg)
			if c == nil {
				c = &node{}
				n.lits = append(n.lits, edge{seg: seg, next: c})
			}
			n = c
		}
		i = next
	}
	// Validate refuses two templates of one shape, so the terminal is free.
	n.route = r
}

func (n *node) freeze() {
	if len(n.lits) > scanUpTo {
		size := 1
		for size < 2*len(n.lits) {
			size *= 2
		}
		n.table = make([]edge, size)
		mask := uint32(size - 1)
		for _, e := range n.lits {
			h := segHash(e.seg) & mask
			for n.table[h].next != nil {
				h = (h + 1) & mask
			}
			n.table[h] = e
		}
	}
	for _, e := range n.lits {
		e.next.freeze()
	}
	if n.param != nil {
		n.param.freeze()
	}
}

// compileProfile returns the compiled profile and its group index by name.
func compileProfile(name string, p Profile) (*profile, map[string]int) {
	cp := &profile{
		groups:   make([]effect, len(p.Groups)),
		fallback: effect{profile: name, fallback: true, limits: clip(p.Fallback)},
	}
	index := make(map[string]int, len(p.Groups))
	for gi := range p.Groups {
		g := &p.Groups[gi]
		index[g.Name] = gi
		cp.groups[gi] = effect{
			profile:    name,
			group:      g.Name,
			limits:     clip(g.Limits),
			maxTargets: g.MaxTargets,
			restOnly:   g.RestOnly,
		}
		for _, r := range g.Routes {
			m := methodIndex(r.Method)
			if cp.roots[m] == nil {
				cp.roots[m] = &node{}
			}
			rt := &route{template: r.Path, group: gi, userSeg: -1}
			if r.UserParam != "" {
				rt.userParam = r.UserParam
				rt.userSeg = paramIndex(r.Path, r.UserParam)
			}
			cp.roots[m].insert(r.Path, rt)
		}
	}
	for _, root := range cp.roots {
		if root != nil {
			root.freeze()
		}
	}
	return cp, index
}

// overrideEffect merges an override into its group's effect.
func overrideEffect(base *effect, o *Override) effect {
	e := *base
	e.override = o
	if o.MaxTargets != 0 {
		e.maxTargets = o.MaxTargets
	}
	if len(o.Limits) > 0 {
		merged := make([]Limit, len(base.limits), len(base.limits)+len(o.Limits))
		copy(merged, base.limits)
		for _, ol := range o.Limits {
			if i := slices.IndexFunc(merged, func(l Limit) bool { return SameKey(l, ol) }); i >= 0 {
				merged[i].Max, merged[i].Unlimited = ol.Max, ol.Unlimited
			} else {
				merged = append(merged, ol)
			}
		}
		e.limits = clip(merged)
		e.blocked = false
		for _, l := range merged {
			if l.Max == 0 && !l.Unlimited {
				e.blocked = true
			}
		}
	}
	return e
}

// clip caps a shared slice's capacity, so a caller that appends to a Result's
// Limits gets a copy instead of writing into another result's limits.
func clip(ls []Limit) []Limit { return ls[:len(ls):len(ls)] }
