package controllers_test

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"testing"

	admissionv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	quotav1 "github.com/appquota/appquota/api/v1alpha1"
	"github.com/appquota/appquota/internal/layout"
	"github.com/appquota/appquota/internal/wiring"
	"github.com/appquota/appquota/pkg/quotaconfig"
)

// createIncompressible creates n AppQuotas in ns whose overrides carry
// random-looking reasons, which compress poorly: a few dozen make a document
// several times a small budget even gzipped. App i has appID prefix-i and
// max 200+i.
func createIncompressible(t *testing.T, ns, prefix string, n int) {
	t.Helper()
	for i := range n {
		o := raise(sendGroup, int64(200+i))
		o.Reason = fmt.Sprintf("%x", sha256.Sum256([]byte(prefix+fmt.Sprint(i))))
		if err := k8s.Create(context.Background(), appQuota(ns, fmt.Sprintf("%s%d", prefix, i), fmt.Sprintf("%s-%d", prefix, i), o)); err != nil {
			t.Fatal(err)
		}
	}
}

// shardedWithInvalid sets up what the last-good tests start from: 60
// AppQuotas with incompressible reasons in ns (createIncompressible) and
// prefix-bad raised to 400; then the operator run with a budget of a third of
// the compressed document and shardAbove (wiring.Options.ShardAboveBytes), so
// that the configuration is sharded and every app in its shard; then
// prefix-bad made invalid past the webhook, its last good entry kept. It
// returns the options run with, the stored index and the invalid AppQuota.
func shardedWithInvalid(t *testing.T, ns, prefix string, shardAbove int) (wiring.Options, quotaconfig.Document, *quotav1.AppQuota) {
	t.Helper()
	ctx := context.Background()
	createIncompressible(t, ns, prefix, 60)
	bad := appQuota(ns, "bad", prefix+"-bad", raise(sendGroup, 400))
	if err := k8s.Create(ctx, bad); err != nil {
		t.Fatal(err)
	}
	applied(t, bad, prefix+"-bad", 400)
	doc, _, err := document()
	if err != nil {
		t.Fatal(err)
	}
	whole, _ := json.Marshal(doc)
	gz, _ := layout.Compress(whole)
	small := opts
	small.MaxConfigBytes = len(gz) / 3
	small.ShardAboveBytes = shardAbove
	runWith(t, small)
	var index quotaconfig.Document
	eventually(t, wait, wantShardedIndex(&index))
	eventually(t, wait, wantIndexCarriesNone)

	if err := k8s.Get(ctx, client.ObjectKeyFromObject(bad), bad); err != nil {
		t.Fatal(err)
	}
	bad.Spec.Overrides[0].Group = "messages-send-userz"
	if err := k8s.Update(ctx, bad); err != nil {
		t.Fatal(err)
	}
	eventually(t, wait, ready(client.ObjectKeyFromObject(bad), metav1.ConditionFalse, quotav1.ReasonInvalidSpec))
	return small, index, bad
}

