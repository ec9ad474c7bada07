package main

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/appquota/appquota/controllers"
	"github.com/appquota/appquota/pkg/quotaconfig"
)

// damage is one edit by hand of the stored set: it changes the ConfigMap
// it is given and reports whether to delete it instead of updating it.
type damage struct {
	name  string
	shard bool // applies to a shard rather than the index
	edit  func(cm *corev1.ConfigMap) (remove bool)
}

var damages = []damage{
	{name: "byte flipped in a shard", shard: true, edit: flipByte},
	{name: "index edited", edit: flipByte},
	{name: "index deleted", edit: func(*corev1.ConfigMap) bool { return true }},
	{name: "shard deleted", shard: true, edit: func(*corev1.ConfigMap) bool { return true }},
	{name: "foreign key added to the index", edit: func(cm *corev1.ConfigMap) bool {
		if cm.Data == nil {
			cm.Data = map[string]string{}
		}
		cm.Data["foreign.json"] = "{}"
		return false
	}},
	{name: "managed-by label removed from the index", edit: func(cm *corev1.ConfigMap) bool {
		delete(cm.Labels, controllers.ManagedByLabel)
		return false
	}},
}

// flipByte changes one byte of the ConfigMap's document (not its hash key).
func flipByte(cm *corev1.ConfigMap) bool {
	for _, k := range slices.Sorted(maps.Keys(cm.BinaryData)) {
		if b := cm.BinaryData[k]; len(b) > 0 {
			b[len(b)/2] ^= 0x01
			return false
		}
	}
	for _, k := range slices.Sorted(maps.Keys(cm.Data)) {
		if v := cm.Data[k]; k != quotaconfig.HashKey && len(v) > 0 {
			i := len(v) / 2
			c := byte('x')
			if v[i] == 'x' {
				c = 'y'
			}
			cm.Data[k] = v[:i] + string(c) + v[i+1:]
			return false
		}
	}
	return false
}

// handDamage is fault 4: the stored set damaged by hand, one damage at a
// time on a sharded set; after each the leader must restore a set that
// equals a render of the live objects.
func handDamage(ctx context.Context, cfg Config, bin string) result {
	names := make([]string, len(damages))
	for i, d := range damages {
		names[i] = d.name
	}
	res := result{Fault: "Stored set damaged by hand",
		Injection: fmt.Sprintf("on a sharded set of %d AppQuotas, in turn: %s", cfg.Apps, strings.Join(names, "; "))}
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	h, err := newHarness(runCtx, cfg.Log, bin, "--shard-above-bytes", "1024", "--compact-after", "1s")
	if err != nil {
		res.Err = err
		return res
	}
	defer h.stop()
	h.incompressible = true
	if err := h.start(runCtx); err != nil {
		res.Err = err
		return res
	}
	if err := h.createApps(runCtx, 0, cfg.Apps, cfg.Workers); err != nil {
		res.Err = err
		return res
	}
	o := &oracle{h: h}
	if _, _, err := o.settle(runCtx, time.Now(), 5*time.Minute); err != nil {
		res.Err = fmt.Errorf("before the fault: %w", err)
		return res
	}
	restartsBefore := h.restarts()
	for _, d := range damages {
		if o.previous, _, _, err = h.stored(runCtx); err != nil {
			res.Err = err
			return res
		}
		if err := h.damage(runCtx, d); err != nil {
			res.Err = fmt.Errorf("%s: %w", d.name, err)
			return res
		}
		recovery, lost, err := o.settle(runCtx, time.Now(), 2*time.Minute)
		res.Lost += lost
		if err != nil {
			res.Err = fmt.Errorf("after %s: %w", d.name, err)
			return res
		}
		res.Recovery = append(res.Recovery, recovery)
	}
	res.Restarts += h.restarts() - restartsBefore
	res.Stale += h.conflicts()
	return res
}

// damage applies d to the index or to the first shard.
func (h *harness) damage(ctx context.Context, d damage) error {
	name := h.opts.ConfigMapName
	if d.shard {
		shards, err := h.shardVersions(ctx)
		if err != nil {
			return err
		}
		if len(shards) == 0 {
			return fmt.Errorf("no shard to damage: the set is not sharded")
		}
		name = slices.Sorted(maps.Keys(shards))[0]
	}
	var cm corev1.ConfigMap
	if err := h.c.Get(ctx, client.ObjectKey{Namespace: h.opts.Namespace, Name: name}, &cm); err != nil {
		return err
	}
	if d.edit(&cm) {
		return h.c.Delete(ctx, &cm)
	}
	return h.c.Update(ctx, &cm)
}
