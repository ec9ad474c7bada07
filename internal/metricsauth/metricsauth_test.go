package metricsauth_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr"
	authnv1 "k8s.io/api/authentication/v1"
	authzv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/yaml"

	"github.com/appquota/appquota/internal/localcluster"
	"github.com/appquota/appquota/internal/metricsauth"
)

var cluster *localcluster.Cluster

func TestMain(m *testing.M) {
	os.Exit(localcluster.RunTests(m, localcluster.Options{SkipWebhooks: true}, nil, func(c *localcluster.Cluster) error {
		cluster = c
		return nil
	}))
}

const ns = "metrics-test"

// countingTransport counts the requests that reach the API server.
type countingTransport struct {
	next http.RoundTripper
	n    atomic.Int64
}

func (t *countingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	t.n.Add(1)
	return t.next.RoundTrip(r)
}

// TestFilter serves a handler behind the filter, the filter speaking to the
// API server as a service account bound to config/rbac's metrics-auth-role,
// and scrapes it with the tokens of a service account bound to config/rbac's
// metrics-reader and of one bound to nothing.
func TestFilter(t *testing.T) {
	ctx := context.Background()
	cs := kubernetes.NewForConfigOrDie(cluster.Config)
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	manager := serviceAccountWithRole(t, cs, "manager", "metrics_auth_role.yaml")
	scraper := serviceAccountWithRole(t, cs, "scraper", "metrics_reader_role.yaml")
	stranger := serviceAccountWithRole(t, cs, "stranger", "")
	// The API server's RBAC authorizer learns of bindings from a watch: wait
	// until it answers with them, or the filter would remember a denial.
	waitAllowed(t, cs, "manager", authzv1.SubjectAccessReviewSpec{ResourceAttributes: &authzv1.ResourceAttributes{
		Group: authnv1.GroupName, Resource: "tokenreviews", Verb: "create"}})
	waitAllowed(t, cs, "manager", authzv1.SubjectAccessReviewSpec{ResourceAttributes: &authzv1.ResourceAttributes{
		Group: authzv1.GroupName, Resource: "subjectaccessreviews", Verb: "create"}})
	waitAllowed(t, cs, "scraper", authzv1.SubjectAccessReviewSpec{NonResourceAttributes: &authzv1.NonResourceAttributes{
		Path: "/metrics", Verb: "get"}})

	cfg := rest.AnonymousClientConfig(cluster.Config)
	cfg.BearerToken = manager
	httpClient, err := rest.HTTPClientFor(cfg)
	if err != nil {
		t.Fatal(err)
	}
	counter := &countingTransport{next: httpClient.Transport}
	httpClient.Transport = counter
	filter, err := metricsauth.Filter(cfg, httpClient)
	if err != nil {
		t.Fatal(err)
	}
	h, err := filter(logr.Discard(), http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte("metrics"))
	}))
	if err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name, method, path, auth string
		code                     int
		reviews                  int64 // requests the filter sends the API server
	}{
		{name: "no credentials", method: "GET", path: "/metrics", code: http.StatusUnauthorized},
		{name: "basic auth", method: "GET", path: "/metrics", auth: "Basic " + scraper, code: http.StatusUnauthorized},
		{name: "a token the API server refuses", method: "GET", path: "/metrics", auth: "Bearer not-a-token", code: http.StatusUnauthorized, reviews: 1},
		{name: "the refused token again: remembered", method: "GET", path: "/metrics", auth: "Bearer not-a-token", code: http.StatusUnauthorized},
		{name: "authenticated, not allowed", method: "GET", path: "/metrics", auth: "Bearer " + stranger, code: http.StatusForbidden, reviews: 2},
		{name: "allowed", method: "GET", path: "/metrics", auth: "Bearer " + scraper, code: http.StatusOK, reviews: 2},
		{name: "allowed again: both answers remembered", method: "GET", path: "/metrics", auth: "bearer  " + scraper, code: http.StatusOK},
		{name: "a verb the role does not grant", method: "POST", path: "/metrics", auth: "Bearer " + scraper, code: http.StatusForbidden, reviews: 1},
		{name: "a path the role does not grant", method: "GET", path: "/debug/pprof/", auth: "Bearer " + scraper, code: http.StatusForbidden, reviews: 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := counter.n.Load()
			req := httptest.NewRequest(tc.method, tc.path, nil)
			if tc.auth != "" {
				req.Header.Set("Authorization", tc.auth)
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Code != tc.code {
				t.Errorf("status %d (%s), want %d", rec.Code, strings.TrimSpace(rec.Body.String()), tc.code)
			}
			if tc.code == http.StatusOK && rec.Body.String() != "metrics" {
				t.Errorf("body %q, want the handler's", rec.Body.String())
			}
			if got := counter.n.Load() - before; got != tc.reviews {
				t.Errorf("%d requests to the API server, want %d", got, tc.reviews)
			}
		})
	}
}

