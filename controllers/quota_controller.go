// Package controllers holds appquota's reconciler: it renders every QuotaProfile
// and AppQuota into the one ConfigMap gateways read, and reports on each object.
package controllers

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	corev1ac "k8s.io/client-go/applyconfigurations/core/v1"
	toolscache "k8s.io/client-go/tools/cache"
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

// FieldOwner is the server-side apply field manager for the ConfigMaps.
const FieldOwner = "appquota-controller"

// ManagedByLabel and ManagedByValue mark the ConfigMaps the controller writes;
// its cache holds only those.
const (
	ManagedByLabel = "app.kubernetes.io/managed-by"
	ManagedByValue = "appquota"
)

// ShardSuffix joins the named ConfigMap's name and a shard number into the
// shard ConfigMap's name: appquota-limits-shard-3.
const ShardSuffix = "-shard-"

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
	// MaxConfigBytes is the size budget of each ConfigMap: over it the document
	// is compressed, then sharded (render.Renderer.Store); a render that does not
	// fit even then is not written and the last good document stays.
	MaxConfigBytes int
	// ShardAbove is render.Renderer.ShardAbove: a configuration stored larger
	// is sharded, and a change rewrites only the index, which carries the apps
	// changed since their shards were written.
	ShardAbove int
	// CompactAfter is how long after the last write the apps the index
	// carries are folded into their shards, which brings the ConfigMaps back to
	// what `kubectl appquota render` shows.
	CompactAfter time.Duration
	// MinWriteInterval is the least time between two writes: renders wait for
	// it, so a burst of changes is written once per interval. A change after a
	// quiet spell goes out at once.
	MinWriteInterval time.Duration
	// Now is the clock; time.Now when nil.
	Now func() time.Time

	// Board hands each render's result to the status controller.
	Board *Board
	// AppQuotas is the cache's store of AppQuotas (the manager's AppQuota
	// informer's), read directly: a List copies every object's struct into the
	// list, 40 MB per render at 100,000.
	AppQuotas toolscache.Store

	// renderer remembers per-object work from one render to the next.
	renderer render.Renderer

	// storedWritten is set while the document the renderer last stored is the
	// last one written (the renderer remembers it, so no copy of 100,000 apps is
	// kept here), and lastGoodHash is its hash: while the ConfigMap still holds
	// it, it need not be parsed again, and when the ConfigMap's copy is missing
	// or was edited into something unreadable it stands in.
	storedWritten bool
	lastGoodHash  string
	// lastWrite is when the ConfigMaps were last written.
	lastWrite time.Time
	// inputsChanged is set when an AppQuota or QuotaProfile event arrives and
	// cleared when a render starts; written is what the last render stored,
	// while the ConfigMaps were brought in line with it, and nextExpiry its
	// earliest expiry. Together they tell a render that would change nothing.
	inputsChanged atomic.Bool
	written       *render.Stored
	nextExpiry    *time.Time

	// changedApps are the AppQuotas with an event since the last render took
	// them: the renderer merges those alone (render.Changes) while it can.
	changedMu   sync.Mutex
	changedApps map[types.NamespacedName]struct{}
}

// SetupWithManager registers the reconciler. The manager's cache must limit
// ConfigMaps to the ones it writes (see operator.CacheOptions), and AppQuotas
// must be the store of its AppQuota informer (operator.Setup passes it).
func (r *QuotaReconciler) SetupWithManager(mgr ctrl.Manager) error {
	if r.AppQuotas == nil {
		return errors.New("QuotaReconciler needs the cache's AppQuota store")
	}
	r.renderer.ShardAbove = r.ShardAbove
	fixed := handler.EnqueueRequestsFromMapFunc(func(context.Context, client.Object) []reconcile.Request {
		return []reconcile.Request{{NamespacedName: r.ConfigMap}}
	})
	// The cache holds an object before its event is handled, so a render that
	// starts after this flag is set sees the change.
	input := handler.EnqueueRequestsFromMapFunc(func(context.Context, client.Object) []reconcile.Request {
		r.inputsChanged.Store(true)
		return []reconcile.Request{{NamespacedName: r.ConfigMap}}
	})
	appInput := handler.EnqueueRequestsFromMapFunc(func(_ context.Context, o client.Object) []reconcile.Request {
		r.noteChanged(client.ObjectKeyFromObject(o))
		r.inputsChanged.Store(true)
		return []reconcile.Request{{NamespacedName: r.ConfigMap}}
	})
	ours := predicate.NewPredicateFuncs(func(o client.Object) bool {
		return o.GetNamespace() == r.ConfigMap.Namespace && r.owns(o.GetName())
	})
	// Status writes do not change generation; skipping them keeps our own status
	// updates from triggering renders.
	specOnly := builder.WithPredicates(predicate.GenerationChangedPredicate{})
	return ctrl.NewControllerManagedBy(mgr).
		Named("appquota").
		Watches(&quotav1.QuotaProfile{}, input, specOnly).
		Watches(&quotav1.AppQuota{}, appInput, specOnly).
		Watches(&corev1.ConfigMap{}, fixed, builder.WithPredicates(ours)).
		Complete(r)
}

