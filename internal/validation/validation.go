// Package validation is what admission checks, as the webhook, the
// controller (for objects that got past a webhook that was down) and the CLI
// apply it, so a user reads the same message everywhere. An object's own
// content is checked with the document's rules (pkg/quotaconfig, which the
// CRD's CEL rules repeat for the API server), applied here to each field with
// the API's field paths; the rules that live here are those that need other
// objects, the API's own few (QuotaProfile), and the warnings.
package validation

import (
	"fmt"
	"math"
	"slices"
	"sort"
	"strconv"
	"time"

	"k8s.io/apimachinery/pkg/util/validation/field"

	quotav1 "github.com/appquota/appquota/api/v1alpha1"
	"github.com/appquota/appquota/internal/docform"
	"github.com/appquota/appquota/internal/reservation"
	"github.com/appquota/appquota/pkg/quotaconfig"
)

// templateRule is how admission words quotaconfig.CheckTemplate's rule.
const templateRule = "must start with '/', have no query string, and each segment must be a non-empty literal or exactly one parameter {name}"

// QuotaProfile checks a profile on its own: each field with the document's
// rules, which the CRD's CEL rules also state (checked again here for objects
// stored before the CRD had them), and the rules only the API has: no two
// routes, in one group or two, that a gateway cannot tell apart, and no
// parameter named twice in a path.
func QuotaProfile(p *quotav1.QuotaProfile) field.ErrorList {
	var errs field.ErrorList
	if p.Name == "" {
		errs = append(errs, field.Required(field.NewPath("metadata", "name"), ""))
	}
	spec := field.NewPath("spec")
	fallback := spec.Child("fallback", "limits")
	if len(p.Spec.Fallback.Limits) == 0 {
		errs = append(errs, field.Required(fallback, ""))
	}
	fl := profileLimits(p.Spec.Fallback.Limits)
	errs = limitErrors(errs, func() *field.Path { return fallback }, fl, quotaconfig.MinProfileMax)
	for i, l := range fl {
		if msg := quotaconfig.CheckFallbackScope(l.Scope); msg != "" {
			errs = append(errs, field.Invalid(fallback.Index(i).Child("scope"), l.Scope, msg))
		}
	}

	type claim struct {
		group string
		path  *field.Path
	}
	shapes := map[string]claim{}
	names := make(map[string]int, len(p.Spec.EndpointGroups))
	groups := spec.Child("endpointGroups")
	for gi, g := range p.Spec.EndpointGroups {
		gp := groups.Index(gi)
		switch prev, dup := names[g.Name]; {
		case g.Name == "":
			errs = append(errs, field.Required(gp.Child("name"), ""))
		case dup:
			errs = append(errs, field.Invalid(gp.Child("name"), g.Name, fmt.Sprintf("duplicates %s", groups.Index(prev))))
		default:
			names[g.Name] = gi
		}
		if len(g.Routes) == 0 {
			errs = append(errs, field.Required(gp.Child("routes"), ""))
		}
		if len(g.Limits) == 0 {
			errs = append(errs, field.Required(gp.Child("limits"), ""))
		}
		gl := profileLimits(g.Limits)
		errs = limitErrors(errs, func() *field.Path { return gp.Child("limits") }, gl, quotaconfig.MinProfileMax)
		if g.PerCall != nil {
			if msg := quotaconfig.CheckMaxTargets(g.PerCall.MaxTargets); msg != "" {
				errs = append(errs, field.Invalid(gp.Child("perCall", "maxTargets"), g.PerCall.MaxTargets, msg))
			}
		}
		userScoped := quotaconfig.UserScoped(gl)
		for ri, r := range g.Routes {
			rp := gp.Child("routes").Index(ri)
			dr := docform.Route(r)
			if msg := quotaconfig.CheckMethod(dr.Method); msg != "" {
				errs = append(errs, field.Invalid(rp.Child("method"), dr.Method, msg))
			}
			if quotaconfig.CheckTemplate(r.Path) != "" {
				errs = append(errs, field.Invalid(rp.Child("path"), r.Path, templateRule))
				continue
			}
			if dup := quotaconfig.RepeatedParam(r.Path); dup != "" {
				errs = append(errs, field.Invalid(rp.Child("path"), r.Path, fmt.Sprintf("parameter {%s} appears twice; each parameter needs its own name", dup)))
			}
			if msg := quotaconfig.CheckUserParam(dr.Path, dr.UserParam); msg != "" {
				errs = append(errs, field.Invalid(rp.Child("userParam"), dr.UserParam, msg))
			}
			if userScoped && dr.UserParam == "" { // as quotaconfig.RouteWithoutUser
				errs = append(errs, field.Required(rp.Child("userParam"),
					"the group has a limit with scope User: set userParam, "+
						"or name the parameter {username}, {userName}, {userId}, {user_id}, {uid} or {owner_username}"))
			}
			shape := quotaconfig.RouteShape(dr.Method, dr.Path)
			if prev, ok := shapes[shape]; ok {
				where := fmt.Sprintf("group %q", prev.group)
				if prev.group == g.Name {
					where = "the same group"
				}
				errs = append(errs, field.Invalid(rp.Child("path"), r.Path, fmt.Sprintf(
					"%s %s cannot be told apart by a gateway from %s in %s (same method and template once parameter names are ignored); merge them into one group",
					r.Method, r.Path, prev.path.String(), where)))
				continue
			}
			shapes[shape] = claim{group: g.Name, path: rp}
		}
	}
	return errs
}

