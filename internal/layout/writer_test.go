package layout_test

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/appquota/appquota/internal/delta"
	"github.com/appquota/appquota/internal/layout"
	"github.com/appquota/appquota/pkg/quotaconfig"
)

func shardName(i int) string { return fmt.Sprintf("limits-shard-%d", i) }

// storeDoc is a document with n apps, each with one override.
func storeDoc(n int) *quotaconfig.Document {
	d := &quotaconfig.Document{
		Version: quotaconfig.FormatVersion, DefaultProfile: "default",
		Profiles: map[string]quotaconfig.Profile{"default": {
			Fallback: []quotaconfig.Limit{{Unit: "Requests", Window: "Second", Scope: "App", Max: 100}},
			Groups: []quotaconfig.Group{{Name: "send", Routes: []quotaconfig.Route{{Method: "POST", Path: "/send"}},
				Limits: []quotaconfig.Limit{{Unit: "Requests", Window: "Second", Scope: "App", Max: 100}}}},
		}},
		Apps: map[string]quotaconfig.App{},
	}
	for i := range n {
		setApp(d, i, int64(1000+i))
	}
	return d
}

func setApp(d *quotaconfig.Document, i int, max int64) {
	exp := time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC).Add(time.Duration(i) * time.Hour)
	d.Apps[fmt.Sprintf("app-%06d", i)] = quotaconfig.App{Profile: "default", Source: fmt.Sprintf("tenants/a%d", i), Overrides: []quotaconfig.Override{{
		Group: "send", Limits: []quotaconfig.Limit{{Unit: "Requests", Window: "Second", Scope: "App", Max: max}}, ExpiresAt: &exp, Reason: "SALES-1",
	}}}
}

// reference stores d the slow, obvious way: json.Marshal, CompressDocument,
// Split; and the compressed bytes decompress to json.Marshal's.
func reference(t *testing.T, d *quotaconfig.Document, st *layout.Stored) {
	t.Helper()
	whole, err := json.Marshal(d)
	if err != nil {
		t.Fatal(err)
	}
	switch st.Layout {
	case layout.Plain:
		if !bytes.Equal(st.Data, whole) || st.Key != quotaconfig.DataKey || st.Hash != quotaconfig.Hash(whole) {
			t.Fatal("plain: not json.Marshal's bytes")
		}
	case layout.Compressed:
		gz, err := layout.CompressDocument(d)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(st.Data, gz) || st.Key != quotaconfig.GzipDataKey || st.Hash != quotaconfig.Hash(whole) {
			t.Fatal("compressed: not CompressDocument's bytes")
		}
		if plain, err := quotaconfig.Decompress(st.Data); err != nil || !bytes.Equal(plain, whole) {
			t.Fatalf("compressed: does not decompress to json.Marshal's bytes (%v)", err)
		}
		if st.PlainBytes != len(whole) || st.StoredBytes != len(st.Data) {
			t.Fatalf("compressed: PlainBytes %d, StoredBytes %d for %d and %d", st.PlainBytes, st.StoredBytes, len(whole), len(st.Data))
		}
	case layout.Sharded:
		index, shards, err := layout.Split(d, len(st.Shards), shardName)
		if err != nil {
			t.Fatal(err)
		}
		stored := st.Data
		if st.Key == quotaconfig.GzipDataKey {
			if stored, err = quotaconfig.Decompress(st.Data); err != nil {
				t.Fatal(err)
			}
		}
		if !bytes.Equal(stored, index) || st.Hash != quotaconfig.Hash(index) {
			t.Fatalf("sharded: index differs from Split's:\n%s\n%s", st.Data, index)
		}
		for i, s := range st.Shards {
			if !bytes.Equal(s.Data, shards[i]) {
				t.Fatalf("sharded: shard %d differs from Split's", i)
			}
			plain, err := quotaconfig.Decompress(s.Data)
			if err != nil || quotaconfig.Hash(plain) != s.Ref.Hash {
				t.Fatalf("sharded: shard %d does not decompress to its hash (%v)", i, err)
			}
		}
	}
}

