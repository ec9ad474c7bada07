package controllers

import (
	"bytes"
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	corev1ac "k8s.io/client-go/applyconfigurations/core/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/appquota/appquota/internal/layout"
	"github.com/appquota/appquota/internal/render"
	"github.com/appquota/appquota/pkg/quotaconfig"
)

// ourConfigMaps returns the ConfigMaps we wrote, by name: the named one and
// its shards (the cache holds only ConfigMaps labelled as ours in our
// namespace, see the cache options), as the cache holds them: nothing here
// modifies them.
func (r *QuotaReconciler) ourConfigMaps(ctx context.Context) (map[string]*corev1.ConfigMap, error) {
	var cms corev1.ConfigMapList
	if err := r.List(ctx, &cms, client.InNamespace(r.ConfigMap.Namespace), client.MatchingLabels{ManagedByLabel: ManagedByValue},
		client.UnsafeDisableDeepCopy); err != nil {
		return nil, fmt.Errorf("list ConfigMaps: %w", err)
	}
	ours := map[string]*corev1.ConfigMap{}
	for i := range cms.Items {
		if cm := &cms.Items[i]; r.owns(cm.Name) {
			ours[cm.Name] = cm
		}
	}
	return ours, nil
}

// previous says what a merge takes as its previous document, whose entries
// invalid and bypassed objects keep (their last good ones).
type previous int

const (
	// previousLast: the merger's last result, which the ConfigMaps hold.
	previousLast previous = iota
	// previousStored: the document the ConfigMaps hold, which is not the
	// merger's last result (a new leader, a failed write, a hand edit).
	previousStored
	// previousFallback: the ConfigMaps' set does not verify, or is gone; the
	// merger's last result, trusted, stands in for it.
	previousFallback
	// previousNone: nothing is stored and nothing was merged: a new install.
	previousNone
	// previousUnverified: the ConfigMaps' set does not verify and this
	// process has no trusted result of its own: what the last good entries
	// are is unknown, and a render that needs one is held (see hold).
	previousUnverified
)

// previousDocument returns the previous document when it is to be read from
// the ConfigMaps (previousStored), and what the merge takes as previous. err
// says why the stored set did not verify, when it did not.
func (r *QuotaReconciler) previousDocument(ours map[string]*corev1.ConfigMap) (*quotaconfig.Document, previous, error) {
	index, ok := ours[r.ConfigMap.Name]
	if ok && r.pub.published && index.Data[quotaconfig.HashKey] == r.pub.lastGoodHash {
		return nil, previousLast, nil
	}
	var err error
	if !ok {
		if len(ours) == 0 {
			// Nothing stored: a new install, or every ConfigMap deleted.
			if r.pub.trusted {
				return nil, previousFallback, nil
			}
			return nil, previousNone, nil
		}
		err = fmt.Errorf("ConfigMap %s not found, while %d of its shards are", r.ConfigMap, len(ours))
	} else {
		var doc *quotaconfig.Document
		doc, err = quotaconfig.LoadConfigMaps(r.ConfigMap.Name, func(name string) (map[string]string, map[string][]byte, error) {
			cm, ok := ours[name]
			if !ok {
				return nil, nil, fmt.Errorf("ConfigMap %s/%s not found", r.ConfigMap.Namespace, name)
			}
			return cm.Data, cm.BinaryData, nil
		})
		if err == nil {
			// The ConfigMaps hold something else than the last document written.
			r.pub.published = false
			return doc, previousStored, nil
		}
	}
	r.pub.published = false
	if r.pub.trusted {
		return nil, previousFallback, err
	}
	return nil, previousUnverified, err
}

