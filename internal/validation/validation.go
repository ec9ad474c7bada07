// Package validation holds appquota's cross-object rules: what the CRD schema
// and its CEL rules cannot check because it needs other objects. The admission
// webhook, the controller (for objects that got past a webhook that was down)
// and the CLI run the same code, so a user reads the same message everywhere.
package validation

import (
	"errors"
	"fmt"
	"regexp"
	"sort"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/util/validation/field"

	quotav1 "github.com/appquota/appquota/api/v1alpha1"
	"github.com/appquota/appquota/internal/docform"
	"github.com/appquota/appquota/pkg/quotaconfig"
)

var segmentRE = regexp.MustCompile(`^(/([^/{}?#]+|\{[A-Za-z_][A-Za-z0-9_]*\}))+$`)

// RouteShape is what a gateway can tell about a route: its method and its
// template with parameter names erased. Two routes with one shape are the same
// route to a gateway.
func RouteShape(method, path string) string {
	return method + " " + docform.ParamRE.ReplaceAllString(path, "{}")
}

// QuotaProfile checks a profile's rules that the schema cannot: route templates
// that a gateway cannot tell apart, within a group or across groups, and the
// syntax CEL already checks (repeated for objects written before the CRD had
// the rule).
func QuotaProfile(p *quotav1.QuotaProfile) field.ErrorList {
	var errs field.ErrorList
	groups := field.NewPath("spec", "endpointGroups")
	type claim struct {
		group string
		path  *field.Path
	}
	seen := map[string]claim{}
	for gi, g := range p.Spec.EndpointGroups {
		for ri, r := range g.Routes {
			rp := groups.Index(gi).Child("routes").Index(ri)
			if !segmentRE.MatchString(r.Path) {
				errs = append(errs, field.Invalid(rp.Child("path"), r.Path,
					"must start with '/', have no query string, and each segment must be a non-empty literal or exactly one parameter {name}"))
				continue
			}
			if dup := repeatedParam(r.Path); dup != "" {
				errs = append(errs, field.Invalid(rp.Child("path"), r.Path, fmt.Sprintf("parameter {%s} appears twice; each parameter needs its own name", dup)))
				continue
			}
			shape := RouteShape(string(r.Method), r.Path)
			if prev, ok := seen[shape]; ok {
				where := fmt.Sprintf("group %q", prev.group)
				if prev.group == g.Name {
					where = "the same group"
				}
				errs = append(errs, field.Invalid(rp.Child("path"), r.Path, fmt.Sprintf(
					"%s %s cannot be told apart by a gateway from %s in %s (same method and template once parameter names are ignored); merge them into one group",
					r.Method, r.Path, prev.path.String(), where)))
				continue
			}
			seen[shape] = claim{group: g.Name, path: rp}
		}
	}
	if len(errs) == 0 {
		// Defence in depth for objects stored before the CRD had today's rules:
		// what a gateway would refuse is refused here too.
		doc := &quotaconfig.Document{
			Version:        quotaconfig.FormatVersion,
			DefaultProfile: p.Name,
			Profiles:       map[string]quotaconfig.Profile{p.Name: docform.Profile(p)},
		}
		errs = append(errs, documentErrors(doc.Validate(), field.NewPath("spec"), p.Name, "profiles[")...)
	}
	return errs
}

// documentErrors turns a document's validation errors about the part starting
// with prefix into one field error on path.
func documentErrors(err error, path *field.Path, value any, prefix string) field.ErrorList {
	if err == nil {
		return nil
	}
	var msgs []string
	for _, e := range unjoin(err) {
		var fe *quotaconfig.FieldError
		if errors.As(e, &fe) && !strings.HasPrefix(fe.Field, prefix) {
			continue
		}
		msgs = append(msgs, e.Error())
	}
	if len(msgs) == 0 {
		return nil
	}
	return field.ErrorList{field.Invalid(path, value, "does not render to a document gateways accept: "+strings.Join(msgs, "; "))}
}

func unjoin(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}

