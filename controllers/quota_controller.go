// Package controllers holds appquota's reconciler: it renders every QuotaProfile
// and AppQuota into the one ConfigMap gateways read, and reports on each object.
package controllers

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"time"

	"golang.org/x/sync/errgroup"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	corev1ac "k8s.io/client-go/applyconfigurations/core/v1"
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	quotav1 "github.com/appquota/appquota/api/v1alpha1"
	"github.com/appquota/appquota/internal/render"
	"github.com/appquota/appquota/pkg/quotaconfig"
)

// FieldOwner is the server-side apply field manager for the ConfigMap.
const FieldOwner = "appquota-controller"

// Event reasons.
const (
	EventOverridesApplied = "OverridesApplied"
	EventOverrideExpired  = "OverrideExpired"
	EventRejected         = "Rejected"
	EventConfigTooLarge   = "ConfigTooLarge"
)

// statusWriters bounds the concurrent status writes of one reconcile.
const statusWriters = 16

// QuotaReconciler renders QuotaProfiles and AppQuotas into the output ConfigMap.
// Every event maps to one fixed request, so there is one writer and a burst of
// changes collapses into one render.
type QuotaReconciler struct {
	client.Client
	Recorder events.EventRecorder
	// ConfigMap is the output ConfigMap's namespace and name.
	ConfigMap types.NamespacedName
	// DefaultProfile is the profile of apps without an AppQuota.
	DefaultProfile string
	// MaxConfigBytes is the size budget of the document; a render over it is not
	// written and the last good document stays.
	MaxConfigBytes int
	// Now is the clock; time.Now when nil.
	Now func() time.Time

	// Board hands each render's result to the status controller.
	Board *Board

	// lastGood is the last document written, for when the ConfigMap's copy is
	// missing or was edited into something unreadable, and lastGoodHash its
	// hash: while the ConfigMap still holds it, it need not be parsed again.
	lastGood     *quotaconfig.Document
	lastGoodHash string
}

// SetupWithManager registers the reconciler. The manager's cache must limit
// ConfigMaps to the output one (see operator.CacheOptions).
func (r *QuotaReconciler) SetupWithManager(mgr ctrl.Manager) error {
	fixed := handler.EnqueueRequestsFromMapFunc(func(context.Context, client.Object) []reconcile.Request {
		return []reconcile.Request{{NamespacedName: r.ConfigMap}}
	})
	ours := predicate.NewPredicateFuncs(func(o client.Object) bool {
		return o.GetNamespace() == r.ConfigMap.Namespace && o.GetName() == r.ConfigMap.Name
	})
	// Status writes do not change generation; skipping them keeps our own status
	// updates from triggering renders.
	specOnly := builder.WithPredicates(predicate.GenerationChangedPredicate{})
	return ctrl.NewControllerManagedBy(mgr).
		Named("appquota").
		Watches(&quotav1.QuotaProfile{}, fixed, specOnly).
		Watches(&quotav1.AppQuota{}, fixed, specOnly).
		Watches(&corev1.ConfigMap{}, fixed, builder.WithPredicates(ours)).
		Complete(r)
}

func (r *QuotaReconciler) now() time.Time {
	if r.Now != nil {
		return r.Now()
	}
	return time.Now()
}

