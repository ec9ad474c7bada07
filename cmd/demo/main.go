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
	"time"

	"github.com/appquota/appquota/internal/operatortest"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	"github.com/appquota/appquota/internal/localcluster"
	"github.com/appquota/appquota/internal/wiring"
	"github.com/appquota/appquota/pkg/quotaconfig"
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
	cluster, err := operatortest.StartCluster(localcluster.Options{
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

	opts := wiring.DefaultOptions()
	c, err := cluster.Client()
	if err != nil {
		return err
	}

	stopOperator, err := operatortest.Run(ctx, cluster, opts)
	if err != nil {
		return err
	}
	defer stopOperator()

	kubectl := func(args ...string) *exec.Cmd {
		cmd := exec.CommandContext(ctx, cluster.Kubectl(), append([]string{"--kubeconfig", cluster.KubeconfigPath}, args...)...)
		cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
		return cmd
	}
	fmt.Println("Applying config/samples ...")
	if err := kubectl("apply", "--server-side", "-k", filepath.Join(root, "config", "samples")).Run(); err != nil {
		return fmt.Errorf("kubectl apply -k config/samples: %w", err)
	}

	// Wait for the controller to write the samples into the ConfigMap (plain,
	// compressed or sharded: LoadConfigMaps reads every layout).
	var cm corev1.ConfigMap
	key := client.ObjectKey{Namespace: opts.Namespace, Name: opts.ConfigMapName}
	var reads int // the index, then each shard
	var lastErr error
	err = wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		reads = 0
		doc, err := quotaconfig.LoadConfigMaps(key.Name, func(name string) (map[string]string, map[string][]byte, error) {
			var got corev1.ConfigMap
			if err := c.Get(ctx, client.ObjectKey{Namespace: key.Namespace, Name: name}, &got); err != nil {
				return nil, nil, err
			}
			if name == key.Name {
				cm = got
			}
			reads++
			return got.Data, got.BinaryData, nil
		})
		lastErr = err
		return err == nil && len(doc.Apps) >= 3, nil
	})
	if err != nil {
		return fmt.Errorf("waiting for ConfigMap %s to hold the sample apps: %w (last read: %v)", key, err, lastErr)
	}
	layout := fmt.Sprintf("%d bytes of %s", len(cm.Data[quotaconfig.DataKey]), quotaconfig.DataKey)
	switch {
	case reads > 1:
		layout = fmt.Sprintf("an index and %d shard ConfigMaps", reads-1)
	case cm.BinaryData[quotaconfig.GzipDataKey] != nil:
		layout = fmt.Sprintf("%d bytes of %s", len(cm.BinaryData[quotaconfig.GzipDataKey]), quotaconfig.GzipDataKey)
	}

	fmt.Printf(`
appquota is running on a local control plane.

  kubeconfig:  %[1]s
  ConfigMap:   %[3]s/%[4]s (%[5]s, %[6]s)

In another shell:
  export KUBECONFIG=%[1]s
  export PATH=%[2]s:%[7]s:$PATH     # the kubectl built with the control plane, and kubectl-appquota
  kubectl get quotaprofiles
  kubectl get appquotas -A
  kubectl explain appquota.spec.overrides
  kubectl -n tenants describe appquota acme-chat
  kubectl -n %[3]s get configmap %[4]s -o jsonpath='{.data.limits\.json}'   # what gateways read
  kubectl appquota explain 1122334455 POST /app-id/1122334455/messages/users   # a raised app
  kubectl appquota explain 9988776655 POST /app-id/9988776655/messages/chatrooms/broadcast   # a blocked one
  kubectl appquota list 5566778899
  kubectl -n tenants patch appquota acme-chat --type=json -p '[{"op":"replace","path":"/spec/overrides/0/limits/0/max","value":900}]'

Press Ctrl-C to stop.
`, cluster.KubeconfigPath, filepath.Dir(cluster.Kubectl()), opts.Namespace, opts.ConfigMapName,
		layout, cm.Data[quotaconfig.HashKey], filepath.Join(root, "bin"))
	<-ctx.Done()
	return nil
}
