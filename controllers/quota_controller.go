// Package controllers holds appquota's reconcilers: the render loop merges
// every QuotaProfile and AppQuota into the configuration gateways read and
// reports on each QuotaProfile; the status controller reports on each
// AppQuota from the render loop's results.
package controllers

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	toolscache "k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	quotav1 "github.com/appquota/appquota/api/v1alpha1"
	"github.com/appquota/appquota/internal/layout"
	"github.com/appquota/appquota/internal/render"
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
	// EventLimitsChanged: an AppQuota's effective limits changed in the
	// configuration written; the note says who, what, until when and why.
	EventLimitsChanged  = "LimitsChanged"
	EventRejected       = "Rejected"
	EventConfigTooLarge = "ConfigTooLarge"
	// EventEngineRejected: the rate-limit engine's configuration was not
	// served (too large) or an instance refused it; the instances keep the
	// last one. Recorded on the QuotaProfiles, which are few.
	EventEngineRejected = "EngineRejected"
	// EventStoredUnverified: a replica that cannot verify the stored
	// configuration holds its writes rather than drop last good entries.
	EventStoredUnverified = "StoredConfigUnverified"
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
	// is compressed, then sharded (layout.Writer); a render that does not fit
	// even then is not written and the last good document stays.
	MaxConfigBytes int
	// ShardAbove is layout.Writer.ShardAbove: a configuration stored larger
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
	// LeaseHeld, when set, says whether this replica still holds the leader
	// Lease; every write of the ConfigMaps checks it first, so that a
	// replica resuming from a freeze does not write while it finds out it
	// was deposed (wiring.LeaseLock). Nil: no check.
	LeaseHeld func() error

	// Board hands each render's result to the status controller.
	Board *Board
	// Engine serves each configuration written to the rate-limit engine's
	// instances; nil when the manager serves none.
	Engine Engine
	// AppQuotas is the cache's store of AppQuotas (the manager's AppQuota
	// informer's), read directly: a List copies every object's struct into the
	// list for every render.
	AppQuotas toolscache.Store
	// Grants, when set, makes the render require that an AppQuota's
	// namespace may claim its appID (quotav1.AppIDsAnnotation); nil renders
	// without grants (first claim wins).
	Grants *Grants
	// AppIDReservation, when positive, reserves a deleted AppQuota's app ID
	// for its namespace this long (render.Reservations), stored in the
	// ConfigMap reservation.ConfigMapName in the configuration's namespace;
	// 0 reserves nothing and holds no claim.
	AppIDReservation time.Duration

	// pub is the render loop's memory from one render to the next: the merge,
	// the layout and what was written.
	pub publisher
	// inputsChanged is set when an AppQuota or QuotaProfile event arrives and
	// cleared when a render starts.
	inputsChanged atomic.Bool
	// changedApps are the AppQuotas with an event since the last render took
	// them: the merger merges those alone (render.Changes) while it can.
	changedMu   sync.Mutex
	changedApps map[types.NamespacedName]struct{}
}

// CacheByObject is what the render loop needs of the manager's cache: of
// all ConfigMaps, only those it writes (labelled ManagedByLabel=ManagedByValue
// in namespace, the named one and its shards), so that a cluster with many
// ConfigMaps costs no memory. The composition root merges it into the
// manager's cache options.
func CacheByObject(namespace string) map[client.Object]cache.ByObject {
	return map[client.Object]cache.ByObject{
		&corev1.ConfigMap{}: {
			Namespaces: map[string]cache.Config{namespace: {}},
			Label:      labels.SelectorFromSet(labels.Set{ManagedByLabel: ManagedByValue}),
		},
	}
}

