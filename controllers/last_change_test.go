package controllers_test

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	quotav1 "github.com/appquota/appquota/api/v1alpha1"
	"github.com/appquota/appquota/internal/operatortest"
)

// stampChangedBy installs config/policy's changed-by MutatingAdmissionPolicy
// (only it: the grants policy would refuse what other tests here create on
// purpose) until the test ends, and waits until the API server applies it.
func stampChangedBy(t *testing.T, ns string) {
	t.Helper()
	file := filepath.Join("..", "config", "policy", "changed_by.yaml")
	kubectl := func(args ...string) {
		t.Helper()
		cmd := exec.Command(cluster.Kubectl(), append([]string{"--kubeconfig", cluster.KubeconfigPath}, args...)...)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("kubectl %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	kubectl("apply", "-f", file)
	t.Cleanup(func() { kubectl("delete", "--ignore-not-found", "-f", file) })
	// The API server compiles a policy a moment after it is created: in
	// force once a dry-run create comes back stamped.
	probe := as(t, "probe-user")
	eventually(t, wait, func() error {
		a := appQuota(ns, "probe", "probe")
		if err := probe.Create(context.Background(), a, client.DryRunAll); err != nil {
			return err
		}
		if got := a.Annotations[quotav1.ChangedByAnnotation]; got != "probe-user" {
			return fmt.Errorf("the changed-by policy is not in force yet (annotation %q)", got)
		}
		return nil
	})
}

// as is a client that impersonates user, as a person's kubectl --as does.
func as(t *testing.T, user string) client.WithWatch {
	t.Helper()
	cfg := rest.CopyConfig(cluster.Config)
	cfg.Impersonate = rest.ImpersonationConfig{UserName: user, Groups: []string{"system:masters"}}
	c, err := client.NewWithWatch(cfg, client.Options{Scheme: cluster.Scheme})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// readyAppQuota waits until the AppQuota is Ready at its current generation and
// returns it.
func readyAppQuota(t *testing.T, key client.ObjectKey) *quotav1.AppQuota {
	t.Helper()
	eventually(t, wait, ready(key, metav1.ConditionTrue, quotav1.ReasonApplied))
	var a quotav1.AppQuota
	if err := k8s.Get(context.Background(), key, &a); err != nil {
		t.Fatal(err)
	}
	return &a
}

// TestLastChangeInStatus: an edit that changes an app's effective limits
// leaves, in the status, who made it (the user the API server stamped, here
// impersonated), when the controller applied it, its generation and what it
// did, in the same status write that reports the generation Ready; an edit
// that changes no effective limit (a new reason alone) leaves the record as
// it was.
func TestLastChangeInStatus(t *testing.T) {
	ctx := context.Background()
	ns := namespace(t)
	stampChangedBy(t, ns)
	alice, bob, carol := as(t, "alice@example.com"), as(t, "bob@example.com"), as(t, "carol@example.com")

	// A manager's first render cannot compare limits (its record says so):
	// once another AppQuota is Ready, alice's change comes in a later one.
	warm := appQuota(ns, "warm-up", "lastchange-0")
	if err := k8s.Create(ctx, warm); err != nil {
		t.Fatal(err)
	}
	readyAppQuota(t, client.ObjectKeyFromObject(warm))

	// alice creates the AppQuota with a raise.
	start := time.Now().Truncate(time.Second)
	a := appQuota(ns, "acme", "lastchange-1", quotav1.Override{Group: sendGroup, Reason: "SALES-1234 enterprise upgrade",
		Limits: []quotav1.OverrideLimit{{Unit: quotav1.UnitRequests, Window: quotav1.WindowSecond, Max: 500}}})
	if err := alice.Create(ctx, a); err != nil {
		t.Fatal(err)
	}
	key := client.ObjectKeyFromObject(a)
	got := readyAppQuota(t, key)
	want := quotav1.LimitsChange{By: "alice@example.com", Generation: 1,
		Summary: "raised group messages-send-users Requests/Second from 100 to 500: SALES-1234 enterprise upgrade"}
	first := checkLastChange(t, got, want, start)

	// bob changes the reason alone: the document changes, no limit does.
	// Patches, not updates: a status write in between is no conflict.
	base := got.DeepCopy()
	got.Spec.Overrides[0].Reason = "SALES-1234 enterprise upgrade, signed"
	if err := bob.Patch(ctx, got, client.MergeFrom(base)); err != nil {
		t.Fatal(err)
	}
	got = readyAppQuota(t, key)
	if got.Generation != 2 || got.Annotations[quotav1.ChangedByAnnotation] != "bob@example.com" {
		t.Fatalf("bob's edit: generation %d, changed-by %q", got.Generation, got.Annotations[quotav1.ChangedByAnnotation])
	}
	if lc := got.Status.LastChange; !equality.Semantic.DeepEqual(lc, first) {
		t.Errorf("after an edit of the reason alone, lastChange %+v, want alice's %+v kept", lc, first)
	}

	// carol lowers it: watched from before her edit, the write that reports
	// generation 3 Ready must already carry her change.
	watcher, err := client.NewWithWatch(cluster.Config, client.Options{Scheme: cluster.Scheme})
	if err != nil {
		t.Fatal(err)
	}
	w, err := watcher.Watch(ctx, &quotav1.AppQuotaList{}, client.InNamespace(ns),
		&client.ListOptions{Raw: &metav1.ListOptions{ResourceVersion: got.ResourceVersion}})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	base = got.DeepCopy()
	got.Spec.Overrides[0].Limits[0].Max = 200
	got.Spec.Overrides[0].Reason = "SALES-1300 downgrade"
	before := time.Now().Truncate(time.Second)
	if err := carol.Patch(ctx, got, client.MergeFrom(base)); err != nil {
		t.Fatal(err)
	}
	var seen *quotav1.AppQuota
	timeout := time.After(wait)
	for seen == nil {
		select {
		case ev, ok := <-w.ResultChan():
			if !ok {
				t.Fatal("the watch ended before generation 3 was Ready")
			}
			o, isAQ := ev.Object.(*quotav1.AppQuota)
			if ev.Type != watch.Modified || !isAQ || o.Name != key.Name {
				continue
			}
			if c := meta.FindStatusCondition(o.Status.Conditions, quotav1.ConditionReady); c != nil && c.ObservedGeneration == 3 {
				seen = o
			}
		case <-timeout:
			t.Fatal("generation 3 not reported Ready")
		}
	}
	want = quotav1.LimitsChange{By: "carol@example.com", Generation: 3,
		Summary: "lowered group messages-send-users Requests/Second from 500 to 200: SALES-1300 downgrade"}
	third := checkLastChange(t, seen, want, before)
	if third.At.Before(first.At) {
		t.Errorf("carol's change at %v, before alice's at %v", third.At, first.At)
	}

	// dave raises it while no manager runs: the next manager's first render
	// cannot compare, and the record says so, with dave and the new
	// generation. The warm-up AppQuota, whose status already describes its
	// generation, gets no new record (and no write).
	dave := as(t, "dave@example.com")
	var warmBefore quotav1.AppQuota
	if err := k8s.Get(ctx, client.ObjectKeyFromObject(warm), &warmBefore); err != nil {
		t.Fatal(err)
	}
	stopOperator()
	base = seen.DeepCopy()
	seen.Spec.Overrides[0].Limits[0].Max = 700
	seen.Spec.Overrides[0].Reason = "SALES-1400 while the manager was down"
	before = time.Now().Truncate(time.Second)
	patchErr := dave.Patch(ctx, seen, client.MergeFrom(base))
	if stopOperator, err = operatortest.Run(ctx, cluster, opts); err != nil {
		t.Fatal(err)
	}
	if patchErr != nil {
		t.Fatal(patchErr)
	}
	got = readyAppQuota(t, key)
	want = quotav1.LimitsChange{By: "dave@example.com", Generation: 4,
		Summary: "applied in the first configuration written since the manager started: the limits before are not known"}
	checkLastChange(t, got, want, before)
	var warmAfter quotav1.AppQuota
	if err := k8s.Get(ctx, client.ObjectKeyFromObject(warm), &warmAfter); err != nil {
		t.Fatal(err)
	}
	if !equality.Semantic.DeepEqual(warmAfter.Status.LastChange, warmBefore.Status.LastChange) || warmAfter.ResourceVersion != warmBefore.ResourceVersion {
		t.Errorf("the warm-up AppQuota, unchanged across the restart: lastChange %+v, resourceVersion %s; was %+v, %s",
			warmAfter.Status.LastChange, warmAfter.ResourceVersion, warmBefore.Status.LastChange, warmBefore.ResourceVersion)
	}
}

// checkLastChange asserts a's lastChange is want, applied at or after
// notBefore and not in the future, and returns it.
func checkLastChange(t *testing.T, a *quotav1.AppQuota, want quotav1.LimitsChange, notBefore time.Time) *quotav1.LimitsChange {
	t.Helper()
	lc := a.Status.LastChange
	if lc == nil {
		t.Fatalf("AppQuota %s generation %d: no lastChange in the status %+v", a.Key(), a.Generation, a.Status)
	}
	if lc.At == nil || lc.At.Time.Before(notBefore) || lc.At.After(time.Now()) {
		t.Errorf("lastChange.at %v, want between %v and now", lc.At, notBefore)
	}
	got := *lc
	got.At = nil
	if !equality.Semantic.DeepEqual(got, want) {
		t.Errorf("lastChange\n got %+v\nwant %+v", got, want)
	}
	return lc
}
