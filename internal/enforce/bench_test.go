package enforce_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/appquota/appquota/internal/delta"
	"github.com/appquota/appquota/internal/enforce"
	"github.com/appquota/appquota/internal/testfixture"
	"github.com/appquota/appquota/internal/xds"
	qc "github.com/appquota/appquota/pkg/quotaconfig"
)

// typicalOverrides are what sales sells most, one per app in turn, as in
// internal/ratelimit's size tests.
var typicalOverrides = testfixture.TypicalOverrides()

// catalog reads the samples' document (the default catalog and three apps).
func catalog(tb testing.TB) *qc.Document {
	tb.Helper()
	data, err := os.ReadFile(filepath.Join("..", "ratelimit", "testdata", "samples.document.json"))
	if err != nil {
		tb.Fatal(err)
	}
	d, err := qc.Parse(data)
	if err != nil {
		tb.Fatal(err)
	}
	return d
}

// scaleDoc is the catalog with n apps of 10-digit IDs, one typical override
// each.
func scaleDoc(tb testing.TB, n int) *qc.Document {
	doc := catalog(tb)
	doc.Apps = make(map[string]qc.App, n)
	for i := range n {
		o := typicalOverrides[i%len(typicalOverrides)]
		o.Limits = append([]qc.Limit(nil), o.Limits...)
		doc.Apps[strconv.Itoa(1_000_000_000+i)] = qc.App{Profile: "default", Source: "tenants/app-" + strconv.Itoa(i), Overrides: []qc.Override{o}}
	}
	return doc
}

// BenchmarkPublishOneEdit is the engine's share of one AppQuota edit: one
// app's override max changed in a document of n apps, handed to Publish as
// the merge that follows the one published before (translation, version,
// snapshot; no instance connected).
func BenchmarkPublishOneEdit(b *testing.B) {
	for _, n := range []int{10_000, 100_000} {
		b.Run(fmt.Sprintf("apps=%d", n), func(b *testing.B) {
			doc := scaleDoc(b, n)
			srv, err := xds.New(xds.Options{})
			if err != nil {
				b.Fatal(err)
			}
			e := enforce.New(srv, "appquota")
			seq := uint64(1)
			if err := e.Publish(delta.Change{Document: doc, Seq: seq, Profiles: true}); err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				id := strconv.Itoa(1_000_000_000 + (i*7919)%n)
				a := doc.Apps[id]
				a.Overrides[0].Limits[0].Max = int64(1000 + i%1000)
				seq++
				if err := e.Publish(delta.Change{Document: doc, Seq: seq, Base: seq - 1, Apps: []string{id}}); err != nil {
					b.Fatal(err)
				}
				i++
			}
		})
	}
}
