package controllers

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	"k8s.io/klog/v2"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/source"

	quotav1 "github.com/appquota/appquota/api/v1alpha1"
	"github.com/appquota/appquota/internal/layout"
	"github.com/appquota/appquota/internal/render"
)

// snapshot is what the status controller needs of one render besides the
// outcomes: how it was stored.
type snapshot struct {
	stored *layout.Stored
	budget int
	// seq is the merge's delta.Change.Seq: the engine version it went out in.
	seq uint64
}

// Board passes renders from the render loop to the status controller: the
// latest snapshot and outcomes, and a stream of the AppQuotas whose outcome
// changed.
type Board struct {
	mu      sync.RWMutex
	current *snapshot
	// outcomes are the latest render's outcomes by AppQuota.Key: the Board's own
	// copy, since the Renderer updates its map in place in the next render.
	outcomes map[string]*render.Outcome
	// missed is set when a render was not published: an incremental result's
	// Changed then does not cover everything since the Board's copy, so the
	// next publish compares every outcome.
	missed  bool
	changed chan event.GenericEvent

	// engine is the rate-limit engine's configuration server, nil when the
	// manager serves none. since holds, by quotav1.Key, the seq of the render
	// that first carried each AppQuota's current outcome: the engine version
	// that must be acknowledged for it to be Enforced. waiting are the
	// AppQuotas not reported Enforced yet, queued again when the engine's
	// state changes.
	engine  Engine
	since   map[string]uint64
	waiting map[string]struct{}

	// changeNotes are the changes to AppQuotas' effective limits that renders
	// applied and no status write has recorded yet, by quotav1.Key;
	// uncompared the renders (by seq) that could not tell what they changed
	// (last_change.go).
	changeNotes map[string]changeNote
	uncompared  map[uint64]changeNote
}

// NewBoard returns an empty Board.
func NewBoard(engine Engine) *Board {
	return &Board{changed: make(chan event.GenericEvent, 1024), engine: engine, since: map[string]uint64{}, waiting: map[string]struct{}{},
		changeNotes: map[string]changeNote{}, uncompared: map[uint64]changeNote{}}
}

// read returns the latest snapshot, the AppQuota's outcome in it (ok false
// when it has none) and the seq of the render that first carried that
// outcome, together.
func (b *Board) read(key string) (snap *snapshot, out *render.Outcome, since uint64, ok bool) {
	b.mu.RLock()
	defer b.mu.RUnlock()
	out, ok = b.outcomes[key]
	return b.current, out, b.since[key], ok
}

// enforced records whether an AppQuota was reported Enforced, so that the
// engine's updates queue it again only while it is not.
func (b *Board) enforced(key string, yes bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if _, ok := b.outcomes[key]; !ok {
		return
	}
	if yes {
		delete(b.waiting, key)
	} else {
		b.waiting[key] = struct{}{}
	}
}

// waitingKeys returns the AppQuotas not reported Enforced yet whose status
// may change with the engine state s: all of them when connectivity or
// rejections changed since the last call (last), else those whose version
// every instance now runs.
func (b *Board) waitingKeys(s EngineState, everything bool) []string {
	b.mu.RLock()
	defer b.mu.RUnlock()
	var keys []string
	for key := range b.waiting {
		if everything || b.since[key] <= s.Acked {
			keys = append(keys, key)
		}
	}
	return keys
}

// missedOne records that a render was merged but not published.
func (b *Board) missedOne() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.missed = true
}

