package render

import (
	"time"

	"k8s.io/apimachinery/pkg/types"

	quotav1 "github.com/appquota/appquota/api/v1alpha1"
	"github.com/appquota/appquota/internal/reservation"
	"github.com/appquota/appquota/pkg/quotaconfig"
)

// Reservations is what a merge knows of reserved app IDs
// (docs/decisions/2026-12-05-deleted-app-id-reservation.md). The durable
// record of who held an ID is the previous document: its entry's Source
// names the AppQuota. When that AppQuota no longer claims the ID (deleted,
// or being deleted; an invalid one keeps its last good entry and still
// claims it), the ID is reserved for its namespace until Now+Grace. While an
// ID is reserved, a claim on it from another namespace is no claim, like one
// its namespace was not granted (quotav1.ReasonAppIDReserved); the reserving
// namespace may claim it at once, and once an AppQuota of that namespace
// holds its entry, the reservation is done.
type Reservations struct {
	// Held are the reservations in force: the last merge's
	// Result.Reservations, or the set stored by whichever replica merged
	// last. Merge does not modify it.
	Held reservation.Set
	// Grace is how long an app ID stays reserved once its AppQuota is gone;
	// 0 reserves no more (Held still holds until each ends).
	Grace time.Duration
}

// active returns the reservations in force at now, a new set; nil when rs
// is nil.
func (rs *Reservations) active(now time.Time) reservation.Set {
	if rs == nil {
		return nil
	}
	return rs.Held.Active(now)
}

// release reserves in held, for grace from now, each app ID whose entry in
// the previous document came from an AppQuota that no longer claims it
// (apps are the live AppQuotas, recorded by this merge).
func (r *Merger) release(prev previousDoc, apps []entry, held reservation.Set, grace time.Duration, now time.Time) {
	// AppQuotas without a record (from files) by key; the others are found
	// by name among the records this merge saw.
	var unrecorded map[string]string
	for _, e := range apps {
		if e.c == nil {
			if unrecorded == nil {
				unrecorded = map[string]string{}
			}
			unrecorded[e.key] = e.a.Spec.AppID
		}
	}
	claims := func(key, id string) bool {
		ns, name := quotav1.SplitKey(key)
		if c := r.apps[types.NamespacedName{Namespace: ns, Name: name}]; c != nil && c.seen == r.merges {
			return c.appID == id
		}
		got, ok := unrecorded[key]
		return ok && got == id
	}
	until := reservation.Until(now, grace)
	prev.each(func(id string, a quotaconfig.App) {
		if a.Source == "" || claims(a.Source, id) {
			return
		}
		ns, _ := quotav1.SplitKey(a.Source)
		held[id] = reservation.Reservation{Namespace: ns, Until: until}
	})
}

// claimRules returns the reservations in force for a full merge of apps,
// the app IDs whose AppQuota is gone since the previous document included
// (before any claim is weighed, so that a claim made in the render that sees
// the deletion loses too), and the rule of who may claim what: a claim its
// namespace may not make, or on an ID held for another namespace (hold), is
// no claim: it neither owns the appID nor makes another claim a duplicate.
func (r *Merger) claimRules(in Input, prev previousDoc, apps []entry) (reservation.Set, func(*quotav1.AppQuota) (bool, *reservation.Reservation)) {
	held := in.Reservations.active(in.Now)
	if in.Reservations != nil && in.Reservations.Grace > 0 {
		r.release(prev, apps, held, in.Reservations.Grace, in.Now)
	}
	return held, func(a *quotav1.AppQuota) (ok bool, hold *reservation.Reservation) {
		if g := in.Claims.grant(a.Namespace); g != nil && !g.Allows(a.Spec.AppID) {
			return false, nil
		}
		if h, reserved := held.For(a.Spec.AppID, a.Namespace, in.Now); reserved {
			return false, &h
		}
		return true, nil
	}
}

// settleReservations finishes a full merge's reservations: settle, then
// each claim a reservation held (heldClaims) whose reservation its
// namespace has just re-claimed is told again by retell, as a duplicate of
// that claim, which keeps the ID from now on (see incumbents), as the next
// merge would tell it.
func settleReservations(res *Result, held reservation.Set, heldClaims []entry, retell func(entry) *Outcome) {
	settle(held, res.Document)
	for _, e := range heldClaims {
		if _, still := held[e.a.Spec.AppID]; !still {
			res.Apps[e.key] = retell(e)
		}
	}
	res.Reservations, res.ReservedUntil = held, held.Earliest()
}

// settle drops from held the reservations whose namespace holds its ID's
// entry in doc again (re-claimed: from then on the entry is the record, and
// that claim keeps the ID against older ones, see incumbents), and bounds
// what is left (reservation.Set.Bound).
func settle(held reservation.Set, doc *quotaconfig.Document) {
	for id, h := range held {
		if e, ok := doc.Apps[id]; ok {
			if ns, _ := quotav1.SplitKey(e.Source); ns == h.Namespace {
				delete(held, id)
			}
		}
	}
	held.Bound()
}

// reservationsUnchanged reports whether a merge of changes leaves the last
// merge's reservations as they are and holds no changed claim, so that it
// may pass them on: merged under the same Reservations setting, given the
// set the last merge returned, none ended since, no changed AppQuota claims
// a reserved ID (held, or re-claimed by its namespace), and no removed one
// held an entry (which would reserve it). Otherwise everything is merged.
func (r *Merger) reservationsUnchanged(in Input, changed []*quotav1.AppQuota, removed []*appCheck) bool {
	s := r.last
	if (in.Reservations == nil) != (s.reserve == nil) {
		return false
	}
	if in.Reservations == nil {
		return true
	}
	if in.Reservations.Grace != s.reserve.Grace || !in.Reservations.Held.Equal(s.res.Reservations) ||
		(s.res.ReservedUntil != nil && !in.Now.Before(*s.res.ReservedUntil)) {
		return false
	}
	for _, a := range changed {
		if _, ok := s.res.Reservations[a.Spec.AppID]; ok {
			return false
		}
	}
	if in.Reservations.Grace > 0 {
		for _, c := range removed {
			if e, ok := r.lastApp(c.appID); ok && e.Source == c.key {
				return false
			}
		}
	}
	return true
}

// each calls f with every entry of the previous document.
func (p previousDoc) each(f func(id string, a quotaconfig.App)) {
	if p.r == nil {
		if p.doc != nil {
			for id, a := range p.doc.Apps {
				f(id, a)
			}
		}
		return
	}
	r := p.r
	if r.doc == nil {
		return
	}
	for id := range r.doc.Apps {
		if a, ok := r.lastApp(id); ok {
			f(id, a)
		}
	}
	// Entries a merge of changes that gave up part way deleted.
	for id, e := range r.before {
		if _, still := r.doc.Apps[id]; e.ok && !still {
			f(id, e.app)
		}
	}
}
