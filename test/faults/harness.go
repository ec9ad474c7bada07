package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/go-logr/logr"
	coordinationv1 "k8s.io/api/coordination/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	quotav1 "github.com/appquota/appquota/api/v1alpha1"
	"github.com/appquota/appquota/internal/localcluster"
	"github.com/appquota/appquota/internal/manifest"
	"github.com/appquota/appquota/internal/operatortest"
	"github.com/appquota/appquota/internal/supervise"
	"github.com/appquota/appquota/internal/wiring"
)

// Lease settings the managers run with: the manager's defaults, so that the
// failover times measured compare with what a deployment gets.
const (
	leaseDuration = 15 * time.Second
	renewDeadline = 10 * time.Second
	retryPeriod   = 2 * time.Second
	leaseName     = "appquota-leader.quota.appquota.io"
	appNamespace  = "faults"
)

// harness is one fault's run: a fresh control plane, two manager replicas
// under a supervisor that restarts them when they exit (as the kubelet
// would), and the harness's own client.
type harness struct {
	log      io.Writer
	cluster  *localcluster.Cluster
	c        client.Client
	opts     wiring.Options
	bin      string
	env      []string
	extra    []string // flags added to both managers
	logDir   string   // where the managers' logs are copied, if set
	replicas [2]*replica
	groups   []string
	created  atomic.Int64 // AppQuotas createApps has made
	// incompressible gives the AppQuotas' overrides reasons that compress
	// poorly, so that a small set shards.
	incompressible bool
	// replicaArgs are flags added to replica a's and b's own (clock-skew's
	// clock offsets).
	replicaArgs [2][]string
	// hashes are every configuration hash a manager logged as written.
	mu     sync.Mutex
	hashes map[string]bool

	// readers are the gateway readers (readers.go), set once started.
	readers *readers
}

// replica is one manager slot: the process running in it now, and how often
// it was started again after exiting.
type replica struct {
	name     string
	args     []string
	proc     *operatortest.Process
	restarts int
	// leading is set when this incarnation logged that it acquired the Lease.
	leading  bool
	stopping bool
	// conflicts counts "the object has been modified" errors this slot logged.
	conflicts int
	// started is when the running incarnation was launched, and backoff the
	// wait before the next start after a quick exit (see supervise).
	started time.Time
	backoff time.Duration
	// writes counts the configurations this slot logged writing.
	writes int
}

func newHarness(ctx context.Context, log io.Writer, bin string, extra ...string) (*harness, error) {
	ctrl.SetLogger(logr.Discard())
	h := &harness{log: log, logDir: os.Getenv("FAULTS_LOG_DIR"), bin: bin, opts: wiring.DefaultOptions(), extra: extra, hashes: map[string]bool{}}
	root, err := localcluster.RepoRoot()
	if err != nil {
		return nil, err
	}
	env, _, err := operatortest.ManagerEnv(root)
	if err != nil {
		return nil, err
	}
	for _, k := range slices.Sorted(maps.Keys(env)) {
		h.env = append(h.env, k+"="+env[k])
	}
	if h.cluster, err = operatortest.StartCluster(localcluster.Options{}); err != nil {
		return nil, err
	}
	if h.c, err = h.cluster.Client(); err != nil {
		_ = h.cluster.Stop()
		return nil, err
	}
	if err := h.cluster.CreateNamespaces(ctx, h.opts.Namespace, appNamespace); err != nil {
		_ = h.cluster.Stop()
		return nil, err
	}
	return h, nil
}

// start runs both replicas and creates the default profile once a webhook
// answers. Replica a serves the webhook the API server calls; b listens on a
// port of its own that nothing calls.
func (h *harness) start(ctx context.Context) error {
	port, err := freePort()
	if err != nil {
		return err
	}
	h.replicas[0] = &replica{name: "a", args: h.replicaArgs[0]}
	h.replicas[1] = &replica{name: "b", args: append([]string{"--webhook-port", strconv.Itoa(port)}, h.replicaArgs[1]...)}
	for _, r := range h.replicas {
		if err := h.launch(r); err != nil {
			return err
		}
		go h.supervise(ctx, r)
	}
	profile, err := readCatalog()
	if err != nil {
		return err
	}
	for _, g := range profile.Spec.EndpointGroups {
		h.groups = append(h.groups, g.Name)
	}
	if err := poll(ctx, "create the default profile (a webhook must answer)", 2*time.Minute, func(ctx context.Context) (bool, error) {
		err := h.c.Create(ctx, profile.DeepCopy())
		return err == nil, err
	}); err != nil {
		return err
	}
	return h.startReaders(ctx)
}

func freePort() (int, error) {
	addr, err := supervise.FreeAddr()
	if err != nil {
		return 0, err
	}
	i := strings.LastIndexByte(addr, ':')
	return strconv.Atoi(addr[i+1:])
}

func (h *harness) launch(r *replica) error {
	args := append([]string{"--namespace", h.opts.Namespace, "--leader-elect", "--leader-election-namespace", h.opts.Namespace,
		"--metrics-bind-address", "0", "--health-probe-bind-address", "0"}, h.extra...)
	args = append(args, r.args...)
	p, err := operatortest.StartManager(h.cluster, h.bin, h.env, h.logWriter(r), args...)
	if err != nil {
		return err
	}
	h.mu.Lock()
	r.proc, r.leading, r.started = p, false, time.Now()
	h.mu.Unlock()
	return nil
}