// publish makes the render (res, stored as snap) current and queues the
// AppQuotas whose outcome differs from the last publish (all of them the
// first time, and every one while the configuration is too large to store),
// and those named in touched. After an incremental merge only the keys it
// changed are looked at, so a render's cost here is that of its change, not
// of the AppQuotas. It must be called before the Renderer's next Merge. It
// blocks while the status controller's queue intake is full, which is the
// back-pressure wanted, and gives up when ctx ends (the manager is stopping).
func (b *Board) publish(ctx context.Context, res *render.Result, snap *snapshot, touched []types.NamespacedName) {
	var differ []string
	// The Renderer hands out the same *Outcome while an AppQuota's outcome is
	// unchanged, so this is mostly a pointer comparison.
	differs := func(prev *render.Outcome, seen bool, o *render.Outcome) bool {
		return !seen || (prev != o && !prev.Equal(o)) || snap.stored.TooLarge
	}
	b.mu.Lock()
	b.current = snap
	if res.Incremental && b.outcomes != nil && !b.missed {
		for _, key := range res.Changed {
			o, ok := res.Apps[key]
			if !ok {
				delete(b.outcomes, key)
				delete(b.since, key)
				delete(b.waiting, key)
				delete(b.changeNotes, key)
				continue
			}
			prev, seen := b.outcomes[key]
			b.outcomes[key] = o
			if differs(prev, seen, o) {
				differ = append(differ, key)
			}
		}
		if snap.stored.TooLarge {
			differ = differ[:0]
			for key := range b.outcomes {
				differ = append(differ, key)
			}
		}
	} else {
		last := b.outcomes
		b.outcomes, b.missed = maps.Clone(res.Apps), false
		for key, o := range b.outcomes {
			prev, seen := last[key]
			if differs(prev, seen, o) {
				differ = append(differ, key)
			}
		}
		for key := range b.since {
			if _, ok := b.outcomes[key]; !ok {
				delete(b.since, key)
				delete(b.waiting, key)
			}
		}
		for key := range b.changeNotes {
			if _, ok := b.outcomes[key]; !ok {
				delete(b.changeNotes, key)
			}
		}
	}
	// A new outcome goes out in this render's engine version; an unchanged
	// one keeps the version it first went out in.
	for _, key := range differ {
		if prev, ok := b.since[key]; !ok || !snap.stored.TooLarge || prev == 0 {
			b.since[key] = snap.seq
		}
		b.waiting[key] = struct{}{}
	}
	// Touched AppQuotas whose outcome did not differ, so not queued with
	// those (one without an outcome is gone, or going: no status to write).
	rest := make(map[string]struct{}, len(touched))
	for _, name := range touched {
		if key := quotav1.Key(name.Namespace, name.Name); b.outcomes[key] != nil {
			rest[key] = struct{}{}
		}
	}
	b.mu.Unlock()
	// Queued without the lock: the status controller reads under it.
	for _, key := range differ {
		delete(rest, key)
		if !b.queue(ctx, key) {
			return
		}
	}
	for key := range rest {
		if !b.queue(ctx, key) {
			return
		}
	}
}

// queue hands an AppQuota (by AppQuota.Key) to the status controller; false
// when ctx ended first.
func (b *Board) queue(ctx context.Context, key string) bool {
	ns, name := quotav1.SplitKey(key)
	select {
	case b.changed <- event.GenericEvent{Object: &quotav1.AppQuota{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}}}:
		return true
	case <-ctx.Done():
		return false
	}
}

// StatusReconciler writes AppQuota statuses and events from the latest render,
// many at a time and apart from the render loop.
type StatusReconciler struct {
	client.Client
	Recorder events.EventRecorder
	Board    *Board
}

// SetupWithManager registers the status controller, and with an engine the
// watch that queues AppQuotas again as engine instances acknowledge.
func (r *StatusReconciler) SetupWithManager(mgr ctrl.Manager) error {
	if r.Board.engine != nil {
		if err := mgr.Add(engineWatch{board: r.Board, client: r.Client, recorder: r.Recorder}); err != nil {
			return fmt.Errorf("add engine watch: %w", err)
		}
	}
	return ctrl.NewControllerManagedBy(mgr).
		Named("appquota-status").
		WatchesRawSource(source.Channel(r.Board.changed, &handler.EnqueueRequestForObject{})).
		WithOptions(controller.Options{MaxConcurrentReconciles: statusWriters}).
		Complete(r)
}

// Reconcile brings one AppQuota's status in line with the latest render.
func (r *StatusReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	var a quotav1.AppQuota
	if err := r.Get(ctx, req.NamespacedName, &a); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	snap, out, since, ok := r.Board.read(a.Key())
	if snap == nil || !ok {
		// Not rendered yet: the render of it will publish again.
		return ctrl.Result{}, nil
	}
	return ctrl.Result{}, r.updateAppStatus(ctx, &a, snap, out, since)
}

