package ratelimit_test

import (
	"math/rand/v2"
	"slices"
	"strconv"
	"testing"
	"time"

	rlsconfv3 "github.com/envoyproxy/go-control-plane/ratelimit/config/ratelimit/v3"
	"google.golang.org/protobuf/proto"

	"github.com/appquota/appquota/internal/delta"
	"github.com/appquota/appquota/internal/ratelimit"
	qc "github.com/appquota/appquota/pkg/quotaconfig"
)

// editor makes random edits to a document, as a merger would, and lists the
// apps each edit changed.
type editor struct {
	rnd *rand.Rand
	doc *qc.Document
	now time.Time
}

// override is a random override of one of the groups of profile: a limit
// of the group raised, lowered, set to the profile's own value (which adds
// no entry), blocked or unlimited, sometimes with a limit the group lacks
// (an entry with no key-only default), sometimes expiring around now.
func (e *editor) override(profile string) qc.Override {
	p := e.doc.Profiles[profile]
	g := p.Groups[e.rnd.IntN(len(p.Groups))]
	o := qc.Override{Group: g.Name, Reason: "test"}
	for _, l := range g.Limits {
		switch e.rnd.IntN(6) {
		case 0:
			continue // this limit kept as the profile has it
		case 1:
			// the profile's own value
		case 2:
			l.Max = 0 // block
		case 3:
			l.Max, l.Unlimited = 0, true
		default:
			l.Max = 1 + e.rnd.Int64N(1000)
		}
		o.Limits = append(o.Limits, l)
	}
	if e.rnd.IntN(3) == 0 {
		// Hourly is in no profile of the test documents; App scope fits every
		// route.
		o.Limits = append(o.Limits, qc.Limit{Unit: qc.UnitRequests, Window: qc.WindowHour, Scope: qc.ScopeApp, Max: 1 + e.rnd.Int64N(10)})
	}
	if len(o.Limits) == 0 {
		o.MaxTargets = 10
	}
	if e.rnd.IntN(4) == 0 {
		at := e.now.Add(time.Duration(e.rnd.IntN(40)-10) * time.Minute)
		o.ExpiresAt = &at
	}
	return o
}

func (e *editor) app() qc.App {
	profiles := slices.Sorted(func(yield func(string) bool) {
		for name := range e.doc.Profiles {
			if !yield(name) {
				return
			}
		}
	})
	profile := profiles[e.rnd.IntN(len(profiles))]
	a := qc.App{Profile: profile, Source: "tenants/x"}
	seen := map[string]bool{}
	for range e.rnd.IntN(4) {
		o := e.override(profile)
		if seen[o.Group] {
			continue
		}
		seen[o.Group] = true
		a.Overrides = append(a.Overrides, o)
	}
	slices.SortFunc(a.Overrides, func(x, y qc.Override) int { return cmpString(x.Group, y.Group) })
	return a
}