// owns reports whether a ConfigMap in our namespace is the named one or one of
// its shards.
func (r *QuotaReconciler) owns(name string) bool {
	if name == r.ConfigMap.Name {
		return true
	}
	n, ok := strings.CutPrefix(name, r.ConfigMap.Name+ShardSuffix)
	_, err := strconv.Atoi(n)
	return ok && err == nil
}

func (r *QuotaReconciler) shardName(i int) string {
	return r.ConfigMap.Name + ShardSuffix + strconv.Itoa(i)
}

// write brings the ConfigMaps in line with st: changed shards first, then the
// named ConfigMap (whose index names the shards by hash), then the deletion of
// shards it no longer names. A reader between two of these writes finds a
// shard that does not match the index it holds and keeps its previous
// configuration until the next change; it never assembles a mix.
func (r *QuotaReconciler) write(ctx context.Context, st *render.Stored, existing map[string]*corev1.ConfigMap) (wrote bool, err error) {
	log := ctrl.LoggerFrom(ctx)
	keep := map[string]bool{r.ConfigMap.Name: true}
	for _, s := range st.Shards {
		keep[s.Ref.ConfigMap] = true
		if cm := existing[s.Ref.ConfigMap]; cm != nil && holdsShard(cm, s) {
			continue
		}
		apply := corev1ac.ConfigMap(s.Ref.ConfigMap, r.ConfigMap.Namespace).
			WithLabels(map[string]string{ManagedByLabel: ManagedByValue}).
			WithBinaryData(map[string][]byte{s.Ref.Key: s.Data})
		wrote = true
		if err := r.Apply(ctx, apply, client.FieldOwner(FieldOwner), client.ForceOwnership); err != nil {
			return wrote, fmt.Errorf("apply ConfigMap %s/%s: %w", r.ConfigMap.Namespace, s.Ref.ConfigMap, err)
		}
	}
	if cm := existing[r.ConfigMap.Name]; cm == nil || !holds(cm, st) {
		data := map[string]string{quotaconfig.HashKey: st.Hash}
		apply := corev1ac.ConfigMap(r.ConfigMap.Name, r.ConfigMap.Namespace).
			WithLabels(map[string]string{ManagedByLabel: ManagedByValue})
		if st.Key == quotaconfig.DataKey {
			data[quotaconfig.DataKey] = string(st.Data)
		} else {
			apply.WithBinaryData(map[string][]byte{st.Key: st.Data})
		}
		// Server-side apply drops the keys this field owner no longer sets, so a
		// switch between layouts leaves no stale copy behind.
		apply.WithData(data)
		wrote = true
		if err := r.Apply(ctx, apply, client.FieldOwner(FieldOwner), client.ForceOwnership); err != nil {
			return wrote, fmt.Errorf("apply ConfigMap %s: %w", r.ConfigMap, err)
		}
		log.Info("wrote configuration", "hash", st.Hash, "layout", st.Layout.String(), "shards", len(st.Shards), "bytes", st.PlainBytes, "largestObjectBytes", st.StoredBytes)
	}
	for name, cm := range existing {
		if keep[name] {
			continue
		}
		wrote = true
		if err := r.Delete(ctx, cm, client.Preconditions{UID: &cm.UID}); client.IgnoreNotFound(err) != nil {
			return wrote, fmt.Errorf("delete ConfigMap %s/%s, a shard no longer used: %w", cm.Namespace, name, err)
		}
		log.Info("deleted a shard no longer used", "configMap", name)
	}
	return wrote, nil
}

func (r *QuotaReconciler) now() time.Time {
	if r.Now != nil {
		return r.Now()
	}
	return time.Now()
}

