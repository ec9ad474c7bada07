package layout_test

import (
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"strings"
	"testing"
	"time"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"sigs.k8s.io/yaml"

	"github.com/appquota/appquota/internal/delta"
	"github.com/appquota/appquota/internal/layout"
	"github.com/appquota/appquota/pkg/quotaconfig"
)

// TestLargestAppQuotaFits is the proof that no AppQuota is too large to be
// written, so the webhook never has to refuse one for its size: the AppQuota
// CRD bounds every list and string, so one app's entry in the document has a
// largest possible size, layout.MaxAppBytes; a shard can hold a single app, and
// the default budget is above that size. The bounds are read from the
// generated CRD, so raising one there without revisiting MaxAppBytes fails
// here.
func TestLargestAppQuotaFits(t *testing.T) {
	raw, err := os.ReadFile("../../config/crd/bases/quota.appquota.io_appquotas.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var crd apiextensionsv1.CustomResourceDefinition
	if err := yaml.Unmarshal(raw, &crd); err != nil {
		t.Fatal(err)
	}
	spec := crd.Spec.Versions[0].Schema.OpenAPIV3Schema.Properties["spec"]
	override := spec.Properties["overrides"].Items.Schema
	bound := func(what string, v *int64) int {
		if v == nil {
			t.Fatalf("%s is unbounded in the CRD", what)
		}
		return int(*v)
	}
	appIDLen := bound("spec.appID maxLength", spec.Properties["appID"].MaxLength)
	profileLen := bound("spec.profile maxLength", spec.Properties["profile"].MaxLength)
	overrides := bound("spec.overrides maxItems", spec.Properties["overrides"].MaxItems)
	groupLen := bound("overrides[].group maxLength", override.Properties["group"].MaxLength)
	limits := bound("overrides[].limits maxItems", override.Properties["limits"].MaxItems)
	reasonLen := bound("overrides[].reason maxLength", override.Properties["reason"].MaxLength)
	maxTargets := *override.Properties["perCall"].Properties["maxTargets"].Maximum

	// The worst case of each field: IDs and names are ASCII (their CEL rules),
	// so one byte a character; the reason is free text, and a character JSON
	// escapes (U+2028 here) takes six bytes, the most any character takes. The
	// source is namespace/name at their Kubernetes limits (63 and 253).
	expires := time.Date(9999, 12, 31, 23, 59, 59, 999999999, time.UTC)
	units := []string{quotaconfig.UnitMessages, quotaconfig.UnitRequests}
	windows := []string{quotaconfig.WindowSecond, quotaconfig.WindowMinute, quotaconfig.WindowHour, quotaconfig.WindowDay}
	scopes := []string{quotaconfig.ScopeUser, quotaconfig.ScopeApp}
	app := quotaconfig.App{Profile: strings.Repeat("p", profileLen), Source: strings.Repeat("n", 63) + "/" + strings.Repeat("a", 253)}
	for i := range overrides {
		o := quotaconfig.Override{
			Group:      fmt.Sprintf("%0*d", groupLen, i),
			MaxTargets: int32(maxTargets),
			ExpiresAt:  &expires,
			Reason:     strings.Repeat("\u2028", reasonLen),
		}
		for j := range limits {
			// int64's largest, more digits than the CRD's bound on max allows.
			o.Limits = append(o.Limits, quotaconfig.Limit{Unit: units[j%2], Window: windows[(j/2)%4], Scope: scopes[(j/8)%2], Max: math.MaxInt64})
		}
		app.Overrides = append(app.Overrides, o)
	}
	id := strings.Repeat("9", appIDLen)
	entry, err := json.Marshal(map[string]quotaconfig.App{id: app})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("the largest AppQuota's entry is %d bytes (bound %d)", len(entry), layout.MaxAppBytes)
	if len(entry) > layout.MaxAppBytes {
		t.Fatalf("the largest AppQuota's entry is %d bytes, over layout.MaxAppBytes (%d)", len(entry), layout.MaxAppBytes)
	}

	// gzip stores incompressible data with a few bytes per block: a shard of
	// MaxAppBytes that does not compress at all still fits in the overhead.
	random := make([]byte, layout.MaxAppBytes)
	rng := rand.New(rand.NewPCG(3, 4))
	for i := range random {
		random[i] = byte(rng.Uint32())
	}
	gz, err := layout.Compress(random)
	if err != nil {
		t.Fatal(err)
	}
	if len(gz) > layout.MaxAppBytes+layout.ShardOverheadBytes-200 { // 200: the shard's own JSON around its apps
		t.Errorf("%d incompressible bytes compress to %d, more than ShardOverheadBytes allows", len(random), len(gz))
	}

	// Alone in the document, at a budget of MaxAppBytes plus the overhead, it is
	// written, as it is at the default budget; and so it is when it arrives as
	// a change to a sharded configuration whose index carries changes
	// (ShardAbove): past the index's cap, it goes to its shard.
	for _, above := range []int{0, 16 << 10} {
		for _, budget := range []int{layout.MaxAppBytes + layout.ShardOverheadBytes, 900 << 10} {
			doc := storeDoc(0)
			doc.Apps[id] = app
			st, err := (&layout.Writer{ShardAbove: above}).Write(delta.Whole(doc), budget, shardName)
			if err != nil {
				t.Fatal(err)
			}
			if st.TooLarge || st.StoredBytes > budget {
				t.Errorf("shard above %d, budget %d: too large (%v) or an object of %d bytes", above, budget, st.TooLarge, st.StoredBytes)
			}

			doc = storeDoc(3000)
			w := &layout.Writer{ShardAbove: above}
			if _, err := w.Write(delta.Change{Document: doc, Seq: 1}, budget, shardName); err != nil {
				t.Fatal(err)
			}
			doc.Apps[id] = app
			st, err = w.Write(delta.Change{Document: doc, Seq: 2, Base: 1, Apps: []string{id}}, budget, shardName)
			if err != nil {
				t.Fatal(err)
			}
			if st.TooLarge || st.StoredBytes > budget || len(st.Data) > budget {
				t.Errorf("shard above %d, budget %d, added to 3,000 apps: too large (%v) or an object of %d bytes", above, budget, st.TooLarge, st.StoredBytes)
			}
		}
	}
}