// AppQuotaSpec checks an AppQuota's spec on its own, each field with the
// document's rules (which the CRD's CEL rules also state).
func AppQuotaSpec(spec *quotav1.AppQuotaSpec) field.ErrorList {
	// Paths are made only for an error: a render runs this for every AppQuota
	// that changed, 100,000 on the first.
	var errs field.ErrorList
	if spec.AppID == "" {
		errs = append(errs, field.Required(field.NewPath("spec", "appID"), ""))
	}
	for i, o := range spec.Overrides {
		if len(o.Limits) > 0 {
			var buf [8]quotaconfig.Limit
			ls := buf[:0]
			for _, l := range o.Limits {
				ls = append(ls, docform.OverrideLimit(l))
			}
			errs = limitErrors(errs, func() *field.Path { return overridePath(i).Child("limits") }, ls, quotaconfig.MinOverrideMax)
		}
		if o.PerCall != nil {
			if msg := quotaconfig.CheckMaxTargets(o.PerCall.MaxTargets); msg != "" {
				errs = append(errs, field.Invalid(overridePath(i).Child("perCall", "maxTargets"), o.PerCall.MaxTargets, msg))
			}
		}
		if o.Group == "" {
			errs = append(errs, field.Required(overridePath(i).Child("group"), ""))
		} else if prev := slices.IndexFunc(spec.Overrides[:i], func(p quotav1.Override) bool { return p.Group == o.Group }); prev >= 0 {
			errs = append(errs, field.Invalid(overridePath(i).Child("group"), o.Group, fmt.Sprintf("duplicates %s", overridePath(prev))))
		}
	}
	return errs
}

func overridePath(i int) *field.Path { return field.NewPath("spec", "overrides").Index(i) }

func profileLimits(in []quotav1.Limit) []quotaconfig.Limit {
	out := make([]quotaconfig.Limit, len(in))
	for i, l := range in {
		out[i] = docform.Limit(l)
	}
	return out
}

// limitErrors appends to errs what quotaconfig.CheckLimits finds in ls, the
// converted API list at path() (called only for an error).
func limitErrors(errs field.ErrorList, path func() *field.Path, ls []quotaconfig.Limit, minMax int64) field.ErrorList {
	quotaconfig.CheckLimits("limits", ls, minMax, func(i int, name string, value any, detail string) {
		if name == "" {
			errs = append(errs, field.Invalid(path().Index(i), field.OmitValueType{}, detail))
			return
		}
		errs = append(errs, field.Invalid(path().Index(i).Child(name), value, detail))
	})
	return errs
}