// Restarts after quick exits back off as the kubelet's do, shorter: a
// manager that cannot reach the API server exits at once, and restarting it
// every 100 ms through a minute's outage would load the machine the faults
// share with the control plane.
const (
	quickExit  = 10 * time.Second
	maxBackoff = 8 * time.Second
)

// supervise starts the replica again whenever it exits, until ctx ends: at
// once after a run of quickExit or longer, else after a backoff doubling
// from 500 ms to maxBackoff.
func (h *harness) supervise(ctx context.Context, r *replica) {
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		h.mu.Lock()
		exited, stopping := r.proc.Exited(), r.stopping
		h.mu.Unlock()
		if !exited || stopping {
			continue
		}
		h.mu.Lock()
		r.restarts++
		if time.Since(r.started) >= quickExit {
			r.backoff = 0
		} else {
			r.backoff = min(max(2*r.backoff, 500*time.Millisecond), maxBackoff)
		}
		wait := r.backoff
		h.mu.Unlock()
		fmt.Fprintf(h.log, "replica %s exited; starting it again in %s\n", r.name, wait)
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		if err := h.launch(r); err != nil {
			fmt.Fprintf(h.log, "replica %s: %v\n", r.name, err)
		}
	}
}

var hashRE = regexp.MustCompile(`sha256:[0-9a-f]{64}`)

// logWriter follows a replica's log: which configurations it wrote, whether
// it leads, and the write conflicts it met.
func (h *harness) logWriter(r *replica) io.Writer {
	pr, pw := io.Pipe()
	go func() {
		copyTo := io.Discard
		if h.logDir != "" {
			if f, err := os.OpenFile(filepath.Join(h.logDir, "manager-"+r.name+".log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644); err == nil {
				defer f.Close()
				copyTo = f
			}
		}
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			fmt.Fprintln(copyTo, line)
			h.mu.Lock()
			if strings.Contains(line, "wrote configuration") {
				for _, m := range hashRE.FindAllString(line, -1) {
					h.hashes[m] = true
				}
				r.writes++
			}
			if strings.Contains(strings.ToLower(line), "successfully acquired lease") {
				r.leading = true
			}
			if strings.Contains(line, "the object has been modified") {
				r.conflicts++
			}
			h.mu.Unlock()
		}
	}()
	return pw
}

// leader is the replica whose running incarnation acquired the Lease, nil
// when none has.
func (h *harness) leader() *replica {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, r := range h.replicas {
		if r.leading && !r.proc.Exited() {
			return r
		}
	}
	return nil
}

func (h *harness) waitLeader(ctx context.Context) (*replica, error) {
	var l *replica
	err := poll(ctx, "a replica to acquire the Lease", 2*leaseDuration+time.Minute, func(context.Context) (bool, error) {
		l = h.leader()
		return l != nil, nil
	})
	return l, err
}

// holder is the Lease's holderIdentity.
func (h *harness) holder(ctx context.Context) (string, error) {
	var l coordinationv1.Lease
	if err := h.c.Get(ctx, client.ObjectKey{Namespace: h.opts.Namespace, Name: leaseName}, &l); err != nil {
		return "", fmt.Errorf("read the Lease: %w", err)
	}
	if l.Spec.HolderIdentity == nil {
		return "", nil
	}
	return *l.Spec.HolderIdentity, nil
}

// signal sends sig to the replica's running process.
func (h *harness) signal(r *replica, sig syscall.Signal) error {
	h.mu.Lock()
	pid := r.proc.PID()
	h.mu.Unlock()
	if err := syscall.Kill(pid, sig); err != nil {
		return fmt.Errorf("signal replica %s (pid %d): %w", r.name, pid, err)
	}
	return nil
}

func (h *harness) restarts() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.replicas[0].restarts + h.replicas[1].restarts
}

func (h *harness) written(hash string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.hashes[hash]
}

// stop ends the gateway readers, both replicas (SIGTERM) and the control
// plane.
func (h *harness) stop() {
	if rs := h.gatewayReaders(); rs != nil {
		rs.stop()
		rs.summary(h.log)
	}
	for _, r := range h.replicas {
		if r == nil {
			continue
		}
		h.mu.Lock()
		r.stopping = true
		p := r.proc
		h.mu.Unlock()
		_ = p.Stop()
	}
	_ = h.cluster.Stop()
}

func readCatalog() (*quotav1.QuotaProfile, error) {
	root, err := localcluster.RepoRoot()
	if err != nil {
		return nil, err
	}
	objs, err := manifest.ReadFiles(root + "/config/catalog/default.yaml")
	if err != nil {
		return nil, fmt.Errorf("read the catalog: %w", err)
	}
	if len(objs.QuotaProfiles) != 1 {
		return nil, fmt.Errorf("read the catalog: want one QuotaProfile, got %d", len(objs.QuotaProfiles))
	}
	return &objs.QuotaProfiles[0], nil
}

// poll calls cond every 200 ms until it reports true or timeout passes; the
// error then carries cond's last error.
func poll(ctx context.Context, what string, timeout time.Duration, cond func(context.Context) (bool, error)) error {
	deadline := time.Now().Add(timeout)
	var last error
	for {
		ok, err := cond(ctx)
		if ok {
			return nil
		}
		last = err
		if time.Now().After(deadline) {
			return fmt.Errorf("waiting for %s: not after %s (last error: %w)", what, timeout, last)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}