// repeatedParam returns a parameter name that appears twice in path, or "".
func repeatedParam(path string) string {
	seen := map[string]bool{}
	for _, m := range docform.ParamRE.FindAllString(path, -1) {
		if seen[m] {
			return strings.Trim(m, "{}")
		}
		seen[m] = true
	}
	return ""
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

// AppQuota checks an AppQuota against the rest of the cluster.
func AppQuota(a *quotav1.AppQuota, ref Reference) field.ErrorList {
	var errs field.ErrorList
	spec := field.NewPath("spec")
	if ref.AppIDOwner != "" {
		errs = append(errs, field.Invalid(spec.Child("appID"), a.Spec.AppID, fmt.Sprintf(
			"already claimed by AppQuota %s; an app may have only one AppQuota", ref.AppIDOwner)))
	}
	profile := a.Spec.Profile
	if profile == "" {
		profile = quotav1.DefaultProfileName
	}
	if ref.Profile == nil {
		errs = append(errs, field.Invalid(spec.Child("profile"), profile, "no QuotaProfile of that name exists"))
		return errs
	}
	idx := ref.Index
	if idx == nil || idx.profile != ref.Profile {
		idx = IndexProfile(ref.Profile)
	}
	groups, names := idx.groups, idx.names
	for i, o := range a.Spec.Overrides {
		op := spec.Child("overrides").Index(i)
		g, ok := groups[o.Group]
		if !ok {
			msg := fmt.Sprintf("not a group of QuotaProfile %q", profile)
			if near := closest(o.Group, names); near != "" {
				msg += fmt.Sprintf("; did you mean %q?", near)
			}
			errs = append(errs, field.Invalid(op.Child("group"), o.Group, msg))
			continue
		}
		for li, l := range o.Limits {
			if l.Scope != quotav1.ScopeUser {
				continue
			}
			for _, r := range g.Routes {
				if docform.UserParam(r) == "" {
					errs = append(errs, field.Invalid(op.Child("limits").Index(li).Child("scope"), l.Scope, fmt.Sprintf(
						"group %q has a route without a user parameter (%s %s); use scope App", g.Name, r.Method, r.Path)))
					break
				}
			}
		}
	}
	if len(errs) == 0 {
		app := quotaconfig.App{Profile: profile}
		for _, o := range a.Spec.Overrides {
			app.Overrides = append(app.Overrides, docform.Override(o))
		}
		// Only the groups the app overrides matter here; converting the whole
		// catalog on every admission would cost more than the rest of the check.
		slim := &quotav1.QuotaProfile{Spec: quotav1.QuotaProfileSpec{Fallback: ref.Profile.Spec.Fallback}}
		seen := map[string]bool{}
		for _, o := range a.Spec.Overrides {
			if g, ok := groups[o.Group]; ok && !seen[o.Group] {
				slim.Spec.EndpointGroups = append(slim.Spec.EndpointGroups, *g)
				seen[o.Group] = true // once, even if (invalidly) overridden twice
			}
		}
		doc := &quotaconfig.Document{
			Version:        quotaconfig.FormatVersion,
			DefaultProfile: profile,
			Profiles:       map[string]quotaconfig.Profile{profile: docform.Profile(slim)},
			Apps:           map[string]quotaconfig.App{a.Spec.AppID: app},
		}
		errs = append(errs, documentErrors(doc.Validate(), spec, a.Spec.AppID, "apps[")...)
	}
	return errs
}

// AppQuotaAdmission is what the webhook checks on create (old nil) and update:
// AppQuota's rules, an expiresAt already past on create, and the warnings for
// what is allowed but probably a mistake.
func AppQuotaAdmission(old, a *quotav1.AppQuota, ref Reference, now time.Time) (warnings []string, errs field.ErrorList) {
	errs = AppQuota(a, ref)
	overrides := field.NewPath("spec", "overrides")
	for i, o := range a.Spec.Overrides {
		if o.ExpiresAt == nil || o.ExpiresAt.Time.After(now) {
			continue
		}
		p := overrides.Index(i).Child("expiresAt")
		at := o.ExpiresAt.UTC().Format(time.RFC3339)
		if old == nil {
			errs = append(errs, field.Invalid(p, at, "already in the past: the override would never apply; use a future instant, or omit expiresAt for a permanent override"))
		} else {
			warnings = append(warnings, fmt.Sprintf("%s: %s has passed; the override no longer applies and the profile's limits are back", p, at))
		}
	}
	if ref.Profile != nil {
		warnings = append(warnings, limitWarnings(a, ref.Profile)...)
	}
	return warnings, errs
}

var windowSeconds = map[quotav1.LimitWindow]int64{
	quotav1.WindowSecond: 1, quotav1.WindowMinute: 60, quotav1.WindowHour: 3600, quotav1.WindowDay: 86400,
}

// raiseWarnFactor is how far above the profile a raise has to go to be worth a
// second look (a typo such as an extra zero or two).
const raiseWarnFactor = 100

type limitKey struct {
	unit   quotav1.LimitUnit
	window quotav1.LimitWindow
	scope  quotav1.LimitScope
}

func scopeOf(s quotav1.LimitScope) quotav1.LimitScope {
	if s == "" {
		return quotav1.ScopeApp
	}
	return s
}

func describe(k limitKey, max int64) string {
	return fmt.Sprintf("%d %s/%s (scope %s)", max, k.unit, k.window, k.scope)
}

// limitWarnings compares each override with its profile group.
func limitWarnings(a *quotav1.AppQuota, p *quotav1.QuotaProfile) []string {
	var warnings []string
	groups := map[string]*quotav1.EndpointGroup{}
	for i := range p.Spec.EndpointGroups {
		groups[p.Spec.EndpointGroups[i].Name] = &p.Spec.EndpointGroups[i]
	}
	for i, o := range a.Spec.Overrides {
		g, ok := groups[o.Group]
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
			k := limitKey{l.Unit, l.Window, scopeOf(l.Scope)}
			effective[k] = eff{max: l.Max}
			order = append(order, k)
		}
		for li, l := range o.Limits {
			k := limitKey{l.Unit, l.Window, scopeOf(l.Scope)}
			lp := op.Child("limits").Index(li)
			prof, inProfile := effective[k]
			switch {
			case l.Max == 0:
				warnings = append(warnings, fmt.Sprintf("%s: max 0 blocks group %s for app %s", lp, o.Group, a.Spec.AppID))
			case inProfile && l.Max < prof.max:
				warnings = append(warnings, fmt.Sprintf("%s: lowers %s/%s for group %s from the profile's %d to %d", lp, k.unit, k.window, o.Group, prof.max, l.Max))
			case inProfile && l.Max > raiseWarnFactor*prof.max:
				warnings = append(warnings, fmt.Sprintf("%s: raises %s/%s for group %s more than %dx, from the profile's %d to %d", lp, k.unit, k.window, o.Group, raiseWarnFactor, prof.max, l.Max))
			}
			if !inProfile {
				order = append(order, k)
			}
			effective[k] = eff{max: l.Max, override: true, path: lp}
		}
		// A limit is unreachable when a shorter window of the same unit and scope
		// caps the longer window below it (10/Second allows at most 600/Minute, so
		// 6000/Minute never binds). Only limits this override touches are reported.
		for _, long := range order {
			for _, short := range order {
				le, se := effective[long], effective[short]
				ls, ss := windowSeconds[long.window], windowSeconds[short.window]
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