func TestStoreChoosesLayoutBySize(t *testing.T) {
	d := storeDoc(2000) // about 420 KB plain, 30 KB compressed
	whole, _ := json.Marshal(d)
	cases := []struct {
		budget int
		want   layout.Layout
		shards int
	}{
		{budget: len(whole), want: layout.Plain},
		{budget: len(whole) - 1, want: layout.Compressed},
		{budget: 20 << 10, want: layout.Sharded, shards: 2},
		{budget: 8 << 10, want: layout.Sharded, shards: 4},
		{budget: 100, want: layout.Plain, shards: -1}, // too large even in 64 shards
	}
	for _, tc := range cases {
		t.Run(fmt.Sprint(tc.budget), func(t *testing.T) {
			st, err := new(layout.Writer).Write(delta.Whole(d), tc.budget, shardName)
			if err != nil {
				t.Fatal(err)
			}
			if tc.shards < 0 {
				if !st.TooLarge {
					t.Fatalf("want TooLarge, got %v", st.Layout)
				}
				return
			}
			if st.TooLarge || st.Layout != tc.want || (tc.want == layout.Sharded && len(st.Shards) < tc.shards) {
				t.Fatalf("got %v with %d shards (too large: %v), want %v with at least %d", st.Layout, len(st.Shards), st.TooLarge, tc.want, tc.shards)
			}
			if st.StoredBytes > tc.budget {
				t.Errorf("an object of %d bytes, over the %d budget", st.StoredBytes, tc.budget)
			}
			reference(t, d, st)
		})
	}
}

// TestStoreShardAboveBounds: with ShardAbove, the plain layout holds while
// the document is at most PlainFactor times it, the compressed whole while
// that is at most ShardAbove, and the configuration is sharded beyond, each
// bound exact to the byte.
func TestStoreShardAboveBounds(t *testing.T) {
	d := storeDoc(2000)
	whole, _ := json.Marshal(d)
	gz, err := layout.CompressDocument(d)
	if err != nil {
		t.Fatal(err)
	}
	plainAt := (len(whole) + layout.PlainFactor - 1) / layout.PlainFactor // the least ShardAbove that keeps it plain
	if plainAt-1 < len(gz) {
		t.Fatalf("the document compresses to %d bytes, too little for the cases below (plain bound %d)", len(gz), plainAt)
	}
	cases := []struct {
		above int
		want  layout.Layout
	}{
		{above: plainAt, want: layout.Plain},
		{above: plainAt - 1, want: layout.Compressed},
		{above: len(gz), want: layout.Compressed},
		{above: len(gz) - 1, want: layout.Sharded},
	}
	for _, tc := range cases {
		t.Run(fmt.Sprint(tc.above), func(t *testing.T) {
			st, err := (&layout.Writer{ShardAbove: tc.above}).Write(delta.Whole(d), 900<<10, shardName)
			if err != nil {
				t.Fatal(err)
			}
			if st.TooLarge || st.Layout != tc.want {
				t.Fatalf("%d bytes plain, %d compressed: got %v (too large: %v), want %v", len(whole), len(gz), st.Layout, st.TooLarge, tc.want)
			}
			reference(t, d, st)
		})
	}
}

