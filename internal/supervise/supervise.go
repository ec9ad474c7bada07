// Package supervise runs a program as a child process for tests, the demo and
// the benchmarks (the manager, ratelimit, redis-server), so that a caller
// waiting for it to serve learns at once, and why, when it never will: it
// keeps the end of the program's output, notices its exit, and stops it
// without leaving it behind.
package supervise

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"k8s.io/apimachinery/pkg/util/wait"
)

// Options configures Start.
type Options struct {
	// Name is how errors call the program: "the manager", "redis-server".
	Name string
	// Log, when not nil, receives everything the program prints.
	Log io.Writer
	// TailBytes is how much of the end of its output is kept for errors and
	// Log; 0 means 8 KiB.
	TailBytes int
	// StopGrace is how long Stop waits after SIGTERM before SIGKILL; 0 means
	// 30 seconds, what a manager's graceful shutdown may take.
	StopGrace time.Duration
}

// Process is a program started by Start.
type Process struct {
	name   string
	grace  time.Duration
	cmd    *exec.Cmd
	tail   *tailWriter
	exited chan struct{}
	err    error // how it exited; set before exited is closed
}

// Start starts cmd (built by the caller with its arguments, environment and
// directory) with its output kept by the Process. The child is killed when
// the thread that started it dies, so that a test killed by its timeout
// leaves no server running with ports and files it owns.
func Start(cmd *exec.Cmd, opts Options) (*Process, error) {
	if opts.Name == "" {
		opts.Name = cmd.Path
	}
	if opts.TailBytes <= 0 {
		opts.TailBytes = 8 << 10
	}
	if opts.StopGrace <= 0 {
		opts.StopGrace = 30 * time.Second
	}
	p := &Process{name: opts.Name, grace: opts.StopGrace, cmd: cmd, tail: &tailWriter{max: opts.TailBytes}, exited: make(chan struct{})}
	out := io.Writer(p.tail)
	if opts.Log != nil {
		out = io.MultiWriter(p.tail, opts.Log)
	}
	cmd.Stdout, cmd.Stderr = out, out
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
	if cmd.WaitDelay == 0 {
		// A grandchild that inherited the output pipe would otherwise keep Wait,
		// and so Exited, from ever seeing the program's own exit.
		cmd.WaitDelay = 5 * time.Second
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", p.name, err)
	}
	go func() {
		p.err = cmd.Wait()
		close(p.exited)
	}()
	return p, nil
}

// Name is how errors call the program.
func (p *Process) Name() string { return p.name }

// PID is the program's process ID.
func (p *Process) PID() int { return p.cmd.Process.Pid }

// Done is closed when the program has exited.
func (p *Process) Done() <-chan struct{} { return p.exited }

// Exited reports whether the program has exited.
func (p *Process) Exited() bool {
	select {
	case <-p.exited:
		return true
	default:
		return false
	}
}

// ExitErr is how the program exited (nil for status 0), or nil while it runs.
func (p *Process) ExitErr() error {
	if !p.Exited() {
		return nil
	}
	return p.err
}

// Log is the end of what the program has printed so far.
func (p *Process) Log() string { return p.tail.String() }

// WaitUntil polls ready every interval until it reports true, the program
// exits, or timeout passes. The error names which, what the caller was
// waiting for, and the end of the program's log.
func (p *Process) WaitUntil(ctx context.Context, what string, interval, timeout time.Duration, ready func(context.Context) (bool, error)) error {
	var last error
	err := wait.PollUntilContextTimeout(ctx, interval, timeout, true, func(ctx context.Context) (bool, error) {
		if p.Exited() {
			return false, fmt.Errorf("%s exited (%v)", p.name, p.err)
		}
		ok, err := ready(ctx)
		// A poll cut short by the deadline, or by a timeout of its own, says
		// only that; the one before it says why the program was not ready.
		if err == nil || last == nil || (ctx.Err() == nil && !errors.Is(err, context.DeadlineExceeded)) {
			last = err
		}
		return ok, nil
	})
	if err == nil {
		return nil
	}
	if last != nil && wait.Interrupted(err) {
		err = fmt.Errorf("%w; last: %w", err, last)
	}
	return fmt.Errorf("%s: %w\nthe end of %s's log:\n%s", what, err, p.name, p.Log())
}

// StartUntilReady calls start, which starts a program on addresses it has
// just found free, and waits (WaitUntil, polling every 100 ms) until ready
// reports it serving. A program that exits at start because one of those
// addresses was taken meanwhile is started again by calling start anew, up
// to three starts in all: FreeAddr finds a port free but cannot hold it for
// another process, and any connection this machine opens may take it as its
// local port. Any other exit, or the timeout, is an error, and a program
// still running then is stopped. retried is the log line that named the
// taken address, for each start that failed so.
func StartUntilReady(
	ctx context.Context, start func() (*Process, error), what string, timeout time.Duration, ready func(context.Context) (bool, error),
) (p *Process, retried []string, err error) {
	for attempt := 1; ; attempt++ {
		if p, err = start(); err != nil {
			return nil, retried, err
		}
		err = p.WaitUntil(ctx, what, 100*time.Millisecond, timeout, ready)
		if err == nil {
			return p, retried, nil
		}
		taken := AddressTaken(p.Log())
		if attempt == 3 || !p.Exited() || taken == "" {
			_ = p.Stop()
			return nil, retried, err
		}
		retried = append(retried, taken)
	}
}

// AddressTaken returns the first line of log that says a listening address
// was in use, or "". Go programs say "address already in use", redis-server
// "Address already in use".
func AddressTaken(log string) string {
	for line := range strings.Lines(log) {
		if strings.Contains(strings.ToLower(line), "address already in use") {
			return strings.TrimSpace(line)
		}
	}
	return ""
}

// Stop ends the program with SIGTERM, as the kubelet would, and waits for it;
// one still running StopGrace later is killed. It returns how the program
// ended unless that was the SIGTERM or status 0.
func (p *Process) Stop() error {
	if p.Exited() {
		return p.exitErr()
	}
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("signal %s: %w", p.name, err)
	}
	timer := time.NewTimer(p.grace)
	defer timer.Stop()
	select {
	case <-p.exited:
		return p.exitErr()
	case <-timer.C:
	}
	if err := p.Kill(); err != nil {
		return err
	}
	return fmt.Errorf("%s was still running %v after SIGTERM, and was killed", p.name, p.grace)
}

// Kill ends the program with SIGKILL, as a crash or an OOM kill would, and
// waits for it. It returns how the program ended unless that was the SIGKILL.
func (p *Process) Kill() error {
	if p.Exited() {
		return p.exitErr()
	}
	if err := p.cmd.Process.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("kill %s: %w", p.name, err)
	}
	<-p.exited
	return p.exitErr()
}

// exitErr is how the program ended, or nil when that was a signal this
// package sent.
func (p *Process) exitErr() error {
	var ee *exec.ExitError
	if errors.As(p.err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() && (ws.Signal() == syscall.SIGTERM || ws.Signal() == syscall.SIGKILL) {
			return nil
		}
	}
	if p.err != nil {
		return fmt.Errorf("%s exited: %w", p.name, p.err)
	}
	return nil
}

// FreePort returns a loopback port nothing listens on, for a child process
// to serve on.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// FreeAddr is FreePort as a 127.0.0.1:port address.
func FreeAddr() (string, error) {
	port, err := FreePort()
	if err != nil {
		return "", err
	}
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), nil
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
