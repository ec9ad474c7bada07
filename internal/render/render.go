// Package render merges QuotaProfiles and AppQuotas into the document gateways
// read (pkg/quotaconfig). It is pure: the controller and the CLI's `render`
// call it with the same objects and get byte-identical output.
package render

import (
	"cmp"
	"encoding/json"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"strconv"
	"time"

	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation/field"

	quotav1 "github.com/appquota/appquota/api/v1alpha1"
	"github.com/appquota/appquota/internal/delta"
	"github.com/appquota/appquota/internal/docform"
	"github.com/appquota/appquota/internal/reservation"
	"github.com/appquota/appquota/internal/validation"
	"github.com/appquota/appquota/pkg/quotaconfig"
)

// Input is everything a render depends on.
type Input struct {
	// DefaultProfile is the profile of apps without an AppQuota.
	DefaultProfile string
	Profiles       []quotav1.QuotaProfile
	// AppQuotas are every AppQuota, unless Changes is set. They are pointers
	// so that the controller can pass the cache's own objects without copying
	// 100,000 structs per render; Merge never modifies them.
	AppQuotas []*quotav1.AppQuota
	// Changes, when set, stands in for AppQuotas: Merge reads the AppQuotas
	// that changed since the last Merge and, only when it must merge
	// everything, all of them.
	Changes *Changes
	// Previous is the last document published, nil if none (or when
	// PreviousIsLast). Objects that are invalid now keep their entry from
	// it, so a bad edit never takes away a tenant's quota.
	Previous *quotaconfig.Document
	// PreviousIsLast says that the last document published is this Merger's
	// last result, which it keeps: the caller then need not keep a second
	// copy of every app across merges.
	PreviousIsLast bool
	// Now decides which overrides have expired.
	Now time.Time
	// Claims, when set, says which namespaces may claim which app IDs: an
	// AppQuota whose namespace may not claim its appID is invalid
	// (ReasonAppIDNotGranted) and is no claim at all, so it takes the appID
	// from nobody, whatever its age. Nil claims nothing of the kind (a
	// manager run without --require-app-id-grants, an offline render).
	Claims *Claims
	// Reservations, when set, holds the app IDs of deleted AppQuotas for
	// their namespaces (reservations.go). Nil reserves nothing and holds no
	// claim (an offline render).
	Reservations *Reservations
}

// Claims is what every namespace may claim.
type Claims struct {
	// Grants are the namespaces' grants by namespace; a namespace missing
	// here may claim nothing.
	Grants map[string]*validation.Grant
	// Version changes whenever Grants does: a merge of changes alone is
	// valid only under the grants of the last merge.
	Version string
}

// grant returns the grant of namespace ns, nil when c is nil.
func (c *Claims) grant(ns string) *validation.Grant {
	if c == nil {
		return nil
	}
	if g := c.Grants[ns]; g != nil {
		return g
	}
	return &validation.Grant{Namespace: ns}
}

// version is c's Version, "" for no claims.
func (c *Claims) version() string {
	if c == nil {
		return ""
	}
	return "claims:" + c.Version
}

// Changes is how a caller that knows which AppQuotas changed (the controller,
// from its informer's events) hands them to Merge, so that a change costs
// Merge the changed objects, not a look-up per AppQuota.
type Changes struct {
	// Names are the AppQuotas added, changed or deleted since the last Merge,
	// each once; an unchanged one may be among them.
	Names []types.NamespacedName
	// Get returns the AppQuota with a name, false when there is none.
	Get func(types.NamespacedName) (*quotav1.AppQuota, bool)
	// All returns every AppQuota, for a merge of everything.
	All func() []*quotav1.AppQuota
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
	// Document is the merged document, Change.Document. A Merger updates it
	// in place in the next Merge: it is good until then.
	Document *quotaconfig.Document
	// Change is what this merge changed in the document since the Merger's
	// last one, for the outputs built from it (delta.Change).
	Change delta.Change
	// Expirations are the overrides the previous document held that this
	// merge dropped for having expired.
	Expirations []Expiration
	// Before are the entries, in the Merger's last document, of the apps
	// this merge changed (Change.Apps; nil for an app that had none), for
	// telling what changed (internal/audit). Nil on a Merger's first merge,
	// and when more than MaxBefore apps changed: a bulk load is not told app
	// by app.
	Before map[string]*quotaconfig.App
	// Data is the document's canonical JSON, Hash "sha256:<hex>" of Data; Render
	// sets them, Merge does not (the controller stores the document with Store).
	Data []byte
	Hash string
	// Apps by "namespace/name", Profiles by name. A Merger hands out the same
	// *Outcome for an AppQuota as long as its outcome does not change, so
	// successive results share them; nobody modifies them. A Merger's next
	// Merge may update Apps in place (Incremental), so, like Document, it is
	// good until then: whoever keeps outcomes longer copies them.
	Apps     map[string]*Outcome
	Profiles map[string]Outcome
	// Incremental reports that this Merge brought the Merger's previous
	// Result up to date, its Apps map in place, instead of building it anew;
	// Changed then lists, once each, the keys whose entry it set or deleted, so
	// that a reader keeping a copy of Apps updates it in time proportional to
	// the change rather than to the AppQuotas (100,000 of them).
	Incremental bool
	Changed     []string
	// NextExpiry is the earliest expiry of an override in the document: the
	// document changes then, so the controller renders again.
	NextExpiry *time.Time
	// Reservations are the reservations in force after this merge (nil when
	// Input.Reservations is): the input's, minus those ended or re-claimed
	// by their namespace, plus the app IDs whose AppQuota this merge found
	// gone. The controller stores them before the document, and passes them
	// to the next merge. ReservedUntil is the earliest end among them: a
	// held claim may take its ID then, so the controller renders again.
	Reservations  reservation.Set
	ReservedUntil *time.Time
}

