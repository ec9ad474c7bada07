package wiring

import (
	"encoding/json"
	"testing"
	"unsafe"

	"k8s.io/apimachinery/pkg/api/equality"

	quotav1alpha1 "github.com/appquota/appquota/api/v1alpha1"
)

// decoded returns a fresh decode of one AppQuota, as the informer gets it:
// every string allocated anew.
func decoded(t *testing.T, name string) *quotav1alpha1.AppQuota {
	t.Helper()
	data := `{"apiVersion":"quota.appquota.io/v1alpha1","kind":"AppQuota",
	"metadata":{"name":"` + name + `","namespace":"tenants","managedFields":[{"manager":"kubectl"}],
	  "annotations":{"kubectl.kubernetes.io/last-applied-configuration":"{}","team":"chat"}},
	"spec":{"appID":"` + name + `","overrides":[{"group":"messages-send-users","reason":"SALES-1",
	  "limits":[{"unit":"Requests","window":"Second","scope":"App","max":500}]}]},
	"status":{"configHash":"sha256:00ff","lastChange":{"by":"alice","at":"2026-01-01T00:00:00Z","generation":2,
	  "summary":"raised group messages-send-users Requests/Second from 100 to 500: SALES-1"},"conditions":[{"type":"Ready","status":"True","reason":"Applied",
	  "message":"1 active overrides","lastTransitionTime":"2026-01-01T00:00:00Z"}]}}`
	var a quotav1alpha1.AppQuota
	if err := json.Unmarshal([]byte(data), &a); err != nil {
		t.Fatal(err)
	}
	return &a
}

func sameBytes(a, b string) bool { return unsafe.StringData(a) == unsafe.StringData(b) }

// TestStripForCache: managed fields, the last-applied annotation and the
// status's lastChange go, other annotations stay, every other value is
// unchanged, and the strings AppQuotas repeat share one copy.
func TestStripForCache(t *testing.T) {
	x, y := decoded(t, "a1"), decoded(t, "a2")
	if x.Status.LastChange == nil {
		t.Fatal("the decoded AppQuota has no lastChange to strip")
	}
	want := x.DeepCopy()
	want.ManagedFields = nil
	want.Status.LastChange = nil
	delete(want.Annotations, "kubectl.kubernetes.io/last-applied-configuration")
	for _, a := range []*quotav1alpha1.AppQuota{x, y} {
		if _, err := stripForCache(a); err != nil {
			t.Fatal(err)
		}
	}
	if !equality.Semantic.DeepEqual(x, want) {
		t.Errorf("stripForCache changed a value:\n got %+v\nwant %+v", x, want)
	}
	if len(x.Annotations) != 1 {
		t.Errorf("annotations %v, want only team", x.Annotations)
	}
	ox, oy := x.Spec.Overrides[0], y.Spec.Overrides[0]
	cx, cy := x.Status.Conditions[0], y.Status.Conditions[0]
	for name, pair := range map[string][2]string{
		"namespace": {x.Namespace, y.Namespace}, "kind": {x.Kind, y.Kind}, "apiVersion": {x.APIVersion, y.APIVersion},
		"group": {ox.Group, oy.Group}, "reason": {ox.Reason, oy.Reason}, "unit": {string(ox.Limits[0].Unit), string(oy.Limits[0].Unit)},
		"window": {string(ox.Limits[0].Window), string(oy.Limits[0].Window)}, "scope": {string(ox.Limits[0].Scope), string(oy.Limits[0].Scope)},
		"configHash": {x.Status.ConfigHash, y.Status.ConfigHash}, "condition type": {cx.Type, cy.Type},
		"condition status": {string(cx.Status), string(cy.Status)}, "condition reason": {cx.Reason, cy.Reason}, "condition message": {cx.Message, cy.Message},
	} {
		if !sameBytes(pair[0], pair[1]) {
			t.Errorf("%s %q is held twice", name, pair[0])
		}
	}
}
