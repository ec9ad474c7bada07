// Package ratelimit translates appquota's merged document into the
// configuration of envoyproxy/ratelimit (the Redis-backed rate-limit service)
// and into the Envoy route rate-limit actions that produce the descriptors
// that configuration expects. It is one more output of the one merge: it reads
// a quotaconfig.Document and nothing else, and has no Kubernetes client.
//
// The descriptor contract is in docs/enforcement.md and, for gateways that
// call the service themselves, in quotaconfig.Descriptors.
package ratelimit

import (
	"cmp"
	"errors"
	"fmt"
	"maps"
	"math"
	"slices"
	"strings"
	"time"

	rlsconfv3 "github.com/envoyproxy/go-control-plane/ratelimit/config/ratelimit/v3"

	qc "github.com/appquota/appquota/pkg/quotaconfig"
)

// DefaultDomain is the ratelimit domain when Options.Domain is empty.
const DefaultDomain = "appquota"

// Options configure Translate and EnvoyActions. Both must be given the same
// Options for one document: the actions name the domain, and which limits a
// group has depends on which overrides are active at Now.
type Options struct {
	// Domain is the ratelimit domain of every descriptor; empty means
	// DefaultDomain.
	Domain string
	// Now leaves out overrides that expire at or before it, as Resolve ignores
	// them: the controller removes them from the document at their expiry, but a
	// stale document must not keep a raise alive. Zero means time.Now().
	Now time.Time
	// ShadowMode marks every limit shadow_mode: ratelimit counts and reports
	// over-limit calls but lets them through. For a soft launch.
	ShadowMode bool
}

func (o Options) domain() string {
	if o.Domain == "" {
		return DefaultDomain
	}
	return o.Domain
}

func (o Options) now() time.Time {
	if o.Now.IsZero() {
		return time.Now()
	}
	return o.Now
}

// Translate renders doc as one ratelimit configuration of domain
// opts.Domain (its name is the domain too). The tree, from the top: profile
// (the value the gateway puts in quotaconfig.HeaderProfile), then either group
// or, for the fallback, method and path; then limit (quotaconfig.LimitValue);
// then app: a key-only entry with the profile's limit, which every app without
// an override of that limit matches, and beside it one entry per app whose
// active override changes it, with the app's value; then user, for a
// User-scoped limit. So an app costs the configuration nothing unless it has
// an override, whatever its profile.
//
// The same document and Options always give the same configuration, every
// list sorted (profiles and groups by name, limits as the document sorts them,
// apps by ID after the key-only entry), so its bytes change only when the
// limits do.
//
// A sharded index must be assembled with its shards first, as for Compile.
func Translate(doc *qc.Document, opts Options) (*rlsconfv3.RateLimitConfig, error) {
	m, err := newModel(doc, opts)
	if err != nil {
		return nil, err
	}
	cfg := &rlsconfv3.RateLimitConfig{Name: opts.domain(), Domain: opts.domain()}
	for _, p := range m.profiles {
		pd := &rlsconfv3.RateLimitDescriptor{Key: qc.DescriptorProfile, Value: p.name}
		for _, g := range p.groups {
			gd := &rlsconfv3.RateLimitDescriptor{Key: qc.DescriptorGroup, Value: g.name}
			for _, c := range g.chains {
				cd, err := m.chainDescriptor(c)
				if err != nil {
					return nil, fmt.Errorf("translate profile %q group %q: %w", p.name, g.name, err)
				}
				gd.Descriptors = append(gd.Descriptors, cd)
			}
			pd.Descriptors = append(pd.Descriptors, gd)
		}
		// The fallback counts each unclaimed route separately: method and path
		// are key-only, so every value gets counters of its own.
		fd := &rlsconfv3.RateLimitDescriptor{Key: qc.DescriptorPath}
		for _, l := range p.fallback {
			cd, err := m.chainDescriptor(&chain{limit: l, hasDefault: true})
			if err != nil {
				return nil, fmt.Errorf("translate profile %q fallback: %w", p.name, err)
			}
			fd.Descriptors = append(fd.Descriptors, cd)
		}
		pd.Descriptors = append(pd.Descriptors, &rlsconfv3.RateLimitDescriptor{
			Key: qc.DescriptorMethod, Descriptors: []*rlsconfv3.RateLimitDescriptor{fd},
		})
		cfg.Descriptors = append(cfg.Descriptors, pd)
	}
	return cfg, nil
}

// model is the document reduced to what both outputs need, sorted.
type model struct {
	opts     Options
	profiles []*profile
}