// Reconcile renders, writes the ConfigMap when its content changed, and updates
// the status of every object whose status changed.
func (r *QuotaReconciler) Reconcile(ctx context.Context, _ ctrl.Request) (ctrl.Result, error) {
	log := ctrl.LoggerFrom(ctx)
	now := r.now()

	var profiles quotav1.QuotaProfileList
	// The cache's own objects, not copies: with 100,000 AppQuotas a deep copy per
	// render would dominate it. Nothing below modifies them (status updates work
	// on copies).
	if err := r.List(ctx, &profiles, client.UnsafeDisableDeepCopy); err != nil {
		return ctrl.Result{}, fmt.Errorf("list QuotaProfiles: %w", err)
	}
	var apps quotav1.AppQuotaList
	if err := r.List(ctx, &apps, client.UnsafeDisableDeepCopy); err != nil {
		return ctrl.Result{}, fmt.Errorf("list AppQuotas: %w", err)
	}
	var cm corev1.ConfigMap
	cmExists := true
	if err := r.Get(ctx, r.ConfigMap, &cm); apierrors.IsNotFound(err) {
		cmExists = false
	} else if err != nil {
		return ctrl.Result{}, fmt.Errorf("get ConfigMap %s: %w", r.ConfigMap, err)
	}
	previous := r.lastGood
	if cmExists && (r.lastGood == nil || cm.Data[quotaconfig.HashKey] != r.lastGoodHash) {
		data, err := quotaconfig.FromConfigMap(cm.Data, cm.BinaryData)
		var doc *quotaconfig.Document
		if err == nil {
			doc, err = quotaconfig.Parse(data)
		}
		if err == nil {
			previous = doc
		} else if previous != nil {
			log.Info("ConfigMap content is unreadable; rendering from the last document written", "err", err.Error())
		}
	}

	res, err := render.Render(render.Input{
		DefaultProfile: r.DefaultProfile,
		Profiles:       profiles.Items,
		AppQuotas:      apps.Items,
		Previous:       previous,
		Now:            now,
	})
	if err != nil {
		return ctrl.Result{}, fmt.Errorf("render: %w", err)
	}

	// Over the budget, the document goes out gzip-compressed in binaryData
	// (JSON of many similar apps compresses about tenfold); over the budget even
	// then, nothing is written and the last good document stays.
	var gz []byte
	size := len(res.Data)
	if size > r.MaxConfigBytes {
		if gz, err = quotaconfig.Compress(res.Data); err != nil {
			return ctrl.Result{}, fmt.Errorf("compress: %w", err)
		}
		size = len(gz)
	}
	tooLarge := size > r.MaxConfigBytes
	if tooLarge {
		log.Info("rendered configuration exceeds its size budget even compressed; keeping the last good one", "bytes", len(res.Data), "compressedBytes", size, "budget", r.MaxConfigBytes)
	} else if !cmExists || !holds(&cm, res, gz) {
		data := map[string]string{quotaconfig.HashKey: res.Hash}
		apply := corev1ac.ConfigMap(r.ConfigMap.Name, r.ConfigMap.Namespace).
			WithLabels(map[string]string{"app.kubernetes.io/managed-by": "appquota"})
		if gz == nil {
			data[quotaconfig.DataKey] = string(res.Data)
		} else {
			apply.WithBinaryData(map[string][]byte{quotaconfig.GzipDataKey: gz})
		}
		// Server-side apply drops the keys this field owner no longer sets, so a
		// switch between plain and compressed leaves no stale copy behind.
		apply.WithData(data)
		if err := r.Apply(ctx, apply, client.FieldOwner(FieldOwner), client.ForceOwnership); err != nil {
			return ctrl.Result{}, fmt.Errorf("apply ConfigMap %s: %w", r.ConfigMap, err)
		}
		log.Info("wrote configuration", "hash", res.Hash, "bytes", len(res.Data), "compressed", gz != nil, "writtenBytes", size, "apps", len(res.Document.Apps), "profiles", len(res.Document.Profiles))
	}
	if !tooLarge {
		r.lastGood, r.lastGoodHash = res.Document, res.Hash
	}

	// QuotaProfiles are few: their statuses are written here, in parallel.
	var g errgroup.Group
	g.SetLimit(statusWriters)
	for i := range profiles.Items {
		g.Go(func() error { return r.updateProfileStatus(ctx, &profiles.Items[i], res, tooLarge, size) })
	}
	if err := g.Wait(); err != nil {
		return ctrl.Result{}, fmt.Errorf("update status: %w", err)
	}
	// An override that was in the previous document and has expired now: tell
	// its AppQuota. Only the render loop knows the exact previous document.
	if !tooLarge {
		for i := range apps.Items {
			a := &apps.Items[i]
			out := res.Apps[render.Key(a)]
			if len(out.Expired) == 0 {
				continue
			}
			prevApp, ok := lookupApp(previous, a.Spec.AppID)
			if !ok || prevApp.Source != render.Key(a) {
				continue
			}
			for _, g := range out.Expired {
				if slices.ContainsFunc(prevApp.Overrides, func(o quotaconfig.Override) bool { return o.Group == g }) {
					r.Recorder.Eventf(a, nil, corev1.EventTypeNormal, EventOverrideExpired, "Expire",
						"override for group %s expired; the profile's limits apply again", g)
				}
			}
		}
	}

	// AppQuotas can be 100,000: their statuses are the status controller's job,
	// so that writing them never holds up the next render. It gets the result
	// and the apps whose outcome changed.
	r.Board.publish(ctx, &snapshot{res: res, previous: previous, tooLarge: tooLarge, size: size, budget: r.MaxConfigBytes}, apps.Items)

	if res.NextExpiry != nil {
		// The document changes when the next override expires: render again then.
		return ctrl.Result{RequeueAfter: max(res.NextExpiry.Sub(r.now()), time.Millisecond)}, nil
	}
	return ctrl.Result{}, nil
}

