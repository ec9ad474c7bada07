package localcluster_test

import (
	"context"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	quotav1 "github.com/appquota/appquota/api/v1alpha1"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"

	corev1 "k8s.io/api/core/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/appquota/appquota/internal/localcluster"
)

// TestStartCreateReadStop proves the harness: a real API server stores and returns
// an object, our CRDs are installed and established, the kubeconfig is written,
// and Stop leaves no etcd or kube-apiserver behind.
func TestStartCreateReadStop(t *testing.T) {
	cluster, err := localcluster.Start(localcluster.Options{Scheme: testScheme(t)})
	if err != nil {
		t.Fatal(err)
	}
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			_ = cluster.Stop()
		}
	})
	ctx := context.Background()
	c, err := client.New(cluster.Config, client.Options{Scheme: cluster.Scheme})
	if err != nil {
		t.Fatal(err)
	}

	want := &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: "smoke", Namespace: "default"},
		Data:       map[string]string{"hello": "world"},
	}
	if err := c.Create(ctx, want); err != nil {
		t.Fatalf("create: %v", err)
	}
	var got corev1.ConfigMap
	if err := c.Get(ctx, client.ObjectKeyFromObject(want), &got); err != nil {
		t.Fatalf("read back: %v", err)
	}
	if got.Data["hello"] != "world" || got.UID == "" {
		t.Fatalf("read back %+v, want data hello=world and a UID from the server", got)
	}

	crdScheme := runtime.NewScheme()
	if err := apiextensionsv1.AddToScheme(crdScheme); err != nil {
		t.Fatal(err)
	}
	crdClient, err := client.New(cluster.Config, client.Options{Scheme: crdScheme})
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"quotaprofiles.quota.appquota.io", "appquotas.quota.appquota.io"} {
		var crd apiextensionsv1.CustomResourceDefinition
		if err := crdClient.Get(ctx, client.ObjectKey{Name: name}, &crd); err != nil {
			t.Fatalf("CRD %s from config/crd/bases not installed: %v", name, err)
		}
		established := false
		for _, cond := range crd.Status.Conditions {
			if cond.Type == apiextensionsv1.Established && cond.Status == apiextensionsv1.ConditionTrue {
				established = true
			}
		}
		if !established {
			t.Errorf("CRD %s is not Established: %+v", name, crd.Status.Conditions)
		}
	}

	if fi, err := os.Stat(cluster.KubeconfigPath); err != nil || fi.Size() == 0 {
		t.Fatalf("kubeconfig %s not written: %v", cluster.KubeconfigPath, err)
	}

	// The CRDs' schemas are already published: kubectl explain answers for both
	// kinds the moment Start returns, with no retry.
	for _, path := range []string{"appquota.spec", "quotaprofile.spec"} {
		out, err := exec.Command(cluster.Kubectl(), "--kubeconfig", cluster.KubeconfigPath, "explain", path).CombinedOutput()
		if err != nil || !strings.Contains(string(out), "FIELDS:") {
			t.Errorf("kubectl explain %s right after Start: %v\n%s", path, err, out)
		}
	}

	pids := localcluster.ControlPlanePIDs()
	if len(pids) != 2 {
		t.Fatalf("want etcd and kube-apiserver as children of this process, found pids %v", pids)
	}
	stopped = true
	if err := cluster.Stop(); err != nil {
		t.Fatalf("stop: %v", err)
	}
	for _, pid := range pids {
		// Signal 0 checks existence; the processes were reaped by envtest, so ESRCH.
		if err := syscall.Kill(pid, 0); err != syscall.ESRCH {
			t.Errorf("process %d still exists after Stop (kill -0: %v)", pid, err)
		}
	}
	if _, err := os.Stat(cluster.KubeconfigPath); !os.IsNotExist(err) {
		t.Errorf("temporary kubeconfig %s left behind after Stop", cluster.KubeconfigPath)
	}
}