// denyIndexUpdates makes the API server refuse every update of the named
// ConfigMap (the index), with a ValidatingAdmissionPolicy, until the returned
// func is called: a write of the stored set then fails between its shards
// and its index, as when the leader dies there.
func denyIndexUpdates(t *testing.T) (allow func()) {
	t.Helper()
	ctx := context.Background()
	name := "deny-index-updates"
	policy := &admissionv1.ValidatingAdmissionPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: admissionv1.ValidatingAdmissionPolicySpec{
			FailurePolicy: ptr.To(admissionv1.Fail),
			MatchConstraints: &admissionv1.MatchResources{ResourceRules: []admissionv1.NamedRuleWithOperations{{
				RuleWithOperations: admissionv1.RuleWithOperations{
					Operations: []admissionv1.OperationType{admissionv1.Update},
					Rule:       admissionv1.Rule{APIGroups: []string{""}, APIVersions: []string{"v1"}, Resources: []string{"configmaps"}},
				},
			}}},
			Validations: []admissionv1.Validation{{
				Expression: fmt.Sprintf("object.metadata.name != %q", opts.ConfigMapName),
				Message:    "index updates are refused by this test",
			}},
		},
	}
	binding := &admissionv1.ValidatingAdmissionPolicyBinding{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: admissionv1.ValidatingAdmissionPolicyBindingSpec{
			PolicyName:        name,
			ValidationActions: []admissionv1.ValidationAction{admissionv1.Deny},
		},
	}
	for _, o := range []client.Object{policy, binding} {
		if err := k8s.Create(ctx, o); err != nil {
			t.Fatal(err)
		}
	}
	allow = func() {
		for _, o := range []client.Object{binding, policy} {
			if err := k8s.Delete(ctx, o); client.IgnoreNotFound(err) != nil {
				t.Error(err)
			}
		}
		// Gone once an update of the index goes through again.
		eventually(t, wait, func() error { return indexUpdate(client.DryRunAll) })
	}
	t.Cleanup(allow)
	// In force once the API server refuses an update of the index.
	eventually(t, wait, func() error {
		if err := indexUpdate(client.DryRunAll); err == nil {
			return fmt.Errorf("the policy is not in force yet")
		}
		return nil
	})
	return allow
}

// indexUpdate updates the index ConfigMap as it is (with opts, a dry run).
func indexUpdate(opts ...client.UpdateOption) error {
	_, cm, err := document()
	if err != nil {
		return err
	}
	cm.Annotations = map[string]string{"test": "probe"}
	return k8s.Update(context.Background(), cm, opts...)
}

// TestHalfWrittenSetKeepsLastGood: a write of a sharded configuration that
// stops between the shards and the index (here the API server refuses the
// index) leaves a set that still verifies: the index names shards no write
// touched. A new leader started then reads it, and an AppQuota that is
// invalid now (created past the webhook) keeps its last good entry, while
// the change that was being written goes out.
func TestHalfWrittenSetKeepsLastGood(t *testing.T) {
	ctx := context.Background()
	ns := namespace(t)
	small, _, bad := shardedWithInvalid(t, ns, "half", 0)

	// A change whose write stops after its shard.
	before := shardConfigMaps(t)
	allow := denyIndexUpdates(t)
	var a quotav1.AppQuota
	if err := k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: "half3"}, &a); err != nil {
		t.Fatal(err)
	}
	a.Spec.Overrides[0].Limits[0].Max = 3333
	if err := k8s.Update(ctx, &a); err != nil {
		t.Fatal(err)
	}
	eventually(t, wait, func() error {
		for name, cm := range shardConfigMaps(t) {
			if old, ok := before[name]; !ok || old.ResourceVersion != cm.ResourceVersion {
				return nil // a shard was written
			}
		}
		return fmt.Errorf("no shard written yet")
	})
	// Gateways, and anyone reading the set, still read it whole: the old one.
	if err := wantLimit("half-3", 203)(); err != nil {
		t.Errorf("between the shard and the index: %v", err)
	}

	// A new leader, with no memory of its own, after the fault is gone.
	stopOperator()
	allow()
	runWith(t, small)
	eventually(t, wait, wantLimit("half-3", 3333))
	if err := wantLimit("half-bad", 400)(); err != nil {
		t.Errorf("the invalid AppQuota lost its last good entry: %v", err)
	}
	eventually(t, wait, func() error {
		var got quotav1.AppQuota
		if err := k8s.Get(ctx, client.ObjectKeyFromObject(bad), &got); err != nil {
			return err
		}
		if c := meta.FindStatusCondition(got.Status.Conditions, quotav1.ConditionReady); c == nil ||
			c.Message == "" || c.Status != metav1.ConditionFalse {
			return fmt.Errorf("Ready: %+v", c)
		}
		return nil
	})
	if err := k8s.DeleteAllOf(ctx, &quotav1.AppQuota{}, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
}