// Reference is what AppQuota needs to know about the rest of the cluster.
type Reference struct {
	// Profile is the AppQuota's QuotaProfile, nil when it does not exist.
	Profile *quotav1.QuotaProfile
	// Index, when set, is IndexProfile(Profile), built once for many AppQuotas.
	Index *ProfileIndex
	// AppIDOwner is the other AppQuota ("namespace/name") that already holds the
	// appID, "" when none does.
	AppIDOwner string
	// Grant, when set, is what the AppQuota's namespace may claim (Claim);
	// nil when the manager does not require grants.
	Grant *Grant
	// Reservation, when set, is the reservation of the AppQuota's appID
	// (Reserved), checked at admission's now; nil when there is none.
	Reservation *reservation.Reservation
}

// ProfileIndex is a profile's groups by name, for checking many AppQuotas
// against one profile without rebuilding it for each.
type ProfileIndex struct {
	profile *quotav1.QuotaProfile
	groups  map[string]*quotav1.EndpointGroup
	names   []string // sorted, for suggestions
}

// IndexProfile indexes p; p must not change while the index is in use.
func IndexProfile(p *quotav1.QuotaProfile) *ProfileIndex {
	idx := &ProfileIndex{profile: p, groups: make(map[string]*quotav1.EndpointGroup, len(p.Spec.EndpointGroups))}
	for i := range p.Spec.EndpointGroups {
		g := &p.Spec.EndpointGroups[i]
		idx.groups[g.Name] = g
		idx.names = append(idx.names, g.Name)
	}
	sort.Strings(idx.names)
	return idx
}

// index returns Index, or an index of Profile when Index is not Profile's.
// Profile must not be nil.
func (ref Reference) index() *ProfileIndex {
	if ref.Index != nil && ref.Index.profile == ref.Profile {
		return ref.Index
	}
	return IndexProfile(ref.Profile)
}

// AppQuota checks an AppQuota: against the rest of the cluster (its appID is
// its own, its profile exists, and each override's group is one of the
// profile's, with a user parameter in every route when the override counts
// per user), and on its own (AppQuotaSpec).
func AppQuota(a *quotav1.AppQuota, ref Reference) field.ErrorList {
	var errs field.ErrorList
	if ref.Grant != nil {
		if e := Claim(a, *ref.Grant); e != nil {
			errs = append(errs, e)
		}
	}
	if ref.AppIDOwner != "" {
		errs = append(errs, field.Invalid(field.NewPath("spec", "appID"), a.Spec.AppID, fmt.Sprintf(
			"already claimed by %s; an app may have only one AppQuota", ownerShown(a, ref.AppIDOwner))))
	}
	profile := a.ProfileName()
	if ref.Profile == nil {
		errs = append(errs, field.Invalid(field.NewPath("spec", "profile"), profile, "no QuotaProfile of that name exists"))
		return append(errs, AppQuotaSpec(&a.Spec)...)
	}
	idx := ref.index()
	for i, o := range a.Spec.Overrides {
		g, ok := idx.groups[o.Group]
		if !ok {
			msg := fmt.Sprintf("not a group of QuotaProfile %q", profile)
			if near := closest(o.Group, idx.names); near != "" {
				msg += fmt.Sprintf("; did you mean %q?", near)
			}
			errs = append(errs, field.Invalid(overridePath(i).Child("group"), o.Group, msg))
			continue
		}
		errs = append(errs, ceilingErrors(g, profile, i, o.Limits)...)
		errs = append(errs, reasonErrors(g, profile, i, o)...)
		var routes []quotaconfig.Route // the group's, converted when needed
		for li, l := range o.Limits {
			if l.ScopeOrDefault() != quotav1.ScopeUser {
				continue
			}
			if routes == nil {
				for _, r := range g.Routes {
					routes = append(routes, docform.Route(r))
				}
			}
			if ri := quotaconfig.RouteWithoutUser(routes); ri >= 0 {
				r := g.Routes[ri]
				errs = append(errs, field.Invalid(overridePath(i).Child("limits").Index(li).Child("scope"), l.Scope, fmt.Sprintf(
					"group %q has a route without a user parameter (%s %s); use scope App", g.Name, r.Method, r.Path)))
			}
		}
	}
	return append(errs, AppQuotaSpec(&a.Spec)...)
}