// TestMissingCRDDirectoryIsAnError proves that the CRD directory is really read:
// pointing the harness at a tree without config/crd/bases fails instead of
// starting a cluster without our API.
func TestMissingCRDDirectoryIsAnError(t *testing.T) {
	root := t.TempDir()
	if err := os.WriteFile(root+"/go.mod", []byte("module x\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cluster, err := localcluster.Start(localcluster.Options{RepoRoot: root, Scheme: testScheme(t)})
	if err == nil {
		_ = cluster.Stop()
		t.Fatal("Start succeeded without config/crd/bases; want an error")
	}
	if len(localcluster.ControlPlanePIDs()) != 0 {
		t.Errorf("a failed Start left control plane processes behind: %v", localcluster.ControlPlanePIDs())
	}
}

// testScheme is what a test of this package brings: the built-in types and
// the API's, nothing of the operator.
func testScheme(t *testing.T) *runtime.Scheme {
	t.Helper()
	s := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(s); err != nil {
		t.Fatal(err)
	}
	if err := quotav1.AddToScheme(s); err != nil {
		t.Fatal(err)
	}
	return s
}

func TestStartWithoutSchemeIsAnError(t *testing.T) {
	if _, err := localcluster.Start(localcluster.Options{}); err == nil || !strings.Contains(err.Error(), "Scheme is nil") {
		t.Fatalf("Start without a scheme: %v, want an error naming Options.Scheme", err)
	}
}

// TestKillAndRestart proves what the fault suite relies on: the API server
// and etcd, each stopped and started again by Kill and Restart, come back on
// the same port, certificates and data (an object written before is read
// after, with the old client), and Stop still leaves no process behind.
func TestKillAndRestart(t *testing.T) {
	cluster, err := localcluster.Start(localcluster.Options{Scheme: testScheme(t)})
	if err != nil {
		t.Fatal(err)
	}
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			_ = cluster.Stop()
		}
	})
	ctx := context.Background()
	c, err := cluster.Client()
	if err != nil {
		t.Fatal(err)
	}
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "survivor", Namespace: "default"}, Data: map[string]string{"k": "v"}}
	if err := c.Create(ctx, cm); err != nil {
		t.Fatal(err)
	}
	for _, step := range []struct {
		comp localcluster.Component
		sig  syscall.Signal
	}{{localcluster.APIServer, syscall.SIGTERM}, {localcluster.Etcd, syscall.SIGKILL}, {localcluster.APIServer, syscall.SIGKILL}} {
		if err := cluster.Kill(step.comp, step.sig); err != nil {
			t.Fatalf("kill %s: %v", step.comp, err)
		}
		if step.comp == localcluster.APIServer {
			if err := c.Get(ctx, client.ObjectKeyFromObject(cm), &corev1.ConfigMap{}); err == nil {
				t.Fatalf("a read succeeded with %s stopped", step.comp)
			}
		}
		if err := cluster.Restart(step.comp); err != nil {
			t.Fatalf("restart %s: %v", step.comp, err)
		}
		// etcd restarted is reached by the API server's client again
		// within its retries: poll.
		var got corev1.ConfigMap
		deadline := time.Now().Add(time.Minute)
		for {
			err = c.Get(ctx, client.ObjectKeyFromObject(cm), &got)
			if err == nil || time.Now().After(deadline) {
				break
			}
			time.Sleep(200 * time.Millisecond)
		}
		if err != nil || got.Data["k"] != "v" {
			t.Fatalf("after restarting %s: read %+v, %v; want the object written before", step.comp, got.Data, err)
		}
	}
	pids := localcluster.ControlPlanePIDs()
	if len(pids) != 2 {
		t.Fatalf("want etcd and kube-apiserver running after the restarts, found pids %v", pids)
	}
	stopped = true
	if err := cluster.Stop(); err != nil {
		t.Fatalf("stop: %v", err)
	}
	for _, pid := range pids {
		if err := syscall.Kill(pid, 0); err != syscall.ESRCH {
			t.Errorf("process %d still exists after Stop (kill -0: %v)", pid, err)
		}
	}
}
