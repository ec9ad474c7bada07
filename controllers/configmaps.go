package controllers

import (
	"bytes"
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	corev1ac "k8s.io/client-go/applyconfigurations/core/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/appquota/appquota/internal/layout"
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

// previousDocument is the previous document when it is not the merger's
// last result: what the ConfigMaps hold, when they no longer hold what was
// last written and can be read; nil otherwise.
func (r *QuotaReconciler) previousDocument(ctx context.Context, ours map[string]*corev1.ConfigMap) *quotaconfig.Document {
	index, ok := ours[r.ConfigMap.Name]
	if !ok || (r.pub.published && index.Data[quotaconfig.HashKey] == r.pub.lastGoodHash) {
		return nil
	}
	doc, err := quotaconfig.LoadConfigMaps(r.ConfigMap.Name, func(name string) (map[string]string, map[string][]byte, error) {
		cm, ok := ours[name]
		if !ok {
			return nil, nil, fmt.Errorf("ConfigMap %s/%s not found", r.ConfigMap.Namespace, name)
		}
		return cm.Data, cm.BinaryData, nil
	})
	if err != nil {
		if r.pub.published {
			ctrl.LoggerFrom(ctx).Info("ConfigMap content is unreadable; rendering from the last document written", "err", err.Error())
		}
		return nil
	}
	// The ConfigMaps hold something else than the last document written.
	r.pub.published = false
	return doc
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
		log.Info("wrote configuration", "hash", st.Hash, "layout", st.Layout.String(), "shards", len(st.Shards),
			"bytes", st.PlainBytes, "largestObjectBytes", st.StoredBytes)
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
