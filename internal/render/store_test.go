package render_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/appquota/appquota/internal/render"
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
func reference(t *testing.T, d *quotaconfig.Document, st *render.Stored) {
	t.Helper()
	whole, err := json.Marshal(d)
	if err != nil {
		t.Fatal(err)
	}
	switch st.Layout {
	case render.Plain:
		if !bytes.Equal(st.Data, whole) || st.Key != quotaconfig.DataKey || st.Hash != quotaconfig.Hash(whole) {
			t.Fatal("plain: not json.Marshal's bytes")
		}
	case render.Compressed:
		gz, err := quotaconfig.CompressDocument(d)
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
	case render.Sharded:
		index, shards, err := quotaconfig.Split(d, len(st.Shards), shardName)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(st.Data, index) || st.Hash != quotaconfig.Hash(index) {
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
		want   render.Layout
		shards int
	}{
		{budget: len(whole), want: render.Plain},
		{budget: len(whole) - 1, want: render.Compressed},
		{budget: 20 << 10, want: render.Sharded, shards: 2},
		{budget: 8 << 10, want: render.Sharded, shards: 4},
		{budget: 100, want: render.Plain, shards: -1}, // too large even in 64 shards
	}
	for _, tc := range cases {
		t.Run(fmt.Sprint(tc.budget), func(t *testing.T) {
			st, err := new(render.Renderer).Store(d, tc.budget, shardName)
			if err != nil {
				t.Fatal(err)
			}
			if tc.shards < 0 {
				if !st.TooLarge {
					t.Fatalf("want TooLarge, got %v", st.Layout)
				}
				return
			}
			if st.TooLarge || st.Layout != tc.want || (tc.want == render.Sharded && len(st.Shards) < tc.shards) {
				t.Fatalf("got %v with %d shards (too large: %v), want %v with at least %d", st.Layout, len(st.Shards), st.TooLarge, tc.want, tc.shards)
			}
			if st.StoredBytes > tc.budget {
				t.Errorf("an object of %d bytes, over the %d budget", st.StoredBytes, tc.budget)
			}
			reference(t, d, st)
		})
	}
}

// A long-lived Renderer, fed a changing document, must store exactly what a
// fresh one stores: the memory of unchanged apps and shards never goes stale.
func TestStoreIncrementalMatchesFresh(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	d := storeDoc(3000)
	r := new(render.Renderer)
	budget := 16 << 10
	prevShards := 0
	for step := range 60 {
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
		got, err := r.Store(d, budget, shardName)
		if err != nil {
			t.Fatal(err)
		}
		want, err := new(render.Renderer).Store(d, budget, shardName)
		if err != nil {
			t.Fatal(err)
		}
		if got.TooLarge {
			t.Fatalf("step %d: too large at budget %d", step, budget)
		}
		reference(t, d, got)
		if (got.Layout == render.Plain) != (want.Layout == render.Plain) {
			// Between compressed and sharded the choice depends on the compression
			// ratio seen before and on hysteresis; plain is for exactly what fits.
			t.Fatalf("step %d: %v, a fresh Renderer chose %v", step, got.Layout, want.Layout)
		}
		if whole, _ := json.Marshal(d); (len(whole) <= budget) != (got.Layout == render.Plain) {
			t.Fatalf("step %d: %v for a %d-byte document and a %d budget", step, got.Layout, len(whole), budget)
		}
		if got.Layout == render.Sharded && prevShards > 0 && len(got.Shards) < prevShards/4 {
			t.Errorf("step %d: shards went from %d to %d in one step", step, prevShards, len(got.Shards))
		}
		prevShards = len(got.Shards)
	}
}
