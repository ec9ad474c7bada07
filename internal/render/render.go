// Package render merges QuotaProfiles and AppQuotas into the document gateways
// read (pkg/quotaconfig). It is pure: the controller and the CLI's `render`
// call it with the same objects and get byte-identical output.
package render

import (
	"cmp"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation/field"

	quotav1 "github.com/appquota/appquota/api/v1alpha1"
	"github.com/appquota/appquota/internal/docform"
	"github.com/appquota/appquota/internal/validation"
	"github.com/appquota/appquota/pkg/quotaconfig"
)

// Input is everything a render depends on.
type Input struct {
	// DefaultProfile is the profile of apps without an AppQuota.
	DefaultProfile string
	Profiles       []quotav1.QuotaProfile
	// AppQuotas are pointers so that the controller can pass the cache's own
	// objects without copying 100,000 structs per render; Merge never modifies
	// them.
	AppQuotas []*quotav1.AppQuota
	// Previous is the last document written, nil if none (or when
	// PreviousIsStored). Objects that are
	// invalid now keep their entry from it, so a bad edit never takes away a
	// tenant's quota.
	Previous *quotaconfig.Document
	// PreviousIsStored says that the last document written is the one this
	// Renderer's last Store call laid out, which it remembers: the controller
	// then need not keep a second copy of 100,000 apps across renders.
	PreviousIsStored bool
	// Now decides which overrides have expired.
	Now time.Time
}

// Outcome is what happened to one object in a render.
type Outcome struct {
	// Valid is false when the object failed validation (Reason and Message say
	// why); its last good version, if any, is in the document (KeptLastGood).
	Valid        bool   `json:"valid"`
	Reason       string `json:"reason,omitempty"`
	Message      string `json:"message,omitempty"`
	KeptLastGood bool   `json:"keptLastGood,omitempty"`
	// Generation is the object's generation the outcome describes.
	Generation int64 `json:"generation,omitempty"`
	// ActiveOverrides, NextExpiry and Expired describe an AppQuota's overrides:
	// how many are in the document, the earliest expiry among them, and the
	// groups whose override has expired.
	ActiveOverrides int32      `json:"activeOverrides,omitempty"`
	NextExpiry      *time.Time `json:"nextExpiry,omitempty"`
	Expired         []string   `json:"expired,omitempty"`
}

// Result is a rendered document and the outcome for each object.
type Result struct {
	Document *quotaconfig.Document
	// Data is the document's canonical JSON, Hash "sha256:<hex>" of Data; Render
	// sets them, Merge does not (the controller stores the document with Store).
	Data []byte
	Hash string
	// Apps by "namespace/name", Profiles by name. A Renderer hands out the same
	// *Outcome for an AppQuota as long as its outcome does not change, so
	// successive results share them; nobody modifies them.
	Apps     map[string]*Outcome
	Profiles map[string]Outcome
	// NextExpiry is the earliest expiry of an override in the document: the
	// document changes then, so the controller renders again.
	NextExpiry *time.Time
}

// Pointers returns pointers to the elements of apps, for Input.AppQuotas.
func Pointers(apps []quotav1.AppQuota) []*quotav1.AppQuota {
	out := make([]*quotav1.AppQuota, len(apps))
	for i := range apps {
		out[i] = &apps[i]
	}
	return out
}

// Equal reports whether two outcomes are the same (cheaper than reflection
// for 100,000 of them).
func (o *Outcome) Equal(p *Outcome) bool {
	return o.Valid == p.Valid && o.Reason == p.Reason && o.Message == p.Message && o.KeptLastGood == p.KeptLastGood &&
		o.Generation == p.Generation && o.ActiveOverrides == p.ActiveOverrides && slices.Equal(o.Expired, p.Expired) &&
		(o.NextExpiry == nil) == (p.NextExpiry == nil) && (o.NextExpiry == nil || o.NextExpiry.Equal(*p.NextExpiry))
}

// Key is how Result.Apps names an AppQuota.
func Key(a *quotav1.AppQuota) string { return a.Namespace + "/" + a.Name }

// Render builds the document, Data and Hash included.
func Render(in Input) (*Result, error) {
	res, err := new(Renderer).Merge(in)
	if err != nil {
		return nil, err
	}
	if res.Data, err = json.Marshal(res.Document); err != nil {
		return nil, fmt.Errorf("encode document: %w", err)
	}
	res.Hash = quotaconfig.Hash(res.Data)
	return res, nil
}

