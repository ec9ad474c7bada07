package controllers

import (
	"k8s.io/apimachinery/pkg/types"

	quotav1 "github.com/appquota/appquota/api/v1alpha1"
	"github.com/appquota/appquota/internal/render"
)

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
// merger, which reads them from the cache.
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
