package cli

import (
	"context"
	"fmt"
	"io"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/tools/cache"
	watchtools "k8s.io/client-go/tools/watch"

	quotav1 "github.com/appquota/appquota/api/v1alpha1"
)

// waitResult is how the wait for a generation ended.
type waitResult struct {
	ready, enforced metav1.Condition
	// enforcedSkipped: Enforced is Unknown because no engine instance is
	// connected, so there is nothing to wait for.
	enforcedSkipped bool
}

// waitInForce watches the AppQuota until its status describes generation
// (or a later one) and says it is in force: Ready=True, then Enforced=True,
// unless Enforced is Unknown for want of a connected engine instance
// (NoEngineConnected), when nothing but the gateways reading the ConfigMap
// enforces it and there is nothing more to wait for. A Ready=False other than
// Pending, or an engine's rejection, ends the wait with an error: waiting
// longer would not change them.
func waitInForce(ctx context.Context, dyn dynamic.Interface, namespace, name string, generation int64, timeout time.Duration) (*waitResult, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	client := dyn.Resource(appQuotaResource).Namespace(namespace)
	byName := fields.OneTermEqualSelector("metadata.name", name).String()
	lw := &cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			o.FieldSelector = byName
			return client.List(ctx, o)
		},
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			o.FieldSelector = byName
			return client.Watch(ctx, o)
		},
	}
	var res waitResult
	var last string // the latest state seen, for the timeout's message
	_, err := watchtools.UntilWithSync(ctx, lw, &unstructured.Unstructured{}, nil, func(ev watch.Event) (bool, error) {
		if ev.Type == watch.Deleted {
			return false, fmt.Errorf("AppQuota %s/%s was deleted", namespace, name)
		}
		u, ok := ev.Object.(*unstructured.Unstructured)
		if !ok {
			return false, nil
		}
		var a quotav1.AppQuota
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &a); err != nil {
			return false, err
		}
		done, state, err := inForce(&a, generation, &res)
		last = state
		return done, err
	})
	if err != nil && (wait.Interrupted(err) || ctx.Err() != nil) {
		return nil, fmt.Errorf("timed out after %s (--timeout) waiting for generation %d of AppQuota %s/%s to be in force: %s",
			timeout, generation, namespace, name, last)
	}
	if err != nil {
		return nil, err
	}
	return &res, nil
}

// inForce reads a's conditions for generation: done when it is in force,
// an error when it will not be; state says where it stands.
func inForce(a *quotav1.AppQuota, generation int64, res *waitResult) (done bool, state string, err error) {
	ready := meta.FindStatusCondition(a.Status.Conditions, quotav1.ConditionReady)
	if ready == nil || ready.ObservedGeneration < generation {
		return false, fmt.Sprintf("the controller has not handled generation %d yet", generation), nil
	}
	res.ready = *ready
	switch {
	case ready.Status == metav1.ConditionFalse && ready.Reason != quotav1.ReasonPending:
		return false, "", fmt.Errorf("generation %d is not in force: Ready=False (%s): %s", generation, ready.Reason, ready.Message)
	case ready.Status != metav1.ConditionTrue:
		return false, fmt.Sprintf("Ready=%s (%s): %s", ready.Status, ready.Reason, ready.Message), nil
	}
	enforced := meta.FindStatusCondition(a.Status.Conditions, quotav1.ConditionEnforced)
	if enforced == nil || enforced.ObservedGeneration < generation {
		return false, "Ready; waiting for the Enforced condition of this generation", nil
	}
	res.enforced = *enforced
	switch {
	case enforced.Status == metav1.ConditionTrue:
		return true, "", nil
	case enforced.Status == metav1.ConditionUnknown && enforced.Reason == quotav1.ReasonNoEngineConnected:
		// Documented (docs/enforcement.md, conditions.go): no instance to wait for.
		res.enforcedSkipped = true
		return true, "", nil
	case enforced.Status == metav1.ConditionFalse && enforced.Reason == quotav1.ReasonEngineRejected:
		return false, "", fmt.Errorf("generation %d is in the ConfigMap but not enforced: Enforced=False (%s): %s",
			generation, enforced.Reason, enforced.Message)
	}
	return false, fmt.Sprintf("Ready; Enforced=%s (%s): %s", enforced.Status, enforced.Reason, enforced.Message), nil
}

// printWait prints how the wait ended.
func printWait(w io.Writer, res *waitResult) {
	fmt.Fprintf(w, "Ready: %s\n", res.ready.Message)
	if res.enforcedSkipped {
		fmt.Fprintf(w, "Enforced: not waited for: %s\n", res.enforced.Message)
		return
	}
	fmt.Fprintf(w, "Enforced: %s\n", res.enforced.Message)
}