// Renderer renders again and again, as the controller does, remembering from
// one render to the next what an unchanged object gave: the validation of each
// AppQuota and QuotaProfile generation (against its profile's generation), and
// in Store each app's encoding and each shard's compressed bytes. Its output is
// exactly Render's. A Renderer is not safe for concurrent use.
type Renderer struct {
	// Merge's memory, by object UID.
	apps     map[types.UID]*appCheck
	profiles map[types.UID]*profileCheck
	merges   uint64

	// Store's memory.
	seq    uint64
	budget int
	enc    map[string]*appEncoding
	header []byte
	// lastProfiles are the profiles of the document last stored.
	lastProfiles map[string]quotaconfig.Profile
	shards       []shardEncoding
	compressed   *Stored
	ratio        float64
}

// appCheck is an AppQuota generation's validation against a profile generation.
type appCheck struct {
	// key is Key(a), made once: every document and outcome map shares it.
	key        string
	generation int64
	profile    string
	errs       field.ErrorList
	overrides  []quotaconfig.Override
	// outcome is the AppQuota's last outcome, handed out again while unchanged.
	outcome *Outcome
	seen    uint64
}

// profileCheck is what a QuotaProfile generation gives.
type profileCheck struct {
	generation int64
	errs       field.ErrorList
	doc        quotaconfig.Profile
	index      *validation.ProfileIndex
	seen       uint64
}

// profileVersion identifies a QuotaProfile generation; "" for one that did not
// come from the API server (a file, or a last good version), never remembered.
func profileVersion(p *quotav1.QuotaProfile) string {
	if p == nil || p.UID == "" {
		return ""
	}
	return string(p.UID) + "/" + strconv.FormatInt(p.Generation, 10)
}

func (r *Renderer) checkProfile(p *quotav1.QuotaProfile) *profileCheck {
	if c := r.profiles[p.UID]; c != nil && p.UID != "" && c.generation == p.Generation {
		c.seen = r.merges
		return c
	}
	c := &profileCheck{generation: p.Generation, errs: validation.QuotaProfile(p), seen: r.merges}
	if len(c.errs) == 0 {
		c.doc = docform.Profile(p)
		c.index = validation.IndexProfile(p)
	}
	if p.UID != "" {
		r.profiles[p.UID] = c
	}
	return c
}

// checkApp validates an AppQuota and, when valid, returns its overrides in
// document form, sorted by group (expired ones included: Merge drops them).
// Both are remembered per generation and profile generation; the overrides
// are shared between documents, which nobody modifies.
// pv is profileVersion(ref.Profile).
func (r *Renderer) checkApp(a *quotav1.AppQuota, key string, ref validation.Reference, pv string) (field.ErrorList, []quotaconfig.Override) {
	if pv == "" || ref.AppIDOwner != "" || a.UID == "" {
		errs := validation.AppQuota(a, ref)
		if len(errs) > 0 {
			return errs, nil
		}
		return nil, overrides(a)
	}
	if c := r.apps[a.UID]; c != nil && c.generation == a.Generation && c.profile == pv {
		c.seen = r.merges
		return c.errs, c.overrides
	}
	c := &appCheck{key: key, generation: a.Generation, profile: pv, errs: validation.AppQuota(a, ref), seen: r.merges}
	if len(c.errs) == 0 {
		c.overrides = overrides(a)
	}
	r.apps[a.UID] = c
	return c.errs, c.overrides
}

func overrides(a *quotav1.AppQuota) []quotaconfig.Override {
	out := make([]quotaconfig.Override, 0, len(a.Spec.Overrides))
	for _, o := range a.Spec.Overrides {
		out = append(out, docform.Override(o))
	}
	slices.SortFunc(out, func(x, y quotaconfig.Override) int { return cmp.Compare(x.Group, y.Group) })
	return out
}