// A long-lived Writer, fed a changing document, must store exactly what a
// fresh one stores: the memory of unchanged apps and shards never goes stale.
func TestStoreIncrementalMatchesFresh(t *testing.T) {
	rng, members := rand.New(rand.NewPCG(1, 2)), rand.New(rand.NewPCG(3, 4))
	compared := 0 // steps where both chose the same layout, compared byte for byte
	d := storeDoc(3000)
	r, f := new(layout.Writer), new(feed)
	budget := 16 << 10
	prevShards := 0
	for step := range 60 {
		if step%3 == 0 {
			// Apps that start a gzip member come or go (from their own random
			// numbers, to leave the sequence below as it was).
			starts, _ := boundaryApps(members.IntN(20000), 3)
			for _, i := range starts {
				if _, ok := d.Apps[appID(i)]; ok {
					delete(d.Apps, appID(i))
				} else {
					setApp(d, i, members.Int64N(1e6))
				}
			}
		}
		switch rng.IntN(6) {
		case 0: // add many: the shard count grows
			for range 400 {
				setApp(d, 3000+rng.IntN(20000), rng.Int64N(1e6))
			}
		case 1: // delete many: it may shrink
			n := 0
			for id := range d.Apps {
				if n++; n > 600 {
					break
				}
				delete(d.Apps, id)
			}
		case 2: // the profile changes: in the index only
			p := d.Profiles["default"]
			p.Fallback = []quotaconfig.Limit{{Unit: "Requests", Window: "Second", Scope: "App", Max: rng.Int64N(1000) + 1}}
			d.Profiles["default"] = p
		case 3: // a budget change moves between layouts
			budget = []int{8 << 10, 16 << 10, 64 << 10, 1 << 20, 4 << 20}[rng.IntN(5)]
		default: // one app changes
			for id, a := range d.Apps {
				a.Overrides = []quotaconfig.Override{{Group: "send", Limits: []quotaconfig.Limit{{Unit: "Messages", Window: "Minute", Scope: "App", Max: rng.Int64N(1e6)}}}}
				d.Apps[id] = a
				break
			}
		}
		got, err := r.Write(f.change(d), budget, shardName)
		if err != nil {
			t.Fatal(err)
		}
		want, err := new(layout.Writer).Write(delta.Whole(d), budget, shardName)
		if err != nil {
			t.Fatal(err)
		}
		if got.TooLarge {
			t.Fatalf("step %d: too large at budget %d", step, budget)
		}
		reference(t, d, got)
		if got.Layout == want.Layout && len(got.Shards) == len(want.Shards) {
			if !sameBytes(got, want) {
				t.Fatalf("step %d: %v with %d shards, not a fresh Writer's bytes", step, got.Layout, len(got.Shards))
			}
			compared++
		}
		if (got.Layout == layout.Plain) != (want.Layout == layout.Plain) {
			// Between compressed and sharded the choice depends on the compression
			// ratio seen before and on hysteresis; plain is for exactly what fits.
			t.Fatalf("step %d: %v, a fresh Writer chose %v", step, got.Layout, want.Layout)
		}
		if whole, _ := json.Marshal(d); (len(whole) <= budget) != (got.Layout == layout.Plain) {
			t.Fatalf("step %d: %v for a %d-byte document and a %d budget", step, got.Layout, len(whole), budget)
		}
		if got.Layout == layout.Sharded && prevShards > 0 && len(got.Shards) < prevShards/4 {
			t.Errorf("step %d: shards went from %d to %d in one step", step, prevShards, len(got.Shards))
		}
		prevShards = len(got.Shards)
	}
	if compared < 30 {
		t.Errorf("only %d of 60 steps laid out as a fresh Writer does, to compare bytes", compared)
	}
	t.Logf("%d of 60 steps compared byte for byte with a fresh Writer", compared)
}

// gzipMembers splits gzip data into its members.
func gzipMembers(t *testing.T, data []byte) [][]byte {
	t.Helper()
	var out [][]byte
	r := bytes.NewReader(data) // an io.ByteReader: gzip reads no further than a member
	for r.Len() > 0 {
		start := len(data) - r.Len()
		zr, err := gzip.NewReader(r)
		if err != nil {
			t.Fatal(err)
		}
		zr.Multistream(false)
		if _, err := io.Copy(io.Discard, zr); err != nil {
			t.Fatal(err)
		}
		out = append(out, data[start:len(data)-r.Len()])
	}
	return out
}

// appID is storeDoc's ID of app i.
func appID(i int) string { return fmt.Sprintf("app-%06d", i) }

// boundaryApps returns count apps from i on (in storeDoc's numbering) that
// start a gzip member, and count that do not.
func boundaryApps(from, count int) (starts, not []int) {
	for i := from; len(starts) < count || len(not) < count; i++ {
		if layout.StartsMember(appID(i)) {
			if len(starts) < count {
				starts = append(starts, i)
			}
		} else if len(not) < count {
			not = append(not, i)
		}
	}
	return starts, not
}

