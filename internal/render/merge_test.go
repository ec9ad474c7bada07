package render_test

import (
	"fmt"
	"maps"
	"math/rand/v2"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	quotav1 "github.com/appquota/appquota/api/v1alpha1"
	"github.com/appquota/appquota/internal/delta"
	"github.com/appquota/appquota/internal/layout"
	"github.com/appquota/appquota/internal/render"
	"github.com/appquota/appquota/internal/reservation"
	"github.com/appquota/appquota/internal/validation"
	"github.com/appquota/appquota/pkg/quotaconfig"
)

// TestMergeChangesMatchesFullMerge drives a long-lived Renderer, as the
// controller does (the previous document is the one it stored), through random
// edits: overrides raised, made invalid and valid again, expiring, moved to a
// missing profile, AppQuotas created (some claiming a taken appID) and deleted,
// deleted and claimed again from their namespace or another (reservations),
// status-only updates, profile edits, and time passing. After every step its
// result must equal a new Renderer's full merge of the same objects with the
// previous document passed in. Both ways of merging must have been used.
func TestMergeChangesMatchesFullMerge(t *testing.T) {
	profiles, _ := benchObjects(t, 0)
	groups := profiles[0].Spec.EndpointGroups
	rng := rand.New(rand.NewPCG(7, 11))
	now := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	created := now.Add(-time.Hour)
	serial := 0
	newAppIn := func(ns, appID string) *quotav1.AppQuota {
		serial++
		created = created.Add(time.Second)
		if ns == "" {
			ns = "t"
			if serial%5 == 0 {
				ns = "u" // a namespace whose grant changes
			}
		}
		return &quotav1.AppQuota{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: fmt.Sprint("a", serial), UID: types.UID(fmt.Sprint("uid-", serial)),
				Generation: 1, CreationTimestamp: metav1.NewTime(created)},
			Spec: quotav1.AppQuotaSpec{AppID: appID, Overrides: []quotav1.Override{{
				Group:  groups[serial%len(groups)].Name,
				Limits: []quotav1.OverrideLimit{{Unit: quotav1.UnitRequests, Window: quotav1.WindowHour, Max: int64(1000 + serial)}},
			}}},
		}
	}
	newApp := func(appID string) *quotav1.AppQuota { return newAppIn("", appID) }
	// Namespaces t and v may claim anything, u some prefixes, which change.
	grantsOfU := []string{"app-1*,new-*", "pair-*,again-*,bad-*,app-2*"}
	claims := func(v int) *render.Claims {
		return &render.Claims{Version: fmt.Sprint(v), Grants: map[string]*validation.Grant{
			"t": {Namespace: "t", Annotated: true, Entries: []string{"*"}},
			"v": {Namespace: "v", Annotated: true, Entries: []string{"*"}},
			"u": {Namespace: "u", Annotated: true, Entries: strings.Split(grantsOfU[v%2], ",")},
		}}
	}
	grantVersion := 0
	var apps []*quotav1.AppQuota
	for i := range 60 {
		apps = append(apps, newApp(fmt.Sprint("app-", i)))
	}
	// edit replaces an AppQuota with a changed copy at the next generation, as
	// the informer's store does.
	edit := func(i int, change func(a *quotav1.AppQuota)) {
		a := apps[i].DeepCopy()
		a.Generation++
		change(a)
		apps[i] = a
	}
	ops := []func(){
		func() { // raise a limit
			edit(rng.IntN(len(apps)), func(a *quotav1.AppQuota) { a.Spec.Overrides[0].Limits[0].Max += 7 })
		},
		func() { // break an override, or mend it
			edit(rng.IntN(len(apps)), func(a *quotav1.AppQuota) {
				if a.Spec.Overrides[0].Group == "no-such-group" {
					a.Spec.Overrides[0].Group = groups[0].Name
				} else {
					a.Spec.Overrides[0].Group = "no-such-group"
				}
			})
		},
		func() { // an expiry soon, or none
			edit(rng.IntN(len(apps)), func(a *quotav1.AppQuota) {
				if a.Spec.Overrides[0].ExpiresAt != nil {
					a.Spec.Overrides[0].ExpiresAt = nil
					return
				}
				a.Spec.Overrides[0].ExpiresAt = &metav1.Time{Time: now.Add(time.Duration(rng.IntN(30)) * time.Minute)}
			})
		},
		func() { // a profile that does not exist, or back to the default
			edit(rng.IntN(len(apps)), func(a *quotav1.AppQuota) {
				if a.Spec.Profile == "" {
					a.Spec.Profile = "missing"
				} else {
					a.Spec.Profile = ""
				}
			})
		},
		func() { apps = append(apps, newApp(fmt.Sprint("new-", serial))) },
		func() { apps = append(apps, newApp(apps[rng.IntN(len(apps))].Spec.AppID)) }, // a taken appID
		func() { // a new AppQuota invalid from the start: it owns its appID without an entry
			a := newApp(fmt.Sprint("bad-", serial))
			a.Spec.Overrides[0].Group = "no-such-group"
			apps = append(apps, a)
		},
		func() { // a claim on the appID of the latest AppQuota that was never valid
			for _, a := range slices.Backward(apps) {
				if strings.HasPrefix(a.Spec.AppID, "bad-") {
					apps = append(apps, newApp(a.Spec.AppID))
					return
				}
			}
		},
		func() { // two new AppQuotas for one new appID at once
			id := fmt.Sprint("pair-", serial)
			apps = append(apps, newApp(id), newApp(id))
		},
		func() { // deleted
			i := rng.IntN(len(apps))
			apps = append(apps[:i], apps[i+1:]...)
		},
		func() { // being deleted
			i := rng.IntN(len(apps))
			a := apps[i].DeepCopy()
			a.DeletionTimestamp = &metav1.Time{Time: now}
			apps[i] = a
		},
		func() { // deleted and created again under the same name
			i := rng.IntN(len(apps))
			a := apps[i].DeepCopy()
			serial++
			a.UID, a.Generation, a.Spec.AppID = types.UID(fmt.Sprint("uid-", serial)), 1, fmt.Sprint("again-", serial)
			apps[i] = a
		},
		func() { // deleted, and its appID claimed from another namespace, at once or later
			i := rng.IntN(len(apps))
			id := apps[i].Spec.AppID
			apps = append(apps[:i], apps[i+1:]...)
			apps = append(apps, newAppIn("v", id))
		},
		func() { // deleted, and claimed again under another name in its namespace
			i := rng.IntN(len(apps))
			id, ns := apps[i].Spec.AppID, apps[i].Namespace
			apps = append(apps[:i], apps[i+1:]...)
			apps = append(apps, newAppIn(ns, id))
		},
		func() { // a status write: a new object, same generation
			i := rng.IntN(len(apps))
			apps[i] = apps[i].DeepCopy()
		},
		func() { profiles[0].Generation++ },
		func() { now = now.Add(time.Duration(rng.IntN(10)) * time.Minute) },
		func() { grantVersion++ },
	}
	// Most steps change an AppQuota or two, as in production.
	weights := []int{30, 8, 8, 4, 8, 4, 3, 2, 2, 4, 2, 1, 2, 2, 10, 1, 6, 2}
	total := 0
	for _, w := range weights {
		total += w
	}

	// "looked up" finds what changed by looking every AppQuota up; "told" is
	// told, as the controller tells it, by the names whose object is not the
	// one it was at the last merge (an informer's events).
	lookedUp, told := &mergerUnderTest{name: "looked up"}, &mergerUnderTest{name: "told"}
	reserved, heldClaims := 0, 0
	var previous *quotaconfig.Document
	// held are the reservations the last full merge returned: the
	// controller passes the last result's on (grace 20 minutes, about as
	// long as a few steps' time passing).
	var held reservation.Set
	reservations := func() *render.Reservations { return &render.Reservations{Held: held, Grace: 20 * time.Minute} }
	last := map[types.NamespacedName]*quotav1.AppQuota{}
	for step := range 400 {
		for range 1 + rng.IntN(2) {
			n := rng.IntN(total)
			for op, w := range weights {
				if n < w {
					ops[op]()
					break
				}
				n -= w
			}
		}
		want, err := new(render.Merger).Merge(render.Input{DefaultProfile: "default", Profiles: profiles, AppQuotas: apps, Previous: previous, Now: now,
			Claims: claims(grantVersion), Reservations: reservations()})
		if err != nil {
			t.Fatal(err)
		}
		current := map[types.NamespacedName]*quotav1.AppQuota{}
		for _, a := range apps {
			current[types.NamespacedName{Namespace: a.Namespace, Name: a.Name}] = a
		}
		names := changedNames(last, current)
		last = current
		changes := &render.Changes{
			Names: names,
			Get: func(name types.NamespacedName) (*quotav1.AppQuota, bool) {
				a, ok := current[name]
				return a, ok
			},
			All: func() []*quotav1.AppQuota { return apps },
		}
		for _, c := range []struct {
			m  *mergerUnderTest
			in render.Input
		}{
			{lookedUp, render.Input{AppQuotas: apps}},
			{told, render.Input{Changes: changes}},
		} {
			in := c.in
			in.DefaultProfile, in.Profiles, in.PreviousIsLast, in.Now, in.Claims = "default", profiles, step > 0, now, claims(grantVersion)
			in.Reservations = reservations()
			c.m.merge(t, step, in, want)
		}
		previous, held = want.Document, want.Reservations
		reserved += len(held)
		for _, o := range want.Apps {
			if o.Reason == quotav1.ReasonAppIDReserved {
				heldClaims++
			}
		}
	}
	// The reservations must have been exercised, not merely passed along.
	if reserved == 0 || heldClaims == 0 {
		t.Errorf("%d reservations and %d held claims over all steps: want some of each", reserved, heldClaims)
	}
	for _, m := range []*mergerUnderTest{lookedUp, told} {
		fast := render.FastMerges(&m.r)
		t.Logf("changes %s: %d of 400 merges updated the last result", m.name, fast)
		// A deletion of an app with an entry, and a reservation's end, are
		// full merges: with those, a good share rather than most.
		if fast < 120 || fast == 400 {
			t.Errorf("changes %s: %d of 400 merges updated the last result: want a good share, not all", m.name, fast)
		}
	}
}