// Merge builds the document and the outcomes, without encoding it (Store does).
func (r *Renderer) Merge(in Input) (*Result, error) {
	r.merges++
	if r.apps == nil {
		r.apps, r.profiles = map[types.UID]*appCheck{}, map[types.UID]*profileCheck{}
	}
	defer r.forget()
	res := &Result{
		Document: &quotaconfig.Document{
			Version:        quotaconfig.FormatVersion,
			DefaultProfile: in.DefaultProfile,
			Profiles:       map[string]quotaconfig.Profile{},
			Apps:           map[string]quotaconfig.App{},
		},
		Apps:     map[string]*Outcome{},
		Profiles: map[string]Outcome{},
	}
	prev := r.previous(in)

	// Profiles: valid ones as they are, invalid ones as they last were.
	apiProfiles := map[string]*quotav1.QuotaProfile{}
	indexes := map[*quotav1.QuotaProfile]*validation.ProfileIndex{}
	// A profile's version string, made once per render rather than once per app.
	versions := map[*quotav1.QuotaProfile]string{}
	version := func(p *quotav1.QuotaProfile) string {
		v, ok := versions[p]
		if !ok {
			v = profileVersion(p)
			versions[p] = v
		}
		return v
	}
	index := func(p *quotav1.QuotaProfile) *validation.ProfileIndex {
		if p == nil {
			return nil
		}
		if indexes[p] == nil {
			indexes[p] = validation.IndexProfile(p)
		}
		return indexes[p]
	}
	for i := range in.Profiles {
		p := &in.Profiles[i]
		if p.DeletionTimestamp != nil {
			continue
		}
		out := Outcome{Valid: true, Generation: p.Generation}
		check := r.checkProfile(p)
		if errs := check.errs; len(errs) > 0 {
			out = Outcome{Reason: quotav1.ReasonInvalidSpec, Message: errs.ToAggregate().Error(), Generation: p.Generation}
			if last, ok := prev.profile(p.Name); ok {
				res.Document.Profiles[p.Name] = last
				apiProfiles[p.Name] = apiProfile(p.Name, last)
				out.KeptLastGood = true
			}
			res.Profiles[p.Name] = out
			continue
		}
		res.Document.Profiles[p.Name] = check.doc
		apiProfiles[p.Name] = p
		indexes[p] = check.index
		res.Profiles[p.Name] = out
	}
	// A deleted profile that is still referenced keeps its last version until
	// nothing refers to it: deleting a profile must not strip apps of their limits.
	keepDeleted := func(name string) {
		if _, ok := res.Document.Profiles[name]; ok {
			return
		}
		if last, ok := prev.profile(name); ok {
			res.Document.Profiles[name] = last
			apiProfiles[name] = apiProfile(name, last)
		}
	}
	keepDeleted(in.DefaultProfile)

	// AppQuotas, oldest first: the oldest claim on an appID wins.
	type entry struct {
		a   *quotav1.AppQuota
		key string
	}
	apps := make([]entry, 0, len(in.AppQuotas))
	for _, a := range in.AppQuotas {
		if a.DeletionTimestamp != nil {
			continue
		}
		// An object's namespace and name never change: its key is remembered.
		if c := r.apps[a.UID]; c != nil && a.UID != "" {
			apps = append(apps, entry{a: a, key: c.key})
		} else {
			apps = append(apps, entry{a: a, key: Key(a)})
		}
	}
	slices.SortFunc(apps, func(x, y entry) int {
		if c := x.a.CreationTimestamp.Time.Compare(y.a.CreationTimestamp.Time); c != 0 {
			return c
		}
		return cmp.Compare(x.key, y.key)
	})
	res.Apps = make(map[string]*Outcome, len(apps))
	res.Document.Apps = make(map[string]quotaconfig.App, len(apps))
	owner := make(map[string]string, len(apps))
	for _, e := range apps {
		a, key := e.a, e.key
		profile := profileName(a)
		keepDeleted(profile)
		ref := validation.Reference{Profile: apiProfiles[profile], Index: index(apiProfiles[profile])}
		if o, ok := owner[a.Spec.AppID]; ok {
			ref.AppIDOwner = o
		} else {
			owner[a.Spec.AppID] = key
		}
		out := Outcome{Valid: true, Generation: a.Generation}
		errs, all := r.checkApp(a, key, ref, version(ref.Profile))
		if len(errs) > 0 {
			out = Outcome{Reason: quotav1.ReasonInvalidSpec, Message: errs.ToAggregate().Error(), Generation: a.Generation}
			switch {
			case ref.AppIDOwner != "":
				out.Reason = quotav1.ReasonDuplicateAppID
			case ref.Profile == nil:
				out.Reason = quotav1.ReasonProfileNotFound
			}
			// The owner of a duplicated appID keeps its entry; anyone else keeps
			// the last good entry only if it was theirs.
			if last, ok := prev.app(a.Spec.AppID); ok && ref.AppIDOwner == "" && last.Source == key {
				res.Document.Apps[a.Spec.AppID] = last
				out.KeptLastGood = true
				if _, ok := res.Document.Profiles[last.Profile]; !ok {
					keepDeleted(last.Profile)
				}
			}
			res.Apps[key] = r.shareOutcome(a, out)
			continue
		}
		// Expired overrides leave the document; the rest are shared as they are.
		app := quotaconfig.App{Profile: profile, Source: key, Overrides: all}
		for _, o := range a.Spec.Overrides {
			if o.ExpiresAt == nil {
				continue
			}
			if !o.ExpiresAt.Time.After(in.Now) {
				out.Expired = append(out.Expired, o.Group)
				continue
			}
			out.NextExpiry = earliest(out.NextExpiry, o.ExpiresAt.Time)
			res.NextExpiry = earliest(res.NextExpiry, o.ExpiresAt.Time)
		}
		if len(out.Expired) > 0 {
			app.Overrides = nil
			for _, o := range all {
				if !slices.Contains(out.Expired, o.Group) {
					app.Overrides = append(app.Overrides, o)
				}
			}
		}
		if len(app.Overrides) == 0 {
			app.Overrides = nil // as a parsed document has it
		}
		out.ActiveOverrides = int32(len(app.Overrides))
		res.Document.Apps[a.Spec.AppID] = app
		res.Apps[key] = r.shareOutcome(a, out)
	}

	return res, nil
}

