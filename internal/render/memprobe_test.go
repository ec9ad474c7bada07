package render_test

import (
	"encoding/json"
	"fmt"
	"runtime"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	quotav1 "github.com/appquota/appquota/api/v1alpha1"
	"github.com/appquota/appquota/internal/render"
)

func heap() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

func TestMemProbe(t *testing.T) {
	const n = 100000
	h0 := heap()
	profiles, apps0 := benchObjects(t, n)
	// as the cache holds them: decoded from JSON with status
	now := metav1.Now()
	for i := range apps0 {
		a := &apps0[i]
		a.ResourceVersion = fmt.Sprint(100000 + i)
		a.CreationTimestamp = now
		a.Spec.Overrides[0].Reason = "benchmark"
		a.Status = quotav1.AppQuotaStatus{ObservedGeneration: 1, ConfigHash: "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef", ActiveOverrides: 1,
			Conditions: []metav1.Condition{{Type: "Ready", Status: "True", Reason: "Applied", Message: "1 active overrides", ObservedGeneration: 1, LastTransitionTime: now}}}
	}
	data, _ := json.Marshal(apps0)
	apps0 = nil
	var apps []quotav1.AppQuota
	json.Unmarshal(data, &apps)
	data = nil
	h1 := heap()
	t.Logf("objects: %d MiB, %d B/app", (h1-h0)>>20, (h1-h0)/n)
	var r render.Renderer
	res, err := r.Merge(render.Input{DefaultProfile: "default", Profiles: profiles, AppQuotas: apps, Now: time.Now()})
	if err != nil {
		t.Fatal(err)
	}
	h2 := heap()
	t.Logf("merge (result+memo): %d MiB, %d B/app", (h2-h1)>>20, (h2-h1)/n)
	st, err := r.Store(res.Document, 900<<10, shardName)
	if err != nil {
		t.Fatal(err)
	}
	h3 := heap()
	t.Logf("store: %d MiB, %d B/app shards=%d", (h3-h2)>>20, (h3-h2)/n, len(st.Shards))
	res2, _ := r.Merge(render.Input{DefaultProfile: "default", Profiles: profiles, AppQuotas: apps, Now: time.Now()})
	h4 := heap()
	t.Logf("second result: %d MiB, %d B/app", (h4-h3)>>20, (h4-h3)/n)
	res = nil
	h5 := heap()
	t.Logf("after dropping first result: %d MiB total", (h5-h0)>>20)
	runtime.KeepAlive(apps)
	runtime.KeepAlive(res2)
	runtime.KeepAlive(st)
}
