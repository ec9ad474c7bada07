package operatortest_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/appquota/appquota/internal/localcluster"
	"github.com/appquota/appquota/internal/operatortest"
)

// script writes a shell script that stands in for the manager binary; it
// ignores the flags StartManager passes.
func script(t *testing.T, body string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "manager")
	if err := os.WriteFile(path, []byte("#!/bin/sh\n"+body+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	return path
}

// noCluster is enough of a Cluster for ManagerFlags; these tests start no
// control plane.
func noCluster() *localcluster.Cluster {
	return &localcluster.Cluster{Env: &envtest.Environment{}}
}

// TestWaitUntilReportsTheManagersExit: a manager that dies at start (a port
// taken, say) ends the wait at once, with its exit status and its last words,
// rather than after the timeout with only what the caller's poll saw.
func TestWaitUntilReportsTheManagersExit(t *testing.T) {
	bin := script(t, `for i in $(seq 1 2000); do echo "line $i of noise"; done
echo 'setup "msg"="unable to start manager" "error"="listen tcp 127.0.0.1:9443: bind: address already in use"' >&2
exit 1`)
	p, err := operatortest.StartManager(noCluster(), bin, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	polls := 0
	start := time.Now()
	err = p.WaitUntil(context.Background(), "the webhook must answer", 10*time.Millisecond, time.Minute, func(context.Context) (bool, error) {
		polls++
		return false, nil
	})
	if err == nil {
		t.Fatal("WaitUntil succeeded on a manager that exited")
	}
	if waited := time.Since(start); waited > 30*time.Second {
		t.Errorf("WaitUntil waited %v, as if it had not noticed the exit", waited)
	}
	for _, want := range []string{"the webhook must answer", "exit status 1", "bind: address already in use"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("the error lacks %q:\n%v", want, err)
		}
	}
	if strings.Contains(err.Error(), "line 1 of noise") {
		t.Errorf("the error carries the whole log, not its end:\n%.300s", err)
	}
	if polls == 0 {
		t.Error("ready was never polled")
	}
}

// TestWaitUntilAndStop: a manager that keeps running is waited for until
// ready says so, and Stop ends it with SIGTERM without calling that an error.
func TestWaitUntilAndStop(t *testing.T) {
	p, err := operatortest.StartManager(noCluster(), script(t, "echo started; exec sleep 600"), []string{"X=1"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	polls := 0
	if err := p.WaitUntil(context.Background(), "ready", time.Millisecond, time.Minute, func(context.Context) (bool, error) {
		polls++
		return polls == 3, nil
	}); err != nil {
		t.Fatal(err)
	}
	if polls != 3 {
		t.Errorf("ready polled %d times, want 3", polls)
	}
	if err := p.Stop(); err != nil {
		t.Errorf("Stop: %v", err)
	}
	if err := p.Stop(); err != nil {
		t.Errorf("a second Stop: %v", err)
	}
}

// TestStartUntilReady: a manager that exits at start on an address taken
// meanwhile is started again, up to three starts; one that exits for another
// reason is not.
func TestStartUntilReady(t *testing.T) {
	taken := script(t, `echo 'setup "error"="listen tcp 127.0.0.1:8443: bind: address already in use"' >&2; exit 1`)
	serves := script(t, "exec sleep 600")
	other := script(t, `echo 'setup "error"="no kubeconfig"' >&2; exit 1`)
	for _, tc := range []struct {
		name      string
		bins      []string // what each start runs
		starts    int
		retried   int
		wantError string
	}{
		{"serves at once", []string{serves}, 1, 0, ""},
		{"taken twice, then serves", []string{taken, taken, serves}, 3, 2, ""},
		{"taken three times", []string{taken, taken, taken, serves}, 3, 2, "address already in use"},
		{"exits for another reason", []string{other, serves}, 1, 0, "no kubeconfig"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			starts, serving := 0, false
			p, retried, err := operatortest.StartUntilReady(context.Background(), func() (*operatortest.Process, error) {
				bin := tc.bins[starts]
				starts++
				serving = bin == serves
				return operatortest.StartManager(noCluster(), bin, nil, nil)
			}, "ready", time.Minute, func(context.Context) (bool, error) { return serving, nil })
			if starts != tc.starts || len(retried) != tc.retried {
				t.Errorf("%d starts, %d retried (%q); want %d and %d", starts, len(retried), retried, tc.starts, tc.retried)
			}
			for _, line := range retried {
				if !strings.Contains(line, "127.0.0.1:8443: bind: address already in use") {
					t.Errorf("retried for %q, not the line that names the address", line)
				}
			}
			if tc.wantError == "" {
				if err != nil {
					t.Fatal(err)
				}
				if err := p.Stop(); err != nil {
					t.Errorf("Stop: %v", err)
				}
				return
			}
			if p != nil || err == nil || !strings.Contains(err.Error(), tc.wantError) {
				t.Errorf("got %v, %v; want no manager and an error with %q", p, err, tc.wantError)
			}
		})
	}
}
