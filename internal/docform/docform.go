// Package docform converts the API types to their form in the gateway
// document (pkg/quotaconfig), in canonical order. The renderer builds documents
// with it, and validation checks with it that an object renders to something a
// gateway accepts.
package docform

import (
	"cmp"
	"regexp"
	"slices"
	"strings"

	quotav1 "github.com/appquota/appquota/api/v1alpha1"
	"github.com/appquota/appquota/pkg/quotaconfig"
)

var (
	// ParamRE matches one {param} of a route template.
	ParamRE     = regexp.MustCompile(`\{[^/{}]*\}`)
	userParamRE = regexp.MustCompile(`(?i)^(user_?name|user_?id|uid|owner_?username)$`)
)

// UserParam returns the parameter of a route that identifies the user: the
// explicit userParam, else the first parameter named like a user (username,
// userName, user_name, userId, user_id, uid, owner_username, any case), else "".
func UserParam(r quotav1.Route) string {
	if r.UserParam != "" {
		return r.UserParam
	}
	for _, m := range ParamRE.FindAllString(r.Path, -1) {
		name := strings.Trim(m, "{}")
		if userParamRE.MatchString(name) {
			return name
		}
	}
	return ""
}

// Profile converts a QuotaProfile to its document form, in canonical order.
func Profile(p *quotav1.QuotaProfile) quotaconfig.Profile {
	out := quotaconfig.Profile{Fallback: limits(p.Spec.Fallback.Limits)}
	for _, g := range p.Spec.EndpointGroups {
		dg := quotaconfig.Group{Name: g.Name, RestOnly: g.RestOnly, Limits: limits(g.Limits)}
		if g.PerCall != nil {
			dg.MaxTargets = g.PerCall.MaxTargets
		}
		for _, r := range g.Routes {
			dg.Routes = append(dg.Routes, quotaconfig.Route{Method: string(r.Method), Path: r.Path, UserParam: UserParam(r)})
		}
		slices.SortFunc(dg.Routes, func(x, y quotaconfig.Route) int {
			return cmp.Or(cmp.Compare(x.Path, y.Path), cmp.Compare(x.Method, y.Method))
		})
		out.Groups = append(out.Groups, dg)
	}
	slices.SortFunc(out.Groups, func(x, y quotaconfig.Group) int { return cmp.Compare(x.Name, y.Name) })
	return out
}

func limits(in []quotav1.Limit) []quotaconfig.Limit {
	out := make([]quotaconfig.Limit, 0, len(in))
	for _, l := range in {
		out = append(out, limit(l.Unit, l.Window, l.Scope, l.Max))
	}
	sortLimits(out)
	return out
}

func limit(u quotav1.LimitUnit, w quotav1.LimitWindow, s quotav1.LimitScope, max int64) quotaconfig.Limit {
	if s == "" {
		s = quotav1.ScopeApp
	}
	return quotaconfig.Limit{Unit: string(u), Window: string(w), Scope: string(s), Max: max}
}

var windowOrder = map[string]int{quotaconfig.WindowSecond: 0, quotaconfig.WindowMinute: 1, quotaconfig.WindowHour: 2, quotaconfig.WindowDay: 3}

// sortLimits orders limits by unit, then shortest window first, then scope.
func sortLimits(ls []quotaconfig.Limit) {
	slices.SortFunc(ls, func(x, y quotaconfig.Limit) int {
		return cmp.Or(cmp.Compare(y.Unit, x.Unit), cmp.Compare(windowOrder[x.Window], windowOrder[y.Window]), cmp.Compare(x.Scope, y.Scope))
	})
}

// Override converts an AppQuota override to its document form.
func Override(o quotav1.Override) quotaconfig.Override {
	out := quotaconfig.Override{Group: o.Group, Reason: o.Reason}
	for _, l := range o.Limits {
		out.Limits = append(out.Limits, limit(l.Unit, l.Window, l.Scope, l.Max))
	}
	sortLimits(out.Limits)
	if o.PerCall != nil {
		out.MaxTargets = o.PerCall.MaxTargets
	}
	if o.ExpiresAt != nil {
		t := o.ExpiresAt.Time.UTC()
		out.ExpiresAt = &t
	}
	return out
}