// updateAppStatus writes an AppQuota's status from its outcome (out) in the
// render snap.
func (r *StatusReconciler) updateAppStatus(ctx context.Context, cached *quotav1.AppQuota, snap *snapshot, out *render.Outcome, since uint64) error {
	tooLarge := snap.stored.TooLarge
	// a carries the desired status; cached (shared with the cache) stays as is.
	a := &quotav1.AppQuota{ObjectMeta: cached.ObjectMeta, Spec: cached.Spec, Status: *cached.Status.DeepCopy()}
	if a.DeletionTimestamp != nil {
		return nil
	}
	if out.Generation != a.Generation {
		// Not rendered yet, or rendered from an older generation: the render of
		// this one will publish again.
		return nil
	}
	orig := cached
	var note *changeNote // the Board's record of a change this write carries
	cond := metav1.Condition{Type: quotav1.ConditionReady, ObservedGeneration: a.Generation}
	alreadyApplied := orig.Status.ObservedGeneration == a.Generation &&
		meta.IsStatusConditionTrue(orig.Status.Conditions, quotav1.ConditionReady) &&
		orig.Status.ActiveOverrides == out.ActiveOverrides
	switch {
	case !out.Valid:
		cond.Status, cond.Reason, cond.Message = metav1.ConditionFalse, out.Reason, out.Message
		if out.KeptLastGood {
			cond.Message += "; gateways keep the app's last good limits"
		}
	case tooLarge && !alreadyApplied:
		cond.Status, cond.Reason = metav1.ConditionFalse, quotav1.ReasonConfigTooLarge
		cond.Message = tooLargeMessage(snap.stored, snap.budget)
	default:
		cond.Status, cond.Reason = metav1.ConditionTrue, quotav1.ReasonApplied
		cond.Message = fmt.Sprintf("%d active overrides", out.ActiveOverrides)
		if !alreadyApplied {
			a.Status.ConfigHash = snap.stored.Hash
		}
		a.Status.ActiveOverrides = out.ActiveOverrides
		a.Status.NextExpiry = nil
		if out.NextExpiry != nil {
			t := metav1.NewTime(*out.NextExpiry)
			a.Status.NextExpiry = &t
		}
		if !tooLarge {
			if rec, n := r.Board.lastChange(a, &orig.Status, since); rec != nil {
				a.Status.LastChange, note = rec, n
			}
		}
	}
	meta.SetStatusCondition(&a.Status.Conditions, cond)
	a.Status.ObservedGeneration = a.Generation
	// Enforced follows Ready: a generation that is not in the configuration
	// is enforced by no engine either.
	enforced := metav1.Condition{Type: quotav1.ConditionEnforced, ObservedGeneration: a.Generation,
		Status: metav1.ConditionFalse, Reason: cond.Reason, Message: "not in the configuration: see the Ready condition"}
	if cond.Status == metav1.ConditionTrue {
		enforced = enforcedCondition(r.Board.engine, since, a.Generation)
	}
	meta.SetStatusCondition(&a.Status.Conditions, enforced)
	r.Board.enforced(a.Key(), enforced.Status == metav1.ConditionTrue || cond.Status != metav1.ConditionTrue)

	// Events for what changed since the previous document.
	if out.Valid && !tooLarge {
		if !alreadyApplied && orig.Status.ObservedGeneration != a.Generation {
			groups := make([]string, 0, len(a.Spec.Overrides))
			for _, o := range a.Spec.Overrides {
				if !slices.Contains(out.Expired, o.Group) {
					groups = append(groups, o.Group)
				}
			}
			r.Recorder.Eventf(cached, nil, corev1.EventTypeNormal, EventOverridesApplied, "Apply",
				"generation %d in configuration %s: overrides for [%s]", a.Generation, snap.stored.Hash, strings.Join(groups, ", "))
		}
	}
	if cond.Status == metav1.ConditionFalse && !sameCondition(orig.Status.Conditions, cond) {
		reason := EventRejected
		if cond.Reason == quotav1.ReasonConfigTooLarge {
			reason = EventConfigTooLarge
		}
		r.Recorder.Eventf(cached, nil, corev1.EventTypeWarning, reason, "Validate", "%s", cond.Message)
	}

	if equality.Semantic.DeepEqual(orig.Status, a.Status) {
		r.Board.recorded(a.Key(), note)
		return nil
	}
	ctrl.LoggerFrom(ctx).V(1).Info("updating status", "appQuota", klog.KObj(a), "ready", cond.Status, "reason", cond.Reason)
	patched := cached.DeepCopy()
	patched.Status = a.Status
	// The cache leaves lastChange out (wiring's stripForCache), so the patch
	// carries it only when this write records a new one.
	if err := r.Status().Patch(ctx, patched, client.MergeFrom(cached)); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("AppQuota %s: %w", a.Key(), err)
	}
	r.Board.recorded(a.Key(), note)
	return nil
}