// previousDoc looks up the previous document's entries: Input.Previous, or
// what the last Store laid out.
type previousDoc struct {
	doc *quotaconfig.Document
	r   *Renderer
}

func (r *Renderer) previous(in Input) previousDoc {
	if in.PreviousIsStored {
		return previousDoc{r: r}
	}
	return previousDoc{doc: in.Previous}
}

func (p previousDoc) app(id string) (quotaconfig.App, bool) {
	if p.r != nil {
		return p.r.StoredApp(id)
	}
	if p.doc == nil {
		return quotaconfig.App{}, false
	}
	a, ok := p.doc.Apps[id]
	return a, ok
}

func (p previousDoc) profile(name string) (quotaconfig.Profile, bool) {
	var profiles map[string]quotaconfig.Profile
	switch {
	case p.r != nil:
		profiles = p.r.lastProfiles
	case p.doc != nil:
		profiles = p.doc.Profiles
	}
	pr, ok := profiles[name]
	return pr, ok
}

// StoredApp returns an app's entry in the document the last Store call laid
// out.
func (r *Renderer) StoredApp(id string) (quotaconfig.App, bool) {
	if e := r.enc[id]; e != nil {
		return e.app, true
	}
	return quotaconfig.App{}, false
}

// shareOutcome returns the AppQuota's remembered outcome when out equals it,
// else remembers out: unchanged apps cost successive results a pointer each.
func (r *Renderer) shareOutcome(a *quotav1.AppQuota, out Outcome) *Outcome {
	c := r.apps[a.UID]
	if c == nil || a.UID == "" || c.generation != a.Generation {
		return &out
	}
	if c.outcome == nil || !c.outcome.Equal(&out) {
		c.outcome = &out
	}
	return c.outcome
}

// forget drops what the last Merge did not see: deleted objects.
func (r *Renderer) forget() {
	for uid, c := range r.apps {
		if c.seen != r.merges {
			delete(r.apps, uid)
		}
	}
	for uid, c := range r.profiles {
		if c.seen != r.merges {
			delete(r.profiles, uid)
		}
	}
}

func profileName(a *quotav1.AppQuota) string {
	if a.Spec.Profile == "" {
		return quotav1.DefaultProfileName
	}
	return a.Spec.Profile
}

func earliest(cur *time.Time, t time.Time) *time.Time {
	if cur == nil || t.Before(*cur) {
		return &t
	}
	return cur
}

// apiProfile turns a profile from a previous document back into the API form,
// so an AppQuota can be validated against the last good version of its profile.
func apiProfile(name string, p quotaconfig.Profile) *quotav1.QuotaProfile {
	out := &quotav1.QuotaProfile{ObjectMeta: metav1.ObjectMeta{Name: name}}
	for _, g := range p.Groups {
		ag := quotav1.EndpointGroup{Name: g.Name, RestOnly: g.RestOnly}
		for _, r := range g.Routes {
			ag.Routes = append(ag.Routes, quotav1.Route{Method: quotav1.HTTPMethod(r.Method), Path: r.Path, UserParam: r.UserParam})
		}
		for _, l := range g.Limits {
			ag.Limits = append(ag.Limits, quotav1.Limit{Unit: quotav1.LimitUnit(l.Unit), Window: quotav1.LimitWindow(l.Window), Scope: quotav1.LimitScope(l.Scope), Max: l.Max})
		}
		out.Spec.EndpointGroups = append(out.Spec.EndpointGroups, ag)
	}
	return out
}