type profile struct {
	name     string
	fallback []qc.Limit
	groups   []*group // by name
	byName   map[string]*group
	routes   map[string][]route // by method, in match order (see envoy.go)
}

type group struct {
	name string
	// chains are the limits a descriptor of this group can match: the group's
	// own and those only overrides add, by (unit, window, scope), in limitOrder.
	chains []*chain
}

// chain is one limit of a group: its descriptors share the entries up to the
// limit entry. limit.Max is the profile's value when hasDefault.
type chain struct {
	limit      qc.Limit
	hasDefault bool
	apps       []appLimit // sorted by app ID
}

type appLimit struct {
	app       string
	max       int64
	unlimited bool
}

func newModel(doc *qc.Document, opts Options) (*model, error) {
	if doc == nil {
		return nil, errors.New("translate document: no document")
	}
	if len(doc.Shards) > 0 {
		return nil, errors.New("translate document: it is a sharded index: assemble it with its shards first")
	}
	if err := doc.Validate(); err != nil {
		return nil, fmt.Errorf("validate document: %w", err)
	}
	m := &model{opts: opts}
	byName := map[string]*profile{}
	for _, name := range slices.Sorted(maps.Keys(doc.Profiles)) {
		if err := checkValue("profile", name); err != nil {
			return nil, err
		}
		dp := doc.Profiles[name]
		p := &profile{
			name:     name,
			fallback: sortedLimits(dp.Fallback),
			byName:   map[string]*group{},
		}
		for _, dg := range dp.Groups {
			if err := checkValue("group", dg.Name); err != nil {
				return nil, err
			}
			g := &group{name: dg.Name}
			for _, l := range sortedLimits(dg.Limits) {
				g.chains = append(g.chains, &chain{limit: l, hasDefault: true})
			}
			p.groups = append(p.groups, g)
			p.byName[g.name] = g
		}
		slices.SortFunc(p.groups, func(a, b *group) int { return cmp.Compare(a.name, b.name) })
		p.routes = profileRoutes(&dp)
		m.profiles = append(m.profiles, p)
		byName[name] = p
	}

	now := opts.now()
	for _, id := range slices.Sorted(maps.Keys(doc.Apps)) {
		a := doc.Apps[id]
		p := byName[a.Profile]
		if p == nil {
			// Resolve gives such an app no profile and no limits.
			continue
		}
		if err := checkValue("app", id); err != nil {
			return nil, err
		}
		for _, o := range a.Overrides {
			if o.ExpiresAt != nil && !o.ExpiresAt.After(now) {
				continue
			}
			g := p.byName[o.Group]
			if g == nil {
				continue // Validate refuses this; Resolve would ignore it.
			}
			for _, l := range o.Limits {
				c := g.chain(l)
				if c == nil {
					c = &chain{limit: qc.Limit{Unit: l.Unit, Window: l.Window, Scope: l.Scope}}
					g.chains = append(g.chains, c)
					slices.SortFunc(g.chains, func(a, b *chain) int { return limitOrder(a.limit, b.limit) })
				}
				if c.hasDefault && c.limit.Max == l.Max && !l.Unlimited {
					// The key-only entry already says so, and the Redis key is
					// made of the request's entries, not the matched entry's,
					// so the counter is the same either way.
					continue
				}
				c.apps = append(c.apps, appLimit{app: id, max: l.Max, unlimited: l.Unlimited})
			}
		}
	}
	return m, nil
}

// checkValue refuses a name ratelimit would read as a pattern: a value that
// ends in '*' matches every value with its prefix, so an app named "12*"
// would lend its limits to every app whose ID starts with 12. The API's names
// cannot end in '*'; a hand-written document could.
func checkValue(kind, v string) error {
	if strings.HasSuffix(v, "*") {
		return fmt.Errorf("translate %s %q: a value ending in '*' is a wildcard to ratelimit", kind, v)
	}
	return nil
}

func (g *group) chain(l qc.Limit) *chain {
	for _, c := range g.chains {
		if c.limit.Unit == l.Unit && c.limit.Window == l.Window && c.limit.Scope == l.Scope {
			return c
		}
	}
	return nil
}