// slots returns the layout.Writer's Slot for a render that finds ours stored,
// whose index names refs (storedRefs; known false when it cannot be read):
// a shard stays where the stored index names it while its content is the
// same; a changed one goes to the slot of its position that the stored index
// does not name, so that no write touches an object a stored index refers
// to, and the set the index names stays complete until the index itself is
// switched. When the index cannot be read, the slots that exist are avoided.
func (r *QuotaReconciler) slots(ours map[string]*corev1.ConfigMap, refs []quotaconfig.ShardRef, known bool) func(i, n int, hash string) int {
	named := make(map[string]bool, len(refs))
	for _, ref := range refs {
		named[ref.ConfigMap] = true
	}
	return func(i, n int, hash string) int {
		if len(refs) == n && refs[i].Hash == hash {
			return r.slotOf(refs[i].ConfigMap)
		}
		a, b := r.shardName(i), r.shardName(i+quotaconfig.MaxShards)
		switch {
		case named[a]:
			return 1
		case named[b]:
			return 0
		case !known && ours[a] != nil && ours[b] == nil:
			return 1
		}
		return 0
	}
}

// storedRefs returns the shards the stored index names; known is false when
// there is an index that cannot be read.
func (r *QuotaReconciler) storedRefs(ours map[string]*corev1.ConfigMap) (refs []quotaconfig.ShardRef, known bool) {
	index := ours[r.ConfigMap.Name]
	if index == nil {
		return nil, true
	}
	if w := r.pub.written; w != nil && holds(index, w) {
		refs = make([]quotaconfig.ShardRef, len(w.Shards))
		for i, s := range w.Shards {
			refs[i] = s.Ref
		}
		return refs, true
	}
	raw, err := quotaconfig.FromConfigMap(index.Data, index.BinaryData)
	if err != nil {
		return nil, false
	}
	doc, err := quotaconfig.Parse(raw)
	if err != nil {
		return nil, false
	}
	return doc.Shards, true
}

// slotOf is the slot of a shard ConfigMap by its name (Writer.Slot).
func (r *QuotaReconciler) slotOf(name string) int {
	n, _ := strconv.Atoi(strings.TrimPrefix(name, r.ConfigMap.Name+ShardSuffix))
	return n / quotaconfig.MaxShards
}

// needsLastGood reports whether a render merged without a previous document
// would have kept a last good entry had it had one: an invalid AppQuota or
// QuotaProfile (an AppQuota whose profile is gone is invalid too).
func needsLastGood(res *render.Result) (apps, profiles int) {
	for _, o := range res.Apps {
		if !o.Valid {
			apps++
		}
	}
	for _, o := range res.Profiles {
		if !o.Valid {
			profiles++
		}
	}
	return apps, profiles
}

// writeConfigMaps writes st unless it is too large, and tells the publisher.
func (r *QuotaReconciler) writeConfigMaps(ctx context.Context, st *layout.Stored, ours map[string]*corev1.ConfigMap) error {
	if st.TooLarge {
		ctrl.LoggerFrom(ctx).Info("rendered configuration exceeds its size budget even compressed and sharded; keeping the last good one",
			"bytes", st.PlainBytes, "budget", r.MaxConfigBytes, "maxShards", layout.MaxShards)
		return nil
	}
	// The interval counts from the start of a write, which is before anyone
	// can see it.
	start := time.Now()
	wrote, err := r.write(ctx, st, ours)
	r.pub.wrote(st, wrote, err == nil, start)
	return err
}

// write brings the ConfigMaps in line with st: changed shards first, then the
// named ConfigMap (whose index names the shards by hash), then the deletion of
// shards it no longer names. A reader between two of these writes finds a
// shard that does not match the index it holds and keeps its previous
// configuration until the next change; it never assembles a mix.
func (r *QuotaReconciler) write(ctx context.Context, st *layout.Stored, existing map[string]*corev1.ConfigMap) (wrote bool, err error) {
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
		if err := r.fencedApply(ctx, apply, existing[s.Ref.ConfigMap]); err != nil {
			return wrote, err
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
		if err := r.fencedApply(ctx, apply, existing[r.ConfigMap.Name]); err != nil {
			return wrote, err
		}
		log.Info("wrote configuration", "hash", st.Hash, "layout", st.Layout.String(), "shards", len(st.Shards),
			"bytes", st.PlainBytes, "largestObjectBytes", st.StoredBytes)
	}
	for name, cm := range existing {
		if keep[name] {
			continue
		}
		wrote = true
		if err := r.leaseHeld(); err != nil {
			return wrote, fmt.Errorf("delete ConfigMap %s/%s, a shard no longer used: %w", cm.Namespace, name, err)
		}
		rv := r.resourceVersion(cm)
		err := r.Delete(ctx, cm, client.Preconditions{UID: &cm.UID, ResourceVersion: &rv})
		delete(r.pub.rv, name)
		if client.IgnoreNotFound(err) != nil {
			return wrote, fmt.Errorf("delete ConfigMap %s/%s, a shard no longer used: %w", cm.Namespace, name, err)
		}
		log.Info("deleted a shard no longer used", "configMap", name)
	}
	return wrote, nil
}