// AppQuotaAdmission is what the webhook checks on create (old nil) and update:
// AppQuota's rules, an expiresAt already past on create, and the warnings for
// what is allowed but probably a mistake.
func AppQuotaAdmission(old, a *quotav1.AppQuota, ref Reference, now time.Time) (warnings []string, errs field.ErrorList) {
	errs = AppQuota(a, ref)
	if ref.Reservation != nil {
		if e := Reserved(a, *ref.Reservation, now); e != nil {
			errs = append(field.ErrorList{e}, errs...)
		}
	}
	overrides := field.NewPath("spec", "overrides")
	for i, o := range a.Spec.Overrides {
		if o.ExpiresAt == nil || o.ExpiresAt.After(now) {
			continue
		}
		p := overrides.Index(i).Child("expiresAt")
		at := o.ExpiresAt.UTC().Format(time.RFC3339)
		if old == nil {
			errs = append(errs, field.Invalid(p, at,
				"already in the past: the override would never apply; use a future instant, or omit expiresAt for a permanent override"))
		} else {
			warnings = append(warnings, fmt.Sprintf("%s: %s has passed; the override no longer applies and the profile's limits are back", p, at))
		}
	}
	if ref.Profile != nil {
		warnings = append(warnings, limitWarnings(a, ref.index())...)
	}
	return warnings, errs
}

// raiseWarnFactor is how far above the profile a raise has to go to be worth a
// second look (a typo such as an extra zero or two).
const raiseWarnFactor = 100

type limitKey struct {
	unit   quotav1.LimitUnit
	window quotav1.LimitWindow
	scope  quotav1.LimitScope
}

func describe(k limitKey, max int64) string {
	return fmt.Sprintf("%d %s/%s (scope %s)", max, k.unit, k.window, k.scope)
}

// limitWarnings compares each override with its profile group.
func limitWarnings(a *quotav1.AppQuota, idx *ProfileIndex) []string {
	var warnings []string
	for i, o := range a.Spec.Overrides {
		g, ok := idx.groups[o.Group]
		if !ok {
			continue
		}
		op := field.NewPath("spec", "overrides").Index(i)
		type eff struct {
			max      int64
			override bool
			path     *field.Path
		}
		effective := map[limitKey]eff{}
		var order []limitKey
		for _, l := range g.Limits {
			k := limitKey{l.Unit, l.Window, l.ScopeOrDefault()}
			effective[k] = eff{max: l.Max}
			order = append(order, k)
		}
		// An unlimited limit caps nothing: as large as a max can be.
		maxOf := func(l quotav1.OverrideLimit) int64 {
			if l.Unlimited {
				return math.MaxInt64 / quotaconfig.WindowSeconds(quotaconfig.WindowDay)
			}
			return l.Max
		}
		for li, l := range o.Limits {
			k := limitKey{l.Unit, l.Window, l.ScopeOrDefault()}
			lp := op.Child("limits").Index(li)
			prof, inProfile := effective[k]
			switch {
			case l.Unlimited:
				warnings = append(warnings, fmt.Sprintf("%s: lifts %s/%s for group %s for app %s: nothing counts against it",
					lp, k.unit, k.window, o.Group, a.Spec.AppID))
			case l.Max == 0:
				warnings = append(warnings, fmt.Sprintf("%s: max 0 blocks group %s for app %s", lp, o.Group, a.Spec.AppID))
			case inProfile && l.Max < prof.max:
				warnings = append(warnings, fmt.Sprintf("%s: lowers %s/%s for group %s from the profile's %d to %d",
					lp, k.unit, k.window, o.Group, prof.max, l.Max))
			case inProfile && l.Max > raiseWarnFactor*prof.max:
				warnings = append(warnings, fmt.Sprintf("%s: raises %s/%s for group %s more than %dx, from the profile's %d to %d",
					lp, k.unit, k.window, o.Group, raiseWarnFactor, prof.max, l.Max))
			}
			if !inProfile {
				order = append(order, k)
			}
			effective[k] = eff{max: maxOf(l), override: true, path: lp}
		}
		// A limit is unreachable when a shorter window of the same unit and scope
		// caps the longer window below it (10/Second allows at most 600/Minute, so
		// 6000/Minute never binds). Only limits this override touches are reported.
		for _, long := range order {
			for _, short := range order {
				le, se := effective[long], effective[short]
				ls, ss := quotaconfig.WindowSeconds(string(long.window)), quotaconfig.WindowSeconds(string(short.window))
				if ss == 0 || ls == 0 { // not a window: an error reported elsewhere
					continue
				}
				if long.unit != short.unit || long.scope != short.scope || ss >= ls {
					continue
				}
				if !le.override && !se.override || se.max == 0 {
					continue
				}
				cap := se.max * (ls / ss)
				if cap < le.max {
					where := op.String()
					if le.override {
						where = le.path.String()
					}
					warnings = append(warnings, fmt.Sprintf("%s: %s can never be reached for group %s: %s allows at most %d per %s",
						where, describe(long, le.max), o.Group, describe(short, se.max), cap, long.window))
				}
			}
		}
	}
	return warnings
}

