package main_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/appquota/appquota/internal/localcluster"
)

var cluster *localcluster.Cluster

func TestMain(m *testing.M) {
	os.Exit(localcluster.RunTests(m, localcluster.Options{}, nil, func(c *localcluster.Cluster) error {
		cluster = c
		return nil
	}))
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

	bin := filepath.Join(t.TempDir(), "manager")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	addr, err := localcluster.FreeAddr()
	if err != nil {
		t.Fatal(err)
	}
	mgr := exec.Command(bin, append(cluster.ManagerFlags(),
		"--metrics-bind-address", addr, "--health-probe-bind-address", "0")...)
	var logs bytes.Buffer
	mgr.Stdout, mgr.Stderr = &logs, &logs
	mgr.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := mgr.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = mgr.Process.Signal(syscall.SIGTERM)
		_ = mgr.Wait()
		if t.Failed() {
			t.Logf("the manager's log:\n%s", logs.String())
		}
	})

	// The endpoint serves a self-signed certificate when given none.
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
	// Wait for the manager to listen.
	if err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, time.Minute, true, func(context.Context) (bool, error) {
		_, _, err := scrape("")
		return err == nil, nil
	}); err != nil {
		t.Fatalf("the manager's metrics endpoint did not answer: %v", err)
	}

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