// Reconcile renders, writes the ConfigMap when its content changed, and updates
// the status of every object whose status changed.
func (r *QuotaReconciler) Reconcile(ctx context.Context, _ ctrl.Request) (_ ctrl.Result, err error) {
	log := ctrl.LoggerFrom(ctx)
	now := r.now()
	// The ConfigMaps we wrote: the named one and its shards (the cache holds only
	// ConfigMaps labelled as ours in our namespace, see operator.CacheOptions),
	// as the cache holds them: shards of up to the budget each are not copied
	// per render, and nothing here modifies them.
	var cms corev1.ConfigMapList
	if err := r.List(ctx, &cms, client.InNamespace(r.ConfigMap.Namespace), client.MatchingLabels{ManagedByLabel: ManagedByValue}, client.UnsafeDisableDeepCopy); err != nil {
		return ctrl.Result{}, fmt.Errorf("list ConfigMaps: %w", err)
	}
	ours := map[string]*corev1.ConfigMap{}
	for i := range cms.Items {
		if cm := &cms.Items[i]; r.owns(cm.Name) {
			ours[cm.Name] = cm
		}
	}
	// The event of our own write, or a requeue: with no object changed, the
	// ConfigMaps as written, no override due to expire and no fold due, a
	// render would change nothing, at a cost that grows with the apps.
	if !r.inputsChanged.Load() && r.idle(now, ours) {
		Renders.WithLabelValues("skipped").Inc()
		return ctrl.Result{RequeueAfter: r.requeueAfter(now)}, nil
	}
	if wait := time.Until(r.lastWrite.Add(r.MinWriteInterval)); wait > 0 {
		// Written a moment ago: let more changes gather first.
		return ctrl.Result{RequeueAfter: wait}, nil
	}
	r.inputsChanged.Store(false)
	var changes *render.Changes
	defer func() {
		if err != nil {
			// Not rendered: whatever changed is still to render, and its
			// AppQuotas' statuses to write.
			r.inputsChanged.Store(true)
			if changes != nil {
				r.noteChanged(changes.Names...)
				// Merged, perhaps, but not published: the status controller's
				// copy of the outcomes no longer follows from the next
				// result's changes alone.
				r.Board.missedOne()
			}
		}
	}()

	var profiles quotav1.QuotaProfileList
	// The cache's own objects, not copies: with 100,000 AppQuotas a deep copy per
	// render would dominate it. Nothing below modifies them (status updates work
	// on copies).
	if err := r.List(ctx, &profiles, client.UnsafeDisableDeepCopy); err != nil {
		return ctrl.Result{}, fmt.Errorf("list QuotaProfiles: %w", err)
	}
	index, indexExists := ours[r.ConfigMap.Name]
	// The previous document: the one the renderer remembers while the
	// ConfigMaps still hold it, else what the ConfigMaps hold.
	var previous *quotaconfig.Document
	previousIsStored := r.storedWritten
	if indexExists && (!r.storedWritten || index.Data[quotaconfig.HashKey] != r.lastGoodHash) {
		doc, err := quotaconfig.LoadConfigMaps(r.ConfigMap.Name, func(name string) (map[string]string, map[string][]byte, error) {
			cm, ok := ours[name]
			if !ok {
				return nil, nil, fmt.Errorf("ConfigMap %s/%s not found", r.ConfigMap.Namespace, name)
			}
			return cm.Data, cm.BinaryData, nil
		})
		if err == nil {
			previous, previousIsStored = doc, false
		} else if previousIsStored {
			log.Info("ConfigMap content is unreadable; rendering from the last document written", "err", err.Error())
		}
	}

	// From here a failure makes the next merge a full one (the renderer's
	// state is then not the one written), so the changes are taken now.
	changes = r.takeChanges()
	res, err := r.renderer.Merge(render.Input{
		DefaultProfile:   r.DefaultProfile,
		Profiles:         profiles.Items,
		Changes:          changes,
		Previous:         previous,
		PreviousIsStored: previousIsStored,
		Now:              now,
	})
	if err != nil {
		return ctrl.Result{}, fmt.Errorf("render: %w", err)
	}
	// Overrides that were in the previous document and have expired now, to
	// tell their AppQuotas once the new document is written. Only the render
	// loop knows the exact previous document, and only until Store.
	expired := r.expiredOverrides(res, previous, previousIsStored)
	if r.foldDue() {
		r.renderer.Compact()
	}
	// Plain while it fits ShardAbove and the budget, then gzip-compressed, then
	// sharded with changes in the index; over the budget even in MaxShards
	// shards nothing is written and the last good configuration stays.
	st, err := r.renderer.Store(res.Document, r.MaxConfigBytes, r.shardName)
	r.written, r.nextExpiry = nil, res.NextExpiry
	Renders.WithLabelValues("rendered").Inc()
	if err != nil {
		r.storedWritten = false
		return ctrl.Result{}, fmt.Errorf("store: %w", err)
	}
	// Nothing here reads the document after Store, and the status controller's
	// snapshot (res) need not hold it: the renderer keeps its apps
	// for the next merge.
	res.Document = nil
	r.storedWritten = false
	if st.TooLarge {
		log.Info("rendered configuration exceeds its size budget even compressed and sharded; keeping the last good one", "bytes", st.PlainBytes, "budget", r.MaxConfigBytes, "maxShards", render.MaxShards)
	} else {
		// The interval counts from the start of a write, which is before anyone
		// can see it.
		start := time.Now()
		wrote, err := r.write(ctx, st, ours)
		if wrote {
			r.lastWrite = start
		}
		if err != nil {
			return ctrl.Result{}, err
		}
		r.storedWritten, r.lastGoodHash, r.written = true, st.Hash, st
	}
	tooLarge := st.TooLarge
	// QuotaProfiles are few: their statuses are written here, in parallel.
	var g errgroup.Group
	g.SetLimit(statusWriters)
	for i := range profiles.Items {
		g.Go(func() error { return r.updateProfileStatus(ctx, &profiles.Items[i], res, st) })
	}
	if err := g.Wait(); err != nil {
		return ctrl.Result{}, fmt.Errorf("update status: %w", err)
	}
	if !tooLarge {
		for _, e := range expired {
			r.Recorder.Eventf(e.app, nil, corev1.EventTypeNormal, EventOverrideExpired, "Expire",
				"override for group %s expired; the profile's limits apply again", e.group)
		}
	}

	// AppQuotas can be 100,000: their statuses are the status controller's job,
	// so that writing them never holds up the next render. It gets the result
	// and the apps whose outcome changed, and those with an event: an
	// AppQuota created under the name of one just deleted can have the same
	// outcome, but not its status.
	r.Board.publish(ctx, res, &snapshot{stored: st, budget: r.MaxConfigBytes}, changes.Names)

	return ctrl.Result{RequeueAfter: r.requeueAfter(r.now())}, nil
}

