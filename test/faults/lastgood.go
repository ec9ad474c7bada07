package main

import (
	"context"
	"crypto/sha256"
	"fmt"
	"strings"
	"syscall"
	"time"

	admissionv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	quotav1 "github.com/appquota/appquota/api/v1alpha1"
	"github.com/appquota/appquota/controllers"
)

// lastGood is fault 5: a sharded configuration whose write is cut between
// the shards and the index (a ValidatingAdmissionPolicy refuses index
// updates), the leader killed then, the policy removed; the new leader must
// keep the last good entry of an AppQuota that turned invalid (past the
// webhook) before.
func lastGood(ctx context.Context, cfg Config, bin string) result {
	res := result{Fault: "Last good across a half-written set",
		Injection: fmt.Sprintf("sharded set of %d AppQuotas, one made invalid past the webhook; index updates refused by a "+
			"ValidatingAdmissionPolicy while another app changes; leader SIGKILLed, policy removed; %d repeats", cfg.Apps, cfg.Repeats)}
	return repeated(res, cfg.Repeats, func(res *result) error { return lastGoodOnce(ctx, cfg, bin, res) })
}

func lastGoodOnce(ctx context.Context, cfg Config, bin string, res *result) error {
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	// Sharded from a few kilobytes on, and every change folded into its
	// shard at once, so that a change writes a shard before the index.
	h, err := newHarness(runCtx, cfg.Log, bin, "--shard-above-bytes", "1024", "--compact-after", "1s")
	if err != nil {
		return err
	}
	defer h.stop()
	h.incompressible = true
	if err := h.start(runCtx); err != nil {
		return err
	}
	// The invalid AppQuota must get past admission, as one does when the
	// webhook is down with failurePolicy Ignore.
	if err := h.c.DeleteAllOf(runCtx, &admissionv1.ValidatingWebhookConfiguration{}); err != nil {
		return fmt.Errorf("remove the webhook: %w", err)
	}
	apps := max(cfg.Apps, 3)
	if err := h.createApps(runCtx, 0, apps, cfg.Workers); err != nil {
		return err
	}
	o := &oracle{h: h}
	if _, _, err := o.settle(runCtx, time.Now(), 5*time.Minute); err != nil {
		return fmt.Errorf("before the fault: %w", err)
	}
	if o.previous, _, _, err = h.stored(runCtx); err != nil {
		return err
	}
	if shards, err := h.shardVersions(runCtx); err != nil {
		return err
	} else if len(shards) == 0 {
		return fmt.Errorf("the configuration of %d apps is not sharded: the fault needs a sharded set", apps)
	}
	if err := h.makeInvalid(runCtx, client.ObjectKey{Namespace: appNamespace, Name: appName(0)}); err != nil {
		return err
	}
	allow, err := h.denyIndexUpdates(runCtx)
	if err != nil {
		return err
	}
	defer func() { _ = allow(context.WithoutCancel(runCtx)) }()
	before, err := h.shardVersions(runCtx)
	if err != nil {
		return err
	}
	o.editor = newEditor(h, 1, apps)
	if err := o.editor.edit(runCtx, 1); err != nil {
		return err
	}
	// The leader writes the changed shard and is refused the index.
	if err := poll(runCtx, "a shard write under the refused index", 2*time.Minute, func(ctx context.Context) (bool, error) {
		now, err := h.shardVersions(ctx)
		if err != nil {
			return false, err
		}
		for name, rv := range now {
			if before[name] != rv {
				return true, nil
			}
		}
		return false, nil
	}); err != nil {
		return err
	}
	leader, err := h.waitLeader(runCtx)
	if err != nil {
		return err
	}
	holder, err := h.holder(runCtx)
	if err != nil {
		return err
	}
	restartsBefore := h.restarts()
	h.mu.Lock()
	leader.leading = false
	h.mu.Unlock()
	killed := time.Now()
	if err := h.signal(leader, syscall.SIGKILL); err != nil {
		return err
	}
	if err := allow(runCtx); err != nil {
		return err
	}
	failover, err := h.waitHolderChange(runCtx, holder, killed)
	if err != nil {
		return err
	}
	end := time.Now()
	recovery, lost, err := o.settle(runCtx, end, 5*time.Minute)
	res.Lost += lost
	res.Edits += o.editor.edits.Load()
	if err != nil {
		return fmt.Errorf("after the fault: %w", err)
	}
	doc, _, _, err := h.stored(runCtx)
	if err != nil {
		return err
	}
	if _, ok := doc.Apps[appName(0)]; !ok {
		return fmt.Errorf("the invalid AppQuota %s lost its last good entry", appName(0))
	}
	res.Recovery = append(res.Recovery, recovery)
	res.Failover = append(res.Failover, failover)
	res.Restarts += h.restarts() - restartsBefore
	res.Stale += h.conflicts()
	return nil
}

