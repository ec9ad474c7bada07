package render_test

import (
	"fmt"
	"path/filepath"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	quotav1 "github.com/appquota/appquota/api/v1alpha1"
	"github.com/appquota/appquota/internal/render"
)

// BenchmarkRender10k renders the default catalog with 10,000 apps with one
// override each: the controller's work per change.
func BenchmarkRender10k(b *testing.B) {
	samples, _ := filepath.Glob("../../config/samples/quota_v1alpha1_quotaprofile.yaml")
	profiles, _ := loadObjects(b, samples...)
	apps := make([]quotav1.AppQuota, 10000)
	for i := range apps {
		apps[i] = quotav1.AppQuota{
			ObjectMeta: metav1.ObjectMeta{Namespace: "bench", Name: fmt.Sprint(i)},
			Spec: quotav1.AppQuotaSpec{AppID: fmt.Sprintf("app-%d", i), Overrides: []quotav1.Override{{
				Group:  profiles[0].Spec.EndpointGroups[i%len(profiles[0].Spec.EndpointGroups)].Name,
				Limits: []quotav1.OverrideLimit{{Unit: quotav1.UnitRequests, Window: quotav1.WindowHour, Max: int64(1000 + i)}},
			}}},
		}
	}
	now := time.Now()
	b.ResetTimer()
	for b.Loop() {
		if _, err := render.Render(render.Input{DefaultProfile: "default", Profiles: profiles, AppQuotas: apps, Now: now}); err != nil {
			b.Fatal(err)
		}
	}
}
