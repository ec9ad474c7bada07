package render_test

import (
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	quotav1 "github.com/appquota/appquota/api/v1alpha1"
	"github.com/appquota/appquota/internal/render"
	"github.com/appquota/appquota/internal/validation"
)

// TestClaims: under grants, a claim its namespace may not make takes the
// appID from nobody, whatever its age (the attack of a namespace that claims
// an ID while its owner deletes and re-creates its AppQuota), and a
// namespace whose grant is withdrawn keeps its app's last good entry.
func TestClaims(t *testing.T) {
	profiles, apps := benchObjects(t, 2)
	now := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	at := func(i int, ns, name, id string, created time.Time) *quotav1.AppQuota {
		a := apps[i].DeepCopy()
		a.Namespace, a.Name, a.UID, a.Spec.AppID, a.Generation = ns, name, types.UID("uid-"+ns+"-"+name), id, 1
		a.CreationTimestamp = metav1.NewTime(created)
		return a
	}
	// The intruder's claim is the older one.
	intruder := at(0, "intruder", "grab", "acme", now.Add(-time.Hour))
	owner := at(1, "acme-team", "acme", "acme", now)
	grants := func(acme string) *render.Claims {
		return &render.Claims{Version: acme, Grants: map[string]*validation.Grant{
			"acme-team": {Namespace: "acme-team", Annotated: true, Entries: []string{acme}},
			"intruder":  {Namespace: "intruder", Annotated: true, Entries: []string{"intruder-*"}},
		}}
	}
	var r render.Merger
	merge := func(claims *render.Claims, published bool) *render.Result {
		t.Helper()
		res, err := r.Merge(render.Input{DefaultProfile: "default", Profiles: profiles,
			AppQuotas: []*quotav1.AppQuota{intruder, owner}, PreviousIsLast: published, Now: now, Claims: claims})
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	res := merge(grants("acme"), false)
	if e, ok := res.Document.Apps["acme"]; !ok || e.Source != owner.Key() {
		t.Fatalf("acme's entry: %+v (present %v), want the granted owner's", e, ok)
	}
	if o := res.Apps[owner.Key()]; !o.Valid {
		t.Errorf("the owner: %+v, want valid", o)
	}
	o := res.Apps[intruder.Key()]
	if o.Valid || o.Reason != quotav1.ReasonAppIDNotGranted {
		t.Errorf("the intruder: %+v, want AppIDNotGranted", o)
	}
	want := `spec.appID: Forbidden: namespace "intruder" may not claim app ID "acme": its quota.appquota.io/app-ids annotation allows only "intruder-*"; ask the platform team to grant it`
	if o.Message != want {
		t.Errorf("the intruder's message:\n got %s\nwant %s", o.Message, want)
	}

	// The grant withdrawn: the owner keeps its last good entry, the intruder still gets nothing.
	res = merge(grants("other"), true)
	if e, ok := res.Document.Apps["acme"]; !ok || e.Source != owner.Key() {
		t.Errorf("after the grant is withdrawn, acme's entry: %+v (present %v), want the owner's last good one", e, ok)
	}
	if o := res.Apps[owner.Key()]; o.Valid || o.Reason != quotav1.ReasonAppIDNotGranted || !o.KeptLastGood {
		t.Errorf("the owner without its grant: %+v, want AppIDNotGranted, last good kept", o)
	}
	// Without claims (an offline render), the oldest claim wins as before.
	var plain render.Merger
	res, err := plain.Merge(render.Input{DefaultProfile: "default", Profiles: profiles, AppQuotas: []*quotav1.AppQuota{intruder, owner}, Now: now})
	if err != nil {
		t.Fatal(err)
	}
	if e := res.Document.Apps["acme"]; e.Source != intruder.Key() {
		t.Errorf("without claims, acme's entry is %s's, want the oldest claim's", e.Source)
	}
}