// chainDescriptor renders one limit: the limit entry, and under it the
// key-only app entry with the profile's value (when the profile has the limit)
// and one entry per app that overrides it. A User-scoped limit puts a
// key-only user entry, which holds the rate limit, under each app entry.
func (m *model) chainDescriptor(c *chain) (*rlsconfv3.RateLimitDescriptor, error) {
	cd := &rlsconfv3.RateLimitDescriptor{Key: qc.DescriptorLimit, Value: qc.LimitValue(c.limit)}
	if c.hasDefault {
		d, err := leafDescriptor(c.limit, "", c.limit.Max, false, m.opts.ShadowMode)
		if err != nil {
			return nil, err
		}
		cd.Descriptors = append(cd.Descriptors, d)
	}
	for _, a := range c.apps {
		d, err := leafDescriptor(c.limit, a.app, a.max, a.unlimited, m.opts.ShadowMode)
		if err != nil {
			return nil, err
		}
		cd.Descriptors = append(cd.Descriptors, d)
	}
	return cd, nil
}

// leafDescriptor is the app entry of limit l for app ("" for the key-only
// entry), holding the rate limit, or holding a key-only user entry that holds
// it when l is User-scoped. Only l's window and scope matter: the value is
// max, or unlimited.
func leafDescriptor(l qc.Limit, app string, max int64, unlimited, shadow bool) (*rlsconfv3.RateLimitDescriptor, error) {
	pol, err := policy(l, max, unlimited)
	if err != nil {
		if app != "" {
			return nil, fmt.Errorf("render limit %s of app %q: %w", qc.LimitValue(l), app, err)
		}
		return nil, fmt.Errorf("render limit %s: %w", qc.LimitValue(l), err)
	}
	d := &rlsconfv3.RateLimitDescriptor{Key: qc.DescriptorApp, Value: app}
	rl := d
	if l.Scope == qc.ScopeUser {
		rl = &rlsconfv3.RateLimitDescriptor{Key: qc.DescriptorUser}
		d.Descriptors = []*rlsconfv3.RateLimitDescriptor{rl}
	}
	rl.RateLimit = pol
	rl.ShadowMode = shadow
	return d, nil
}

// policy is the one place a limit's value becomes a ratelimit policy. Max 0,
// a block, is requests_per_unit 0, which refuses every call; an override's
// unlimited is ratelimit's unlimited, which counts nothing.
func policy(l qc.Limit, max int64, unlimited bool) (*rlsconfv3.RateLimitPolicy, error) {
	if max < 0 || max > math.MaxUint32 {
		return nil, fmt.Errorf("max %d does not fit ratelimit's requests_per_unit (0 to %d)", max, uint32(math.MaxUint32))
	}
	unit, ok := units[l.Window]
	if !ok {
		return nil, fmt.Errorf("window %q has no ratelimit unit", l.Window)
	}
	if unlimited {
		// ratelimit refuses a unit beside unlimited, from a file or over xDS.
		return &rlsconfv3.RateLimitPolicy{Unlimited: true}, nil
	}
	return &rlsconfv3.RateLimitPolicy{Unit: unit, RequestsPerUnit: uint32(max)}, nil
}

// units maps the document's windows to ratelimit's. ratelimit's windows are
// fixed and aligned to the Unix epoch (a day is 00:00 to 24:00 UTC).
var units = map[string]rlsconfv3.RateLimitUnit{
	qc.WindowSecond: rlsconfv3.RateLimitUnit_SECOND,
	qc.WindowMinute: rlsconfv3.RateLimitUnit_MINUTE,
	qc.WindowHour:   rlsconfv3.RateLimitUnit_HOUR,
	qc.WindowDay:    rlsconfv3.RateLimitUnit_DAY,
}

// limitOrder sorts limits as the document does: Requests before Messages,
// shorter windows first, then App before User.
func limitOrder(a, b qc.Limit) int {
	return cmp.Or(
		cmp.Compare(rank(a.Unit, qc.UnitRequests, qc.UnitMessages), rank(b.Unit, qc.UnitRequests, qc.UnitMessages)),
		cmp.Compare(rank(a.Window, qc.WindowSecond, qc.WindowMinute, qc.WindowHour, qc.WindowDay),
			rank(b.Window, qc.WindowSecond, qc.WindowMinute, qc.WindowHour, qc.WindowDay)),
		cmp.Compare(rank(a.Scope, qc.ScopeApp, qc.ScopeUser), rank(b.Scope, qc.ScopeApp, qc.ScopeUser)),
	)
}

func rank(v string, order ...string) int {
	if i := slices.Index(order, v); i >= 0 {
		return i
	}
	return len(order)
}

func sortedLimits(ls []qc.Limit) []qc.Limit {
	out := slices.Clone(ls)
	slices.SortStableFunc(out, limitOrder)
	return out
}