// noteChanged adds AppQuotas to those the next render takes.
func (r *QuotaReconciler) noteChanged(names ...types.NamespacedName) {
	r.changedMu.Lock()
	defer r.changedMu.Unlock()
	if r.changedApps == nil {
		r.changedApps = make(map[types.NamespacedName]struct{}, len(names))
	}
	for _, name := range names {
		r.changedApps[name] = struct{}{}
	}
}

// takeChanges hands the AppQuotas with an event since the last call to the
// renderer, which reads them from the cache.
func (r *QuotaReconciler) takeChanges() *render.Changes {
	r.changedMu.Lock()
	names := make([]types.NamespacedName, 0, len(r.changedApps))
	for name := range r.changedApps {
		names = append(names, name)
	}
	r.changedApps = nil
	r.changedMu.Unlock()
	return &render.Changes{
		Names: names,
		Get: func(name types.NamespacedName) (*quotav1.AppQuota, bool) {
			o, exists, err := r.AppQuotas.GetByKey(name.String())
			a, ok := o.(*quotav1.AppQuota)
			return a, err == nil && exists && ok
		},
		All: func() []*quotav1.AppQuota {
			cached := r.AppQuotas.List()
			apps := make([]*quotav1.AppQuota, 0, len(cached))
			for _, o := range cached {
				if a, ok := o.(*quotav1.AppQuota); ok {
					apps = append(apps, a)
				}
			}
			return apps
		},
	}
}

// requeueAfter is when the last render's output changes with no event: the
// next override expiry, or the fold of the apps the index carries once writes
// are quiet; 0 when neither.
func (r *QuotaReconciler) requeueAfter(now time.Time) time.Duration {
	var next time.Duration
	if r.nextExpiry != nil {
		next = max(r.nextExpiry.Sub(now), time.Millisecond)
	}
	if r.renderer.Recent() > 0 {
		fold := max(time.Until(r.lastWrite.Add(r.CompactAfter)), time.Millisecond)
		if next == 0 || fold < next {
			next = fold
		}
	}
	return next
}

// foldDue reports whether the index carries apps and writes have been quiet
// for CompactAfter: then they are folded into their shards.
func (r *QuotaReconciler) foldDue() bool {
	return r.renderer.Recent() > 0 && time.Since(r.lastWrite) >= r.CompactAfter
}

