package render_test

import (
	"fmt"
	"path/filepath"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	quotav1 "github.com/appquota/appquota/api/v1alpha1"
	"github.com/appquota/appquota/internal/layout"
	"github.com/appquota/appquota/internal/render"
)

// benchObjects is the default catalog and n apps with one override each, as
// the API server would return them (UIDs and generations set).
func benchObjects(b testing.TB, n int) ([]quotav1.QuotaProfile, []quotav1.AppQuota) {
	samples, _ := filepath.Glob("../../config/catalog/default.yaml")
	profiles, _ := loadObjects(b, samples...)
	for i := range profiles {
		profiles[i].UID, profiles[i].Generation = types.UID(fmt.Sprint("profile-", i)), 1
	}
	apps := make([]quotav1.AppQuota, n)
	for i := range apps {
		apps[i] = quotav1.AppQuota{
			ObjectMeta: metav1.ObjectMeta{Namespace: "bench", Name: fmt.Sprint(i), UID: types.UID(fmt.Sprint("app-", i)), Generation: 1},
			Spec: quotav1.AppQuotaSpec{AppID: fmt.Sprintf("app-%d", i), Overrides: []quotav1.Override{{
				Group:  profiles[0].Spec.EndpointGroups[i%len(profiles[0].Spec.EndpointGroups)].Name,
				Limits: []quotav1.OverrideLimit{{Unit: quotav1.UnitRequests, Window: quotav1.WindowHour, Max: int64(1000 + i)}},
			}}},
		}
	}
	return profiles, apps
}

// BenchmarkRender10k renders the default catalog with 10,000 apps with one
// override each from scratch: what the CLI does, and the controller's first
// render.
func BenchmarkRender10k(b *testing.B) {
	profiles, apps := benchObjects(b, 10000)
	now := time.Now()
	b.ResetTimer()
	for b.Loop() {
		if _, err := render.Render(render.Input{DefaultProfile: "default", Profiles: profiles, AppQuotas: render.Pointers(apps), Now: now}); err != nil {
			b.Fatal(err)
		}
	}
}

// foldEvery is how many changes BenchmarkOneChange makes between two folds
// of the index. The manager folds after --compact-after without a write
// (after every change in a quiet cluster) or past RecentFactor times
// ShardAbove (over a thousand apps changed, in a busy one); eight is between.
const foldEvery = 8

// BenchmarkOneChange is the controller's work per change: one app's override
// changes, and a long-lived Renderer, told which, merges and stores, with the
// 900 KiB budget and ShardAbove as the manager's default (16 KiB: sharded at
// 10,000 and 100,000 apps, a change rewrites the index) or off (0: compressed
// at 10,000, sharded at 100,000, a change rewrites its object).
func BenchmarkOneChange(b *testing.B) {
	for _, n := range []int{10000, 100000} {
		for _, above := range []int{16 << 10, 0} {
			b.Run(fmt.Sprintf("%d/shard-above-%dKiB", n, above>>10), func(b *testing.B) {
				profiles, apps := benchObjects(b, n)
				now := time.Now()
				var r render.Merger
				w := layout.Writer{ShardAbove: above}
				ptrs := render.Pointers(apps)
				byName := make(map[types.NamespacedName]*quotav1.AppQuota, n)
				for _, a := range ptrs {
					byName[types.NamespacedName{Namespace: a.Namespace, Name: a.Name}] = a
				}
				get := func(name types.NamespacedName) (*quotav1.AppQuota, bool) {
					a, ok := byName[name]
					return a, ok
				}
				step := func(i int) *layout.Stored {
					a := &apps[i%n]
					a.Generation++
					a.Spec.Overrides[0].Limits[0].Max++
					// As the controller does while the ConfigMaps hold what it
					// stored: told which AppQuota changed.
					changes := &render.Changes{
						Names: []types.NamespacedName{{Namespace: a.Namespace, Name: a.Name}},
						Get:   get,
						All:   func() []*quotav1.AppQuota { return ptrs },
					}
					res, err := r.Merge(render.Input{DefaultProfile: "default", Profiles: profiles, Changes: changes, Now: now, PreviousIsLast: true})
					if err != nil {
						b.Fatal(err)
					}
					st, err := w.Write(res.Change, 900<<10, shardName)
					if err != nil || st.TooLarge {
						b.Fatal(err, st.TooLarge)
					}
					return st
				}
				st := step(0)
				b.ReportMetric(float64(len(st.Shards)), "shards")
				i := 0
				for k := 1; b.Loop(); k++ {
					// The manager folds the apps the index carries into their
					// shards once the configuration stays unwritten for
					// --compact-after; the benchmark folds every foldEvery
					// changes, fold included in the time, so that what a
					// change costs does not depend on how many it has run.
					if k%foldEvery == 0 {
						w.Compact()
					}
					i += 7919
					step(i)
				}
			})
		}
	}
}

func shardName(i int) string { return fmt.Sprintf("limits-shard-%d", i) }