// MaxBefore bounds Result.Before.
const MaxBefore = 256

// Expiration is an override that left the document at its expiresAt.
type Expiration struct {
	// Key is the AppQuota's "namespace/name" (AppQuota.Key), Group the override's group.
	Key, Group string
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

// Render builds the document, Data and Hash included.
func Render(in Input) (*Result, error) {
	res, err := new(Merger).Merge(in)
	if err != nil {
		return nil, err
	}
	if res.Data, err = json.Marshal(res.Document); err != nil {
		return nil, fmt.Errorf("encode document: %w", err)
	}
	res.Hash = quotaconfig.Hash(res.Data)
	return res, nil
}

// Merger merges again and again, as the controller does, remembering from
// one merge to the next what an unchanged object gave: the validation of each
// AppQuota and QuotaProfile generation (against its profile's generation),
// and the last merge's result, which the next updates with the AppQuotas that
// changed. Each Merge says what changed (Result.Change), for the outputs built
// from the document. Its output is exactly Render's. A Merger is not safe for
// concurrent use.
type Merger struct {
	// AppQuotas by namespace and name (the strings of their key), QuotaProfiles
	// by UID.
	apps     map[types.NamespacedName]*appCheck
	profiles map[types.UID]*profileCheck
	merges   uint64
	// last is what the next Merge needs to bring the last result up to date
	// by working only on the AppQuotas that changed (mergeChanges); nil when
	// it must merge everything.
	last *mergeState
	// doc is the last merge's document, 0 its Seq (delta.Change) when none.
	doc *quotaconfig.Document
	seq uint64
	// before are the entries of doc that the merge under way has updated,
	// as they were: the previous document's, for last good entries.
	before map[string]previousEntry
	// plain are the shared valid outcomes without expiries (shareOutcome).
	plain map[plainOutcome]*Outcome
	// fastMerges counts the merges mergeChanges did (tests read it).
	fastMerges uint64
}

// appCheck is what the Merger remembers of one AppQuota: its latest
// generation's validation against a profile generation, and what the last
// merge made of it.
type appCheck struct {
	// key is a.Key(), made once: every document and outcome map shares it,
	// and the Merger's map of records its strings (name).
	key string
	// uid is uidHash of its UID, which tells it from a new AppQuota of the
	// same name (8 bytes where the UID takes 64).
	uid   uint64
	appID string
	// generation and profile identify the validation remembered in errs and
	// overrides; profile is "" when none is.
	generation int64
	profile    string
	errs       field.ErrorList
	overrides  []quotaconfig.Override
	// merged is the generation the last merge saw.
	merged int64
	// outcome is the AppQuota's last outcome, handed out again while unchanged.
	outcome *Outcome
	seen    uint64
}

// mergeState is a merge's result and what the next merge needs to update it
// in place of merging everything again. It exists only while every
// QuotaProfile is valid and the document's profiles are exactly them (no
// last good or deleted profile is kept), which is when an AppQuota's entry
// depends on nothing but itself, its profile and the other claims on its
// appID.
type mergeState struct {
	// res is the merge's result; the caller may drop res.Document (the
	// Merger keeps it: doc).
	res            *Result
	defaultProfile string
	// claims is the version of the grants merged under (Claims.version).
	claims string
	// profiles are the merged QuotaProfiles' versions (profileVersion) by name.
	profiles map[string]string
	// homeless are the owners (by appID, their key) of claimed appIDs that have
	// no entry in the document: an appID's owner is its entry's source, or is
	// here, or there is none. dups are the
	// appIDs more than one AppQuota claims.
	homeless map[string]string
	dups     map[string]struct{}
	// reserve is the Input.Reservations merged under, with res.Reservations
	// as the result (see reservationsUnchanged).
	reserve *Reservations
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

func (r *Merger) checkProfile(p *quotav1.QuotaProfile) *profileCheck {
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

// record returns the Merger's record of an AppQuota from the API server,
// made on first sight, and marks it seen by this merge; nil for an object
// without a UID (a file), which is never remembered.
func (r *Merger) record(a *quotav1.AppQuota) *appCheck {
	if a.UID == "" {
		return nil
	}
	c := r.apps[nameOf(a)]
	if c == nil || c.uid != uidHash(a.UID) {
		c = &appCheck{key: a.Key(), uid: uidHash(a.UID), appID: a.Spec.AppID}
		r.apps[c.name()] = c
	}
	c.seen, c.merged = r.merges, a.Generation
	return c
}

// checkApp validates an AppQuota and, when valid, returns its overrides in
// document form, sorted by group (expired ones included: Merge drops them).
// Both are remembered in c per generation and profile generation; the
// overrides are shared between documents, which nobody modifies.
// pv is profileVersion(ref.Profile).
func (r *Merger) checkApp(a *quotav1.AppQuota, c *appCheck, ref validation.Reference, pv string) (field.ErrorList, []quotaconfig.Override) {
	if pv == "" || ref.AppIDOwner != "" || c == nil {
		errs := validation.AppQuota(a, ref)
		if len(errs) > 0 {
			return errs, nil
		}
		return nil, overrides(a)
	}
	if c.profile == pv && c.generation == a.Generation {
		return c.errs, c.overrides
	}
	c.generation, c.profile, c.errs, c.overrides = a.Generation, pv, validation.AppQuota(a, ref), nil
	if len(c.errs) == 0 {
		c.overrides = overrides(a)
	}
	return c.errs, c.overrides
}

// uidHash is the 64-bit FNV-1a hash of a UID: two UIDs that meet under one
// name collide once in 2^64.
func uidHash(uid types.UID) uint64 {
	h := uint64(14695981039346656037)
	for i := range len(uid) {
		h ^= uint64(uid[i])
		h *= 1099511628211
	}
	return h
}

func nameOf(a *quotav1.AppQuota) types.NamespacedName {
	return types.NamespacedName{Namespace: a.Namespace, Name: a.Name}
}

// name is the record's AppQuota's namespace and name, sharing key's bytes.
func (c *appCheck) name() types.NamespacedName {
	ns, name := quotav1.SplitKey(c.key)
	return types.NamespacedName{Namespace: ns, Name: name}
}

func overrides(a *quotav1.AppQuota) []quotaconfig.Override {
	out := make([]quotaconfig.Override, 0, len(a.Spec.Overrides))
	for _, o := range a.Spec.Overrides {
		out = append(out, docform.Override(o))
	}
	slices.SortFunc(out, func(x, y quotaconfig.Override) int { return cmp.Compare(x.Group, y.Group) })
	return out
}

// Merge builds the document and the outcomes, without encoding it (the
// outputs do, from Result.Change). When only AppQuotas changed since the last
// merge, and nothing about them involves another object (a shared appID, a
// profile kept after deletion), it updates the last result with just those
// (mergeChanges); otherwise it merges everything and compares the document
// with the last. Both give the same result.
func (r *Merger) Merge(in Input) (*Result, error) {
	r.merges++
	if r.apps == nil {
		r.apps, r.profiles = map[types.NamespacedName]*appCheck{}, map[types.UID]*profileCheck{}
	}
	// before outlives a mergeChanges that gives up part way: mergeAll reads
	// the previous document through it.
	defer func() { r.before = nil }()
	ch := delta.Change{Base: r.seq}
	res, changed := r.mergeChanges(in)
	if res != nil {
		r.fastMerges++
		ch.Apps = changed
	} else {
		if in.Changes != nil {
			in.AppQuotas = in.Changes.All()
		}
		res = r.mergeAll(in)
		r.forget()
		ch.Apps, ch.Profiles = r.compare(res.Document)
	}
	r.seq++
	ch.Seq, ch.Document = r.seq, res.Document
	if r.doc != nil && len(ch.Apps) <= MaxBefore {
		res.Before = make(map[string]*quotaconfig.App, len(ch.Apps))
		for _, id := range ch.Apps {
			if a, ok := r.lastApp(id); ok {
				res.Before[id] = &a
			} else {
				res.Before[id] = nil
			}
		}
	}
	res.Change, r.doc = ch, res.Document
	return res, nil
}

// compare lists the apps whose entry in doc differs from the last merge's
// document, sorted, and tells whether its profiles do.
func (r *Merger) compare(doc *quotaconfig.Document) (apps []string, profiles bool) {
	if r.doc == nil {
		apps = slices.Sorted(maps.Keys(doc.Apps))
		return apps, true
	}
	for id, a := range doc.Apps {
		if last, ok := r.lastApp(id); !ok || !sameApp(&last, &a) {
			apps = append(apps, id)
		}
	}
	gone := func(id string) {
		if _, ok := doc.Apps[id]; !ok {
			if _, ok := r.lastApp(id); ok {
				apps = append(apps, id)
			}
		}
	}
	for id := range r.doc.Apps {
		gone(id)
	}
	for id, e := range r.before {
		if _, still := r.doc.Apps[id]; e.ok && !still {
			gone(id)
		}
	}
	slices.Sort(apps)
	apps = slices.Compact(apps)
	profiles = doc.DefaultProfile != r.doc.DefaultProfile || !reflect.DeepEqual(doc.Profiles, r.doc.Profiles)
	return apps, profiles
}

// mergeAll merges every object.
func (r *Merger) mergeAll(in Input) *Result {
	r.last = nil
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
	// The next merge may update this one only if every profile is valid, none is
	// being deleted and all come from the API server (see mergeState).
	state := &mergeState{res: res, defaultProfile: in.DefaultProfile, claims: in.Claims.version(),
		profiles: map[string]string{}, dups: map[string]struct{}{}}
	incremental := in.Previous == nil

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
			incremental = false
			continue
		}
		out := Outcome{Valid: true, Generation: p.Generation}
		check := r.checkProfile(p)
		if errs := check.errs; len(errs) > 0 {
			incremental = false
			out = Outcome{Reason: quotav1.ReasonInvalidSpec, Message: errs.ToAggregate().Error(), Generation: p.Generation}
			if last, ok := prev.profile(p.Name); ok {
				res.Document.Profiles[p.Name] = last
				apiProfiles[p.Name] = docform.APIProfile(p.Name, last)
				out.KeptLastGood = true
			}
			res.Profiles[p.Name] = out
			continue
		}
		if v := version(p); v != "" {
			state.profiles[p.Name] = v
		} else {
			incremental = false
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
			apiProfiles[name] = docform.APIProfile(name, last)
		}
	}
	keepDeleted(in.DefaultProfile)

	// AppQuotas, oldest first: the oldest claim on an appID wins.
	apps := make([]entry, 0, len(in.AppQuotas))
	for _, a := range in.AppQuotas {
		if a.DeletionTimestamp != nil {
			continue
		}
		// An object's namespace and name never change: its key is remembered.
		if c := r.record(a); c != nil {
			apps = append(apps, entry{a: a, c: c, key: c.key})
		} else {
			incremental = false
			apps = append(apps, entry{a: a, key: a.Key()})
		}
	}
	slices.SortFunc(apps, func(x, y entry) int {
		if c := x.a.CreationTimestamp.Compare(y.a.CreationTimestamp.Time); c != 0 {
			return c
		}
		return cmp.Compare(x.key, y.key)
	})
	res.Apps = make(map[string]*Outcome, len(apps))
	res.Document.Apps = make(map[string]quotaconfig.App, len(apps))
	held, mayClaim := r.claimRules(in, prev, apps)
	owners := incumbents(apps, prev, mayClaim)
	permitted := permittedClaims(apps, in.Claims != nil || len(held) > 0, mayClaim)
	// The claims a reservation held, to be told again if it is settled.
	var heldClaims []entry
	for _, e := range apps {
		a, key := e.a, e.key
		profile := a.ProfileName()
		keepDeleted(profile)
		ref := validation.Reference{Profile: apiProfiles[profile], Index: index(apiProfiles[profile])}
		grant := in.Claims.grant(a.Namespace)
		may, hold := mayClaim(a)
		_, claimed := permitted[a.Spec.AppID]
		switch o, ok := owners[a.Spec.AppID]; {
		case !may:
			if claimed {
				state.dups[a.Spec.AppID] = struct{}{}
			}
		case ok && o != key:
			ref.AppIDOwner = o
			state.dups[a.Spec.AppID] = struct{}{}
		default:
			owners[a.Spec.AppID] = key
		}
		app, inDoc, out := r.mergeApp(a, e.c, key, ref, grant, hold, !may && claimed, version(ref.Profile), prev, in.Now, keepDeleted, &res.Expirations)
		if hold != nil {
			heldClaims = append(heldClaims, e)
		}
		if inDoc {
			res.Document.Apps[a.Spec.AppID] = app
		}
		res.Apps[key] = out
		if out.NextExpiry != nil {
			res.NextExpiry = earliest(res.NextExpiry, *out.NextExpiry)
		}
	}
	state.homeless = map[string]string{}
	for id, key := range owners {
		if _, ok := res.Document.Apps[id]; !ok {
			state.homeless[id] = key
		}
	}
	if in.Reservations != nil {
		settleReservations(res, held, heldClaims, func(e entry) *Outcome {
			ref := validation.Reference{Profile: apiProfiles[e.a.ProfileName()], AppIDOwner: owners[e.a.Spec.AppID]}
			ref.Index = index(ref.Profile)
			_, _, out := r.mergeApp(e.a, e.c, e.key, ref, in.Claims.grant(e.a.Namespace), nil, true, version(ref.Profile), prev, in.Now,
				keepDeleted, &res.Expirations)
			return out
		})
		state.reserve = in.Reservations
	}
	// Kept profiles (last good or deleted) make entries depend on each other.
	if incremental && len(res.Document.Profiles) == len(state.profiles) {
		r.last = state
	}
	return res
}

// entry is an AppQuota in a full merge, with its record and key.
type entry struct {
	a   *quotav1.AppQuota
	c   *appCheck
	key string
}

// permittedClaims returns the appIDs' owners among the claims that may be
// made (apps oldest first; may as in mergeAll), nil when every claim may
// (neither grants nor reservations): a claim that may not be made, older or
// not, keeps no last good entry of an appID someone may claim.
func permittedClaims(apps []entry, restricted bool, may func(*quotav1.AppQuota) (bool, *reservation.Reservation)) map[string]string {
	if !restricted {
		return nil
	}
	owners := make(map[string]string, len(apps))
	for _, e := range apps {
		if _, ok := owners[e.a.Spec.AppID]; !ok {
			if ok, _ := may(e.a); ok {
				owners[e.a.Spec.AppID] = e.key
			}
		}
	}
	return owners
}

// incumbents returns, by appID, the claims that hold their appID's entry in
// the previous document and may still make it: such a claim keeps the ID
// against an older one, which could not take it when this one did (its
// grant came later, or a reservation held it) and must not take it now.
// Otherwise the oldest claim wins, as the caller goes on to decide.
func incumbents(apps []entry, prev previousDoc, may func(*quotav1.AppQuota) (bool, *reservation.Reservation)) map[string]string {
	owners := make(map[string]string, len(apps))
	for _, e := range apps {
		if last, ok := prev.app(e.a.Spec.AppID); ok && last.Source == e.key {
			if ok, _ := may(e.a); ok {
				owners[e.a.Spec.AppID] = e.key
			}
		}
	}
	return owners
}

// mergeApp works out one AppQuota's entry in the document (inDoc false: none)
// and its outcome. grant is what its namespace may claim (nil: anything);
// hold, when set, is the reservation of its appID for another namespace;
// claimed says that a claim its namespace may make holds the appID, so no
// last good entry of this one's stays. keepProfile is called with the
// profile of a last good entry it keeps, which the document must hold.
func (r *Merger) mergeApp(a *quotav1.AppQuota, c *appCheck, key string, ref validation.Reference, grant *validation.Grant,
	hold *reservation.Reservation, claimed bool, pv string,
	prev previousDoc, now time.Time, keepProfile func(string), expired *[]Expiration) (app quotaconfig.App, inDoc bool, _ *Outcome) {
	out := Outcome{Valid: true, Generation: a.Generation}
	// The claim is checked apart from checkApp, whose result is remembered
	// per generation while a grant can change under the same generation.
	errs, all := r.checkApp(a, c, ref, pv)
	var claim, reserved *field.Error
	if grant != nil {
		if claim = validation.Claim(a, *grant); claim != nil {
			errs = append(field.ErrorList{claim}, errs...)
		}
	}
	if hold != nil && claim == nil {
		if reserved = validation.Reserved(a, *hold, now); reserved != nil {
			errs = append(field.ErrorList{reserved}, errs...)
		}
	}
	if len(errs) > 0 {
		out = Outcome{Reason: quotav1.ReasonInvalidSpec, Message: errs.ToAggregate().Error(), Generation: a.Generation}
		switch {
		case claim != nil:
			out.Reason = quotav1.ReasonAppIDNotGranted
		case reserved != nil:
			out.Reason = quotav1.ReasonAppIDReserved
		case ref.AppIDOwner != "":
			out.Reason = quotav1.ReasonDuplicateAppID
		case ref.Profile == nil:
			out.Reason = quotav1.ReasonProfileNotFound
		}
		// The owner of a duplicated appID keeps its entry; anyone else keeps
		// the last good entry only if it was theirs.
		if last, ok := prev.app(a.Spec.AppID); ok && ref.AppIDOwner == "" && !claimed && last.Source == key {
			out.KeptLastGood = true
			keepProfile(last.Profile)
			return last, true, r.shareOutcome(c, out)
		}
		return quotaconfig.App{}, false, r.shareOutcome(c, out)
	}
	// Expired overrides leave the document; the rest are shared as they are.
	app = quotaconfig.App{Profile: a.ProfileName(), Source: key, Overrides: all}
	for _, o := range a.Spec.Overrides {
		if o.ExpiresAt == nil {
			continue
		}
		if !o.ExpiresAt.After(now) {
			out.Expired = append(out.Expired, o.Group)
			continue
		}
		out.NextExpiry = earliest(out.NextExpiry, o.ExpiresAt.Time)
	}
	if len(out.Expired) > 0 {
		// The expirations to tell: those the previous document still held.
		if last, ok := prev.app(a.Spec.AppID); ok && last.Source == key {
			for _, g := range out.Expired {
				if slices.ContainsFunc(last.Overrides, func(o quotaconfig.Override) bool { return o.Group == g }) {
					*expired = append(*expired, Expiration{Key: key, Group: g})
				}
			}
		}
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
	return app, true, r.shareOutcome(c, out)
}

// mergeChanges updates the last result with the AppQuotas added, changed or
// removed since, and returns nil when it cannot: the last merge left no state
// (see mergeState), the previous document is not the one last stored, a
// QuotaProfile changed, an override has expired since, a change touches an
// appID more than one AppQuota claims (who owns it needs them all), or a
// reservation is involved (reservationsUnchanged). Its cost is a look-up per AppQuota plus a map copy, not a validation
// and an allocation per AppQuota.
func (r *Merger) mergeChanges(in Input) (*Result, []string) {
	s := r.last
	apiProfiles, indexes, ok := r.unchangedProfiles(in)
	if !ok {
		return nil, nil
	}
	changed, removed, ok := r.changedApps(in)
	if !ok || r.touchesSharedAppID(changed, removed) || deniedClaim(in.Claims, changed) || !r.reservationsUnchanged(in, changed, removed) {
		return nil, nil
	}

	// The last document, updated in place, each app's entry saved first
	// (save): its profiles are those merged.
	res := &Result{
		Document: &quotaconfig.Document{
			Version:        quotaconfig.FormatVersion,
			DefaultProfile: in.DefaultProfile,
			Profiles:       r.doc.Profiles,
			Apps:           r.doc.Apps,
		},
		Apps:        s.res.Apps,
		Profiles:    s.res.Profiles,
		NextExpiry:  s.res.NextExpiry,
		Incremental: true,
		// Unchanged (reservationsUnchanged), and shared as they are.
		Reservations:  s.res.Reservations,
		ReservedUntil: s.res.ReservedUntil,
	}
	pending := map[string]struct{}{}
	// The earliest expiry may leave with a changed or removed app: then it is
	// looked for again among all outcomes.
	rescan := false
	drop := func(key, id string) {
		if o := res.Apps[key]; o != nil && o.NextExpiry != nil && res.NextExpiry != nil && !o.NextExpiry.After(*res.NextExpiry) {
			rescan = true
		}
		delete(res.Apps, key)
		res.Changed = append(res.Changed, key)
		if e, ok := res.Document.Apps[id]; ok && e.Source == key {
			r.save(id)
			delete(res.Document.Apps, id)
		}
		pending[id] = struct{}{}
	}
	for _, c := range removed {
		drop(c.key, c.appID)
		if s.homeless[c.appID] == c.key {
			delete(s.homeless, c.appID)
		}
		delete(r.apps, c.name())
	}
	prev := r.previous(in)
	keptOther := false
	for _, a := range changed {
		c := r.record(a)
		drop(c.key, c.appID)
		profile := apiProfiles[a.ProfileName()]
		ref := validation.Reference{Profile: profile, Index: indexes[a.ProfileName()]}
		// s.profiles holds the version strings of the full merge, one per
		// profile for every app that has it (not one string per app changed).
		grant := in.Claims.grant(a.Namespace)
		app, inDoc, out := r.mergeApp(a, c, c.key, ref, grant, nil, false, s.profiles[a.ProfileName()], prev, in.Now, func(name string) {
			if _, ok := res.Document.Profiles[name]; !ok {
				keptOther = true
			}
		}, &res.Expirations)
		if inDoc {
			r.save(c.appID)
			res.Document.Apps[c.appID] = app
			delete(s.homeless, c.appID)
		} else {
			s.homeless[c.appID] = c.key
		}
		res.Apps[c.key] = out
		if out.NextExpiry != nil {
			res.NextExpiry = earliest(res.NextExpiry, *out.NextExpiry)
		}
	}
	if keptOther {
		// A last good entry names a profile the document lacks (cannot happen
		// while the previous document's profiles are these): merge all, which
		// starts from nothing this merge updated.
		return nil, nil
	}
	if rescan {
		res.NextExpiry = nil
		for _, o := range res.Apps {
			if o.NextExpiry != nil {
				res.NextExpiry = earliest(res.NextExpiry, *o.NextExpiry)
			}
		}
	}
	// A key is dropped once, then set again when changed: once each.
	slices.Sort(res.Changed)
	res.Changed = slices.Compact(res.Changed)
	s.res = res
	return res, slices.Sorted(maps.Keys(pending))
}

// unchangedProfiles returns the QuotaProfiles by name, and their indexes,
// when the last merge left state to update (see mergeState) and nothing but
// AppQuotas changed since: the previous document is the last result, the
// default profile and every QuotaProfile generation are the ones merged, and
// no override has expired since.
func (r *Merger) unchangedProfiles(in Input) (map[string]*quotav1.QuotaProfile, map[string]*validation.ProfileIndex, bool) {
	s := r.last
	if s == nil || r.doc == nil || !in.PreviousIsLast || in.DefaultProfile != s.defaultProfile || in.Claims.version() != s.claims ||
		(s.res.NextExpiry != nil && !in.Now.Before(*s.res.NextExpiry)) || len(in.Profiles) != len(s.profiles) {
		return nil, nil, false
	}
	apiProfiles := make(map[string]*quotav1.QuotaProfile, len(in.Profiles))
	indexes := make(map[string]*validation.ProfileIndex, len(in.Profiles))
	for i := range in.Profiles {
		p := &in.Profiles[i]
		if p.DeletionTimestamp != nil || s.profiles[p.Name] != profileVersion(p) || p.UID == "" {
			return nil, nil, false
		}
		// A hit (same UID and generation, and valid when last merged); it marks
		// the profile seen.
		check := r.checkProfile(p)
		apiProfiles[p.Name], indexes[p.Name] = p, check.index
	}
	return apiProfiles, indexes, true
}

// deniedClaim reports whether a changed AppQuota makes a claim its
// namespace may not: whether it keeps a last good entry depends on every
// other claim on its appID, so everything is merged (such claims are rare:
// a mistake or an attack).
func deniedClaim(claims *Claims, changed []*quotav1.AppQuota) bool {
	if claims == nil {
		return false
	}
	return slices.ContainsFunc(changed, func(a *quotav1.AppQuota) bool { return !claims.grant(a.Namespace).Allows(a.Spec.AppID) })
}

// touchesSharedAppID reports whether a change involves another claim on its
// appID, which decides who owns it: then everything is merged.
func (r *Merger) touchesSharedAppID(changed []*quotav1.AppQuota, removed []*appCheck) bool {
	s := r.last
	for _, c := range removed {
		if _, dup := s.dups[c.appID]; dup {
			return true
		}
	}
	claimed := make(map[string]struct{}, len(changed))
	for _, a := range changed {
		id := a.Spec.AppID
		if _, dup := s.dups[id]; dup {
			return true
		}
		if _, twice := claimed[id]; twice {
			return true
		}
		claimed[id] = struct{}{}
		if o, ok := r.owner(id); ok && r.apps[nameOf(a)] == nil && !slices.ContainsFunc(removed, func(c *appCheck) bool { return c.key == o }) {
			return true
		}
	}
	return false
}

// changedApps returns the AppQuotas added or changed since the last merge,
// and the records of those removed (deleted, or being deleted): from
// in.Changes when set, else by looking every AppQuota up. ok is false when
// an AppQuota needs a full merge: one without a UID, one that replaced
// another of the same name, or a new appID on an existing AppQuota.
func (r *Merger) changedApps(in Input) (changed []*quotav1.AppQuota, removed []*appCheck, ok bool) {
	// check sorts out one live AppQuota against its record, if any.
	check := func(a *quotav1.AppQuota, c *appCheck) bool {
		switch {
		case a.UID == "":
			return false
		case c == nil:
			changed = append(changed, a)
		case c.uid != uidHash(a.UID):
			return false
		case c.merged == a.Generation:
			// The spec is the one merged, appID included (which only a new
			// generation could change, and the API refuses to).
		case c.appID != a.Spec.AppID:
			return false
		default:
			changed = append(changed, a)
		}
		return true
	}
	if ch := in.Changes; ch != nil {
		for _, name := range ch.Names {
			a, exists := ch.Get(name)
			c := r.apps[name]
			if !exists || a.DeletionTimestamp != nil {
				if c != nil {
					removed = append(removed, c)
				}
				continue
			}
			if !check(a, c) {
				return nil, nil, false
			}
		}
		return changed, removed, true
	}
	// Every AppQuota, and the records none answered to.
	live := 0
	for _, a := range in.AppQuotas {
		if a.DeletionTimestamp != nil {
			continue
		}
		c := r.apps[nameOf(a)]
		if c != nil {
			live++
			c.seen = r.merges
		}
		if !check(a, c) {
			return nil, nil, false
		}
	}
	if live != len(r.apps) {
		for _, c := range r.apps {
			if c.seen != r.merges {
				removed = append(removed, c)
			}
		}
	}
	return changed, removed, true
}

// owner returns the key of the AppQuota that owned appID in the last merge
// (mergeChanges): its entry's source, or one of the owners without an entry.
func (r *Merger) owner(id string) (string, bool) {
	if e, ok := r.lastApp(id); ok {
		return e.Source, true
	}
	k, ok := r.last.homeless[id]
	return k, ok
}

// previousDoc looks up the previous document's entries: Input.Previous, or
// the Merger's last document (Input.PreviousIsLast).
type previousDoc struct {
	doc *quotaconfig.Document
	r   *Merger
}

func (r *Merger) previous(in Input) previousDoc {
	if in.PreviousIsLast {
		return previousDoc{r: r}
	}
	return previousDoc{doc: in.Previous}
}

func (p previousDoc) app(id string) (quotaconfig.App, bool) {
	if p.r != nil {
		return p.r.lastApp(id)
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
	case p.r != nil && p.r.doc != nil:
		profiles = p.r.doc.Profiles
	case p.doc != nil:
		profiles = p.doc.Profiles
	}
	pr, ok := profiles[name]
	return pr, ok
}

// lastApp returns an app's entry in the last merge's document, as it was
// before the merge under way updated it.
func (r *Merger) lastApp(id string) (quotaconfig.App, bool) {
	if e, saved := r.before[id]; saved {
		return e.app, e.ok
	}
	if r.doc == nil {
		return quotaconfig.App{}, false
	}
	a, ok := r.doc.Apps[id]
	return a, ok
}

// save keeps an app's entry in the last document before a merge of changes
// updates it there, for lastApp.
func (r *Merger) save(id string) {
	if _, saved := r.before[id]; saved {
		return
	}
	if r.before == nil {
		r.before = map[string]previousEntry{}
	}
	a, ok := r.doc.Apps[id]
	r.before[id] = previousEntry{a, ok}
}

// previousEntry is an app's entry in the last document, if ok.
type previousEntry struct {
	app quotaconfig.App
	ok  bool
}

// sameApp reports whether two entries encode the same.
func sameApp(x, y *quotaconfig.App) bool {
	return x.Profile == y.Profile && x.Source == y.Source &&
		slices.EqualFunc(x.Overrides, y.Overrides, func(a, b quotaconfig.Override) bool {
			return a.Group == b.Group && a.MaxTargets == b.MaxTargets && a.Reason == b.Reason &&
				slices.Equal(a.Limits, b.Limits) &&
				(a.ExpiresAt == nil) == (b.ExpiresAt == nil) &&
				(a.ExpiresAt == nil || a.ExpiresAt.Format(time.RFC3339Nano) == b.ExpiresAt.Format(time.RFC3339Nano))
		})
}

// shareOutcome returns the AppQuota's remembered outcome when out equals it,
// else remembers out: unchanged apps cost successive results a pointer each.
// The commonest outcome, valid with no expiry, is one shared value per
// generation and override count: at 100,000 AppQuotas that is 11 MB less.
func (r *Merger) shareOutcome(c *appCheck, out Outcome) *Outcome {
	if c == nil {
		return &out
	}
	if c.outcome != nil && c.outcome.Equal(&out) {
		return c.outcome
	}
	if out.Valid && out.Reason == "" && out.Message == "" && !out.KeptLastGood && out.NextExpiry == nil && out.Expired == nil {
		k := plainOutcome{out.Generation, out.ActiveOverrides}
		if r.plain == nil {
			r.plain = map[plainOutcome]*Outcome{}
		}
		if p := r.plain[k]; p != nil {
			c.outcome = p
			return p
		}
		if len(r.plain) < maxPlainOutcomes {
			r.plain[k] = &out
		}
		c.outcome = &out
		return c.outcome
	}
	c.outcome = &out
	return c.outcome
}

// maxPlainOutcomes bounds the shared valid outcomes (a few per generation in
// use): past it, outcomes are not shared.
const maxPlainOutcomes = 4096

// plainOutcome identifies a valid outcome without expiries.
type plainOutcome struct {
	generation int64
	overrides  int32
}

// forget drops what the last Merge did not see: deleted objects.
func (r *Merger) forget() {
	for name, c := range r.apps {
		if c.seen != r.merges {
			delete(r.apps, name)
		}
	}
	for uid, c := range r.profiles {
		if c.seen != r.merges {
			delete(r.profiles, uid)
		}
	}
}

func earliest(cur *time.Time, t time.Time) *time.Time {
	if cur == nil || t.Before(*cur) {
		return &t
	}
	return cur
}