// TestUnverifiedSetHolds: a new leader that finds the stored set damaged (a
// flipped byte in a shard) and has no render of its own does not drop the
// last good entry of an invalid AppQuota: it writes nothing and says so on
// the QuotaProfiles. Once the shard is restored, it writes again, with the
// entry kept.
func TestUnverifiedSetHolds(t *testing.T) {
	ctx := context.Background()
	ns := namespace(t)
	small, index, _ := shardedWithInvalid(t, ns, "hold", opts.ShardAboveBytes)

	// The leader goes; a shard is damaged; a new leader comes.
	stopOperator()
	_, cm, err := document()
	if err != nil {
		t.Fatal(err)
	}
	indexVersion := cm.ResourceVersion
	victim := shardConfigMaps(t)[index.Shards[0].ConfigMap]
	key := index.Shards[0].Key
	good := append([]byte(nil), victim.BinaryData[key]...)
	victim.BinaryData[key][len(good)/2] ^= 0xff
	if err := k8s.Update(ctx, &victim); err != nil {
		t.Fatal(err)
	}
	runWith(t, small)
	eventually(t, wait, hasEvent("default", "default", "StoredConfigUnverified"))
	var now corev1.ConfigMap
	if err := k8s.Get(ctx, client.ObjectKeyFromObject(cm), &now); err != nil {
		t.Fatal(err)
	}
	if now.ResourceVersion != indexVersion {
		t.Errorf("the new leader wrote the index over a set it could not verify")
	}

	// Restored: the set verifies again, the held render goes out, and the
	// invalid AppQuota's last good entry is still there.
	if err := k8s.Get(ctx, client.ObjectKeyFromObject(&victim), &victim); err != nil {
		t.Fatal(err)
	}
	victim.BinaryData[key] = good
	if err := k8s.Update(ctx, &victim); err != nil {
		t.Fatal(err)
	}
	a := &quotav1.AppQuota{}
	if err := k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: "hold5"}, a); err != nil {
		t.Fatal(err)
	}
	a.Spec.Overrides[0].Limits[0].Max = 5555
	if err := k8s.Update(ctx, a); err != nil {
		t.Fatal(err)
	}
	eventually(t, wait, wantLimit("hold-5", 5555))
	if err := wantLimit("hold-bad", 400)(); err != nil {
		t.Errorf("the invalid AppQuota lost its last good entry: %v", err)
	}
	if err := k8s.DeleteAllOf(ctx, &quotav1.AppQuota{}, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
}

// TestRaiseAboveCeilingFailsClosed: an AppQuota that raises above its
// profile's raiseCeiling and got past admission (no webhook runs here) is
// refused by the render too: its last good limits stay.
func TestRaiseAboveCeilingFailsClosed(t *testing.T) {
	ctx := context.Background()
	ns := namespace(t)
	p := testProfile("ceilinged")
	p.Spec.EndpointGroups[0].Limits[0].RaiseCeiling = 500
	if err := k8s.Create(ctx, p); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = k8s.Delete(ctx, p) })
	a := appQuota(ns, "acme", "ceiling-1", raise(sendGroup, 500))
	a.Spec.Profile = "ceilinged"
	if err := k8s.Create(ctx, a); err != nil {
		t.Fatal(err)
	}
	applied(t, a, "ceiling-1", 500)
	if err := k8s.Get(ctx, client.ObjectKeyFromObject(a), a); err != nil {
		t.Fatal(err)
	}
	a.Spec.Overrides[0].Limits[0].Max = 5000
	if err := k8s.Update(ctx, a); err != nil {
		t.Fatal(err)
	}
	eventually(t, wait, ready(client.ObjectKeyFromObject(a), metav1.ConditionFalse, quotav1.ReasonInvalidSpec))
	if err := wantLimit("ceiling-1", 500)(); err != nil {
		t.Errorf("a raise above the ceiling reached the configuration, or the last good limit was lost: %v", err)
	}
	if err := k8s.Delete(ctx, a); err != nil {
		t.Fatal(err)
	}
}
