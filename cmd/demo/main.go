// Command demo runs appquota with no cluster: it starts a local kube-apiserver and
// etcd, installs the CRDs and webhooks, runs the operator in-process with its
// xDS server, starts redis-server and envoyproxy/ratelimit fed by it, applies
// config/samples and prints what to try. Ctrl-C stops everything.
package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"time"

	"github.com/appquota/appquota/internal/engine"
	"github.com/appquota/appquota/internal/operatortest"
	"github.com/appquota/appquota/internal/supervise"

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
	opts.RequireAppIDGrants = true // as the manager binary
	opts.AppIDReservation = 24 * time.Hour
	if opts.XDSBindAddress, err = supervise.FreeAddr(); err != nil {
		return err
	}
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
	fmt.Println("Applying config/policy (app ID grants, changed-by stamp) ...")
	if err := kubectl("apply", "--server-side", "-k", filepath.Join(root, "config", "policy")).Run(); err != nil {
		return fmt.Errorf("kubectl apply -k config/policy: %w", err)
	}
	fmt.Println("Applying config/samples ...")
	if err := kubectl("apply", "--server-side", "-k", filepath.Join(root, "config", "samples")).Run(); err != nil {
		return fmt.Errorf("kubectl apply -k config/samples: %w", err)
	}

	fmt.Println("Starting redis-server and envoyproxy/ratelimit, fed over xDS by the operator...")
	rl, stopEngine, err := startEngine(ctx, root, opts)
	if err != nil {
		return err
	}
	defer stopEngine()
	// The CLI's --ratelimit-address defaults to ratelimit's own port on
	// localhost: the flag is printed only when the demo's ratelimit could not
	// take that port.
	addressFlag := ""
	if _, port, _ := net.SplitHostPort(rl.GRPCAddr()); port != defaultRatelimitPort {
		addressFlag = " --ratelimit-address " + rl.GRPCAddr()
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

The rate-limit engine (envoyproxy/ratelimit, counters in redis-server) enforces
the same limits; check asks it as a gateway would, one line per call:
  kubectl get appquotas -A                                  # Ready and Enforced
  kubectl appquota check 4000000001 POST /app-id/4000000001/messages/users/broadcast --hits 3%[8]s   # 1/min: OK, then OVER_LIMIT
  kubectl appquota check 4000000002 POST /app-id/4000000002/messages/users --cost 600 --hits 11%[8]s   # 6000 messages/min
  kubectl appquota check 4000000003 DELETE /app-id/4000000003/users/alice/user_channel --hits 6%[8]s   # 5/min per user
  kubectl appquota check 9988776655 POST /app-id/9988776655/messages/chatrooms/broadcast%[8]s   # blocked: OVER_LIMIT at once
Raise a limit and see it enforced (raise waits until it is; the sample's
limit was set by kubectl, so raise takes it over with --force-conflicts):
  kubectl appquota raise 1122334455 messages-send-users --max 900 --window second --reason "demo" -n tenants --force-conflicts
  kubectl appquota check 1122334455 POST /app-id/1122334455/messages/users%[8]s   # 900/s now

Press Ctrl-C to stop.
`, cluster.KubeconfigPath, filepath.Dir(cluster.Kubectl()), opts.Namespace, opts.ConfigMapName,
		layout, cm.Data[quotaconfig.HashKey], filepath.Join(root, "bin"), addressFlag)
	<-ctx.Done()
	return nil
}

// defaultRatelimitPort is envoyproxy/ratelimit's own default gRPC port, which
// kubectl appquota check assumes.
const defaultRatelimitPort = "8081"

// startEngine starts redis-server and envoyproxy/ratelimit taking its
// configuration over xDS from the operator, on ratelimit's default gRPC port
// when it is free, and returns once ratelimit has loaded the configuration.
func startEngine(ctx context.Context, root string, opts wiring.Options) (*engine.Ratelimit, func(), error) {
	redisBin, err := engine.RedisBinary()
	if err != nil {
		return nil, nil, err
	}
	rlBin, err := engine.RatelimitBinary()
	if err != nil {
		return nil, nil, err
	}
	logs, err := os.Create(filepath.Join(root, "bin", "demo", "engine.log"))
	if err != nil {
		return nil, nil, err
	}
	redis, err := engine.StartRedis(ctx, engine.RedisOptions{Bin: redisBin, Log: logs})
	if err != nil {
		logs.Close()
		return nil, nil, err
	}
	port := 0
	if l, err := net.Listen("tcp", "127.0.0.1:"+defaultRatelimitPort); err == nil {
		l.Close()
		port, _ = strconv.Atoi(defaultRatelimitPort)
	}
	rl, err := engine.StartRatelimit(ctx, engine.RatelimitOptions{Bin: rlBin, RedisAddr: redis.Addr(), XDSAddr: opts.XDSBindAddress,
		NodeID: "demo", Domain: opts.RateLimitDomain, GRPCPort: port, MaxMsgBytes: opts.XDSMaxMessageBytes, Log: logs})
	if err != nil {
		_ = redis.Stop()
		logs.Close()
		return nil, nil, fmt.Errorf("%w (its log: %s)", err, logs.Name())
	}
	fmt.Printf("ratelimit serves gRPC on %s (log: %s)\n", rl.GRPCAddr(), logs.Name())
	return rl, func() {
		_ = rl.Stop()
		_ = redis.Stop()
		logs.Close()
	}, nil
}
