// Command demo runs appquota with no cluster: it starts a local kube-apiserver and
// etcd, installs the CRDs and webhooks, runs the operator in-process, applies
// config/samples and prints what to try. Ctrl-C stops everything.
package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	"sigs.k8s.io/controller-runtime/pkg/webhook"

	"github.com/appquota/appquota/internal/localcluster"
	"github.com/appquota/appquota/internal/operator"
)

func main() {
	ctrl.SetLogger(zap.New(zap.UseDevMode(true)))
	if err := run(ctrl.SetupSignalHandler()); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context) error {
	root, err := localcluster.RepoRoot()
	if err != nil {
		return err
	}
	fmt.Println("Starting a local control plane (etcd + kube-apiserver)...")
	cluster, err := localcluster.Start(localcluster.Options{
		RepoRoot:       root,
		KubeconfigPath: filepath.Join(root, "bin", "demo", "kubeconfig"),
	})
	if err != nil {
		return err
	}
	defer func() {
		fmt.Println("Stopping the local control plane...")
		if err := cluster.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, "demo:", err)
			return
		}
		fmt.Println("Stopped.")
	}()

	opts := operator.DefaultOptions()
	c, err := client.New(cluster.Config, client.Options{Scheme: cluster.Scheme})
	if err != nil {
		return err
	}
	for _, ns := range []string{opts.Namespace, "tenants"} {
		err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}})
		if err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("create namespace %s: %w", ns, err)
		}
	}

	wh := cluster.Env.WebhookInstallOptions
	mgr, err := ctrl.NewManager(cluster.Config, ctrl.Options{
		Scheme:                 cluster.Scheme,
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0",
		Cache:                  operator.CacheOptions(opts),
		WebhookServer: webhook.NewServer(webhook.Options{
			Host:    wh.LocalServingHost,
			Port:    wh.LocalServingPort,
			CertDir: wh.LocalServingCertDir,
		}),
	})
	if err != nil {
		return fmt.Errorf("create manager: %w", err)
	}
	if err := operator.Setup(mgr, opts); err != nil {
		return err
	}
	mgrCtx, stopMgr := context.WithCancel(ctx)
	mgrDone := make(chan error, 1)
	go func() { mgrDone <- mgr.Start(mgrCtx) }()
	defer func() {
		stopMgr()
		<-mgrDone
	}()
	if !mgr.GetCache().WaitForCacheSync(ctx) {
		return fmt.Errorf("manager cache did not sync")
	}

	kubectl := func(args ...string) *exec.Cmd {
		cmd := exec.CommandContext(ctx, cluster.Kubectl(), append([]string{"--kubeconfig", cluster.KubeconfigPath}, args...)...)
		cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
		return cmd
	}
	fmt.Println("Applying config/samples ...")
	if err := kubectl("apply", "--server-side", "-k", filepath.Join(root, "config", "samples")).Run(); err != nil {
		return fmt.Errorf("kubectl apply -k config/samples: %w", err)
	}

	k := fmt.Sprintf("%s --kubeconfig %s", cluster.Kubectl(), cluster.KubeconfigPath)
	fmt.Printf(`
appquota is running on a local control plane.

  kubeconfig: %[1]s
  kubectl:    %[2]s

Try:
  export KUBECONFIG=%[1]s
  alias kubectl=%[2]s
  %[3]s get quotaprofiles
  %[3]s get appquotas -A
  %[3]s explain appquota.spec.overrides
  %[3]s -n tenants describe appquota acme-chat
  %[3]s -n %[4]s get configmap %[5]s -o yaml    # the rendered limits gateways read

Press Ctrl-C to stop.
`, cluster.KubeconfigPath, cluster.Kubectl(), k, opts.Namespace, opts.ConfigMapName)

	select {
	case <-ctx.Done():
		return nil
	case err := <-mgrDone:
		mgrDone <- err
		return fmt.Errorf("manager stopped: %w", err)
	}
}