// engineWatch queues the AppQuotas waiting to be reported Enforced whenever
// the engine's state changes in a way that can change their condition. It
// runs on the leader only, with the status controller.
type engineWatch struct {
	board    *Board
	client   client.Client
	recorder events.EventRecorder
}

// reportRejections records, on each QuotaProfile, the instances that refused
// a configuration.
func (w engineWatch) reportRejections(ctx context.Context, rejected []Rejection) {
	var profiles quotav1.QuotaProfileList
	if err := w.client.List(ctx, &profiles); err != nil {
		ctrl.LoggerFrom(ctx).Error(err, "list QuotaProfiles to report an engine rejection")
		return
	}
	for i := range profiles.Items {
		for _, r := range rejected {
			w.recorder.Eventf(&profiles.Items[i], nil, corev1.EventTypeWarning, EventEngineRejected, "Enforce",
				"rate-limit engine instance %s rejected configuration version %d, and keeps its last one: %s", r.Instance, r.Version, r.Message)
		}
	}
}

// NeedLeaderElection: only the leader writes statuses.
func (engineWatch) NeedLeaderElection() bool { return true }

// engineReportInterval is the least time between two reports of the engine's
// state on the QuotaProfiles. Every version flips each instance from in sync
// to not and back within the engine's load time; reporting each flip would
// cost two writes of every QuotaProfile per edit, in the very moments the
// engine loads the version and the AppQuota's Enforced condition waits.
const engineReportInterval = time.Second

// Start watches until ctx ends. The AppQuotas are queued at once; the
// QuotaProfiles' status.engine is reported by a loop of its own, at most once
// per engineReportInterval and always with the latest state, so that its
// writes never hold up the next acknowledgement's AppQuotas.
func (w engineWatch) Start(ctx context.Context) error {
	due := make(chan struct{}, 1)
	reported := make(chan struct{})
	go func() {
		defer close(reported)
		w.reportProfilesLoop(ctx, due)
	}()
	defer func() { <-reported }()
	var last string
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-w.board.engine.Updated():
		}
		s := w.board.engine.State()
		// Connectivity and rejections change every waiting AppQuota's
		// condition; a new acknowledgement only theirs whose version it covers.
		shape := fmt.Sprintf("%t/%d/%v", s.Connected > 0, s.Refused, s.Rejected)
		keys := w.board.waitingKeys(s, shape != last)
		if shape != last && len(s.Rejected) > 0 {
			w.reportRejections(ctx, s.Rejected)
		}
		last = shape
		for _, key := range keys {
			if !w.board.queue(ctx, key) {
				return nil
			}
		}
		select {
		case due <- struct{}{}:
		default: // a report is due already: it reads the state when it runs
		}
	}
}

// reportProfilesLoop reports the engine's state on the QuotaProfiles each
// time due receives, then waits engineReportInterval before the next: the
// changes meanwhile are coalesced into one report of the latest state.
func (w engineWatch) reportProfilesLoop(ctx context.Context, due <-chan struct{}) {
	pace := time.NewTimer(0)
	defer pace.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-due:
		}
		select {
		case <-ctx.Done():
			return
		case <-pace.C:
		}
		if err := w.reportProfiles(ctx); err != nil {
			ctrl.LoggerFrom(ctx).Error(err, "report the engine's state on the QuotaProfiles")
		}
		pace.Reset(engineReportInterval)
	}
}

// reportProfiles brings every QuotaProfile's status.engine in line with the
// engine's state (the render loop sets it too, with the rest of the status).
func (w engineWatch) reportProfiles(ctx context.Context) error {
	var profiles quotav1.QuotaProfileList
	if err := w.client.List(ctx, &profiles); err != nil {
		return fmt.Errorf("list QuotaProfiles: %w", err)
	}
	want := engineStatus(w.board.engine)
	for i := range profiles.Items {
		p := &profiles.Items[i]
		if p.DeletionTimestamp != nil || equality.Semantic.DeepEqual(p.Status.Engine, want) {
			continue
		}
		patched := p.DeepCopy()
		patched.Status.Engine = want
		if err := w.client.Status().Patch(ctx, patched, client.MergeFrom(p)); err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("QuotaProfile %s: %w", p.Name, err)
		}
	}
	return nil
}