// fencedApply applies one of our ConfigMaps on the condition that nobody
// wrote it since we last saw it (cur, from the cache; nil when absent), by
// its resourceVersion. A replica that lost the Lease without noticing
// (paused, or cut off and healed) fails here with a conflict instead of
// writing over its successor, and the next render starts from the cache
// again. An absent one is applied without a condition: server-side apply
// cannot require absence, and a create would leave its fields to another
// field manager than the applies after it. What a deposed replica can create
// is a slot its successor's index does not name, or one its successor then
// finds different from its index and writes again.
func (r *QuotaReconciler) fencedApply(ctx context.Context, apply *corev1ac.ConfigMapApplyConfiguration, cur *corev1.ConfigMap) error {
	name := *apply.Name
	if err := r.leaseHeld(); err != nil {
		return fmt.Errorf("apply ConfigMap %s/%s: %w", *apply.Namespace, name, err)
	}
	if r.pub.rv == nil {
		r.pub.rv = map[string]string{}
	}
	rv, ok := r.pub.rv[name]
	if !ok && cur != nil {
		rv = cur.ResourceVersion
	}
	if rv != "" {
		apply.WithResourceVersion(rv)
	}
	if err := r.Apply(ctx, apply, client.FieldOwner(FieldOwner), client.ForceOwnership); err != nil {
		delete(r.pub.rv, name)
		return fmt.Errorf("apply ConfigMap %s/%s: %w", *apply.Namespace, name, err)
	}
	if apply.ResourceVersion != nil {
		r.pub.rv[name] = *apply.ResourceVersion
	}
	return nil
}

// leaseHeld is nil when this replica may write: it renewed the leader Lease
// recently, or runs without leader election.
func (r *QuotaReconciler) leaseHeld() error {
	if r.LeaseHeld == nil {
		return nil
	}
	return r.LeaseHeld()
}

// resourceVersion is the version of cm our writes are conditioned on: the one
// our last write of it returned, which the cache may not have caught up
// with yet, else the cache's.
func (r *QuotaReconciler) resourceVersion(cm *corev1.ConfigMap) string {
	if rv, ok := r.pub.rv[cm.Name]; ok {
		return rv
	}
	return cm.ResourceVersion
}

// tooLargeMessage says why a configuration was not written.
func tooLargeMessage(st *layout.Stored, budget int) string {
	return fmt.Sprintf("the configuration would be %d bytes, more than %d ConfigMaps of %d bytes hold even compressed; "+
		"gateways keep the last good version",
		st.PlainBytes, layout.MaxShards, budget)
}

// holds reports whether cm already holds exactly the named ConfigMap's content.
func holds(cm *corev1.ConfigMap, st *layout.Stored) bool {
	if cm.Data[quotaconfig.HashKey] != st.Hash || cm.Labels[ManagedByLabel] != ManagedByValue {
		return false
	}
	if st.Key == quotaconfig.DataKey {
		return len(cm.Data) == 2 && cm.Data[quotaconfig.DataKey] == string(st.Data) && len(cm.BinaryData) == 0
	}
	return len(cm.Data) == 1 && len(cm.BinaryData) == 1 && bytes.Equal(cm.BinaryData[st.Key], st.Data)
}

// holdsShard reports whether cm already holds exactly shard s.
func holdsShard(cm *corev1.ConfigMap, s layout.StoredShard) bool {
	return len(cm.Data) == 0 && len(cm.BinaryData) == 1 && bytes.Equal(cm.BinaryData[s.Ref.Key], s.Data)
}
