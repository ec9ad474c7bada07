// Package localcluster runs a throwaway Kubernetes control plane (etcd and
// kube-apiserver, built by hack/setup-envtest.sh) for tests, the demo and the
// benchmarks, with this repository's CRDs and webhook configuration installed.
// It knows nothing of the operator: callers pass the scheme their types need,
// so a controller's own tests can start one (operatortest runs the operator
// against it).
package localcluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
)

// Options configures Start.
type Options struct {
	// RepoRoot is the repository's top directory; CRDs are read from
	// config/crd/bases and webhooks from config/webhook under it. Empty means
	// "find it from the working directory".
	RepoRoot string
	// KubeconfigPath is where the admin kubeconfig is written. Empty means a file
	// in a fresh temporary directory.
	KubeconfigPath string
	// Output, when true, attaches the control plane's output to this process's.
	Output bool
	// SkipWebhooks leaves config/webhook uninstalled, as in a cluster where
	// objects were created while the webhook was not there.
	SkipWebhooks bool
	// Scheme holds the types the cluster's clients know: the built-in ones
	// and the ones under test (operatortest.Scheme is the operator's).
	Scheme *runtime.Scheme
	// APIServerFlags are kube-apiserver flags set over envtest's, by name
	// without the dashes: {"min-request-timeout": "1"} ends watches within two
	// seconds, as a real API server does within an hour.
	APIServerFlags map[string]string
}

// Cluster is a running local control plane.
type Cluster struct {
	// Config reaches the API server as a cluster admin.
	Config *rest.Config
	// Scheme is Options.Scheme.
	Scheme *runtime.Scheme
	// KubeconfigPath is the admin kubeconfig on disk, for kubectl.
	KubeconfigPath string
	// AssetsDir holds the kube-apiserver, etcd and kubectl binaries.
	AssetsDir string
	// Env is the underlying envtest environment; its WebhookInstallOptions carry
	// the host, port and certificate directory the webhook server must use.
	Env *envtest.Environment

	watchdog *exec.Cmd
	tmpDir   string
	output   bool
	// args are the command lines of the components Kill stopped, and procs
	// the processes Restart started again (restart.go).
	args  map[Component][]string
	procs map[Component]*restarted
}

// RepoRoot walks up from the working directory to the directory holding go.mod.
func RepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("localcluster: no go.mod above the working directory")
		}
		dir = parent
	}
}

// Assets returns the directory holding the control plane binaries:
// $KUBEBUILDER_ASSETS when set, else what hack/setup-envtest.sh prints (it
// builds them the first time, which takes minutes, and answers from its cache
// after that).
func Assets(repoRoot string) (string, error) {
	if dir := os.Getenv("KUBEBUILDER_ASSETS"); dir != "" {
		return dir, nil
	}
	cmd := exec.Command(filepath.Join(repoRoot, "hack", "setup-envtest.sh"))
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("localcluster: hack/setup-envtest.sh: %w", err)
	}
	return strings.TrimSpace(string(out)), nil
}

// Start starts etcd and kube-apiserver, installs the CRDs and the webhook
// configuration, and writes a kubeconfig. It returns once the CRDs are
// established and their schemas are in the OpenAPI document, so kubectl
// (explain included) sees them at once. Call Stop when done, also on error
// paths: it is what keeps etcd and kube-apiserver from outliving the caller.
func Start(opts Options) (*Cluster, error) {
	root := opts.RepoRoot
	if root == "" {
		var err error
		if root, err = RepoRoot(); err != nil {
			return nil, err
		}
	}
	assets, err := Assets(root)
	if err != nil {
		return nil, err
	}
	scheme := opts.Scheme
	if scheme == nil {
		return nil, errors.New("localcluster: Options.Scheme is nil: pass the scheme of the types the tests use")
	}

	c := &Cluster{Scheme: scheme, AssetsDir: assets, output: opts.Output}
	c.Env = &envtest.Environment{
		Scheme:                   scheme,
		BinaryAssetsDirectory:    assets,
		CRDDirectoryPaths:        []string{filepath.Join(root, "config", "crd", "bases")},
		ErrorIfCRDPathMissing:    true,
		AttachControlPlaneOutput: opts.Output,
		WebhookInstallOptions: envtest.WebhookInstallOptions{
			Paths: []string{filepath.Join(root, "config", "webhook", "manifests.yaml")},
		},
	}
	if opts.SkipWebhooks {
		c.Env.WebhookInstallOptions = envtest.WebhookInstallOptions{}
	}
	for name, value := range opts.APIServerFlags {
		c.Env.ControlPlane.GetAPIServer().Configure().Set(name, value)
	}
	// envtest looks up binaries through KUBEBUILDER_ASSETS before
	// BinaryAssetsDirectory; make both say the same.
	if err := os.Setenv("KUBEBUILDER_ASSETS", assets); err != nil {
		return nil, err
	}

	cfg, err := c.Env.Start()
	if err != nil {
		// Start can fail after launching the processes (e.g. a bad CRD): stop them.
		_ = c.Env.Stop()
		return nil, fmt.Errorf("localcluster: start control plane: %w", err)
	}
	c.Config = cfg
	c.startWatchdog()
	if err := waitForOpenAPI(context.Background(), cfg, c.Env.CRDs); err != nil {
		_ = c.Stop()
		return nil, err
	}

	c.KubeconfigPath = opts.KubeconfigPath
	if c.KubeconfigPath == "" {
		if c.tmpDir, err = os.MkdirTemp("", "appquota-cluster-"); err != nil {
			_ = c.Stop()
			return nil, err
		}
		c.KubeconfigPath = filepath.Join(c.tmpDir, "kubeconfig")
	}
	if err := os.MkdirAll(filepath.Dir(c.KubeconfigPath), 0o755); err != nil {
		_ = c.Stop()
		return nil, err
	}
	if err := os.WriteFile(c.KubeconfigPath, c.Env.KubeConfig, 0o600); err != nil {
		_ = c.Stop()
		return nil, fmt.Errorf("localcluster: write kubeconfig: %w", err)
	}
	return c, nil
}