// TestFilterAPIServerUnreachable answers 500, not 200, when the API server
// cannot be asked, and does not remember the failure.
func TestFilterAPIServerUnreachable(t *testing.T) {
	cfg := rest.AnonymousClientConfig(cluster.Config)
	cfg.Host = "https://127.0.0.1:1"
	httpClient, err := rest.HTTPClientFor(cfg)
	if err != nil {
		t.Fatal(err)
	}
	filter, err := metricsauth.Filter(cfg, httpClient)
	if err != nil {
		t.Fatal(err)
	}
	h, err := filter(logr.Discard(), http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte("metrics"))
	}))
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		req := httptest.NewRequest("GET", "/metrics", nil)
		req.Header.Set("Authorization", "Bearer some-token")
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != http.StatusInternalServerError {
			t.Fatalf("status %d (%s), want 500", rec.Code, strings.TrimSpace(rec.Body.String()))
		}
	}
}

// waitAllowed waits until the API server allows the service account what spec
// asks.
func waitAllowed(t *testing.T, cs kubernetes.Interface, name string, spec authzv1.SubjectAccessReviewSpec) {
	t.Helper()
	spec.User = "system:serviceaccount:" + ns + ":" + name
	spec.Groups = []string{"system:serviceaccounts", "system:serviceaccounts:" + ns, "system:authenticated"}
	err := wait.PollUntilContextTimeout(context.Background(), 50*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		r, err := cs.AuthorizationV1().SubjectAccessReviews().Create(ctx, &authzv1.SubjectAccessReview{Spec: spec}, metav1.CreateOptions{})
		return err == nil && r.Status.Allowed, err
	})
	if err != nil {
		t.Fatalf("%s is not allowed %+v: %v", name, spec, err)
	}
}

// serviceAccountWithRole creates a service account, binds it to the
// ClusterRole in config/rbac/roleFile (none when empty), and returns a token
// for it.
func serviceAccountWithRole(t *testing.T, cs kubernetes.Interface, name, roleFile string) string {
	t.Helper()
	ctx := context.Background()
	if _, err := cs.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if roleFile != "" {
		root, err := localcluster.RepoRoot()
		if err != nil {
			t.Fatal(err)
		}
		raw, err := os.ReadFile(filepath.Join(root, "config", "rbac", roleFile))
		if err != nil {
			t.Fatal(err)
		}
		var role rbacv1.ClusterRole
		if err := yaml.UnmarshalStrict(raw, &role); err != nil {
			t.Fatalf("%s: %v", roleFile, err)
		}
		role.Name = ns + "-" + name
		if _, err := cs.RbacV1().ClusterRoles().Create(ctx, &role, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		if _, err := cs.RbacV1().ClusterRoleBindings().Create(ctx, &rbacv1.ClusterRoleBinding{
			ObjectMeta: metav1.ObjectMeta{Name: role.Name},
			RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: role.Name},
			Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Namespace: ns, Name: name}},
		}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	tr, err := cs.CoreV1().ServiceAccounts(ns).CreateToken(ctx, name, &authnv1.TokenRequest{}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return tr.Status.Token
}
