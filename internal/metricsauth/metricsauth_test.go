package metricsauth_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/appquota/appquota/internal/operatortest"

	"github.com/go-logr/logr"
	"k8s.io/client-go/rest"

	"github.com/appquota/appquota/internal/localcluster"
	"github.com/appquota/appquota/internal/metricsauth"
)

var cluster *localcluster.Cluster

func TestMain(m *testing.M) {
	os.Exit(operatortest.RunTests(m, localcluster.Options{SkipWebhooks: true}, nil, func(c *localcluster.Cluster) error {
		cluster = c
		return nil
	}))
}

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
	token := func(name string, roleFiles ...string) string {
		t.Helper()
		tok, err := cluster.ServiceAccountToken(ctx, "metrics-test", name, roleFiles...)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	manager := token("manager", "config/rbac/metrics_auth_role.yaml")
	scraper := token("scraper", "config/rbac/metrics_reader_role.yaml")
	stranger := token("stranger")

	cfg := rest.AnonymousClientConfig(cluster.Config)
	cfg.BearerToken = manager
	counter := &countingTransport{}
	h := guarded(t, cfg, counter)

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
	h := guarded(t, cfg, &countingTransport{})
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

// guarded is a handler answering "metrics" behind the filter, which reaches
// the API server with cfg through counter.
func guarded(t *testing.T, cfg *rest.Config, counter *countingTransport) http.Handler {
	t.Helper()
	httpClient, err := rest.HTTPClientFor(cfg)
	if err != nil {
		t.Fatal(err)
	}
	counter.next = httpClient.Transport
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
	return h
}