// changedNames are the AppQuotas whose object in current is not the one in
// last, or that are gone: what an informer's events tell the controller.
func changedNames(last, current map[types.NamespacedName]*quotav1.AppQuota) []types.NamespacedName {
	var names []types.NamespacedName
	for name, a := range current {
		if last[name] != a {
			names = append(names, name)
		}
	}
	for name := range last {
		if current[name] == nil {
			names = append(names, name)
		}
	}
	return names
}

// mergerUnderTest is a long-lived Merger of TestMergeChangesMatchesFullMerge
// and what is kept from its results, as the controller keeps it.
type mergerUnderTest struct {
	// name says how the Merger learns what changed.
	name string
	r    render.Merger
	// mirror is a copy of the Merger's outcomes kept as the status controller
	// keeps its own: updated from Changed after an incremental merge, copied
	// anew after any other. It must always equal the result's Apps.
	mirror map[string]*render.Outcome
	// doc is the Merger's document as its Changes tell it (applied to a
	// copy), and writer a Writer fed those Changes: both must always match
	// the result.
	doc    map[string]quotaconfig.App
	writer layout.Writer
}

// merge merges in, checks the result against what was kept from the last
// one and against want, a full merge of the same objects, and keeps it.
func (m *mergerUnderTest) merge(t *testing.T, step int, in render.Input, want *render.Result) {
	t.Helper()
	fastBefore := render.FastMerges(&m.r)
	got, err := m.r.Merge(in)
	if err != nil {
		t.Fatal(err)
	}
	if fast := render.FastMerges(&m.r) > fastBefore; got.Incremental != fast {
		t.Fatalf("step %d, changes %s: Incremental %t, but the merge updated the last result: %t", step, m.name, got.Incremental, fast)
	}
	m.checkChanged(t, step, got)
	m.checkChange(t, step, got)
	m.checkWriter(t, step, got)
	checkFullMerge(t, fmt.Sprintf("step %d, changes %s", step, m.name), got, want)
	got.Document = nil // as the controller drops it once stored
}

