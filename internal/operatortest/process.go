package operatortest

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"github.com/appquota/appquota/internal/localcluster"
	"github.com/appquota/appquota/internal/supervise"
)

// BuildManager compiles cmd/manager into dir and returns the binary's path.
// Build it before Start: a build on a busy machine can take a minute, and
// nothing holds the webhook port envtest picks at Start (it only keeps other
// envtests off it) until the manager listens there.
func BuildManager(ctx context.Context, dir string) (string, error) {
	root, err := localcluster.RepoRoot()
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "appquota-manager")
	build := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/manager")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		return "", fmt.Errorf("operatortest: build the manager: %w\n%s", err, out)
	}
	return bin, nil
}

// Process is the manager binary running as its own process against a
// local cluster. It keeps the end of its log, and notices when it exits, so that a
// caller waiting for it to serve learns why it never will.
type Process struct {
	p *supervise.Process
}

// StartManager runs the manager binary bin with the flags that point it at
// the cluster c (its ManagerFlags) followed by args. env is added to the caller's
// environment; the manager's log goes to log (which may be nil) and its last
// lines are kept for errors. The process dies with the caller.
func StartManager(c *localcluster.Cluster, bin string, env []string, log io.Writer, args ...string) (*Process, error) {
	cmd := exec.Command(bin, append(c.ManagerFlags(), args...)...)
	cmd.Env = append(os.Environ(), env...)
	p, err := supervise.Start(cmd, supervise.Options{Name: "the manager", Log: log})
	if err != nil {
		return nil, fmt.Errorf("operatortest: %w", err)
	}
	return &Process{p: p}, nil
}

// PID is the manager's process ID.
func (p *Process) PID() int { return p.p.PID() }

// Exited reports whether the manager has exited.
func (p *Process) Exited() bool { return p.p.Exited() }

// Log is the end of what the manager has printed so far.
func (p *Process) Log() string { return p.p.Log() }

// WaitUntil polls ready every interval until it reports true, the manager
// exits, or timeout passes. The error names which, with the end of the
// manager's log.
func (p *Process) WaitUntil(ctx context.Context, what string, interval, timeout time.Duration, ready func(context.Context) (bool, error)) error {
	if err := p.p.WaitUntil(ctx, what, interval, timeout, ready); err != nil {
		return fmt.Errorf("operatortest: %w", err)
	}
	return nil
}

// StartUntilReady calls start, which starts the manager on addresses it has
// just found free, and waits (WaitUntil, polling every 100 ms) until ready
// reports it serving. A manager that exits at start because one of those
// addresses was taken meanwhile is started again by calling start anew, up
// to three starts in all (supervise.StartUntilReady). Any other exit, or the
// timeout, is an error, and a manager still running then is stopped. retried
// is the log line that named the taken address, for each start that failed
// so.
func StartUntilReady(
	ctx context.Context, start func() (*Process, error), what string, timeout time.Duration, ready func(context.Context) (bool, error),
) (*Process, []string, error) {
	var startErr error
	p, retried, err := supervise.StartUntilReady(ctx, func() (*supervise.Process, error) {
		p, err := start()
		if err != nil {
			startErr = err // already says where it comes from
			return nil, err
		}
		return p.p, nil
	}, what, timeout, ready)
	if startErr != nil {
		return nil, retried, startErr
	}
	if err != nil {
		return nil, retried, fmt.Errorf("operatortest: %w", err)
	}
	return &Process{p: p}, retried, nil
}

// Stop ends the manager with SIGTERM, as the kubelet would, and waits for it
// (killing it if it is still running 30 seconds later). It returns how the
// process ended unless that was the SIGTERM.
func (p *Process) Stop() error { return p.p.Stop() }
