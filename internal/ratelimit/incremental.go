package ratelimit

import (
	"cmp"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"

	rlsconfv3 "github.com/envoyproxy/go-control-plane/ratelimit/config/ratelimit/v3"

	"github.com/appquota/appquota/internal/delta"
	qc "github.com/appquota/appquota/pkg/quotaconfig"
)

// Translator translates a sequence of merged documents, as the render loop
// hands them over (delta.Change), into the configurations Translate gives for
// them, at a cost that follows the change rather than the document: it keeps
// every app's entries of the last configuration, replaces only those of the
// apps a change lists (and of the apps whose override expired since), and
// builds new descriptors only on the path from those entries to the root.
// Every other descriptor is the one of the configuration before, shared.
//
// A configuration it returns is never modified afterwards, by the Translator
// or anyone (the xDS cache marshals it while the next one is built), and is
// equal, field for field, to Translate(ch.Document, opts) with opts.Now the
// time passed.
//
// A change that does not follow the last one applied (delta.Change.Follows),
// that may change the profiles, that is translated at an earlier time than
// the one before, or that fails is translated from the document alone, as
// Translate does; the failure returned is Translate's.
//
// A Translator is not safe for concurrent use.
type Translator struct {
	opts Options
	// base is the Seq of the last change applied, 0 when there is none to
	// build on (the first change, or after a failure); now its time.
	base uint64
	now  time.Time
	cfg  *rlsconfv3.RateLimitConfig

	profiles []*tProfile // by name
	byName   map[string]*tProfile
	// apps holds, for every app with entries, the chains they are in.
	apps map[string][]*tChain
	// expiring holds the earliest expiry of each app's overrides that were
	// active when it was translated; next is the earliest of them.
	expiring map[string]time.Time
	next     time.Time
}

// tProfile is one profile of the configuration being kept: its groups, its
// fallback entry (which no app changes), and its descriptor as last built.
type tProfile struct {
	name     string
	groups   []*tGroup // by name
	byName   map[string]*tGroup
	fallback *rlsconfv3.RateLimitDescriptor
	desc     *rlsconfv3.RateLimitDescriptor
	dirty    bool
}

type tGroup struct {
	profile *tProfile
	name    string
	chains  []*tChain // in limitOrder
	desc    *rlsconfv3.RateLimitDescriptor
	dirty   bool
}

// tChain is one limit of a group, as chain in Translate: the key-only entry
// when the profile has the limit (def), and the apps' own entries, sorted by
// app ID.
type tChain struct {
	group  *tGroup
	limit  qc.Limit
	def    *rlsconfv3.RateLimitDescriptor
	leaves []*rlsconfv3.RateLimitDescriptor
	desc   *rlsconfv3.RateLimitDescriptor
	dirty  bool
}

// NewTranslator returns a Translator for opts; opts.Now is ignored, each
// Translate gives its own.
func NewTranslator(opts Options) *Translator {
	opts.Now = time.Time{}
	return &Translator{opts: opts}
}

// Translate returns the configuration of ch.Document at now, building on the
// last one when ch follows it.
func (t *Translator) Translate(ch delta.Change, now time.Time) (*rlsconfv3.RateLimitConfig, error) {
	if t.base != 0 && ch.Follows(t.base) && !ch.Profiles && !now.Before(t.now) && ch.Document != nil {
		if cfg, ok := t.apply(ch, now); ok {
			return cfg, nil
		}
	}
	return t.rebuild(ch, now)
}

// apply applies ch to the configuration kept; false when it cannot, and then
// the state kept is not to be used.
func (t *Translator) apply(ch delta.Change, now time.Time) (*rlsconfv3.RateLimitConfig, bool) {
	doc := ch.Document
	if len(doc.Shards) > 0 {
		return nil, false
	}
	ids := ch.Apps
	if !t.next.IsZero() && !now.Before(t.next) {
		ids = t.expired(ids, now)
	}
	// The apps listed are the only ones whose entries can be invalid: the
	// rest were valid in the document before, with the same profiles.
	if len(ch.Apps) > 0 {
		part := &qc.Document{Version: doc.Version, DefaultProfile: doc.DefaultProfile, Profiles: doc.Profiles,
			Apps: make(map[string]qc.App, len(ch.Apps))}
		for _, id := range ch.Apps {
			if a, ok := doc.Apps[id]; ok {
				part.Apps[id] = a
			}
		}
		if err := part.Validate(); err != nil {
			t.base = 0
			return nil, false
		}
	}
	for _, id := range ids {
		a, ok := doc.Apps[id]
		if err := t.setApp(id, a, ok, now); err != nil {
			t.base = 0
			return nil, false
		}
	}
	t.base, t.now = ch.Seq, now
	return t.build(), true
}