// checkChanged applies the result's Changed to the mirror of the outcomes.
func (m *mergerUnderTest) checkChanged(t *testing.T, step int, got *render.Result) {
	t.Helper()
	if got.Incremental {
		if !slices.IsSorted(got.Changed) || len(slices.Compact(slices.Clone(got.Changed))) != len(got.Changed) {
			t.Fatalf("step %d, changes %s: Changed %v names a key twice", step, m.name, got.Changed)
		}
		for _, k := range got.Changed {
			if o, ok := got.Apps[k]; ok {
				m.mirror[k] = o
			} else {
				delete(m.mirror, k)
			}
		}
	} else {
		m.mirror = maps.Clone(got.Apps)
	}
	if !maps.Equal(m.mirror, got.Apps) {
		t.Fatalf("step %d, changes %s: the last outcomes updated with Changed %v differ from the result's", step, m.name, got.Changed)
	}
}

// checkChange applies the result's Change to the copy of the document.
func (m *mergerUnderTest) checkChange(t *testing.T, step int, got *render.Result) {
	t.Helper()
	if ch := got.Change; m.doc == nil || !ch.Follows(ch.Seq-1) {
		m.doc = maps.Clone(got.Document.Apps)
	} else {
		if !slices.IsSorted(ch.Apps) || len(slices.Compact(slices.Clone(ch.Apps))) != len(ch.Apps) {
			t.Fatalf("step %d, changes %s: Change.Apps %v not sorted once each", step, m.name, ch.Apps)
		}
		for _, id := range ch.Apps {
			if a, ok := got.Document.Apps[id]; ok {
				m.doc[id] = a
			} else {
				delete(m.doc, id)
			}
		}
	}
	if !reflect.DeepEqual(m.doc, got.Document.Apps) {
		t.Fatalf("step %d, changes %s: the last document updated with Change.Apps %v differs from the result's", step, m.name, got.Change.Apps)
	}
}

