package manifest

import (
	"strings"

	quotav1 "github.com/appquota/appquota/api/v1alpha1"
)

// fieldDefault is a default value of the API: the value a field gets when an
// object is created without it.
type fieldDefault struct {
	// path is the field's path from the object's root, "." between fields;
	// "[]" after a field steps into each item of that list.
	path  string
	value any
}

// defaults are the CRDs' default values (the +kubebuilder:default markers of
// api/v1alpha1), by kind. TestDefaultsMatchCRDs holds them to
// config/crd/bases.
var defaults = map[string][]fieldDefault{
	"AppQuota": {
		{"spec.profile", quotav1.DefaultProfileName},
		{"spec.overrides[].limits[].scope", string(quotav1.ScopeApp)},
	},
	"QuotaProfile": {
		{"spec.fallback.limits[].scope", string(quotav1.ScopeApp)},
		{"spec.endpointGroups[].limits[].scope", string(quotav1.ScopeApp)},
	},
}

// applyDefaults sets the defaults of kind in the object u, as the API server
// does with a CRD's structural schema: a field absent (or null) gets its
// default when the object holding it is there; a field given, even empty,
// keeps its value. Defaulting the decoded JSON rather than the Go types is
// what tells an absent field from an empty one.
func applyDefaults(kind string, u map[string]any) {
	for _, d := range defaults[kind] {
		setDefault(u, strings.Split(d.path, "."), d.value)
	}
}

func setDefault(obj map[string]any, path []string, value any) {
	field, list := strings.CutSuffix(path[0], "[]")
	if len(path) == 1 {
		if v, ok := obj[field]; !ok || v == nil {
			obj[field] = value
		}
		return
	}
	if !list {
		if child, ok := obj[field].(map[string]any); ok {
			setDefault(child, path[1:], value)
		}
		return
	}
	items, _ := obj[field].([]any)
	for _, item := range items {
		if child, ok := item.(map[string]any); ok {
			setDefault(child, path[1:], value)
		}
	}
}
