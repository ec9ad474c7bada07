package supervise_test

import (
	"context"
	"errors"
	"net"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/appquota/appquota/internal/supervise"
)

func sh(t *testing.T, script string, opts supervise.Options) *supervise.Process {
	t.Helper()
	p, err := supervise.Start(exec.Command("/bin/sh", "-c", script), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Kill() })
	return p
}

// TestStopKillsWhatIgnoresSIGTERM: a program that ignores SIGTERM is killed
// once the grace period has passed, and Stop says so rather than returning
// as if it had stopped.
func TestStopKillsWhatIgnoresSIGTERM(t *testing.T) {
	p := sh(t, `trap '' TERM; echo ready; while :; do sleep 0.05; done`, supervise.Options{Name: "stubborn", StopGrace: 300 * time.Millisecond})
	// The trap must be in place before the signal, or the shell just dies of it.
	if err := p.WaitUntil(context.Background(), "the trap is set", 10*time.Millisecond, time.Minute, func(context.Context) (bool, error) {
		return strings.Contains(p.Log(), "ready"), nil
	}); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	err := p.Stop()
	if err == nil || !strings.Contains(err.Error(), "stubborn was still running") {
		t.Errorf("Stop = %v, want it to say the program was killed", err)
	}
	if !p.Exited() {
		t.Error("the program is still running after Stop")
	}
	if waited := time.Since(start); waited < 300*time.Millisecond {
		t.Errorf("Stop returned after %v, before the grace period", waited)
	}
}

// TestKillAndExitErr: Kill is not an error; a program's own failure is, and
// says which program.
func TestKillAndExitErr(t *testing.T) {
	p := sh(t, "exec sleep 600", supervise.Options{Name: "sleeper"})
	if p.ExitErr() != nil || p.Exited() {
		t.Fatal("a running program reports an exit")
	}
	if err := p.Kill(); err != nil {
		t.Errorf("Kill: %v", err)
	}
	select {
	case <-p.Done():
	default:
		t.Error("Done is open after Kill returned")
	}

	failed := sh(t, "echo dying >&2; exit 3", supervise.Options{Name: "failer"})
	<-failed.Done()
	if err := failed.ExitErr(); err == nil || !strings.Contains(err.Error(), "exit status 3") {
		t.Errorf("ExitErr = %v, want exit status 3", err)
	}
	if err := failed.Stop(); err == nil || !strings.Contains(err.Error(), "failer exited: exit status 3") {
		t.Errorf("Stop of a failed program = %v, want its exit", err)
	}
	if got := failed.Log(); got != "dying\n" {
		t.Errorf("Log = %q, want stderr's %q", got, "dying\n")
	}
}

// TestLogKeepsTheTail: only the last TailBytes are kept.
func TestLogKeepsTheTail(t *testing.T) {
	p := sh(t, `for i in $(seq 1 500); do echo "line $i"; done`, supervise.Options{TailBytes: 20})
	<-p.Done()
	if got := p.Log(); len(got) != 20 || !strings.HasSuffix(got, "line 500\n") {
		t.Errorf("Log = %q, want the last 20 bytes", got)
	}
}

// TestAddressTaken: both Go's and redis-server's wording are recognised.
func TestAddressTaken(t *testing.T) {
	for log, want := range map[string]string{
		"a\nlisten tcp 127.0.0.1:8443: bind: address already in use\nb":                                                     "listen tcp 127.0.0.1:8443: bind: address already in use",
		"1:M 04 Dec # Warning: Could not create server TCP listening socket 127.0.0.1:6379: bind: Address already in use\n": "1:M 04 Dec # Warning: Could not create server TCP listening socket 127.0.0.1:6379: bind: Address already in use",
		"no kubeconfig\n": "",
	} {
		if got := supervise.AddressTaken(log); got != want {
			t.Errorf("AddressTaken(%q) = %q, want %q", log, got, want)
		}
	}
}

// TestFreeAddr: the address is on loopback and can be listened on.
func TestFreeAddr(t *testing.T) {
	addr, err := supervise.FreeAddr()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(addr, "127.0.0.1:") {
		t.Errorf("FreeAddr = %s, not on loopback", addr)
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("listen on the free address: %v", err)
	}
	_ = l.Close()
}

// TestWaitUntilKeepsTheReason: the error at the timeout carries the last
// reason ready gave, not the deadline error of the poll the timeout cut short.
func TestWaitUntilKeepsTheReason(t *testing.T) {
	p := sh(t, "exec sleep 600", supervise.Options{})
	err := p.WaitUntil(context.Background(), "configured", 10*time.Millisecond, 300*time.Millisecond, func(ctx context.Context) (bool, error) {
		select {
		case <-ctx.Done(): // the poll the timeout interrupts
			return false, ctx.Err()
		case <-time.After(50 * time.Millisecond):
			return false, errors.New("no configuration loaded")
		}
	})
	if err == nil || !strings.Contains(err.Error(), "last: no configuration loaded") {
		t.Errorf("WaitUntil = %v, want the last reason", err)
	}
}