// checkWriter feeds the result's Change to the Writer, which must store
// what a fresh Writer stores for the whole document.
func (m *mergerUnderTest) checkWriter(t *testing.T, step int, got *render.Result) {
	t.Helper()
	st, err := m.writer.Write(got.Change, 4<<20, shardName)
	if err != nil {
		t.Fatal(err)
	}
	fresh, err := new(layout.Writer).Write(delta.Whole(got.Document), 4<<20, shardName)
	if err != nil {
		t.Fatal(err)
	}
	if st.Hash != fresh.Hash {
		t.Fatalf("step %d, changes %s: a Writer fed the Changes stored %s, a fresh one %s", step, m.name, st.Hash, fresh.Hash)
	}
}

// checkFullMerge compares a merge's result with want, a full merge's.
func checkFullMerge(t *testing.T, where string, got, want *render.Result) {
	t.Helper()
	if !reflect.DeepEqual(got.Document, want.Document) {
		t.Fatalf("%s: document differs from a full merge's:\n got %+v\nwant %+v", where, got.Document.Apps, want.Document.Apps)
	}
	if len(got.Apps) != len(want.Apps) {
		t.Fatalf("%s: %d outcomes, a full merge has %d", where, len(got.Apps), len(want.Apps))
	}
	for k, w := range want.Apps {
		if g := got.Apps[k]; g == nil || !g.Equal(w) {
			t.Fatalf("%s: %s outcome %+v, a full merge's %+v", where, k, g, w)
		}
	}
	if !reflect.DeepEqual(got.Profiles, want.Profiles) || !reflect.DeepEqual(got.NextExpiry, want.NextExpiry) {
		t.Fatalf("%s: profiles %v next expiry %v, a full merge's %v %v", where, got.Profiles, got.NextExpiry, want.Profiles, want.NextExpiry)
	}
	if !got.Reservations.Equal(want.Reservations) || (got.Reservations == nil) != (want.Reservations == nil) ||
		!reflect.DeepEqual(got.ReservedUntil, want.ReservedUntil) {
		t.Fatalf("%s: reservations %v until %v, a full merge's %v until %v", where, got.Reservations, got.ReservedUntil, want.Reservations, want.ReservedUntil)
	}
}

// TestMergeChangesClaimOnEntrylessOwner: an AppQuota invalid from its creation
// owns its appID without a document entry; a newer claim on that appID must be
// refused although it arrives when the owner has left no trace in the document.
func TestMergeChangesClaimOnEntrylessOwner(t *testing.T) {
	profiles, apps := benchObjects(t, 3)
	for i := range apps {
		apps[i].CreationTimestamp = metav1.NewTime(time.Date(2026, 1, 1, 0, 0, i, 0, time.UTC))
	}
	ptrs := render.Pointers(apps)
	now := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	var r render.Merger
	step := func(published bool) *render.Result {
		t.Helper()
		res, err := r.Merge(render.Input{DefaultProfile: "default", Profiles: profiles, AppQuotas: ptrs, PreviousIsLast: published, Now: now})
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	step(false)
	bad := apps[0].DeepCopy()
	bad.Name, bad.UID, bad.Spec.AppID = "bad", "uid-bad", "shared"
	bad.CreationTimestamp = metav1.NewTime(now)
	bad.Spec.Overrides[0].Group = "no-such-group"
	ptrs = append(ptrs, bad)
	step(true)
	late := apps[1].DeepCopy()
	late.Name, late.UID, late.Spec.AppID = "late", "uid-late", "shared"
	late.CreationTimestamp = metav1.NewTime(now.Add(time.Second))
	ptrs = append(ptrs, late)
	res := step(true)
	// The invalid AppQuota's arrival is a merge of changes; the claim on its
	// appID needs all claims, so a full merge.
	if fast := render.FastMerges(&r); fast != 1 {
		t.Errorf("%d merges of changes, want 1", fast)
	}
	if o := res.Apps[late.Key()]; o.Valid || o.Reason != quotav1.ReasonDuplicateAppID {
		t.Errorf("the later claim: %+v, want DuplicateAppID", o)
	}
	if e, ok := res.Document.Apps["shared"]; ok {
		t.Errorf("appID shared has entry %+v, want none (its owner is invalid)", e)
	}
}