// ManagerFlags are the manager binary's flags that point it at this cluster:
// its kubeconfig, and the webhook address and certificates the API server's
// webhook configuration expects. It serves no xDS (the binary's :18000 would
// collide between test processes): a caller that wants it adds its own
// --xds-bind-address after these, which wins.
func (c *Cluster) ManagerFlags() []string {
	wh := c.Env.WebhookInstallOptions
	return []string{"--kubeconfig", c.KubeconfigPath,
		"--webhook-host", wh.LocalServingHost, "--webhook-port", strconv.Itoa(wh.LocalServingPort), "--webhook-cert-dir", wh.LocalServingCertDir,
		"--xds-bind-address", "0"}
}

// Kubectl is the path of the kubectl built with the control plane.
func (c *Cluster) Kubectl() string { return filepath.Join(c.AssetsDir, "kubectl") }

// Stop stops kube-apiserver and etcd and removes their data.
func (c *Cluster) Stop() error {
	c.stopRestarted()
	err := c.Env.Stop()
	if c.watchdog != nil && c.watchdog.Process != nil {
		_ = c.watchdog.Process.Kill()
		_ = c.watchdog.Wait()
	}
	if c.tmpDir != "" {
		_ = os.RemoveAll(c.tmpDir)
	}
	if err != nil {
		return fmt.Errorf("localcluster: stop: %w", err)
	}
	return nil
}

// startWatchdog covers the exits Stop cannot: a test binary killed by its
// timeout, or a SIGKILL. envtest starts etcd and kube-apiserver in their own
// process groups (so a terminal's Ctrl-C does not reach them), which means
// nothing else would stop them. The watchdog is a shell that waits for this
// process to disappear and then terminates them.
func (c *Cluster) startWatchdog() {
	pids := ControlPlanePIDs()
	if len(pids) == 0 {
		return
	}
	list := make([]string, len(pids))
	for i, p := range pids {
		list[i] = strconv.Itoa(p)
	}
	script := fmt.Sprintf(`while kill -0 %d 2>/dev/null; do sleep 1; done; kill -9 %s 2>/dev/null`,
		os.Getpid(), strings.Join(list, " "))
	cmd := exec.Command("/bin/sh", "-c", script)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err == nil {
		c.watchdog = cmd
	}
}

// childPIDs lists the direct children of parent whose command name is one of names.
func childPIDs(parent int, names ...string) []int {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// stat is "pid (comm) state ppid ...": comm may hold spaces, so split at ')'.
		open, closing := bytes.IndexByte(stat, '('), bytes.LastIndexByte(stat, ')')
		if open < 0 || closing < open {
			continue
		}
		comm := string(stat[open+1 : closing])
		fields := strings.Fields(string(stat[closing+1:]))
		if len(fields) < 2 {
			continue
		}
		ppid, _ := strconv.Atoi(fields[1])
		if ppid != parent {
			continue
		}
		for _, n := range names {
			if comm == n {
				pids = append(pids, pid)
			}
		}
	}
	return pids
}

// ControlPlanePIDs lists the etcd and kube-apiserver processes this process started.
func ControlPlanePIDs() []int {
	return childPIDs(os.Getpid(), "etcd", "kube-apiserver")
}

// Client returns an uncached client for the cluster.
func (c *Cluster) Client() (client.Client, error) {
	return client.New(c.Config, client.Options{Scheme: c.Scheme})
}

// CreateNamespaces creates the namespaces that do not exist yet, each
// granted every app ID (quota.appquota.io/app-ids: "*"), as a platform team
// grants its tenants' namespaces theirs: the manager requires a grant by
// default. Tests of the grants make namespaces of their own.
func (c *Cluster) CreateNamespaces(ctx context.Context, names ...string) error {
	cl, err := c.Client()
	if err != nil {
		return err
	}
	for _, n := range names {
		err := cl.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: n,
			Annotations: map[string]string{"quota.appquota.io/app-ids": "*"}}})
		if err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("localcluster: create namespace %s: %w", n, err)
		}
	}
	return nil
}