func cmpString(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// editApps is how many app IDs the edits draw from: few enough that apps
// are changed, deleted and added again.
const editApps = 60

// edit changes, adds or removes a few apps and returns their IDs, sorted.
func (e *editor) edit() []string {
	n := 1 + e.rnd.IntN(3)
	ids := make([]string, 0, n)
	for range n {
		id := strconv.Itoa(1_000_000 + e.rnd.IntN(editApps))
		if _, ok := e.doc.Apps[id]; ok && e.rnd.IntN(4) == 0 {
			delete(e.doc.Apps, id)
		} else {
			e.doc.Apps[id] = e.app()
		}
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return slices.Compact(ids)
}

// TestTranslatorEquivalent applies random sequences of edits (changes, adds,
// deletes, blocks, unlimited, limits only an override adds, expiries passing
// as time goes on, profile changes, gaps in the sequence) and checks each
// configuration the Translator returns against Translate from scratch, and
// that no configuration it returned before was modified since.
func TestTranslatorEquivalent(t *testing.T) {
	for seed := range uint64(8) {
		t.Run("seed="+strconv.FormatUint(seed, 10), func(t *testing.T) {
			rnd := rand.New(rand.NewPCG(seed, 99))
			e := &editor{rnd: rnd, doc: loadDoc(t, "profiles.document.json"), now: goldenNow}
			for range editApps / 2 {
				e.edit()
			}
			tr := ratelimit.NewTranslator(ratelimit.Options{Domain: "d", ShadowMode: seed%4 == 3})
			opts := ratelimit.Options{Domain: "d", ShadowMode: seed%4 == 3}

			type kept struct {
				cfg   *rlsconfv3.RateLimitConfig
				bytes []byte
			}
			var earlier []kept
			seq, base := uint64(1), uint64(0)
			ch := delta.Whole(e.doc)
			ch.Seq = seq
			incremental := 0
			for step := range 300 {
				got, err := tr.Translate(ch, e.now)
				opts.Now = e.now
				want, werr := ratelimit.Translate(e.doc, opts)
				if werr != nil {
					t.Fatalf("step %d: Translate: %v", step, werr)
				}
				if err != nil {
					t.Fatalf("step %d: Translator: %v", step, err)
				}
				if !proto.Equal(got, want) {
					t.Fatalf("step %d (change %+v): the Translator's configuration differs from Translate's", step, ch.Apps)
				}
				gb, _ := proto.MarshalOptions{Deterministic: true}.Marshal(got)
				wb, _ := proto.MarshalOptions{Deterministic: true}.Marshal(want)
				if string(gb) != string(wb) {
					t.Fatalf("step %d: equal configurations marshal differently", step)
				}
				// What is served: the encoded form, byte for byte Translate's.
				enc := tr.Encoded()
				eb, err := proto.MarshalOptions{Deterministic: true}.Marshal(enc)
				if err != nil {
					t.Fatalf("step %d: marshal the encoded form: %v", step, err)
				}
				if string(eb) != string(wb) {
					t.Fatalf("step %d: the encoded form marshals to %d bytes that differ from Translate's %d", step, len(eb), len(wb))
				}
				if enc.GetName() != want.GetName() || proto.Size(enc) != len(wb) {
					t.Fatalf("step %d: the encoded form's name %q or size %d is not the configuration's", step, enc.GetName(), proto.Size(enc))
				}
				for i, k := range earlier {
					b, _ := proto.MarshalOptions{Deterministic: true}.Marshal(k.cfg)
					if string(b) != string(k.bytes) {
						t.Fatalf("step %d: the configuration returned %d steps before was modified", step, len(earlier)-i)
					}
				}
				earlier = append(earlier, kept{got, gb})
				if len(earlier) > 5 {
					earlier = earlier[1:]
				}

				// The next change.
				base, seq = seq, seq+1
				e.now = e.now.Add(time.Duration(rnd.IntN(3)) * time.Minute)
				ch = delta.Change{Document: e.doc, Seq: seq, Base: base}
				switch rnd.IntN(40) {
				case 0:
					// A profile's limit changes: a full translation.
					p := e.doc.Profiles["default"]
					p.Groups = slices.Clone(p.Groups)
					g := &p.Groups[rnd.IntN(len(p.Groups))]
					g.Limits = slices.Clone(g.Limits)
					g.Limits[0].Max = 1 + rnd.Int64N(200)
					e.doc.Profiles["default"] = p
					ch.Profiles = true
					ch.Apps = e.edit()
				case 1:
					// A gap: the Translator missed a change.
					ch.Base = base - 1
					ch.Apps = e.edit()
				case 2:
					// Nothing changed but time.
				case 3:
					// The clock went back.
					e.now = e.now.Add(-5 * time.Minute)
					ch.Apps = e.edit()
				default:
					ch.Apps = e.edit()
					incremental++
				}
			}
			if incremental < 200 {
				t.Fatalf("only %d incremental steps", incremental)
			}
		})
	}
}

// TestTranslatorErrors checks that a change the Translator cannot take fails
// as Translate fails, leaves nothing behind, and that the next valid change
// is translated right.
func TestTranslatorErrors(t *testing.T) {
	doc := loadDoc(t, "profiles.document.json")
	tr := ratelimit.NewTranslator(ratelimit.Options{})
	opts := ratelimit.Options{Now: goldenNow}
	if _, err := tr.Translate(delta.Change{Document: doc, Seq: 1, Profiles: true}, goldenNow); err != nil {
		t.Fatal(err)
	}
	bad := map[string]qc.App{
		"negative max": {Profile: "default", Overrides: []qc.Override{{Group: "chatrooms-get",
			Limits: []qc.Limit{{Unit: qc.UnitRequests, Window: qc.WindowSecond, Scope: qc.ScopeApp, Max: -1}}}}},
		"unknown group": {Profile: "default", Overrides: []qc.Override{{Group: "nope",
			Limits: []qc.Limit{{Unit: qc.UnitRequests, Window: qc.WindowSecond, Scope: qc.ScopeApp, Max: 1}}}}},
		"over uint32": {Profile: "default", Overrides: []qc.Override{{Group: "chatrooms-get",
			Limits: []qc.Limit{{Unit: qc.UnitRequests, Window: qc.WindowSecond, Scope: qc.ScopeApp, Max: 1 << 40}}}}},
	}
	seq := uint64(1)
	for _, name := range slices.Sorted(func(yield func(string) bool) {
		for k := range bad {
			if !yield(k) {
				return
			}
		}
	}) {
		t.Run(name, func(t *testing.T) {
			id := "4242"
			doc.Apps[id] = bad[name]
			seq++
			_, err := tr.Translate(delta.Change{Document: doc, Seq: seq, Base: seq - 1, Apps: []string{id}}, goldenNow)
			_, werr := ratelimit.Translate(doc, opts)
			if werr == nil {
				t.Fatalf("Translate took the app: the case tests nothing")
			}
			if err == nil || err.Error() != werr.Error() {
				t.Fatalf("Translator: %v\nTranslate:  %v", err, werr)
			}
			// Fixed in the next change, which follows the failed one.
			delete(doc.Apps, id)
			seq++
			got, err := tr.Translate(delta.Change{Document: doc, Seq: seq, Base: seq - 1, Apps: []string{id}}, goldenNow)
			if err != nil {
				t.Fatal(err)
			}
			want, err := ratelimit.Translate(doc, opts)
			if err != nil {
				t.Fatal(err)
			}
			if !proto.Equal(got, want) {
				t.Fatal("after the failure, the Translator's configuration differs from Translate's")
			}
		})
	}
}
