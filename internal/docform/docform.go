// Package docform converts between the API types and their form in the
// gateway document (pkg/quotaconfig), both ways: Profile and Override to the
// document, in canonical order, and APIProfile back. The renderer builds
// documents with it; validation converts an object's parts with it to check
// them with the document's rules.
package docform

import (
	"cmp"
	"slices"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	quotav1 "github.com/appquota/appquota/api/v1alpha1"
	"github.com/appquota/appquota/pkg/quotaconfig"
)

// UserParam returns the parameter of a route that identifies the user: the
// explicit userParam, else the first parameter named like a user
// (quotaconfig.ConventionalUserParam), else "".
func UserParam(r quotav1.Route) string {
	if r.UserParam != "" {
		return r.UserParam
	}
	return quotaconfig.ConventionalUserParam(r.Path)
}

// Route converts a route; its user parameter is explicit in the document.
func Route(r quotav1.Route) quotaconfig.Route {
	return quotaconfig.Route{Method: string(r.Method), Path: r.Path, UserParam: UserParam(r)}
}

// Limit converts a profile's limit, its scope defaulted.
func Limit(l quotav1.Limit) quotaconfig.Limit {
	return quotaconfig.Limit{Unit: string(l.Unit), Window: string(l.Window), Scope: string(l.ScopeOrDefault()), Max: l.Max}
}

// OverrideLimit converts an override's limit, its scope defaulted.
func OverrideLimit(l quotav1.OverrideLimit) quotaconfig.Limit {
	return quotaconfig.Limit{Unit: string(l.Unit), Window: string(l.Window), Scope: string(l.ScopeOrDefault()), Max: l.Max, Unlimited: l.Unlimited}
}

// Profile converts a QuotaProfile to its document form, in canonical order.
// The document has no descriptions.
func Profile(p *quotav1.QuotaProfile) quotaconfig.Profile {
	out := quotaconfig.Profile{Fallback: limits(p.Spec.Fallback.Limits)}
	for _, g := range p.Spec.EndpointGroups {
		dg := quotaconfig.Group{Name: g.Name, RestOnly: g.RestOnly, Limits: limits(g.Limits)}
		if g.PerCall != nil {
			dg.MaxTargets = g.PerCall.MaxTargets
		}
		for _, r := range g.Routes {
			dg.Routes = append(dg.Routes, Route(r))
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
		out = append(out, Limit(l))
	}
	sortLimits(out)
	return out
}

// sortLimits orders limits by unit, then shortest window first, then scope.
func sortLimits(ls []quotaconfig.Limit) {
	slices.SortFunc(ls, func(x, y quotaconfig.Limit) int {
		return cmp.Or(cmp.Compare(y.Unit, x.Unit),
			cmp.Compare(quotaconfig.WindowSeconds(x.Window), quotaconfig.WindowSeconds(y.Window)),
			cmp.Compare(x.Scope, y.Scope))
	})
}

// Override converts an AppQuota override to its document form.
func Override(o quotav1.Override) quotaconfig.Override {
	out := quotaconfig.Override{Group: o.Group, Reason: o.Reason}
	for _, l := range o.Limits {
		out.Limits = append(out.Limits, OverrideLimit(l))
	}
	sortLimits(out.Limits)
	if o.PerCall != nil {
		out.MaxTargets = o.PerCall.MaxTargets
	}
	if o.ExpiresAt != nil {
		t := o.ExpiresAt.UTC()
		out.ExpiresAt = &t
	}
	return out
}

// APIProfile converts a profile from a document back to a QuotaProfile named
// name, with its defaults set (SetDefaults), so that what depends on the
// profile can be checked against the version a previous document holds.
// Profile(APIProfile(name, Profile(p))) is Profile(p). A route's userParam is
// set only where the naming convention would not find it. The document has no
// descriptions, and cannot say that a route has no user parameter when one of
// its parameters is named like one: such a route gets that parameter back.
func APIProfile(name string, p quotaconfig.Profile) *quotav1.QuotaProfile {
	out := &quotav1.QuotaProfile{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec:       quotav1.QuotaProfileSpec{Fallback: quotav1.Fallback{Limits: apiLimits(p.Fallback)}},
	}
	for _, g := range p.Groups {
		ag := quotav1.EndpointGroup{Name: g.Name, RestOnly: g.RestOnly, Limits: apiLimits(g.Limits)}
		for _, r := range g.Routes {
			ar := quotav1.Route{Method: quotav1.HTTPMethod(r.Method), Path: r.Path}
			if r.UserParam != quotaconfig.ConventionalUserParam(r.Path) {
				ar.UserParam = r.UserParam
			}
			ag.Routes = append(ag.Routes, ar)
		}
		if g.MaxTargets != 0 {
			ag.PerCall = &quotav1.PerCall{MaxTargets: g.MaxTargets}
		}
		out.Spec.EndpointGroups = append(out.Spec.EndpointGroups, ag)
	}
	return out
}

func apiLimits(in []quotaconfig.Limit) []quotav1.Limit {
	if in == nil {
		return nil
	}
	out := make([]quotav1.Limit, 0, len(in))
	for _, l := range in {
		out = append(out, quotav1.Limit{Unit: quotav1.LimitUnit(l.Unit), Window: quotav1.LimitWindow(l.Window),
			Scope: quotav1.LimitScope(l.Scope), Max: l.Max})
	}
	return out
}
