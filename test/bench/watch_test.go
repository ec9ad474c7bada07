package main

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/appquota/appquota/internal/operatortest"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/appquota/appquota/internal/localcluster"
)

// TestWatchOutlivesRequestTimeout checks that the bench's ConfigMap watches
// outlast the API server's request timeout, which ends a plain watch: with
// --min-request-timeout=1 the API server ends each watch within two seconds,
// and every update made over five seconds must still arrive, in order.
func TestWatchOutlivesRequestTimeout(t *testing.T) {
	cluster, err := operatortest.StartCluster(localcluster.Options{SkipWebhooks: true, APIServerFlags: map[string]string{"min-request-timeout": "1"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cluster.Stop() })
	cs, err := kubernetes.NewForConfig(cluster.Config)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	b := &bench{cs: cs}
	cms := cs.CoreV1().ConfigMaps("default")
	cm, err := cms.Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "watched"}, Data: map[string]string{"v": "0"}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	w, err := b.watchConfigMaps(ctx, "default", metav1.ListOptions{FieldSelector: "metadata.name=watched"}, cm.ResourceVersion)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	start := time.Now()
	for i := 1; time.Since(start) < 5*time.Second; i++ {
		v := strconv.Itoa(i)
		cm.Data["v"] = v
		if cm, err = cms.Update(ctx, cm, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		// Bookmarks carry no data; the next change event must be this update.
		for seen := false; !seen; {
			select {
			case ev, open := <-w.ResultChan():
				if !open {
					t.Fatalf("the watch ended after %s, before update %d arrived", time.Since(start).Round(time.Millisecond), i)
				}
				got, ok := ev.Object.(*corev1.ConfigMap)
				if !ok || got.Data["v"] == "" {
					continue
				}
				if got.Data["v"] != v {
					t.Fatalf("update %d: the event holds %q", i, got.Data["v"])
				}
				seen = true
			case <-ctx.Done():
				t.Fatalf("update %d never arrived", i)
			}
		}
	}
}
