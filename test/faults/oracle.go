package main

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	quotav1 "github.com/appquota/appquota/api/v1alpha1"
	"github.com/appquota/appquota/controllers"
	"github.com/appquota/appquota/internal/render"
	"github.com/appquota/appquota/pkg/quotaconfig"
)

// stored reads the configuration as a gateway does (quotaconfig.LoadConfigMaps),
// with the index's limits.sha256 and resourceVersion.
func (h *harness) stored(ctx context.Context) (doc *quotaconfig.Document, hash, rv string, err error) {
	doc, err = quotaconfig.LoadConfigMaps(h.opts.ConfigMapName, func(name string) (map[string]string, map[string][]byte, error) {
		var cm corev1.ConfigMap
		if err := h.c.Get(ctx, client.ObjectKey{Namespace: h.opts.Namespace, Name: name}, &cm); err != nil {
			return nil, nil, fmt.Errorf("read ConfigMap %s: %w", name, err)
		}
		if name == h.opts.ConfigMapName {
			hash, rv = cm.Data[quotaconfig.HashKey], cm.ResourceVersion
		}
		return cm.Data, cm.BinaryData, nil
	})
	return doc, hash, rv, err
}

// oracle is what must hold once a fault is over and the system quiet.
type oracle struct {
	h *harness
	// previous is the stored document from before the fault: objects invalid
	// now keep their entry from it.
	previous *quotaconfig.Document
	editor   *editor
	// deleted are app IDs deleted during the fault.
	deleted []string
	// now is the clock the render is taken at, time.Now when nil: the
	// leader's, when replicas' clocks differ (clock-skew).
	now func() time.Time
}

// check returns nil when every property holds, else the first that does not.
// lost is how many apps end with a value other than their last accepted edit.
func (o *oracle) check(ctx context.Context) (lost int, err error) {
	h := o.h
	doc, hash, _, err := h.stored(ctx)
	if err != nil {
		return 0, fmt.Errorf("the stored configuration does not load: %w", err)
	}
	if !h.written(hash) {
		return 0, fmt.Errorf("the stored index %s is not a configuration a manager logged writing", hash)
	}
	var profiles quotav1.QuotaProfileList
	if err := h.c.List(ctx, &profiles); err != nil {
		return 0, err
	}
	var apps quotav1.AppQuotaList
	if err := h.c.List(ctx, &apps); err != nil {
		return 0, err
	}
	now := time.Now()
	if o.now != nil {
		now = o.now()
	}
	// The managers run with --require-app-id-grants (its default): the
	// render is given the namespaces' grants, read as the render loop reads
	// them.
	claims, err := (&controllers.Grants{}).Claims(ctx, h.c)
	if err != nil {
		return 0, err
	}
	want, err := render.Render(render.Input{DefaultProfile: h.opts.DefaultProfile, Profiles: profiles.Items,
		AppQuotas: render.Pointers(apps.Items), Previous: o.previous, Now: now, Claims: claims})
	if err != nil {
		return 0, fmt.Errorf("render the live objects: %w", err)
	}
	if !reflect.DeepEqual(doc.Profiles, want.Document.Profiles) {
		return 0, errors.New("the stored profiles differ from a render of the live QuotaProfiles")
	}
	if diff := diffApps(doc.Apps, want.Document.Apps); diff != "" {
		return 0, fmt.Errorf("the stored apps differ from a render of the live AppQuotas: %s", diff)
	}
	for _, id := range o.deleted {
		if _, ok := doc.Apps[id]; ok {
			return 0, fmt.Errorf("deleted app %s is in the stored configuration", id)
		}
	}
	for i := range apps.Items {
		a := &apps.Items[i]
		out := want.Apps[a.Namespace+"/"+a.Name]
		c := meta.FindStatusCondition(a.Status.Conditions, quotav1.ConditionReady)
		wantStatus := metav1.ConditionTrue
		if out != nil && !out.Valid {
			wantStatus = metav1.ConditionFalse
		}
		if c == nil || c.ObservedGeneration != a.Generation || c.Status != wantStatus {
			return 0, fmt.Errorf("AppQuota %s/%s is not Ready=%s for generation %d: %+v", a.Namespace, a.Name, wantStatus, a.Generation, c)
		}
	}
	if o.editor != nil {
		o.editor.mu.Lock()
		defer o.editor.mu.Unlock()
		live := map[string]int64{}
		for _, a := range apps.Items {
			if len(a.Spec.Overrides) > 0 && len(a.Spec.Overrides[0].Limits) > 0 {
				live[a.Name] = a.Spec.Overrides[0].Limits[0].Max
			}
		}
		for name, v := range o.editor.accepted {
			// An update whose outcome was unknown to the editor may have been
			// applied: its value, above the last accepted one, is no loss.
			if live[name] != v && (live[name] < v || !o.editor.unknown[name][live[name]]) {
				lost++
				if lost == 1 {
					fmt.Fprintf(h.log, "oracle: %s holds %d, its last accepted edit set %d\n", name, live[name], v)
				}
			}
		}
	}
	return lost, nil
}

// diffApps names up to three app IDs whose entries differ, "" when none do.
func diffApps(got, want map[string]quotaconfig.App) string {
	var ids []string
	for id, w := range want {
		if g, ok := got[id]; !ok || !reflect.DeepEqual(g, w) {
			ids = append(ids, id)
		}
	}
	for id := range got {
		if _, ok := want[id]; !ok {
			ids = append(ids, id+" (not in the render)")
		}
	}
	if len(ids) == 0 {
		return ""
	}
	slices.Sort(ids)
	return fmt.Sprintf("%d apps, e.g. %s", len(ids), strings.Join(ids[:min(3, len(ids))], ", "))
}

// settle polls the oracle until it holds (the recovery time is how long that
// took from since) or timeout passes.
func (o *oracle) settle(ctx context.Context, since time.Time, timeout time.Duration) (recovery time.Duration, lost int, err error) {
	var said string
	err = poll(ctx, "the oracle to hold", timeout, func(ctx context.Context) (bool, error) {
		var cerr error
		lost, cerr = o.check(ctx)
		if cerr == nil && lost > 0 {
			cerr = fmt.Errorf("%d apps do not hold their last accepted edit", lost)
		}
		if cerr != nil && cerr.Error() != said {
			said = cerr.Error()
			fmt.Fprintf(o.h.log, "oracle: %v\n", cerr)
		}
		return cerr == nil, cerr
	})
	recovery = time.Since(since)
	if err != nil {
		return recovery, lost, err
	}
	// What gateways see, once the stored configuration is right: not part of
	// the recovery, which is the manager's; a reader's lag is its kubelet's.
	if rs := o.h.gatewayReaders(); rs != nil {
		if err := rs.settle(ctx, 2*time.Minute); err != nil {
			return recovery, lost, err
		}
	}
	return recovery, lost, nil
}
