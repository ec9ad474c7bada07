// Package validation holds appquota's cross-object rules: what the CRD schema
// and its CEL rules cannot check because it needs other objects. The admission
// webhook, the controller (for objects that got past a webhook that was down)
// and the CLI run the same code, so a user reads the same message everywhere.
package validation

import (
	"fmt"
	"regexp"
	"sort"
	"strings"

	"k8s.io/apimachinery/pkg/util/validation/field"

	quotav1 "github.com/appquota/appquota/api/v1alpha1"
)

var (
	paramRE     = regexp.MustCompile(`\{[^/{}]*\}`)
	userParamRE = regexp.MustCompile(`(?i)^(user_?name|user_?id|uid|owner_?username)$`)
	segmentRE   = regexp.MustCompile(`^(/([^/{}?#]+|\{[A-Za-z_][A-Za-z0-9_]*\}))+$`)
)

// RouteShape is what a gateway can tell about a route: its method and its
// template with parameter names erased. Two routes with one shape are the same
// route to a gateway.
func RouteShape(method, path string) string {
	return method + " " + paramRE.ReplaceAllString(path, "{}")
}

// UserParam returns the parameter of a route that identifies the user: the
// explicit userParam, else the first parameter named like a user (username,
// userName, user_id, userId, uid, owner_username), else "".
func UserParam(r quotav1.Route) string {
	if r.UserParam != "" {
		return r.UserParam
	}
	for _, m := range paramRE.FindAllString(r.Path, -1) {
		name := strings.Trim(m, "{}")
		if userParamRE.MatchString(name) {
			return name
		}
	}
	return ""
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
	return errs
}

// Reference is what AppQuota needs to know about the rest of the cluster.
type Reference struct {
	// Profile is the AppQuota's QuotaProfile, nil when it does not exist.
	Profile *quotav1.QuotaProfile
	// AppIDOwner is the other AppQuota ("namespace/name") that already holds the
	// appID, "" when none does.
	AppIDOwner string
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
	groups := make(map[string]*quotav1.EndpointGroup, len(ref.Profile.Spec.EndpointGroups))
	names := make([]string, 0, len(ref.Profile.Spec.EndpointGroups))
	for i := range ref.Profile.Spec.EndpointGroups {
		g := &ref.Profile.Spec.EndpointGroups[i]
		groups[g.Name] = g
		names = append(names, g.Name)
	}
	sort.Strings(names)
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
				if UserParam(r) == "" {
					errs = append(errs, field.Invalid(op.Child("limits").Index(li).Child("scope"), l.Scope, fmt.Sprintf(
						"group %q has a route without a user parameter (%s %s); use scope App", g.Name, r.Method, r.Path)))
					break
				}
			}
		}
	}
	return errs
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
