package render_test

import (
	"fmt"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	quotav1 "github.com/appquota/appquota/api/v1alpha1"
	"github.com/appquota/appquota/internal/render"
	"github.com/appquota/appquota/internal/reservation"
)

// TestReservations drives a Merger, as the controller does (the previous
// document is its last, the reservations its last result's), through
// deletions of the AppQuota that holds app ID "x": the ID is reserved for
// its namespace for the grace period, a claim from another namespace is held
// (AppIDReserved), the owner's namespace may claim it again at once and then
// keeps it, and the reservation ends on time. Each step's result must also
// equal a new Merger's full merge of the same input.
func TestReservations(t *testing.T) {
	profiles, _ := benchObjects(t, 0)
	group := profiles[0].Spec.EndpointGroups[0].Name
	start := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	const grace = time.Hour
	// app makes an AppQuota for x, created at start+created.
	app := func(ns, name string, created time.Duration) *quotav1.AppQuota {
		return &quotav1.AppQuota{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, UID: types.UID(ns + "/" + name), Generation: 1,
				CreationTimestamp: metav1.NewTime(start.Add(created))},
			Spec: quotav1.AppQuotaSpec{AppID: "x", Overrides: []quotav1.Override{{Group: group,
				Limits: []quotav1.OverrideLimit{{Unit: quotav1.UnitRequests, Window: quotav1.WindowHour, Max: 1000}}}}},
		}
	}
	owner := app("a", "owner", 0)
	intruder := app("b", "grab", time.Minute)
	renamed := app("a", "renamed", 2*time.Minute)
	invalid := owner.DeepCopy()
	invalid.Generation = 2
	invalid.Spec.Overrides[0].Group = "no-such-group"
	until := start.Add(grace + 30*time.Second) // reserved at start+30s

	type step struct {
		apps []*quotav1.AppQuota
		at   time.Duration // Now, from start
		// holder is the key whose entry x has, "" none; reservedFor the
		// namespace x is reserved for, "" none; reasons the outcomes'
		// reasons by key ("" valid).
		holder, reservedFor string
		reasons             map[string]string
	}
	cases := []struct {
		name  string
		steps []step
	}{
		{"deleted, another namespace held, expiry releases", []step{
			{apps: ls(owner), at: 0, holder: "a/owner", reasons: map[string]string{"a/owner": ""}},
			{apps: nil, at: 30 * time.Second, reservedFor: "a"},
			{apps: ls(intruder), at: 40 * time.Second, reservedFor: "a", reasons: map[string]string{"b/grab": quotav1.ReasonAppIDReserved}},
			{apps: ls(intruder), at: grace, reservedFor: "a", reasons: map[string]string{"b/grab": quotav1.ReasonAppIDReserved}},
			{apps: ls(intruder), at: grace + 30*time.Second, holder: "b/grab", reasons: map[string]string{"b/grab": ""}},
		}},
		{"the owner's namespace re-claims, and keeps it against the older held claim", []step{
			{apps: ls(owner), at: 0, holder: "a/owner"},
			{apps: nil, at: 30 * time.Second, reservedFor: "a"},
			{apps: ls(intruder), at: 90 * time.Second, reservedFor: "a", reasons: map[string]string{"b/grab": quotav1.ReasonAppIDReserved}},
			// Re-claimed: no reservation left, the renamed claim holds the
			// entry, and the older one is a duplicate of it from now on.
			{apps: ls(intruder, renamed), at: 3 * time.Minute, holder: "a/renamed",
				reasons: map[string]string{"b/grab": quotav1.ReasonDuplicateAppID, "a/renamed": ""}},
			{apps: ls(intruder, renamed), at: 4 * time.Minute, holder: "a/renamed",
				reasons: map[string]string{"b/grab": quotav1.ReasonDuplicateAppID, "a/renamed": ""}},
			{apps: ls(intruder, renamed), at: 2 * grace, holder: "a/renamed",
				reasons: map[string]string{"b/grab": quotav1.ReasonDuplicateAppID, "a/renamed": ""}},
		}},
		{"a claim in the render that sees the deletion loses too", []step{
			{apps: ls(owner), at: 0, holder: "a/owner"},
			{apps: ls(intruder), at: 30 * time.Second, reservedFor: "a", reasons: map[string]string{"b/grab": quotav1.ReasonAppIDReserved}},
		}},
		{"a rename in one render: reserved and re-claimed at once", []step{
			{apps: ls(owner), at: 0, holder: "a/owner"},
			{apps: ls(renamed), at: 30 * time.Second, holder: "a/renamed", reasons: map[string]string{"a/renamed": ""}},
		}},
		{"invalid, not deleted: last good kept, nothing reserved", []step{
			{apps: ls(owner), at: 0, holder: "a/owner"},
			{apps: ls(invalid), at: 30 * time.Second, holder: "a/owner", reasons: map[string]string{"a/owner": quotav1.ReasonInvalidSpec}},
			{apps: ls(invalid, intruder), at: 40 * time.Second, holder: "a/owner",
				reasons: map[string]string{"a/owner": quotav1.ReasonInvalidSpec, "b/grab": quotav1.ReasonDuplicateAppID}},
		}},
		{"being deleted counts as deleted", []step{
			{apps: ls(owner), at: 0, holder: "a/owner"},
			{apps: ls(deleting(owner, start)), at: 30 * time.Second, reservedFor: "a"},
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var m render.Merger
			var held reservation.Set
			for i, s := range c.steps {
				now := start.Add(s.at)
				in := render.Input{DefaultProfile: "default", Profiles: profiles, AppQuotas: s.apps, PreviousIsLast: i > 0, Now: now,
					Reservations: &render.Reservations{Held: held, Grace: grace}}
				var prevDoc = m.Last()
				res, err := m.Merge(in)
				if err != nil {
					t.Fatal(err)
				}
				where := fmt.Sprintf("step %d", i)
				e, ok := res.Document.Apps["x"]
				if got := map[bool]string{true: e.Source}[ok]; got != s.holder {
					t.Errorf("%s: x's entry is %q's, want %q's", where, got, s.holder)
				}
				r, ok := res.Reservations["x"]
				if got := map[bool]string{true: r.Namespace}[ok]; got != s.reservedFor {
					t.Errorf("%s: x reserved for %q, want %q", where, got, s.reservedFor)
				}
				if ok && !r.Until.Equal(until) {
					t.Errorf("%s: reserved until %s, want %s", where, r.Until, until)
				}
				if ok != (res.ReservedUntil != nil) {
					t.Errorf("%s: ReservedUntil %v with reservations %v", where, res.ReservedUntil, res.Reservations)
				}
				for key, reason := range s.reasons {
					o := res.Apps[key]
					if o == nil || o.Reason != reason || o.Valid != (reason == "") {
						t.Errorf("%s: %s's outcome %+v, want reason %q", where, key, o, reason)
					}
				}
				// The same input merged in full by a new Merger, as a new leader would.
				in.PreviousIsLast, in.Previous = false, prevDoc
				want, err := new(render.Merger).Merge(in)
				if err != nil {
					t.Fatal(err)
				}
				checkFullMerge(t, where, res, want)
				if !res.Reservations.Equal(want.Reservations) {
					t.Errorf("%s: reservations %v, a full merge's %v", where, res.Reservations, want.Reservations)
				}
				held = res.Reservations
			}
		})
	}
}