// makeInvalid turns an AppQuota invalid (an override of a group its profile
// lacks) and waits until it reports Ready=False for that generation.
func (h *harness) makeInvalid(ctx context.Context, key client.ObjectKey) error {
	if err := h.update(ctx, key, func(a *quotav1.AppQuota) { a.Spec.Overrides[0].Group = "no-such-group" }); err != nil {
		return err
	}
	return poll(ctx, "the invalid AppQuota to report Ready=False", 2*time.Minute, func(ctx context.Context) (bool, error) {
		var a quotav1.AppQuota
		if err := h.c.Get(ctx, key, &a); err != nil {
			return false, err
		}
		for _, c := range a.Status.Conditions {
			if c.Type == quotav1.ConditionReady && c.ObservedGeneration == a.Generation && c.Status == metav1.ConditionFalse {
				return true, nil
			}
		}
		return false, nil
	})
}

// update applies change to an AppQuota, retrying on conflict.
func (h *harness) update(ctx context.Context, key client.ObjectKey, change func(*quotav1.AppQuota)) error {
	return poll(ctx, "update "+key.String(), time.Minute, func(ctx context.Context) (bool, error) {
		var a quotav1.AppQuota
		if err := h.c.Get(ctx, key, &a); err != nil {
			return false, err
		}
		change(&a)
		err := h.c.Update(ctx, &a)
		return err == nil, err
	})
}

// shardVersions are the resourceVersions of the shard ConfigMaps (the
// managed ones named after the index, not the index itself nor the app ID
// reservations).
func (h *harness) shardVersions(ctx context.Context) (map[string]string, error) {
	var cms corev1.ConfigMapList
	if err := h.c.List(ctx, &cms, client.InNamespace(h.opts.Namespace),
		client.MatchingLabels{controllers.ManagedByLabel: controllers.ManagedByValue}); err != nil {
		return nil, fmt.Errorf("list the shards: %w", err)
	}
	out := map[string]string{}
	for _, cm := range cms.Items {
		if strings.HasPrefix(cm.Name, h.opts.ConfigMapName+controllers.ShardSuffix) {
			out[cm.Name] = cm.ResourceVersion
		}
	}
	return out, nil
}

// denyIndexUpdates makes the API server refuse every update of the index
// ConfigMap until allow is called; it returns once the policy is in force.
func (h *harness) denyIndexUpdates(ctx context.Context) (allow func(context.Context) error, err error) {
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
				Expression: fmt.Sprintf("object.metadata.name != %q", h.opts.ConfigMapName),
				Message:    "index updates are refused by the fault",
			}},
		},
	}
	binding := &admissionv1.ValidatingAdmissionPolicyBinding{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec:       admissionv1.ValidatingAdmissionPolicyBindingSpec{PolicyName: name, ValidationActions: []admissionv1.ValidationAction{admissionv1.Deny}},
	}
	for _, o := range []client.Object{policy, binding} {
		if err := h.c.Create(ctx, o); err != nil {
			return nil, fmt.Errorf("create %s: %w", name, err)
		}
	}
	indexUpdate := func(ctx context.Context) error {
		var cm corev1.ConfigMap
		if err := h.c.Get(ctx, client.ObjectKey{Namespace: h.opts.Namespace, Name: h.opts.ConfigMapName}, &cm); err != nil {
			return err
		}
		cm.Annotations = map[string]string{"faults": "probe"}
		return h.c.Update(ctx, &cm, client.DryRunAll)
	}
	if err := poll(ctx, "the policy to refuse index updates", time.Minute, func(ctx context.Context) (bool, error) {
		return indexUpdate(ctx) != nil, nil
	}); err != nil {
		return nil, err
	}
	done := false
	allow = func(ctx context.Context) error {
		if done {
			return nil
		}
		done = true
		for _, o := range []client.Object{binding, policy} {
			if err := h.c.Delete(ctx, o); client.IgnoreNotFound(err) != nil {
				return fmt.Errorf("delete %s: %w", name, err)
			}
		}
		return poll(ctx, "index updates to go through again", time.Minute, func(ctx context.Context) (bool, error) {
			err := indexUpdate(ctx)
			return err == nil, err
		})
	}
	return allow, nil
}

// reason is an override reason that compresses poorly, so that a few
// hundred apps make a configuration that shards.
func reason(i int) string { return fmt.Sprintf("%x", sha256.Sum256(fmt.Appendf(nil, "app %d", i))) }
