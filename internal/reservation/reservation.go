// Package reservation is the record of app IDs held for a namespace after
// its AppQuota was deleted: for a grace period, another namespace's claim on
// such an ID is no claim, so a namespace granted the same IDs (overlapping
// grants) cannot take one while its owner deletes and re-creates its
// AppQuota. The render decides reservations (internal/render), the rule a
// claim is checked with is internal/validation's Reserved, and the
// controller stores the set in one ConfigMap, which the webhook reads too.
// It imports nothing from Kubernetes.
package reservation

import (
	"cmp"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"time"
)

// Reservation holds one app ID for the namespace whose AppQuota held it.
type Reservation struct {
	// Namespace is the namespace the app ID is held for.
	Namespace string `json:"namespace"`
	// Until is when the reservation ends.
	Until time.Time `json:"until"`
}

// Set is the reservations in force, by app ID. Nil holds nothing.
type Set map[string]Reservation

// Max bounds a Set: its encoding stays under a ConfigMap's 1 MiB with the
// longest app IDs and namespaces (about 190 bytes an entry).
const Max = 4096

// For returns the reservation of appID that holds it against a claim from
// namespace ns at now: one for another namespace that has not ended.
func (s Set) For(appID, ns string, now time.Time) (Reservation, bool) {
	r, ok := s[appID]
	if !ok || r.Namespace == ns || !now.Before(r.Until) {
		return Reservation{}, false
	}
	return r, true
}

// Active returns a copy of s without the reservations ended at now (never
// nil, so that the caller may add to it).
func (s Set) Active(now time.Time) Set {
	out := make(Set, len(s))
	for id, r := range s {
		if now.Before(r.Until) {
			out[id] = r
		}
	}
	return out
}

// Equal reports whether two sets hold the same reservations.
func (s Set) Equal(o Set) bool {
	return maps.EqualFunc(s, o, func(x, y Reservation) bool { return x.Namespace == y.Namespace && x.Until.Equal(y.Until) })
}

// Earliest is the first end of a reservation in s, nil when s is empty.
func (s Set) Earliest() *time.Time {
	var first *time.Time
	for _, r := range s {
		if first == nil || r.Until.Before(*first) {
			u := r.Until
			first = &u
		}
	}
	return first
}

// Bound keeps at most Max reservations of s, in place: past it, those that
// end first are dropped (their app IDs are free early), so that a mass
// deletion holds the IDs deleted last. Ties go by app ID, so that every
// replica keeps the same ones.
func (s Set) Bound() {
	if len(s) <= Max {
		return
	}
	ids := slices.Collect(maps.Keys(s))
	slices.SortFunc(ids, func(a, b string) int {
		if c := s[a].Until.Compare(s[b].Until); c != 0 {
			return c
		}
		return cmp.Compare(a, b)
	})
	for _, id := range ids[:len(ids)-Max] {
		delete(s, id)
	}
}

// Until is the end of a reservation made at now for grace: now+grace,
// rounded up to the second, so that it reads plainly in a message and lasts
// at least the grace.
func Until(now time.Time, grace time.Duration) time.Time {
	t := now.Add(grace).UTC()
	u := t.Truncate(time.Second)
	if u.Before(t) {
		u = u.Add(time.Second)
	}
	return u
}

// The ConfigMap the controller stores the set in, in its own namespace
// beside the configuration's, and its key.
const (
	ConfigMapName = "appquota-reservations"
	DataKey       = "reservations.json"
)

// Encode is the set's stored form: JSON, keys sorted.
func Encode(s Set) (string, error) {
	if s == nil {
		s = Set{}
	}
	b, err := json.Marshal(s)
	if err != nil {
		return "", fmt.Errorf("encode app ID reservations: %w", err)
	}
	return string(b), nil
}

// Decode reads Encode's form; an empty string is an empty set.
func Decode(data string) (Set, error) {
	s := Set{}
	if data == "" {
		return s, nil
	}
	if err := json.Unmarshal([]byte(data), &s); err != nil {
		return nil, fmt.Errorf("decode app ID reservations: %w", err)
	}
	for id, r := range s {
		if id == "" || r.Namespace == "" || r.Until.IsZero() {
			return nil, fmt.Errorf("decode app ID reservations: entry %q is incomplete", id)
		}
	}
	return s, nil
}
