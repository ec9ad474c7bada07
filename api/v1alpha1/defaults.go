package v1alpha1

import (
	"strings"

	"k8s.io/apimachinery/pkg/types"
)

// The CRD's defaults (+kubebuilder:default markers) are applied by the API
// server, so objects read from a cluster have them set; objects read from
// files, built in Go, or stored before a default existed may not. Code that
// reads a defaulted field asks these helpers instead of restating the default.
// TestDefaultsAreTheCRDs checks them against the generated CRDs and the API
// server.

// ProfileName is the name of the QuotaProfile the AppQuota uses: spec.profile,
// or DefaultProfileName when it is unset.
func (a *AppQuota) ProfileName() string {
	if a.Spec.Profile == "" {
		return DefaultProfileName
	}
	return a.Spec.Profile
}

// ScopeOrDefault is the limit's scope, ScopeApp when unset.
func (l Limit) ScopeOrDefault() LimitScope { return scopeOrDefault(l.Scope) }

// ScopeOrDefault is the limit's scope, ScopeApp when unset.
func (l OverrideLimit) ScopeOrDefault() LimitScope { return scopeOrDefault(l.Scope) }

func scopeOrDefault(s LimitScope) LimitScope {
	if s == "" {
		return ScopeApp
	}
	return s
}

// SetDefaults sets every unset field that the CRD defaults, as the API server
// does when it stores the object.
func (a *AppQuota) SetDefaults() {
	a.Spec.Profile = a.ProfileName()
	for i := range a.Spec.Overrides {
		for j := range a.Spec.Overrides[i].Limits {
			l := &a.Spec.Overrides[i].Limits[j]
			l.Scope = l.ScopeOrDefault()
		}
	}
}

// SetDefaults sets every unset field that the CRD defaults, as the API server
// does when it stores the object.
func (p *QuotaProfile) SetDefaults() {
	setLimitDefaults(p.Spec.Fallback.Limits)
	for i := range p.Spec.EndpointGroups {
		setLimitDefaults(p.Spec.EndpointGroups[i].Limits)
	}
}

func setLimitDefaults(ls []Limit) {
	for i := range ls {
		ls[i].Scope = ls[i].ScopeOrDefault()
	}
}

// Key is "namespace/name", how appquota names a namespaced object in the
// document (an app's source), in render outcomes and in messages; it is
// types.NamespacedName's String.
func Key(namespace, name string) string {
	return types.NamespacedName{Namespace: namespace, Name: name}.String()
}

// Key is the AppQuota's "namespace/name" (see Key).
func (a *AppQuota) Key() string { return Key(a.Namespace, a.Name) }

// SplitKey is the inverse of Key.
func SplitKey(key string) (namespace, name string) {
	namespace, name, _ = strings.Cut(key, string(types.Separator))
	return namespace, name
}
