package localcluster

import (
	"context"
	"strings"
	"testing"
	"time"

	clientgoscheme "k8s.io/client-go/kubernetes/scheme"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
)

// TestWaitForOpenAPI: the wait passes on the CRDs Start installed, and on a kind
// the API server never publishes it gives up with an error naming that kind and
// the group-version document it looked in.
func TestWaitForOpenAPI(t *testing.T) {
	cluster, err := Start(Options{SkipWebhooks: true, Scheme: clientgoscheme.Scheme})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cluster.Stop() })
	ctx := context.Background()
	if err := waitForOpenAPI(ctx, cluster.Config, cluster.Env.CRDs); err != nil {
		t.Fatalf("the installed CRDs: %v", err)
	}

	crd := func(group, kind string) *apiextensionsv1.CustomResourceDefinition {
		return &apiextensionsv1.CustomResourceDefinition{Spec: apiextensionsv1.CustomResourceDefinitionSpec{
			Group:    group,
			Names:    apiextensionsv1.CustomResourceDefinitionNames{Kind: kind},
			Versions: []apiextensionsv1.CustomResourceDefinitionVersion{{Name: "v1alpha1", Served: true}, {Name: "v0", Served: false}},
		}}
	}
	for _, tc := range []struct {
		name string
		crd  *apiextensionsv1.CustomResourceDefinition
		want string
	}{
		{"kind missing from a published group", crd("quota.appquota.io", "Nothing"), "quota.appquota.io/v1alpha1, Kind=Nothing"},
		{"group never published", crd("absent.example.com", "Thing"), "[Thing] (no apis/absent.example.com/v1alpha1)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			short, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
			defer cancel()
			err := waitForOpenAPI(short, cluster.Config, append(cluster.Env.CRDs, tc.crd))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error naming %q", err, tc.want)
			}
			if strings.Contains(err.Error(), "v0") || strings.Contains(err.Error(), "AppQuota") {
				t.Errorf("the error names what is present or not served: %v", err)
			}
		})
	}
}