// expired adds to ids (sorted, each once) the apps with an override that was
// active when they were last translated and has expired at now, and
// recomputes next.
func (t *Translator) expired(ids []string, now time.Time) []string {
	out := slices.Clone(ids)
	t.next = time.Time{}
	for id, at := range t.expiring {
		if !now.Before(at) {
			out = append(out, id)
			continue
		}
		if t.next.IsZero() || at.Before(t.next) {
			t.next = at
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// rebuild translates ch.Document from scratch and keeps its state for the
// changes that follow.
func (t *Translator) rebuild(ch delta.Change, now time.Time) (*rlsconfv3.RateLimitConfig, error) {
	t.base = 0
	cfg, err := t.build0(ch.Document, now)
	if err != nil {
		// Translate's own error, so that both say the same: its checks come
		// in the order of the tree, not of the state built here.
		if _, terr := Translate(ch.Document, t.optsAt(now)); terr != nil {
			return nil, terr
		}
		return nil, fmt.Errorf("translate configuration incrementally: %w", err)
	}
	t.base, t.now = ch.Seq, now
	return cfg, nil
}

func (t *Translator) optsAt(now time.Time) Options {
	o := t.opts
	o.Now = now
	return o
}

// build0 makes the state of doc and builds its configuration.
func (t *Translator) build0(doc *qc.Document, now time.Time) (*rlsconfv3.RateLimitConfig, error) {
	if doc == nil {
		return nil, errors.New("no document")
	}
	if len(doc.Shards) > 0 {
		return nil, errors.New("a sharded index")
	}
	if err := doc.Validate(); err != nil {
		return nil, err
	}
	t.profiles, t.byName = nil, map[string]*tProfile{}
	t.apps, t.expiring, t.next = map[string][]*tChain{}, map[string]time.Time{}, time.Time{}
	t.cfg = nil
	for _, name := range slices.Sorted(maps.Keys(doc.Profiles)) {
		if err := checkValue("profile", name); err != nil {
			return nil, err
		}
		dp := doc.Profiles[name]
		p := &tProfile{name: name, byName: map[string]*tGroup{}, dirty: true}
		for _, dg := range dp.Groups {
			if err := checkValue("group", dg.Name); err != nil {
				return nil, err
			}
			g := &tGroup{profile: p, name: dg.Name, dirty: true}
			for _, l := range sortedLimits(dg.Limits) {
				def, err := leafDescriptor(l, "", l.Max, false, t.opts.ShadowMode)
				if err != nil {
					return nil, err
				}
				g.chains = append(g.chains, &tChain{group: g, limit: l, def: def, dirty: true})
			}
			p.groups = append(p.groups, g)
			p.byName[g.name] = g
		}
		slices.SortFunc(p.groups, func(a, b *tGroup) int { return cmp.Compare(a.name, b.name) })
		// The fallback is the profile's alone: Translate's, built once.
		m := &model{opts: t.opts}
		fd := &rlsconfv3.RateLimitDescriptor{Key: qc.DescriptorPath}
		for _, l := range sortedLimits(dp.Fallback) {
			cd, err := m.chainDescriptor(&chain{limit: l, hasDefault: true})
			if err != nil {
				return nil, err
			}
			fd.Descriptors = append(fd.Descriptors, cd)
		}
		p.fallback = &rlsconfv3.RateLimitDescriptor{Key: qc.DescriptorMethod, Descriptors: []*rlsconfv3.RateLimitDescriptor{fd}}
		t.profiles = append(t.profiles, p)
		t.byName[name] = p
	}
	for id, a := range doc.Apps {
		if err := t.setApp(id, a, true, now); err != nil {
			return nil, err
		}
	}
	return t.build(), nil
}

// setApp replaces app id's entries with those of a (none when !ok) at now.
func (t *Translator) setApp(id string, a qc.App, ok bool, now time.Time) error {
	for _, c := range t.apps[id] {
		i, found := slices.BinarySearchFunc(c.leaves, id, byApp)
		if !found {
			return fmt.Errorf("app %q: its entry in limit %s of group %q is missing", id, qc.LimitValue(c.limit), c.group.name)
		}
		c.leaves = slices.Delete(c.leaves, i, i+1)
		t.touch(c)
		if c.def == nil && len(c.leaves) == 0 {
			// A limit only overrides added leaves with its last app.
			g := c.group
			g.chains = slices.DeleteFunc(g.chains, func(x *tChain) bool { return x == c })
		}
	}
	delete(t.apps, id)
	delete(t.expiring, id)
	if !ok {
		return nil
	}
	p := t.byName[a.Profile]
	if p == nil {
		// Resolve gives such an app no profile and no limits.
		return nil
	}
	if err := checkValue("app", id); err != nil {
		return err
	}
	var in []*tChain
	var expires time.Time
	for _, o := range a.Overrides {
		if o.ExpiresAt != nil && !o.ExpiresAt.After(now) {
			continue
		}
		g := p.byName[o.Group]
		if g == nil {
			continue // Validate refuses this; Resolve would ignore it.
		}
		if o.ExpiresAt != nil && (expires.IsZero() || o.ExpiresAt.Before(expires)) {
			expires = *o.ExpiresAt
		}
		for _, l := range o.Limits {
			c := g.chain(l)
			if c == nil {
				c = &tChain{group: g, limit: qc.Limit{Unit: l.Unit, Window: l.Window, Scope: l.Scope}}
				i, _ := slices.BinarySearchFunc(g.chains, c, func(x, y *tChain) int { return limitOrder(x.limit, y.limit) })
				g.chains = slices.Insert(g.chains, i, c)
			}
			if c.def != nil && c.limit.Max == l.Max && !l.Unlimited {
				// As in Translate: the key-only entry already says so.
				continue
			}
			d, err := leafDescriptor(c.limit, id, l.Max, l.Unlimited, t.opts.ShadowMode)
			if err != nil {
				return err
			}
			i, found := slices.BinarySearchFunc(c.leaves, id, byApp)
			if found {
				return fmt.Errorf("app %q: two entries in limit %s of group %q", id, qc.LimitValue(c.limit), g.name)
			}
			c.leaves = slices.Insert(c.leaves, i, d)
			t.touch(c)
			in = append(in, c)
		}
	}
	if len(in) > 0 {
		t.apps[id] = in
	}
	if !expires.IsZero() {
		t.expiring[id] = expires
		if t.next.IsZero() || expires.Before(t.next) {
			t.next = expires
		}
	}
	return nil
}

func byApp(d *rlsconfv3.RateLimitDescriptor, id string) int { return cmp.Compare(d.Value, id) }

func (g *tGroup) chain(l qc.Limit) *tChain {
	for _, c := range g.chains {
		if qc.SameKey(c.limit, l) {
			return c
		}
	}
	return nil
}

// touch marks c and the descriptors above it to be built again.
func (t *Translator) touch(c *tChain) {
	c.dirty, c.group.dirty, c.group.profile.dirty = true, true, true
}

// build builds the descriptors marked dirty, and a new configuration above
// them; the rest are the last configuration's.
func (t *Translator) build() *rlsconfv3.RateLimitConfig {
	cfg := &rlsconfv3.RateLimitConfig{Name: t.opts.domain(), Domain: t.opts.domain(),
		Descriptors: make([]*rlsconfv3.RateLimitDescriptor, 0, len(t.profiles))}
	for _, p := range t.profiles {
		if p.dirty {
			pd := &rlsconfv3.RateLimitDescriptor{Key: qc.DescriptorProfile, Value: p.name,
				Descriptors: make([]*rlsconfv3.RateLimitDescriptor, 0, len(p.groups)+1)}
			for _, g := range p.groups {
				if g.dirty {
					gd := &rlsconfv3.RateLimitDescriptor{Key: qc.DescriptorGroup, Value: g.name,
						Descriptors: make([]*rlsconfv3.RateLimitDescriptor, 0, len(g.chains))}
					for _, c := range g.chains {
						if c.dirty {
							c.desc = c.build()
							c.dirty = false
						}
						gd.Descriptors = append(gd.Descriptors, c.desc)
					}
					g.desc, g.dirty = gd, false
				}
				pd.Descriptors = append(pd.Descriptors, g.desc)
			}
			pd.Descriptors = append(pd.Descriptors, p.fallback)
			p.desc, p.dirty = pd, false
		}
		cfg.Descriptors = append(cfg.Descriptors, p.desc)
	}
	t.cfg = cfg
	return cfg
}

// build makes the chain's descriptor: a new one, with a list of its own, as
// the one before may be in a configuration being sent.
func (c *tChain) build() *rlsconfv3.RateLimitDescriptor {
	n := len(c.leaves)
	if c.def != nil {
		n++
	}
	cd := &rlsconfv3.RateLimitDescriptor{Key: qc.DescriptorLimit, Value: qc.LimitValue(c.limit),
		Descriptors: make([]*rlsconfv3.RateLimitDescriptor, 0, n)}
	if c.def != nil {
		cd.Descriptors = append(cd.Descriptors, c.def)
	}
	cd.Descriptors = append(cd.Descriptors, c.leaves...)
	return cd
}