// idle reports whether a render now would change nothing, given that no
// AppQuota or QuotaProfile changed since the last: our ConfigMaps (ours, by
// name) hold exactly what it wrote, no override has expired since and no
// fold is due.
func (r *QuotaReconciler) idle(now time.Time, ours map[string]*corev1.ConfigMap) bool {
	st := r.written
	if st == nil || (r.nextExpiry != nil && !now.Before(*r.nextExpiry)) || r.foldDue() ||
		len(ours) != 1+len(st.Shards) {
		return false
	}
	if cm := ours[r.ConfigMap.Name]; cm == nil || !holds(cm, st) {
		return false // not as written: repair it
	}
	for _, s := range st.Shards {
		if cm := ours[s.Ref.ConfigMap]; cm == nil || !holdsShard(cm, s) {
			return false
		}
	}
	return true
}

func (r *QuotaReconciler) updateProfileStatus(ctx context.Context, cached *quotav1.QuotaProfile, res *render.Result, st *render.Stored) error {
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
	case st.TooLarge:
		cond.Status, cond.Reason = metav1.ConditionFalse, quotav1.ReasonConfigTooLarge
		cond.Message = tooLargeMessage(st, r.MaxConfigBytes)
	default:
		cond.Status, cond.Reason = metav1.ConditionTrue, quotav1.ReasonApplied
		cond.Message = "in configuration " + st.Hash
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

// tooLargeMessage says why a configuration was not written.
func tooLargeMessage(st *render.Stored, budget int) string {
	return fmt.Sprintf("the configuration would be %d bytes, more than %d ConfigMaps of %d bytes hold even compressed; gateways keep the last good version",
		st.PlainBytes, render.MaxShards, budget)
}

// holds reports whether cm already holds exactly the named ConfigMap's content.
func holds(cm *corev1.ConfigMap, st *render.Stored) bool {
	if cm.Data[quotaconfig.HashKey] != st.Hash || cm.Labels[ManagedByLabel] != ManagedByValue {
		return false
	}
	if st.Key == quotaconfig.DataKey {
		return len(cm.Data) == 2 && cm.Data[quotaconfig.DataKey] == string(st.Data) && len(cm.BinaryData) == 0
	}
	return len(cm.Data) == 1 && len(cm.BinaryData) == 1 && bytes.Equal(cm.BinaryData[st.Key], st.Data)
}

// holdsShard reports whether cm already holds exactly shard s.
func holdsShard(cm *corev1.ConfigMap, s render.StoredShard) bool {
	return len(cm.Data) == 0 && len(cm.BinaryData) == 1 && bytes.Equal(cm.BinaryData[s.Ref.Key], s.Data)
}

// expiry is an override that left the document because it expired.
type expiry struct {
	app   *quotav1.AppQuota
	group string
}

// expiredOverrides lists the overrides res dropped for having expired that the
// previous document (previous, or the one the renderer stored) still held.
// Few outcomes list expired groups; their objects are looked up by key (the
// cache's keys are render.Key's namespace/name). After an incremental merge
// only the outcomes it changed can be new: an override expiring makes the
// next merge a full one.
func (r *QuotaReconciler) expiredOverrides(res *render.Result, previous *quotaconfig.Document, previousIsStored bool) []expiry {
	var out []expiry
	check := func(key string, o *render.Outcome) {
		if o == nil || len(o.Expired) == 0 {
			return
		}
		obj, ok, err := r.AppQuotas.GetByKey(key)
		a, isApp := obj.(*quotav1.AppQuota)
		if err != nil || !ok || !isApp {
			return
		}
		var prevApp quotaconfig.App
		switch {
		case previousIsStored:
			prevApp, ok = r.renderer.StoredApp(a.Spec.AppID)
		case previous != nil:
			prevApp, ok = previous.Apps[a.Spec.AppID]
		default:
			ok = false
		}
		if !ok || prevApp.Source != key {
			return
		}
		for _, g := range o.Expired {
			if slices.ContainsFunc(prevApp.Overrides, func(o quotaconfig.Override) bool { return o.Group == g }) {
				out = append(out, expiry{app: a, group: g})
			}
		}
	}
	if res.Incremental {
		for _, key := range res.Changed {
			check(key, res.Apps[key])
		}
		return out
	}
	for key, o := range res.Apps {
		check(key, o)
	}
	return out
}
