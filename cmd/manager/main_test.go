package main_test

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/appquota/appquota/internal/supervise"

	"github.com/appquota/appquota/internal/operatortest"

	"github.com/appquota/appquota/internal/localcluster"
)

var (
	cluster *localcluster.Cluster
	bin     string // the manager binary
)

// TestMain builds the manager before it starts the control plane: the
// manager binds the webhook port envtest picks at Start, and a build on a
// busy machine is time in which something else could take that port.
func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "appquota-manager-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := func() int {
		defer os.RemoveAll(dir)
		if bin, err = operatortest.BuildManager(context.Background(), dir); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		return operatortest.RunTests(m, localcluster.Options{}, nil, func(c *localcluster.Cluster) error {
			cluster = c
			return nil
		})
	}()
	os.Exit(code)
}

// TestMetricsEndpoint runs the manager binary with its default, authenticated
// metrics endpoint and scrapes it as Prometheus would: with the token of a
// service account bound to config/rbac's metrics-reader, with one bound to
// nothing, and with none.
func TestMetricsEndpoint(t *testing.T) {
	ctx := context.Background()
	scraper, err := cluster.ServiceAccountToken(ctx, "monitoring", "prometheus", "config/rbac/metrics_reader_role.yaml")
	if err != nil {
		t.Fatal(err)
	}
	stranger, err := cluster.ServiceAccountToken(ctx, "monitoring", "stranger")
	if err != nil {
		t.Fatal(err)
	}

	// The endpoint serves a self-signed certificate when given none.
	var addr string // where the manager serves metrics
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	scrape := func(token string) (int, string, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+addr+"/metrics", nil)
		if err != nil {
			return 0, "", err
		}
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := client.Do(req)
		if err != nil {
			return 0, "", err
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body), err
	}
	mgr, _, err := operatortest.StartUntilReady(ctx, func() (*operatortest.Process, error) {
		var err error
		if addr, err = supervise.FreeAddr(); err != nil {
			return nil, err
		}
		return operatortest.StartManager(cluster, bin, nil, nil, "--metrics-bind-address", addr, "--health-probe-bind-address", "0")
	}, "the metrics endpoint must answer", time.Minute, func(context.Context) (bool, error) {
		_, _, err := scrape("")
		return err == nil, err
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := mgr.Stop(); err != nil {
			t.Errorf("the manager ended badly: %v", err)
		}
		if t.Failed() {
			t.Logf("the end of the manager's log:\n%s", mgr.Log())
		}
	})

	for _, tc := range []struct {
		name, token string
		code        int
	}{
		{"no token", "", http.StatusUnauthorized},
		{"a token not bound to metrics-reader", stranger, http.StatusForbidden},
		{"a token bound to metrics-reader", scraper, http.StatusOK},
	} {
		code, body, err := scrape(tc.token)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if code != tc.code {
			t.Errorf("%s: status %d (%.200s), want %d", tc.name, code, strings.TrimSpace(body), tc.code)
		}
		// The webhook's metrics are registered before the manager starts.
		if code == http.StatusOK && !strings.Contains(body, `controller_runtime_webhook_requests_in_flight{webhook="/validate-quota-appquota-io-v1alpha1-appquota"}`) {
			t.Errorf("%s: the metrics lack the AppQuota webhook's:\n%s", tc.name, body)
		}
	}
}
