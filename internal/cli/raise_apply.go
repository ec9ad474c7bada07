package cli

import (
	"fmt"
	"slices"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/structured-merge-diff/v6/fieldpath"

	quotav1 "github.com/appquota/appquota/api/v1alpha1"
)

// fieldManager is raise's field manager: the fields it applied are its own,
// and a field another manager set is a conflict unless --force-conflicts.
const fieldManager = "kubectl-appquota"

// raiseSpec is the override limit raise sets: one (unit, window, scope) of one
// group, with the reason and the expiry.
type raiseSpec struct {
	group  string
	limit  quotav1.OverrideLimit
	reason string
	until  *time.Time
}

// applyObject is the AppQuota raise applies. Server-side apply takes an
// applied object as the manager's whole intent: a field the manager owned
// that the object leaves out is removed. So the object holds every field
// kubectl-appquota already owns in live (an earlier raise of another group,
// or of another window of this one), as it is, and then the override of the
// group with the limit, reason and expiry given. Fields other managers own
// are left out, and so kept. live is nil when the AppQuota does not exist.
func applyObject(live *quotav1.AppQuota, namespace, name, appID string, r raiseSpec) (map[string]any, error) {
	overrides := []map[string]any{}
	if live != nil {
		owned, err := ownedFields(live.ManagedFields)
		if err != nil {
			return nil, err
		}
		for i := range live.Spec.Overrides {
			if e := ownedOverride(owned, &live.Spec.Overrides[i]); e != nil {
				overrides = append(overrides, e)
			}
		}
	}
	i := slices.IndexFunc(overrides, func(e map[string]any) bool { return e["group"] == r.group })
	if i < 0 {
		overrides = append(overrides, map[string]any{"group": r.group})
		i = len(overrides) - 1
	}
	target := overrides[i]
	target["reason"] = r.reason
	// Without --until the raise has no end: an expiry raise set earlier goes
	// (one another manager set stays, and shows in the "after").
	delete(target, "expiresAt")
	if r.until != nil {
		target["expiresAt"] = r.until.UTC().Format(time.RFC3339)
	}
	limits, _ := target["limits"].([]any)
	l := limitMap(r.limit)
	j := slices.IndexFunc(limits, func(x any) bool { return sameLimitKey(x.(map[string]any), l) })
	if j < 0 {
		limits = append(limits, l)
	} else {
		limits[j] = l
	}
	target["limits"] = limits
	items := make([]any, 0, len(overrides))
	for _, e := range overrides {
		items = append(items, e)
	}
	return map[string]any{
		"apiVersion": quotav1.GroupVersion.String(),
		"kind":       "AppQuota",
		"metadata":   map[string]any{"name": name, "namespace": namespace},
		"spec":       map[string]any{"appID": appID, "overrides": items},
	}, nil
}

// ownedFields are the fields kubectl-appquota applied, from the object's
// managedFields (empty when it applied none).
func ownedFields(entries []metav1.ManagedFieldsEntry) (*fieldpath.Set, error) {
	set := &fieldpath.Set{}
	for _, e := range entries {
		if e.Manager != fieldManager || e.Operation != metav1.ManagedFieldsOperationApply || e.Subresource != "" || e.FieldsV1 == nil {
			continue
		}
		if err := set.FromJSON(e.FieldsV1.GetRawReader()); err != nil {
			return nil, fmt.Errorf("the managed fields of %s: %w", fieldManager, err)
		}
	}
	return set, nil
}

// ownedOverride is the part of override o that kubectl-appquota owns, as an
// applied object holds it; nil when it owns none of it.
func ownedOverride(owned *fieldpath.Set, o *quotav1.Override) map[string]any {
	base := []any{"spec", "overrides", fieldpath.KeyByFields("group", o.Group)}
	has := func(rest ...any) bool {
		return owned.Has(fieldpath.MakePathOrDie(append(slices.Clone(base), rest...)...))
	}
	e := map[string]any{}
	if has("reason") {
		e["reason"] = o.Reason
	}
	if has("expiresAt") && o.ExpiresAt != nil {
		e["expiresAt"] = o.ExpiresAt.UTC().Format(time.RFC3339)
	}
	if has("perCall", "maxTargets") && o.PerCall != nil {
		e["perCall"] = map[string]any{"maxTargets": int64(o.PerCall.MaxTargets)}
	}
	var limits []any
	for _, l := range o.Limits {
		key := fieldpath.KeyByFields("scope", string(l.Scope), "unit", string(l.Unit), "window", string(l.Window))
		if has("limits", key, "max") || has("limits", key, "unlimited") {
			limits = append(limits, limitMap(l))
		}
	}
	if len(limits) > 0 {
		e["limits"] = limits
	}
	if len(e) == 0 && !has() {
		return nil
	}
	e["group"] = o.Group
	return e
}

// limitMap is l as an applied object holds it.
func limitMap(l quotav1.OverrideLimit) map[string]any {
	m := map[string]any{"unit": string(l.Unit), "window": string(l.Window), "scope": string(l.Scope), "max": l.Max}
	if l.Unlimited {
		m["unlimited"] = true
	}
	return m
}

// sameLimitKey: a and b are the same entry of the limits list, keyed by
// (unit, window, scope).
func sameLimitKey(a, b map[string]any) bool {
	return a["unit"] == b["unit"] && a["window"] == b["window"] && a["scope"] == b["scope"]
}

// applyLocally is what the server would make of live with raise's change,
// for --dry-run=client: the override of the group gets the limit, the reason
// and the expiry (without --until, the one it had unless raise set it),
// other overrides and limits stay. live is nil when the AppQuota does not
// exist.
func applyLocally(live *quotav1.AppQuota, namespace, name, appID string, r raiseSpec) (*quotav1.AppQuota, error) {
	a := &quotav1.AppQuota{}
	if live != nil {
		a = live.DeepCopy()
	} else {
		a.Name, a.Namespace = name, namespace
		a.Spec = quotav1.AppQuotaSpec{AppID: appID, Profile: quotav1.DefaultProfileName}
	}
	i := slices.IndexFunc(a.Spec.Overrides, func(o quotav1.Override) bool { return o.Group == r.group })
	if i < 0 {
		a.Spec.Overrides = append(a.Spec.Overrides, quotav1.Override{Group: r.group})
		i = len(a.Spec.Overrides) - 1
	}
	o := &a.Spec.Overrides[i]
	o.Reason = r.reason
	// As the apply would: an expiry kubectl-appquota set goes, one another
	// manager set stays.
	if live != nil && o.ExpiresAt != nil {
		owned, err := ownedFields(live.ManagedFields)
		if err != nil {
			return nil, err
		}
		if owned.Has(fieldpath.MakePathOrDie("spec", "overrides", fieldpath.KeyByFields("group", r.group), "expiresAt")) {
			o.ExpiresAt = nil
		}
	}
	if r.until != nil {
		t := metav1.NewTime(*r.until)
		o.ExpiresAt = &t
	}
	j := slices.IndexFunc(o.Limits, func(l quotav1.OverrideLimit) bool {
		return l.Unit == r.limit.Unit && l.Window == r.limit.Window && l.Scope == r.limit.Scope
	})
	if j < 0 {
		o.Limits = append(o.Limits, r.limit)
	} else {
		o.Limits[j] = r.limit
	}
	return a, nil
}
