package ratelimit_test

import (
	"fmt"
	"strconv"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/appquota/appquota/internal/ratelimit"
	"github.com/appquota/appquota/internal/testfixture"
	qc "github.com/appquota/appquota/pkg/quotaconfig"
)

// typicalOverrides are what sales sells most, one per app in turn.
var typicalOverrides = testfixture.TypicalOverrides()

// scaleDoc is the samples' catalog with n apps of 10-digit IDs, each with
// perApp of the typical overrides.
func scaleDoc(tb testing.TB, n, perApp int) *qc.Document {
	doc := loadDoc(tb, "samples.document.json")
	doc.Apps = make(map[string]qc.App, n)
	for i := range n {
		a := qc.App{Profile: "default", Source: "tenants/app-" + strconv.Itoa(i)}
		for j := range perApp {
			a.Overrides = append(a.Overrides, typicalOverrides[(i+j)%len(typicalOverrides)])
		}
		// Overrides are sorted by group in a document.
		for x := 1; x < len(a.Overrides); x++ {
			for y := x; y > 0 && a.Overrides[y].Group < a.Overrides[y-1].Group; y-- {
				a.Overrides[y], a.Overrides[y-1] = a.Overrides[y-1], a.Overrides[y]
			}
		}
		doc.Apps[strconv.Itoa(1_000_000_000+i)] = a
	}
	return doc
}

// maxGRPCMessage is gRPC's default limit on a received message, which
// ratelimit's xDS client keeps unless XDS_CLIENT_MAX_MSG_SIZE_IN_BYTES
// raises it.
const maxGRPCMessage = 4 << 20

// TestConfigSize pins how large the configuration grows per app, so a change
// that makes every app cost more shows here: 10,000 apps with one override
// each are under 300 KB, and 100,000 (with -short skipped) fit one gRPC
// message of the default size.
func TestConfigSize(t *testing.T) {
	sizes := []struct {
		apps, overrides, maxBytes int
	}{
		{0, 0, 40_000},
		{10_000, 1, 300_000},
		{100_000, 1, maxGRPCMessage},
	}
	for _, s := range sizes {
		if s.apps > 10_000 && testing.Short() {
			continue
		}
		cfg, err := ratelimit.Translate(scaleDoc(t, s.apps, s.overrides), ratelimit.Options{Now: goldenNow})
		if err != nil {
			t.Fatal(err)
		}
		n := proto.Size(cfg)
		t.Logf("%d apps, %d override(s) each: %d bytes", s.apps, s.overrides, n)
		if n > s.maxBytes {
			t.Errorf("%d apps with %d override(s) each: %d bytes, over %d", s.apps, s.overrides, n, s.maxBytes)
		}
	}
}

// BenchmarkTranslate reports the configuration's size in protobuf (what xDS
// sends) and in ratelimit's YAML file, at 10,000 and 100,000 apps with one and
// three overrides each.
func BenchmarkTranslate(b *testing.B) {
	for _, n := range []int{10_000, 100_000} {
		for _, per := range []int{1, 3} {
			b.Run(fmt.Sprintf("apps=%d/overrides=%d", n, per), func(b *testing.B) {
				doc := scaleDoc(b, n, per)
				opts := ratelimit.Options{Now: goldenNow}
				b.ReportAllocs()
				var size, yamlSize int
				for b.Loop() {
					cfg, err := ratelimit.Translate(doc, opts)
					if err != nil {
						b.Fatal(err)
					}
					size = proto.Size(cfg)
					y, err := ratelimit.YAML(cfg)
					if err != nil {
						b.Fatal(err)
					}
					yamlSize = len(y)
				}
				b.ReportMetric(float64(size), "proto-bytes")
				b.ReportMetric(float64(yamlSize), "yaml-bytes")
			})
		}
	}
}
