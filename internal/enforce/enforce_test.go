package enforce_test

import (
	"strconv"
	"testing"
	"time"

	rlsconfv3 "github.com/envoyproxy/go-control-plane/ratelimit/config/ratelimit/v3"

	"github.com/appquota/appquota/internal/delta"
	"github.com/appquota/appquota/internal/enforce"
	"github.com/appquota/appquota/internal/ratelimit"
	"github.com/appquota/appquota/internal/xds"
	qc "github.com/appquota/appquota/pkg/quotaconfig"
)

// TestPublishServesTranslate publishes a sequence of merges (edits, a
// removal, a merge that changes nothing, an override that expires, a gap)
// and checks that each version served names the content of Translate's
// configuration of that document: the version's hash is of the bytes of the
// configuration in the snapshot, so equal versions mean equal bytes.
func TestPublishServesTranslate(t *testing.T) {
	doc := scaleDoc(t, 50)
	srv, err := xds.New(xds.Options{})
	if err != nil {
		t.Fatal(err)
	}
	e := enforce.New(srv, "appquota")
	soon := time.Now().Add(1500 * time.Millisecond)
	edit := func(i int, max int64) string {
		id := strconv.Itoa(1_000_000_000 + i)
		a := doc.Apps[id]
		a.Overrides = []qc.Override{{Group: "users-register", Limits: []qc.Limit{{Unit: "Requests", Window: "Second", Scope: "App", Max: max}}}}
		doc.Apps[id] = a
		return id
	}
	steps := []struct {
		name   string
		change func(seq uint64) delta.Change
		// sameAsBefore: nothing new is served.
		sameAsBefore bool
	}{
		{name: "first", change: func(seq uint64) delta.Change {
			return delta.Change{Document: doc, Seq: seq, Profiles: true}
		}},
		{name: "one edit", change: func(seq uint64) delta.Change {
			return delta.Change{Document: doc, Seq: seq, Base: seq - 1, Apps: []string{edit(3, 700)}}
		}},
		{name: "block and unlimited", change: func(seq uint64) delta.Change {
			a, b := edit(4, 0), edit(5, 0)
			o := doc.Apps[b]
			o.Overrides[0].Limits[0].Unlimited = true
			return delta.Change{Document: doc, Seq: seq, Base: seq - 1, Apps: []string{a, b}}
		}},
		{name: "removal", change: func(seq uint64) delta.Change {
			id := strconv.Itoa(1_000_000_000 + 7)
			delete(doc.Apps, id)
			return delta.Change{Document: doc, Seq: seq, Base: seq - 1, Apps: []string{id}}
		}},
		{name: "nothing", sameAsBefore: true, change: func(seq uint64) delta.Change {
			return delta.Change{Document: doc, Seq: seq, Base: seq - 1}
		}},
		{name: "an override that expires soon", change: func(seq uint64) delta.Change {
			id := edit(8, 900)
			doc.Apps[id].Overrides[0].ExpiresAt = &soon
			return delta.Change{Document: doc, Seq: seq, Base: seq - 1, Apps: []string{id}}
		}},
		{name: "after the expiry", change: func(seq uint64) delta.Change {
			for time.Now().Before(soon.Add(10 * time.Millisecond)) {
				time.Sleep(time.Until(soon) + 10*time.Millisecond)
			}
			return delta.Change{Document: doc, Seq: seq, Base: seq - 1, Apps: []string{edit(9, 901)}}
		}},
		{name: "after a gap", change: func(seq uint64) delta.Change {
			return delta.Change{Document: doc, Seq: seq, Base: seq - 2, Apps: []string{edit(10, 902)}}
		}},
	}
	var last string
	for i, s := range steps {
		seq := uint64(i + 1)
		if err := e.Publish(s.change(seq)); err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		published, _ := srv.Versions()
		if s.sameAsBefore {
			if published != last {
				t.Fatalf("%s: served %s, want %s still", s.name, published, last)
			}
			continue
		}
		cfg, err := ratelimit.Translate(doc, ratelimit.Options{Domain: "appquota", Now: time.Now()})
		if err != nil {
			t.Fatal(err)
		}
		want, err := xds.NewVersion(seq, []*rlsconfv3.RateLimitConfig{cfg})
		if err != nil {
			t.Fatal(err)
		}
		if published != want {
			t.Fatalf("%s: served %s, want %s (Translate's content)", s.name, published, want)
		}
		last = published
	}
}