// closest returns the candidate within edit distance 3 of s (and less than half
// its length), or "".
func closest(s string, candidates []string) string {
	best, bestD := "", 4
	for _, c := range candidates {
		if d := distance(s, c); d < bestD && d*2 < len(s) {
			best, bestD = c, d
		}
	}
	return best
}

// distance is the Levenshtein distance between a and b.
func distance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// ceilingErrors refuses the override limits (of override i, on group g of
// QuotaProfile profile) that raise above the ceiling g's limit with the same
// key sets (Limit.RaiseCeiling).
func ceilingErrors(g *quotav1.EndpointGroup, profile string, i int, limits []quotav1.OverrideLimit) field.ErrorList {
	var errs field.ErrorList
	for li, l := range limits {
		for _, pl := range g.Limits {
			if pl.RaiseCeiling == 0 || pl.Unit != l.Unit || pl.Window != l.Window || pl.ScopeOrDefault() != l.ScopeOrDefault() {
				continue
			}
			p := overridePath(i).Child("limits").Index(li)
			msg := fmt.Sprintf("above the raise ceiling of %d %s/%s that QuotaProfile %q sets for group %q; "+
				"lowering and blocking are allowed, raising further needs the platform team to raise the ceiling",
				pl.RaiseCeiling, pl.Unit, pl.Window, profile, g.Name)
			switch {
			case l.Unlimited:
				errs = append(errs, field.Invalid(p.Child("unlimited"), true, msg))
			case l.Max > pl.RaiseCeiling:
				errs = append(errs, field.Invalid(p.Child("max"), l.Max, msg))
			}
		}
	}
	return errs
}

// reasonErrors requires a reason on override i (on group g of QuotaProfile
// profile) when it raises a limit above the profile's: a raise is the sales
// path, and its ticket or contract is what an audit asks for. Lowering,
// blocking and limits the profile lacks need none.
func reasonErrors(g *quotav1.EndpointGroup, profile string, i int, o quotav1.Override) field.ErrorList {
	if o.Reason != "" {
		return nil
	}
	for _, l := range o.Limits {
		for _, pl := range g.Limits {
			if pl.Unit != l.Unit || pl.Window != l.Window || pl.ScopeOrDefault() != l.ScopeOrDefault() {
				continue
			}
			if l.Unlimited || l.Max > pl.Max {
				to := strconv.FormatInt(l.Max, 10)
				if l.Unlimited {
					to = "unlimited"
				}
				return field.ErrorList{field.Required(overridePath(i).Child("reason"), fmt.Sprintf(
					"required when an override raises a limit above its QuotaProfile's (%s/%s of group %q in QuotaProfile %q: %d to %s): "+
						"name the ticket or contract, at most 256 characters", l.Unit, l.Window, g.Name, profile, pl.Max, to))}
			}
		}
	}
	return nil
}