// SetupWithManager registers the reconciler. The manager's cache must hold
// what CacheByObject says, and AppQuotas must be the store of its AppQuota
// informer.
func (r *QuotaReconciler) SetupWithManager(mgr ctrl.Manager) error {
	if r.AppQuotas == nil {
		return errors.New("QuotaReconciler needs the cache's AppQuota store")
	}
	r.pub.writer.ShardAbove = r.ShardAbove
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
	b := ctrl.NewControllerManagedBy(mgr).
		Named("appquota").
		Watches(&quotav1.QuotaProfile{}, input, specOnly).
		Watches(&quotav1.AppQuota{}, appInput, specOnly).
		Watches(&corev1.ConfigMap{}, fixed, builder.WithPredicates(ours))
	if r.Grants != nil {
		// Namespaces' metadata only: a grant lives in an annotation.
		b = b.Watches(&corev1.Namespace{}, input, builder.OnlyMetadata, builder.WithPredicates(grantChanged))
	}
	return b.Complete(r)
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

func (r *QuotaReconciler) now() time.Time {
	if r.Now != nil {
		return r.Now()
	}
	return time.Now()
}

// Reconcile renders, writes the ConfigMaps when their content changed, and
// hands the result to the status writers: merge, lay out, write, report.
func (r *QuotaReconciler) Reconcile(ctx context.Context, _ ctrl.Request) (_ ctrl.Result, err error) {
	now := r.now()
	ours, err := r.ourConfigMaps(ctx)
	if err != nil {
		return ctrl.Result{}, err
	}
	// The event of our own write, or a requeue, changes nothing: a render
	// would cost time that grows with the apps.
	if !r.inputsChanged.Load() && r.pub.idle(now, r.CompactAfter, ours, r.ConfigMap.Name) {
		Renders.WithLabelValues("skipped").Inc()
		return ctrl.Result{RequeueAfter: r.pub.requeueAfter(now, r.CompactAfter)}, nil
	}
	if wait := time.Until(r.pub.lastWrite.Add(r.MinWriteInterval)); wait > 0 {
		// Written a moment ago: let more changes gather first.
		return ctrl.Result{RequeueAfter: wait}, nil
	}
	r.inputsChanged.Store(false)
	var changes *render.Changes
	defer func() {
		if err != nil {
			r.retryLater(changes)
		}
	}()

	var profiles quotav1.QuotaProfileList
	// The cache's own objects, not copies: nothing below modifies them
	// (status updates work on copies).
	if err := r.List(ctx, &profiles, client.UnsafeDisableDeepCopy); err != nil {
		return ctrl.Result{}, fmt.Errorf("list QuotaProfiles: %w", err)
	}
	prevDoc, prev, unreadable := r.previousDocument(ours)
	if unreadable != nil {
		ctrl.LoggerFrom(ctx).Info("the stored configuration does not verify", "err", unreadable.Error(),
			"renderingFrom", map[previous]string{previousFallback: "the last document this replica merged", previousUnverified: "nothing"}[prev])
	}
	var claims *render.Claims
	if r.Grants != nil {
		if claims, err = r.Grants.Claims(ctx, r.Client); err != nil {
			return ctrl.Result{}, err
		}
	}
	reserved, err := r.heldReservations(ctx)
	if err != nil {
		return ctrl.Result{}, err
	}
	// From here a failure makes the next merge a full one, so the changes are
	// taken now.
	changes = r.takeChanges()
	res, err := r.pub.merge(render.Input{
		DefaultProfile: r.DefaultProfile,
		Profiles:       profiles.Items,
		Changes:        changes,
		Previous:       prevDoc,
		Now:            now,
		Claims:         claims,
		Reservations:   reserved,
	}, prev)
	if err != nil {
		return ctrl.Result{}, fmt.Errorf("render: %w", err)
	}
	if prev == previousUnverified {
		if apps, profs := needsLastGood(res); apps+profs > 0 {
			return r.hold(ctx, profiles.Items, changes, unreadable, apps, profs), nil
		}
	}
	refs, known := r.storedRefs(ours)
	r.pub.writer.Slot = r.slots(ours, refs, known)
	if prev == previousStored {
		// A Writer starting on a stored set (a new leader, or after a failed
		// write) keeps its shard count: the same document lays out into the
		// same objects.
		r.pub.writer.Seed(len(refs))
	}
	st, err := r.pub.lay(res, r.MaxConfigBytes, r.CompactAfter, r.shardName)
	Renders.WithLabelValues("rendered").Inc()
	if err != nil {
		return ctrl.Result{}, fmt.Errorf("lay out: %w", err)
	}
	if err := r.storeReservations(ctx, res); err != nil {
		return ctrl.Result{}, err
	}
	if err := r.writeConfigMaps(ctx, st, ours); err != nil {
		return ctrl.Result{}, err
	}
	r.serveEngine(ctx, res, st, profiles.Items)
	// AppQuotas' statuses are the status controller's job, so that writing
	// them never holds up the next render; they are handed over before the
	// QuotaProfiles' own status writes, which would delay them. It gets the
	// result and the apps with an event: an AppQuota created under the name
	// of one just deleted can have the same outcome, but not its status.
	// What the write did to each app's limits, noted for the status writes
	// before they can start.
	changed := r.limitChanges(res, st)
	r.noteChanges(res, st, changed, r.now())
	r.Board.publish(ctx, res, &snapshot{stored: st, budget: r.MaxConfigBytes, seq: res.Change.Seq}, changes.Names)
	if err := r.reportProfiles(ctx, profiles.Items, res, st); err != nil {
		return ctrl.Result{}, err
	}
	r.reportExpirations(res, st)
	r.reportChanges(changed)
	return ctrl.Result{RequeueAfter: r.pub.requeueAfter(r.now(), r.CompactAfter)}, nil
}

// holdRetry is how often a held render (see hold) tries again without an event.
const holdRetry = 30 * time.Second

// hold keeps the stored configuration as it is: this replica cannot verify
// it (unreadable says why) and has no render of its own to trust, and apps
// AppQuotas and profs QuotaProfiles are invalid, so a render now would drop
// their last good entries, which the stored set may still hold. It says so
// on every QuotaProfile and tries again on the next change or after
// holdRetry: a repaired set, or the invalid objects fixed, lets it write.
// Deleting every ConfigMap of the set is the explicit way to start over.
func (r *QuotaReconciler) hold(ctx context.Context, profiles []quotav1.QuotaProfile, changes *render.Changes, unreadable error,
	apps, profs int) ctrl.Result {
	Renders.WithLabelValues("held").Inc()
	r.retryLater(changes)
	msg := fmt.Sprintf("not writing the configuration: the stored one does not verify (%v), and %d invalid AppQuotas and %d invalid "+
		"QuotaProfiles would lose their last good entries; repair or restore ConfigMap %s and its shards, or fix the invalid objects",
		unreadable, apps, profs, r.ConfigMap)
	ctrl.LoggerFrom(ctx).Info(msg)
	for i := range profiles {
		r.Recorder.Eventf(&profiles[i], nil, corev1.EventTypeWarning, EventStoredUnverified, "Render", "%s", msg)
	}
	return ctrl.Result{RequeueAfter: holdRetry}
}

// serveEngine hands the configuration just written to the rate-limit
// engine's instances: after the ConfigMaps, so that the engine never runs
// ahead of what `kubectl appquota explain` reads, and never one that was not
// written. A configuration the engine cannot take is reported on the
// AppQuotas (Enforced) and in an event; the instances keep the last one.
func (r *QuotaReconciler) serveEngine(ctx context.Context, res *render.Result, st *layout.Stored, profiles []quotav1.QuotaProfile) {
	if r.Engine == nil || st.TooLarge {
		return
	}
	if err := r.Engine.Publish(res.Change); err != nil {
		ctrl.LoggerFrom(ctx).Error(err, "the rate-limit engine's configuration was not served; its instances keep the last one", "version", res.Change.Seq)
		for i := range profiles {
			r.Recorder.Eventf(&profiles[i], nil, corev1.EventTypeWarning, EventEngineRejected, "Serve",
				"configuration version %d was not served to the rate-limit engine, whose instances keep the last one: %v", res.Change.Seq, err)
		}
	}
}

// retryLater keeps what a failed render took for the next one: whatever
// changed is still to render, and its AppQuotas' statuses to write.
func (r *QuotaReconciler) retryLater(changes *render.Changes) {
	r.inputsChanged.Store(true)
	if changes != nil {
		r.noteChanged(changes.Names...)
		// Merged, perhaps, but not published: the status controller's copy of
		// the outcomes no longer follows from the next result's changes alone.
		r.Board.missedOne()
	}
}

// reportProfiles writes the QuotaProfiles' statuses. They are few: in
// parallel, here.
func (r *QuotaReconciler) reportProfiles(ctx context.Context, profiles []quotav1.QuotaProfile, res *render.Result, st *layout.Stored) error {
	var g errgroup.Group
	g.SetLimit(statusWriters)
	for i := range profiles {
		g.Go(func() error { return r.updateProfileStatus(ctx, &profiles[i], res, st) })
	}
	if err := g.Wait(); err != nil {
		return fmt.Errorf("update status: %w", err)
	}
	return nil
}

// reportExpirations records an event on each AppQuota whose override left the
// configuration written at its expiry.
func (r *QuotaReconciler) reportExpirations(res *render.Result, st *layout.Stored) {
	if st.TooLarge {
		return
	}
	for _, e := range res.Expirations {
		obj, ok, err := r.AppQuotas.GetByKey(e.Key)
		a, isApp := obj.(*quotav1.AppQuota)
		if err != nil || !ok || !isApp {
			continue
		}
		r.Recorder.Eventf(a, nil, corev1.EventTypeNormal, EventOverrideExpired, "Expire",
			"override for group %s expired; the profile's limits apply again", e.Group)
	}
}
