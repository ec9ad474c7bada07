package localcluster

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"k8s.io/apimachinery/pkg/util/wait"
)

// BuildManager compiles cmd/manager into dir and returns the binary's path.
// Build it before Start: a build on a busy machine can take a minute, and
// nothing holds the webhook port envtest picks at Start (it only keeps other
// envtests off it) until the manager listens there.
func BuildManager(ctx context.Context, dir string) (string, error) {
	root, err := RepoRoot()
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "appquota-manager")
	build := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/manager")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		return "", fmt.Errorf("localcluster: build the manager: %w\n%s", err, out)
	}
	return bin, nil
}

// Process is the manager binary running as its own process against a
// Cluster. It keeps the end of its log, and notices when it exits, so that a
// caller waiting for it to serve learns why it never will.
type Process struct {
	cmd    *exec.Cmd
	tail   *tailWriter
	exited chan struct{}
	err    error // how it exited; set before exited is closed
}

// StartManager runs the manager binary bin with the flags that point it at
// this cluster (ManagerFlags) followed by args. env is added to the caller's
// environment; the manager's log goes to log (which may be nil) and its last
// lines are kept for errors. The process dies with the caller.
func (c *Cluster) StartManager(bin string, env []string, log io.Writer, args ...string) (*Process, error) {
	p := &Process{tail: &tailWriter{max: 8 << 10}, exited: make(chan struct{})}
	p.cmd = exec.Command(bin, append(c.ManagerFlags(), args...)...)
	p.cmd.Env = append(os.Environ(), env...)
	out := io.Writer(p.tail)
	if log != nil {
		out = io.MultiWriter(p.tail, log)
	}
	p.cmd.Stdout, p.cmd.Stderr = out, out
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		return nil, fmt.Errorf("localcluster: start the manager: %w", err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.exited)
	}()
	return p, nil
}

// PID is the manager's process ID.
func (p *Process) PID() int { return p.cmd.Process.Pid }

// Exited reports whether the manager has exited.
func (p *Process) Exited() bool {
	select {
	case <-p.exited:
		return true
	default:
		return false
	}
}

// Log is the end of what the manager has printed so far.
func (p *Process) Log() string { return p.tail.String() }

// WaitUntil polls ready every interval until it reports true, the manager
// exits, or timeout passes. The error names which, with the end of the
// manager's log.
func (p *Process) WaitUntil(ctx context.Context, what string, interval, timeout time.Duration, ready func(context.Context) (bool, error)) error {
	var last error
	err := wait.PollUntilContextTimeout(ctx, interval, timeout, true, func(ctx context.Context) (bool, error) {
		if p.Exited() {
			return false, fmt.Errorf("the manager exited (%v)", p.err)
		}
		ok, err := ready(ctx)
		last = err
		return ok, nil
	})
	if err == nil {
		return nil
	}
	if last != nil && wait.Interrupted(err) {
		err = fmt.Errorf("%w; last: %w", err, last)
	}
	return fmt.Errorf("localcluster: %s: %w\nthe end of the manager's log:\n%s", what, err, p.Log())
}

// StartUntilReady calls start, which starts the manager on addresses it has
// just found free, and waits (WaitUntil, polling every 100 ms) until ready
// reports it serving. A manager that exits at start because one of those
// addresses was taken meanwhile is started again by calling start anew, up
// to three starts in all: FreeAddr finds a port free but cannot hold it for
// another process, and any connection this machine opens may take it as its
// local port. Any other exit, or the timeout, is an error, and a manager
// still running then is stopped. retried is the log line that named the
// taken address, for each start that failed so.
func StartUntilReady(ctx context.Context, start func() (*Process, error), what string, timeout time.Duration, ready func(context.Context) (bool, error)) (p *Process, retried []string, err error) {
	for attempt := 1; ; attempt++ {
		if p, err = start(); err != nil {
			return nil, retried, err
		}
		err = p.WaitUntil(ctx, what, 100*time.Millisecond, timeout, ready)
		if err == nil {
			return p, retried, nil
		}
		taken := lineWith(p.Log(), "address already in use")
		if attempt == 3 || !p.Exited() || taken == "" {
			_ = p.Stop()
			return nil, retried, err
		}
		retried = append(retried, taken)
	}
}

// lineWith returns the first line of log that contains s, or "".
func lineWith(log, s string) string {
	for line := range strings.Lines(log) {
		if strings.Contains(line, s) {
			return strings.TrimSpace(line)
		}
	}
	return ""
}

// Stop ends the manager with SIGTERM, as the kubelet would, and waits for it.
// It returns how the process ended unless that was the SIGTERM.
func (p *Process) Stop() error {
	if p.Exited() {
		return p.exitErr()
	}
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return err
	}
	<-p.exited
	return p.exitErr()
}

func (p *Process) exitErr() error {
	var ee *exec.ExitError
	if errors.As(p.err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() && ws.Signal() == syscall.SIGTERM {
			return nil
		}
	}
	return p.err
}

// tailWriter keeps the last max bytes written to it.
type tailWriter struct {
	mu  sync.Mutex
	max int
	buf []byte
}

func (w *tailWriter) Write(b []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf = append(w.buf, b...)
	if over := len(w.buf) - w.max; over > 0 {
		w.buf = append(w.buf[:0], w.buf[over:]...)
	}
	return len(b), nil
}

func (w *tailWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return string(w.buf)
}
