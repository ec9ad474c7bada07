package ratelimit

import (
	"cmp"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"

	rlsconfv3 "github.com/envoyproxy/go-control-plane/ratelimit/config/ratelimit/v3"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

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
	// head is the encoding of the descriptor's key and value, tail that of
	// the fallback entry as a field of it: the parts no app changes.
	head, tail []byte
	size       int
}

type tGroup struct {
	profile *tProfile
	name    string
	chains  []*tChain // in limitOrder
	desc    *rlsconfv3.RateLimitDescriptor
	dirty   bool
	head    []byte
	size    int
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
	// enc is desc's encoding, made when desc is, from head (the encoding of
	// its key and value) and the encodings of def and of each leaf (encs,
	// by leaf), made once with them.
	enc, head, defEnc []byte
	encs              [][]byte
}

// newChain returns an empty chain of limit l in g, with def as its key-only
// entry (nil for a limit only overrides have).
func newChain(g *tGroup, l qc.Limit, def *rlsconfv3.RateLimitDescriptor) (*tChain, error) {
	c := &tChain{group: g, limit: l, def: def, dirty: true}
	var err error
	if c.head, err = marshal(&rlsconfv3.RateLimitDescriptor{Key: qc.DescriptorLimit, Value: qc.LimitValue(l)}); err != nil {
		return nil, err
	}
	if def != nil {
		if c.defEnc, err = marshal(def); err != nil {
			return nil, err
		}
	}
	return c, nil
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

// Skip takes ch, a change of nothing (no apps, not the profiles), as
// applied without translating it: the configuration kept is its
// configuration, but for overrides expired since, which the next Translate
// takes out.
func (t *Translator) Skip(ch delta.Change) {
	if t.base != 0 && ch.Follows(t.base) && len(ch.Apps) == 0 && !ch.Profiles {
		t.base = ch.Seq
	}
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
	if err := doc.ValidateApps(ch.Apps); err != nil {
		t.base = 0
		return nil, false
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
				c, err := newChain(g, l, def)
				if err != nil {
					return nil, err
				}
				g.chains = append(g.chains, c)
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
		var err error
		if p.head, err = marshal(&rlsconfv3.RateLimitDescriptor{Key: qc.DescriptorProfile, Value: p.name}); err != nil {
			return nil, err
		}
		fb, err := marshal(p.fallback)
		if err != nil {
			return nil, err
		}
		p.tail = protowire.AppendBytes(protowire.AppendTag(nil, descriptorsField, protowire.BytesType), fb)
		for _, g := range p.groups {
			if g.head, err = marshal(&rlsconfv3.RateLimitDescriptor{Key: qc.DescriptorGroup, Value: g.name}); err != nil {
				return nil, err
			}
		}
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
		c.encs = slices.Delete(c.encs, i, i+1)
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
				var err error
				if c, err = newChain(g, qc.Limit{Unit: l.Unit, Window: l.Window, Scope: l.Scope}, nil); err != nil {
					return err
				}
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
			enc, err := marshal(d)
			if err != nil {
				return err
			}
			i, found := slices.BinarySearchFunc(c.leaves, id, byApp)
			if found {
				return fmt.Errorf("app %q: two entries in limit %s of group %q", id, qc.LimitValue(c.limit), g.name)
			}
			c.leaves = slices.Insert(c.leaves, i, d)
			c.encs = slices.Insert(c.encs, i, enc)
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
							c.build()
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

// build makes the chain's descriptor and its encoding: a new one, with a list
// of its own, as the one before may be in a configuration being sent.
func (c *tChain) build() {
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
	field := protowire.SizeTag(descriptorsField)
	size := len(c.head)
	if c.def != nil {
		size += field + protowire.SizeBytes(len(c.defEnc))
	}
	for _, e := range c.encs {
		size += field + protowire.SizeBytes(len(e))
	}
	enc := make([]byte, 0, size)
	enc = append(enc, c.head...)
	if c.def != nil {
		enc = protowire.AppendBytes(protowire.AppendTag(enc, descriptorsField, protowire.BytesType), c.defEnc)
	}
	for _, e := range c.encs {
		enc = protowire.AppendBytes(protowire.AppendTag(enc, descriptorsField, protowire.BytesType), e)
	}
	c.desc, c.enc, c.dirty = cd, enc, false
}

// The field numbers of the lists of descriptors, in RateLimitConfig and in
// RateLimitDescriptor, and of RateLimitConfig's domain.
const (
	configDomainField protowire.Number = 2
	configDescField   protowire.Number = 3
	descriptorsField  protowire.Number = 4
)

func marshal(m proto.Message) ([]byte, error) {
	return proto.MarshalOptions{Deterministic: true}.Marshal(m)
}

// Encoded returns the last configuration Translate returned in the form to
// serve: a RateLimitConfig whose name is set and whose other fields are
// held as their encoding, made from the encodings of its limits kept since
// they last changed. It marshals to the bytes the configuration marshals to
// (deterministically), so that the xDS server and the cache copy them instead
// of encoding every app again; read its fields from the configuration
// Translate returned, not from it. Nil before the first configuration, or
// after a failure.
func (t *Translator) Encoded() *rlsconfv3.RateLimitConfig {
	if t.base == 0 || t.cfg == nil {
		return nil
	}
	domain := t.opts.domain()
	size := protowire.SizeTag(configDomainField) + protowire.SizeBytes(len(domain))
	field := protowire.SizeTag(descriptorsField)
	for _, p := range t.profiles {
		p.size = len(p.head) + len(p.tail)
		for _, g := range p.groups {
			g.size = len(g.head)
			for _, c := range g.chains {
				g.size += field + protowire.SizeBytes(len(c.enc))
			}
			p.size += field + protowire.SizeBytes(g.size)
		}
		size += protowire.SizeTag(configDescField) + protowire.SizeBytes(p.size)
	}
	b := make([]byte, 0, size)
	b = protowire.AppendTag(b, configDomainField, protowire.BytesType)
	b = protowire.AppendString(b, domain)
	for _, p := range t.profiles {
		b = protowire.AppendTag(b, configDescField, protowire.BytesType)
		b = protowire.AppendVarint(b, uint64(p.size))
		b = append(b, p.head...)
		for _, g := range p.groups {
			b = protowire.AppendTag(b, descriptorsField, protowire.BytesType)
			b = protowire.AppendVarint(b, uint64(g.size))
			b = append(b, g.head...)
			for _, c := range g.chains {
				b = protowire.AppendTag(b, descriptorsField, protowire.BytesType)
				b = protowire.AppendBytes(b, c.enc)
			}
		}
		b = append(b, p.tail...)
	}
	// The name is field 1, so a marshal writes it first and then these
	// bytes, in the order of a marshal of the configuration itself.
	cfg := &rlsconfv3.RateLimitConfig{Name: domain}
	cfg.ProtoReflect().SetUnknown(protoreflect.RawFields(b))
	return cfg
}
