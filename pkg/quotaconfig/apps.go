package quotaconfig

import (
	"hash/maphash"
	"math"
	"slices"
)

// appTable finds an app's compiled entry by ID.
//
// It exists instead of a map[string]app because of the cache: with 100,000
// apps, most lookups miss it, and a Go map touches three cache lines per lookup
// (control word, slot, key bytes). Here a slot is one 64-byte line holding the
// ID itself and everything Resolve needs before it knows the group, so a lookup
// costs one miss (plus, with linear probing, usually a prefetched neighbour).
// The slots hold no pointers, so the garbage collector does not scan them.
type appTable struct {
	seed      maphash.Seed // random per table: request paths cannot aim at collisions
	slots     []appSlot    // open addressing, linear probing, load at most 1/2
	profiles  []*profile   // by appSlot.prof-1
	overrides []appOverride
	// long holds the apps that do not fit a slot: IDs of more than slotID bytes
	// (the CRD allows 64) or empty, more than 65,535 overrides.
	long map[string]app
}

// slotID is the longest ID a slot holds: what is left of 64 bytes.
const slotID = 46

type appSlot struct {
	groups uint64 // app.groups
	first  uint32 // the app's overrides are overrides[first : first+n]
	n      uint16
	prof   uint16 // index+1 in profiles; 0 when the app's profile is not in the document
	idLen  uint8  // 0 marks an empty slot
	tag    uint8  // hash bits, to skip most non-matching slots without comparing IDs
	id     [slotID]byte
}

func (t *appTable) get(id string) (app, bool) {
	if len(id) == 0 || len(id) > slotID {
		a, ok := t.long[id]
		return a, ok
	}
	h := maphash.String(t.seed, id)
	tag := uint8(h >> 56)
	i := t.home(h)
	for {
		s := &t.slots[i]
		if s.idLen == 0 {
			return app{}, false
		}
		if s.tag == tag && int(s.idLen) == len(id) && string(s.id[:s.idLen]) == id {
			a := app{groups: s.groups, overrides: t.overrides[s.first : s.first+uint32(s.n) : s.first+uint32(s.n)]}
			if s.prof > 0 {
				a.prof = t.profiles[s.prof-1]
			}
			return a, true
		}
		if i++; i == len(t.slots) {
			i = 0
		}
	}
}

// home maps a hash to a slot index without a division (Lemire's fast range).
func (t *appTable) home(h uint64) int {
	return int((h & math.MaxUint32) * uint64(len(t.slots)) >> 32)
}

// newAppTable compiles the apps. profiles and groups are the compiled profiles
// and, per profile, its group indices by name; apps must have been validated.
func newAppTable(apps map[string]App, profiles map[string]*profile, groups map[string]map[string]int) *appTable {
	t := &appTable{seed: maphash.MakeSeed(), long: map[string]app{}}
	profIndex := make(map[string]uint16, len(profiles))
	for name, p := range profiles {
		if len(t.profiles) == math.MaxUint16 {
			break // the apps of any further profiles go to long
		}
		t.profiles = append(t.profiles, p)
		profIndex[name] = uint16(len(t.profiles))
	}
	total := 0
	for _, a := range apps {
		if profiles[a.Profile] != nil {
			total += len(a.Overrides)
		}
	}
	// Exact capacity: appends never move the array, so slices of it stay valid.
	t.overrides = make([]appOverride, 0, total)
	t.slots = make([]appSlot, max(8, 2*len(apps)))

	for id, a := range apps {
		p := profiles[a.Profile]
		entry := app{prof: p}
		first := len(t.overrides)
		if p != nil {
			for i := range a.Overrides {
				o := &a.Overrides[i]
				g := groups[a.Profile][o.Group]
				ao := appOverride{group: g, effect: overrideEffect(&p.groups[g], o)}
				if o.ExpiresAt != nil {
					ao.expires, ao.hasExpiry = *o.ExpiresAt, true
				}
				t.overrides = append(t.overrides, ao)
				entry.groups |= 1 << (uint(g) & 63)
			}
			slices.SortFunc(t.overrides[first:], func(x, y appOverride) int { return x.group - y.group })
		}
		n := len(t.overrides) - first
		entry.overrides = t.overrides[first:len(t.overrides):len(t.overrides)]
		pi, indexed := profIndex[a.Profile]
		if len(id) == 0 || len(id) > slotID || n > math.MaxUint16 || (p != nil && !indexed) || uint64(first)+uint64(n) > math.MaxUint32 {
			t.long[id] = entry
			continue
		}
		if p == nil {
			pi = 0
		}
		h := maphash.String(t.seed, id)
		i := t.home(h)
		for t.slots[i].idLen != 0 {
			if i++; i == len(t.slots) {
				i = 0
			}
		}
		s := &t.slots[i]
		*s = appSlot{groups: entry.groups, first: uint32(first), n: uint16(n), prof: pi, idLen: uint8(len(id)), tag: uint8(h >> 56)}
		copy(s.id[:], id)
	}
	return t
}