// TestReservedMessage: the held claim's message says until when the ID is
// reserved, and not for which namespace.
func TestReservedMessage(t *testing.T) {
	profiles, apps := benchObjects(t, 1)
	now := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	a := apps[0].DeepCopy()
	a.Namespace, a.Spec.AppID = "intruder", "x"
	held := reservation.Set{"x": {Namespace: "secret-owner", Until: now.Add(time.Hour)}}
	res, err := render.Render(render.Input{DefaultProfile: "default", Profiles: profiles, AppQuotas: ls(a), Now: now,
		Reservations: &render.Reservations{Held: held, Grace: time.Hour}})
	if err != nil {
		t.Fatal(err)
	}
	want := `spec.appID: Forbidden: app ID "x" is reserved for the namespace that held it until 2026-12-01T01:00:00Z: ` +
		`its AppQuota was deleted, and the ID stays with that namespace for a while in case it is re-created`
	if o := res.Apps[a.Key()]; o.Reason != quotav1.ReasonAppIDReserved || o.Message != want {
		t.Errorf("outcome %+v, want AppIDReserved with\n%s", o, want)
	}
	if _, ok := res.Document.Apps["x"]; ok {
		t.Error("the held claim has an entry")
	}
	// Without Reservations (an offline render) nothing is held.
	res, err = render.Render(render.Input{DefaultProfile: "default", Profiles: profiles, AppQuotas: ls(a), Now: now})
	if err != nil {
		t.Fatal(err)
	}
	if o := res.Apps[a.Key()]; !o.Valid || res.Reservations != nil {
		t.Errorf("without reservations: outcome %+v, reservations %v; want valid and none", o, res.Reservations)
	}
}

// TestReservationsBound: past reservation.Max, the reservations that end
// first are dropped, and the newest release is kept.
func TestReservationsBound(t *testing.T) {
	profiles, apps := benchObjects(t, 1)
	now := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	held := reservation.Set{}
	for i := range reservation.Max {
		held[fmt.Sprint("old-", i)] = reservation.Reservation{Namespace: "n", Until: now.Add(time.Duration(i+1) * time.Second)}
	}
	var m render.Merger
	in := render.Input{DefaultProfile: "default", Profiles: profiles, AppQuotas: render.Pointers(apps), Now: now}
	if _, err := m.Merge(in); err != nil {
		t.Fatal(err)
	}
	in.AppQuotas, in.PreviousIsLast = nil, true
	in.Reservations = &render.Reservations{Held: held, Grace: time.Hour}
	res, err := m.Merge(in)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Reservations) != reservation.Max {
		t.Fatalf("%d reservations, want %d", len(res.Reservations), reservation.Max)
	}
	if _, ok := res.Reservations[apps[0].Spec.AppID]; !ok {
		t.Error("the new release was dropped")
	}
	if _, ok := res.Reservations["old-0"]; ok {
		t.Error("the reservation ending first was kept")
	}
	if len(held) != reservation.Max {
		t.Error("Merge modified Input.Reservations.Held")
	}
}

func ls(apps ...*quotav1.AppQuota) []*quotav1.AppQuota { return apps }

func deleting(a *quotav1.AppQuota, at time.Time) *quotav1.AppQuota {
	d := a.DeepCopy()
	d.DeletionTimestamp = &metav1.Time{Time: at}
	return d
}
