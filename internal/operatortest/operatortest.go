// Package operatortest runs appquota's operator against a local control plane
// (internal/localcluster) for tests, the demo and the benchmarks: in this
// process as the manager binary wires it (Run, RunTests), or as the manager
// binary itself (BuildManager, StartManager).
package operatortest

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/runtime"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/config"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	"sigs.k8s.io/controller-runtime/pkg/webhook"
	"sigs.k8s.io/yaml"

	"github.com/appquota/appquota/internal/localcluster"
	"github.com/appquota/appquota/internal/wiring"
)

// Scheme is the operator's scheme (wiring.Scheme), for a cluster its tests
// use.
func Scheme() *runtime.Scheme {
	s, err := wiring.Scheme()
	if err != nil {
		panic(fmt.Sprintf("operatortest: the operator's scheme: %v", err)) // only AddToScheme of static types can fail
	}
	return s
}

// StartCluster starts a local control plane with the operator's scheme
// unless opts names another.
func StartCluster(opts localcluster.Options) (*localcluster.Cluster, error) {
	if opts.Scheme == nil {
		opts.Scheme = Scheme()
	}
	return localcluster.Start(opts)
}

// Run runs the operator in this process against the cluster, as the
// manager binary would (wiring.Setup), with the webhook server on envtest's
// local address and certificates and the manager's default TLS settings
// (wiring.ServerTLSOpts), and metrics and probes off. It creates the
// operator's namespace, and returns once the caches have synced; stop stops the
// manager and waits for it.
func Run(ctx context.Context, c *localcluster.Cluster, opts wiring.Options) (stop func(), err error) {
	if err := c.CreateNamespaces(ctx, opts.Namespace); err != nil {
		return nil, err
	}
	wh := c.Env.WebhookInstallOptions
	mgr, err := ctrl.NewManager(c.Config, ctrl.Options{
		Scheme:                 c.Scheme,
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0",
		Cache:                  wiring.CacheOptions(opts),
		// Tests stop and start operators in one process; controller names only
		// need to be unique among running managers.
		Controller: config.Controller{SkipNameValidation: ptr.To(true)},
		WebhookServer: webhook.NewServer(webhook.Options{
			Host:    wh.LocalServingHost,
			Port:    wh.LocalServingPort,
			CertDir: wh.LocalServingCertDir,
			TLSOpts: wiring.ServerTLSOpts(false),
		}),
	})
	if err != nil {
		return nil, fmt.Errorf("operatortest: create manager: %w", err)
	}
	if err := wiring.Setup(mgr, opts); err != nil {
		return nil, err
	}
	mgrCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- mgr.Start(mgrCtx) }()
	var (
		once     sync.Once
		startErr error
	)
	// wait stops the manager and returns what its Start returned: nil
	// unless a runnable (the webhook server, a controller) failed.
	wait := func() error {
		once.Do(func() {
			cancel()
			startErr = <-done
		})
		return startErr
	}
	stop = func() {
		if err := wait(); err != nil {
			fmt.Fprintln(os.Stderr, "operatortest: the manager stopped with an error:", err)
		}
	}
	if !mgr.GetCache().WaitForCacheSync(mgrCtx) {
		return nil, errors.Join(errors.New("operatortest: manager caches did not sync"), wait())
	}
	return stop, nil
}

// RunTests is a TestMain body: it starts a cluster (and, when op is not nil, the
// operator in-process), calls setup when given, runs the tests and stops
// everything. Pass its result to os.Exit.
func RunTests(m interface{ Run() int }, opts localcluster.Options, op *wiring.Options, setup func(*localcluster.Cluster) error) int {
	c, err := StartCluster(opts)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer func() { _ = c.Stop() }()
	if op != nil {
		stop, err := Run(context.Background(), c, *op)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer stop()
	}
	if setup != nil {
		if err := setup(c); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
	}
	return m.Run()
}

// ManagerEnv returns the environment variables config/manager/manager.yaml
// sets on the manager container with a literal value, so that a manager run
// outside a cluster (the benchmarks) runs as deployed, and the memory limit
// of that container.
func ManagerEnv(repoRoot string) (env map[string]string, memoryLimit resource.Quantity, err error) {
	f, err := os.Open(filepath.Join(repoRoot, "config", "manager", "manager.yaml"))
	if err != nil {
		return nil, memoryLimit, err
	}
	defer f.Close()
	docs := utilyaml.NewYAMLReader(bufio.NewReader(f))
	for {
		doc, err := docs.Read()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, memoryLimit, fmt.Errorf("config/manager/manager.yaml: %w", err)
		}
		var d appsv1.Deployment
		if err := yaml.Unmarshal(doc, &d); err != nil {
			return nil, memoryLimit, fmt.Errorf("config/manager/manager.yaml: %w", err)
		}
		if d.Kind != "Deployment" {
			continue
		}
		for _, c := range d.Spec.Template.Spec.Containers {
			if c.Name != "manager" {
				continue
			}
			env = map[string]string{}
			for _, e := range c.Env {
				if e.ValueFrom == nil {
					env[e.Name] = e.Value
				}
			}
			return env, c.Resources.Limits[corev1.ResourceMemory], nil
		}
	}
	return nil, memoryLimit, errors.New("config/manager/manager.yaml has no Deployment with a manager container")
}