// TestStoreRecompressesOnlyChangedMembers: a change recompresses the members
// holding what changed and no other; every other member's bytes are kept; and
// a long-lived Writer's bytes are a fresh one's.
func TestStoreRecompressesOnlyChangedMembers(t *testing.T) {
	for _, tc := range []struct {
		name   string
		budget int
		layout layout.Layout
	}{
		{"compressed", 400 << 10, layout.Compressed}, // about 630 KB plain, 40 KB compressed
		{"sharded", 12 << 10, layout.Sharded},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := storeDoc(3000)
			starts, not := boundaryApps(100, 4) // among the apps
			newStarts, newNot := boundaryApps(3000, 2)
			r, f := new(layout.Writer), new(feed)
			prev, err := r.Write(f.change(d), tc.budget, shardName)
			if err != nil {
				t.Fatal(err)
			}
			steps := []struct {
				name string
				edit func()
				// want is how many members are compressed again.
				want int64
			}{
				{"nothing", func() {}, 0},
				{"an app changes", func() { setApp(d, not[0], 7) }, 1},
				{"an app that starts a member changes", func() { setApp(d, starts[0], 7) }, 1},
				{"an app is added", func() { setApp(d, newNot[0], 7) }, 1},
				{"an app that starts a member is added: its run is cut in two", func() { setApp(d, newStarts[0], 7) }, 2},
				{"an app is removed", func() { delete(d.Apps, appID(not[1])) }, 1},
				{"an app that starts a member is removed: two runs become one", func() { delete(d.Apps, appID(starts[1])) }, 1},
				{"the first app is removed", func() { delete(d.Apps, appID(0)) }, 1},
				{"an app that starts a member comes back", func() { setApp(d, starts[1], 9) }, 2},
				{"two apps in two members change", func() { setApp(d, starts[2], 1); setApp(d, starts[3], 1) }, 2},
			}
			if tc.layout == layout.Compressed {
				first, _ := boundaryApps(1, 1) // the first member's apps are 1 to first-1 now
				type step = struct {
					name string
					edit func()
					want int64
				}
				steps = append(steps,
					step{"the profiles change: the head only", func() {
						p := d.Profiles["default"]
						p.Fallback = []quotaconfig.Limit{{Unit: "Requests", Window: "Second", Scope: "App", Max: 5}}
						d.Profiles["default"] = p
					}, 1},
					step{"the first member's apps go: the second becomes the first, without its leading comma", func() {
						for i := 1; i < first[0]; i++ {
							delete(d.Apps, appID(i))
						}
					}, 1},
					step{"an app comes before the first, which starts a member: it gets its leading comma", func() { setApp(d, 1, 3) }, 2},
				)
			}
			for _, step := range steps {
				step.edit()
				before := layout.MembersCompressed()
				st, err := r.Write(f.change(d), tc.budget, shardName)
				if err != nil {
					t.Fatal(err)
				}
				if st.Layout != tc.layout || len(st.Shards) != len(prev.Shards) {
					t.Fatalf("%s: %v with %d shards, want %v with %d", step.name, st.Layout, len(st.Shards), tc.layout, len(prev.Shards))
				}
				if got := layout.MembersCompressed() - before; got != step.want {
					t.Errorf("%s: %d members compressed, want %d", step.name, got, step.want)
				}
				reference(t, d, st)
				// Every member of the new bytes but those compressed again is one of
				// the old bytes.
				objects := func(st *layout.Stored) [][]byte {
					if st.Layout == layout.Compressed {
						return [][]byte{st.Data}
					}
					var out [][]byte
					for _, s := range st.Shards {
						out = append(out, s.Data)
					}
					return out
				}
				old := map[string]bool{}
				for _, o := range objects(prev) {
					for _, m := range gzipMembers(t, o) {
						old[string(m)] = true
					}
				}
				fresh, total := 0, 0
				for _, o := range objects(st) {
					ms := gzipMembers(t, o)
					if tc.layout == layout.Compressed && len(ms) < 10 {
						t.Fatalf("%s: %d members for 3000 apps", step.name, len(ms))
					}
					for _, m := range ms {
						total++
						if !old[string(m)] {
							fresh++
						}
					}
				}
				if int64(fresh) > step.want {
					t.Errorf("%s: %d of %d members differ from the last bytes, want at most %d", step.name, fresh, total, step.want)
				}
				want, err := new(layout.Writer).Write(delta.Whole(d), tc.budget, shardName)
				if err != nil {
					t.Fatal(err)
				}
				if !sameBytes(st, want) {
					t.Fatalf("%s: the bytes differ from a fresh Writer's", step.name)
				}
				prev = st
			}
		})
	}
}

// sameBytes reports whether two stored documents are the same objects, byte
// for byte.
func sameBytes(a, b *layout.Stored) bool {
	if a.Layout != b.Layout || a.Hash != b.Hash || a.Key != b.Key || !bytes.Equal(a.Data, b.Data) ||
		len(a.Shards) != len(b.Shards) || a.PlainBytes != b.PlainBytes || a.StoredBytes != b.StoredBytes {
		return false
	}
	for i := range a.Shards {
		if a.Shards[i].Ref != b.Shards[i].Ref || !bytes.Equal(a.Shards[i].Data, b.Shards[i].Data) {
			return false
		}
	}
	return true
}

