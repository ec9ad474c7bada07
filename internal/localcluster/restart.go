package localcluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"k8s.io/client-go/rest"
)

// Component is one process of the control plane, named as its command is.
type Component string

const (
	APIServer Component = "kube-apiserver"
	Etcd      Component = "etcd"
)

// restarted is a control plane process that Restart started: envtest no
// longer knows it (its own handle saw the first process exit), so Stop must
// end it.
type restarted struct {
	cmd  *exec.Cmd
	done chan struct{} // closed once cmd has been reaped
}

// stopTimeout bounds how long Kill and Stop wait for a signalled process to
// exit before they SIGKILL it.
const stopTimeout = 30 * time.Second

// Kill and Restart are not safe for concurrent use.

// Kill sends sig to the component's running process and returns once it has
// exited (SIGSTOP excepted: then it returns at once, and SIGCONT resumes the
// process). The flags it ran with are kept, so that Restart can start it
// again on the same ports, certificates and data directory: envtest's own
// Stop would delete those. A process that does not exit within 30 s of sig
// is SIGKILLed, and Kill says so.
func (c *Cluster) Kill(comp Component, sig syscall.Signal) error {
	pid, err := c.pid(comp)
	if err != nil {
		return err
	}
	if _, ok := c.args[comp]; !ok {
		args, err := cmdline(pid)
		if err != nil {
			return fmt.Errorf("localcluster: read the flags of %s: %w", comp, err)
		}
		if c.args == nil {
			c.args = map[Component][]string{}
		}
		c.args[comp] = args
	}
	if err := syscall.Kill(pid, sig); err != nil {
		return fmt.Errorf("localcluster: signal %s (pid %d): %w", comp, pid, err)
	}
	if sig == syscall.SIGSTOP || sig == syscall.SIGCONT {
		return nil
	}
	if c.waitExit(comp, pid, stopTimeout) {
		return nil
	}
	_ = syscall.Kill(pid, syscall.SIGKILL)
	if !c.waitExit(comp, pid, stopTimeout) {
		return fmt.Errorf("localcluster: %s (pid %d) did not exit after %v and SIGKILL", comp, pid, sig)
	}
	return fmt.Errorf("localcluster: %s (pid %d) did not exit within %s of %v; SIGKILLed", comp, pid, stopTimeout, sig)
}

// Restart starts a component that Kill stopped, with the same binary and
// flags, and returns once it answers its health check (kube-apiserver's
// /readyz with the admin credentials, etcd's /health), or an error after
// a minute.
func (c *Cluster) Restart(comp Component) error {
	args, ok := c.args[comp]
	if !ok {
		return fmt.Errorf("localcluster: restart %s: it was not stopped by Kill", comp)
	}
	if pids := childPIDs(os.Getpid(), string(comp)); len(pids) > 0 {
		return fmt.Errorf("localcluster: restart %s: it is still running (pid %v)", comp, pids)
	}
	cmd := exec.Command(args[0], args[1:]...)
	// As envtest does: a process group of its own, out of reach of a
	// terminal's Ctrl-C, which the watchdog and Stop cover instead.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if c.output {
		cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("localcluster: restart %s: %w", comp, err)
	}
	p := &restarted{cmd: cmd, done: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		close(p.done)
	}()
	if c.procs == nil {
		c.procs = map[Component]*restarted{}
	}
	c.procs[comp] = p
	// The watchdog knows the pids of its start: give it the new one.
	c.stopWatchdog()
	c.startWatchdog()
	if err := c.waitHealthy(comp, p, time.Minute); err != nil {
		return fmt.Errorf("localcluster: restart %s: %w", comp, err)
	}
	return nil
}

// pid is the component's running process: the one Restart started, else
// envtest's (a child of this process with the component's command name).
func (c *Cluster) pid(comp Component) (int, error) {
	if p := c.procs[comp]; p != nil {
		select {
		case <-p.done:
		default:
			return p.cmd.Process.Pid, nil
		}
	}
	pids := childPIDs(os.Getpid(), string(comp))
	if len(pids) != 1 {
		return 0, fmt.Errorf("localcluster: want one running %s, found pids %v", comp, pids)
	}
	return pids[0], nil
}

// waitExit reports whether the process exited within timeout. A process
// Restart started is reaped by its own goroutine; envtest's first one by
// envtest's, after which the pid is gone.
func (c *Cluster) waitExit(comp Component, pid int, timeout time.Duration) bool {
	if p := c.procs[comp]; p != nil && p.cmd.Process.Pid == pid {
		select {
		case <-p.done:
			return true
		case <-time.After(timeout):
			return false
		}
	}
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
			return true
		}
		time.Sleep(50 * time.Millisecond)
	}
	return false
}

// waitHealthy polls the component's health endpoint until it answers 200,
// the process exits, or timeout passes.
func (c *Cluster) waitHealthy(comp Component, p *restarted, timeout time.Duration) error {
	var (
		hc  *http.Client
		url string
		err error
	)
	switch comp {
	case APIServer:
		if hc, err = rest.HTTPClientFor(c.Config); err != nil {
			return err
		}
		url = strings.TrimSuffix(c.Config.Host, "/") + "/readyz"
	case Etcd:
		hc = &http.Client{Timeout: 5 * time.Second}
		url = strings.TrimSuffix(c.Env.ControlPlane.Etcd.URL.String(), "/") + "/health"
	default:
		return fmt.Errorf("unknown component %q", comp)
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var last error
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		resp, err := hc.Do(req)
		if err == nil {
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = fmt.Errorf("%s: %s", url, resp.Status)
		}
		last = err
		select {
		case <-p.done:
			return fmt.Errorf("exited before it was healthy (last check: %w)", last)
		case <-ctx.Done():
			return fmt.Errorf("not healthy within %s (last check: %w)", timeout, last)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// stopRestarted ends the processes Restart started, the API server before
// etcd as envtest does; envtest's Stop then finds its own handles exited and
// only removes their directories.
func (c *Cluster) stopRestarted() {
	if len(c.procs) == 0 {
		return
	}
	for _, comp := range []Component{APIServer, Etcd} {
		// An API server still envtest's is stopped here too, so that it does
		// not outlive a restarted etcd it depends on; one not running is an
		// error Kill reports and Stop need not.
		_ = c.Kill(comp, syscall.SIGTERM)
	}
}

func (c *Cluster) stopWatchdog() {
	if c.watchdog != nil && c.watchdog.Process != nil {
		_ = c.watchdog.Process.Kill()
		_ = c.watchdog.Wait()
		c.watchdog = nil
	}
}

// cmdline is a process's argv, from /proc.
func cmdline(pid int) ([]string, error) {
	raw, err := os.ReadFile(filepath.Join("/proc", fmt.Sprint(pid), "cmdline"))
	if err != nil {
		return nil, err
	}
	parts := bytes.Split(bytes.TrimSuffix(raw, []byte{0}), []byte{0})
	if len(parts) == 0 || len(parts[0]) == 0 {
		return nil, fmt.Errorf("pid %d has an empty command line", pid)
	}
	args := make([]string, len(parts))
	for i, p := range parts {
		args[i] = string(p)
	}
	return args, nil
}