func (r *QuotaReconciler) updateProfileStatus(ctx context.Context, cached *quotav1.QuotaProfile, res *render.Result, tooLarge bool, size int) error {
	// p carries the desired status; cached (shared with the cache) stays as is.
	p := &quotav1.QuotaProfile{ObjectMeta: cached.ObjectMeta, Spec: cached.Spec, Status: *cached.Status.DeepCopy()}
	if p.DeletionTimestamp != nil {
		return nil
	}
	out, ok := res.Profiles[p.Name]
	if !ok {
		return nil
	}
	orig := cached
	cond := metav1.Condition{Type: quotav1.ConditionReady, ObservedGeneration: p.Generation}
	switch {
	case !out.Valid:
		cond.Status, cond.Reason = metav1.ConditionFalse, out.Reason
		cond.Message = out.Message
		if out.KeptLastGood {
			cond.Message += "; gateways keep the last good version"
		}
	case tooLarge:
		cond.Status, cond.Reason = metav1.ConditionFalse, quotav1.ReasonConfigTooLarge
		cond.Message = fmt.Sprintf("the configuration would be %d bytes (%d compressed), over the %d-byte budget; gateways keep the last good version", len(res.Data), size, r.MaxConfigBytes)
	default:
		cond.Status, cond.Reason = metav1.ConditionTrue, quotav1.ReasonApplied
		cond.Message = "in configuration " + res.Hash
		if orig.Status.ObservedGeneration == p.Generation && meta.IsStatusConditionTrue(orig.Status.Conditions, quotav1.ConditionReady) {
			// Already reported for this generation: keep the hash it was applied in.
			cond.Message = meta.FindStatusCondition(orig.Status.Conditions, quotav1.ConditionReady).Message
		}
	}
	meta.SetStatusCondition(&p.Status.Conditions, cond)
	p.Status.ObservedGeneration = p.Generation
	p.Status.Groups = int32(len(p.Spec.EndpointGroups))
	if equality.Semantic.DeepEqual(orig.Status, p.Status) {
		return nil
	}
	if !out.Valid && !sameCondition(orig.Status.Conditions, cond) {
		r.Recorder.Eventf(cached, nil, corev1.EventTypeWarning, EventRejected, "Validate", "%s", cond.Message)
	}
	patched := cached.DeepCopy()
	patched.Status = p.Status
	if err := r.Status().Patch(ctx, patched, client.MergeFrom(cached)); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("QuotaProfile %s: %w", p.Name, err)
	}
	return nil
}

// sameCondition reports whether conds already holds c's status, reason,
// message and generation (so it was already reported).
func sameCondition(conds []metav1.Condition, c metav1.Condition) bool {
	old := meta.FindStatusCondition(conds, c.Type)
	return old != nil && old.Status == c.Status && old.Reason == c.Reason && old.Message == c.Message && old.ObservedGeneration == c.ObservedGeneration
}

// holds reports whether cm already holds exactly the rendered content, in the
// form (plain or compressed) it would be written in.
func holds(cm *corev1.ConfigMap, res *render.Result, gz []byte) bool {
	if cm.Data[quotaconfig.HashKey] != res.Hash {
		return false
	}
	plain, hasPlain := cm.Data[quotaconfig.DataKey]
	if gz == nil {
		return hasPlain && plain == string(res.Data) && len(cm.BinaryData) == 0
	}
	return !hasPlain && bytes.Equal(cm.BinaryData[quotaconfig.GzipDataKey], gz)
}

func lookupApp(d *quotaconfig.Document, appID string) (quotaconfig.App, bool) {
	if d == nil {
		return quotaconfig.App{}, false
	}
	a, ok := d.Apps[appID]
	return a, ok
}