// assemble reads st back as a gateway would, through LoadConfigMaps.
func assemble(t *testing.T, st *layout.Stored) *quotaconfig.Document {
	t.Helper()
	cms := map[string]map[string][]byte{"limits": {st.Key: st.Data, quotaconfig.HashKey: []byte(st.Hash)}}
	for _, s := range st.Shards {
		cms[s.Ref.ConfigMap] = map[string][]byte{s.Ref.Key: s.Data}
	}
	d, err := quotaconfig.LoadConfigMaps("limits", func(name string) (map[string]string, map[string][]byte, error) {
		cm, ok := cms[name]
		if !ok {
			return nil, nil, fmt.Errorf("no ConfigMap %s", name)
		}
		data, binary := map[string]string{}, map[string][]byte{}
		for k, v := range cm {
			if strings.HasSuffix(k, ".gz") {
				binary[k] = v
			} else {
				data[k] = string(v)
			}
		}
		return data, binary, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// TestStoreRecentRidesInIndex: with ShardAbove, a configuration whose
// compressed whole is over it is sharded even within the budget; a change
// then rewrites only the index, which carries the changed and removed apps,
// within RecentFactor times ShardAbove; past that, or after Compact, they are
// folded into their shards, and the bytes are Split's. At every step a reader
// assembles exactly the document stored.
func TestStoreRecentRidesInIndex(t *testing.T) {
	// The index carries up to RecentFactor times 512 bytes (8 KiB) of apps.
	const budget, above = 64 << 10, 512
	d := storeDoc(3000) // about 630 KB plain, 40 KB compressed
	r, f := &layout.Writer{ShardAbove: above}, new(feed)
	prev, err := r.Write(f.change(d), budget, shardName)
	if err != nil {
		t.Fatal(err)
	}
	if prev.Layout != layout.Sharded || prev.Recent != 0 || prev.Key != quotaconfig.GzipDataKey {
		t.Fatalf("got %v (%d shards, %d recent, key %s), want sharded with a compressed index and nothing recent", prev.Layout, len(prev.Shards), prev.Recent, prev.Key)
	}
	reference(t, d, prev)
	rng := rand.New(rand.NewPCG(3, 4))
	folds, carried := 0, 0
	for step := range 400 {
		compact := step%199 == 198
		switch k := rng.IntN(10); {
		case k < 6:
			setApp(d, rng.IntN(4000), int64(rng.IntN(1000))) // changed, or added
		case k < 9:
			delete(d.Apps, appID(rng.IntN(4000)))
		default:
			setApp(d, rng.IntN(4000), 5)
			delete(d.Apps, appID(rng.IntN(4000)))
		}
		if compact {
			r.Compact()
		}
		st, err := r.Write(f.change(d), budget, shardName)
		if err != nil {
			t.Fatal(err)
		}
		if st.Layout != layout.Sharded || len(st.Shards) != len(prev.Shards) {
			t.Fatalf("step %d: %v with %d shards, want sharded with %d", step, st.Layout, len(st.Shards), len(prev.Shards))
		}
		if got := assemble(t, st); !equalDocs(got, d) {
			t.Fatalf("step %d: the stored configuration does not assemble to the document (%d apps, want %d)", step, len(got.Apps), len(d.Apps))
		}
		rewritten := 0
		for i := range st.Shards {
			if !bytes.Equal(st.Shards[i].Data, prev.Shards[i].Data) {
				rewritten++
			}
		}
		if st.Recent > 0 {
			carried++
			if rewritten > 0 || compact {
				t.Fatalf("step %d: %d shards rewritten while the index carries %d apps (compact %v)", step, rewritten, st.Recent, compact)
			}
			idx := index(t, st)
			size := 0
			for id, a := range idx.Apps {
				b, _ := json.Marshal(map[string]quotaconfig.App{id: a})
				size += len(b) - 1
			}
			if size > layout.RecentFactor*above {
				t.Fatalf("step %d: the index carries %d bytes of apps, over %d", step, size, layout.RecentFactor*above)
			}
		} else if rewritten > 0 {
			folds++
			reference(t, d, st) // folded: every app in its shard, Split's bytes
		}
		prev = st
	}
	// Both paths ran: changes carried by the index, and folds by size and by Compact.
	if carried < 300 || folds < 6 {
		t.Fatalf("%d steps carried in the index, %d folds", carried, folds)
	}
}

func index(t *testing.T, st *layout.Stored) *quotaconfig.Document {
	t.Helper()
	raw, err := quotaconfig.Decompress(st.Data)
	if err != nil {
		t.Fatal(err)
	}
	var d quotaconfig.Document
	if err := json.Unmarshal(raw, &d); err != nil {
		t.Fatal(err)
	}
	// The index, written piece by piece, is the Document's JSON exactly, and
	// its hash is the one stored.
	if canonical, _ := json.Marshal(&d); !bytes.Equal(raw, canonical) {
		t.Fatalf("the index is not json.Marshal's encoding of itself:\n%.300s\nwant\n%.300s", raw, canonical)
	}
	if h := quotaconfig.Hash(raw); h != st.Hash {
		t.Fatalf("the index hashes to %s, stored as %s", h, st.Hash)
	}
	return &d
}

func equalDocs(a, b *quotaconfig.Document) bool {
	x, err1 := json.Marshal(a)
	y, err2 := json.Marshal(b)
	return err1 == nil && err2 == nil && bytes.Equal(x, y)
}

// feed hands a Writer successive states of one document as a merger would:
// each a Change that lists the apps whose entry differs from the last state
// fed, so that the Writer takes its incremental path.
type feed struct {
	seq     uint64
	apps    map[string][]byte
	profile []byte
}

func (f *feed) change(d *quotaconfig.Document) delta.Change {
	ch := delta.Change{Document: d, Seq: f.seq + 1, Base: f.seq}
	if f.seq == 0 {
		ch.Base = 0
	}
	f.seq++
	apps := make(map[string][]byte, len(d.Apps))
	for id, a := range d.Apps {
		b, _ := json.Marshal(&a)
		apps[id] = b
		if !bytes.Equal(f.apps[id], b) {
			ch.Apps = append(ch.Apps, id)
		}
	}
	for id := range f.apps {
		if _, ok := apps[id]; !ok {
			ch.Apps = append(ch.Apps, id)
		}
	}
	slices.Sort(ch.Apps)
	head, _ := json.Marshal(&quotaconfig.Document{Version: d.Version, DefaultProfile: d.DefaultProfile, Profiles: d.Profiles})
	ch.Profiles = !bytes.Equal(head, f.profile)
	f.apps, f.profile = apps, head
	return ch
}

// TestStoreSlots: Writer.Slot places each shard in one of the two slots of
// its position, under that slot's ConfigMap and key, and the stored set reads
// back whole; keys are unique over both slots, so one volume mounts them all.
func TestStoreSlots(t *testing.T) {
	d := storeDoc(2000)
	w := &layout.Writer{Slot: func(i, n int, hash string) int {
		if !strings.HasPrefix(hash, "sha256:") || n < 2 {
			t.Fatalf("Slot(%d, %d, %q)", i, n, hash)
		}
		return i % 2
	}}
	st, err := w.Write(delta.Whole(d), 8<<10, shardName)
	if err != nil || st.Layout != layout.Sharded {
		t.Fatalf("%v, %v", st, err)
	}
	n := len(st.Shards)
	byKey := map[string][]byte{}
	for i, s := range st.Shards {
		wantCM, wantKey := shardName(i), layout.ShardKey(i, n)
		if i%2 == 1 {
			wantCM, wantKey = shardName(i+quotaconfig.MaxShards), strings.TrimSuffix(wantKey, ".json.gz")+".b.json.gz"
		}
		if s.Ref.ConfigMap != wantCM || s.Ref.Key != wantKey || layout.SlotKey(i, n, i%2) != wantKey {
			t.Errorf("shard %d stored in %s under %s, want %s under %s", i, s.Ref.ConfigMap, s.Ref.Key, wantCM, wantKey)
		}
		byKey[s.Ref.Key] = s.Data
	}
	for i := range n {
		if layout.SlotKey(i, n, 0) == layout.SlotKey(i, n, 1) {
			t.Errorf("shard %d: both slots under key %s", i, layout.SlotKey(i, n, 0))
		}
	}
	raw := st.Data
	if st.Key == quotaconfig.GzipDataKey {
		if raw, err = quotaconfig.Decompress(st.Data); err != nil {
			t.Fatal(err)
		}
	}
	index, err := quotaconfig.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	got, err := quotaconfig.Assemble(index, func(ref quotaconfig.ShardRef) ([]byte, error) { return byKey[ref.Key], nil })
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Apps) != len(d.Apps) {
		t.Errorf("read back %d apps, stored %d", len(got.Apps), len(d.Apps))
	}
}
