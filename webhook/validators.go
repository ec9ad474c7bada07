// Package webhook serves appquota's validating admission webhook: the rules
// that need other objects (the profile an AppQuota names, another AppQuota with
// the same appID, AppQuotas still using a profile) and warnings for what is
// allowed but probably a mistake. The rules themselves live in
// internal/validation, shared with the controller and the CLI.
package webhook

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/util/validation/field"
	toolscache "k8s.io/client-go/tools/cache"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	quotav1 "github.com/appquota/appquota/api/v1alpha1"
	"github.com/appquota/appquota/internal/validation"
	"github.com/appquota/appquota/pkg/quotaconfig"
)

// IndexAppIDBucket is the cache index, by AppIDBucket(spec.appID), the
// webhook looks AppQuotas up by, so that admitting one stays a map lookup
// with 100,000 AppQuotas in the cache.
const IndexAppIDBucket = "spec.appID.bucket"

// appIDBuckets is how many index values AppQuotas are spread over by appID.
// An index by the appID itself would cost a set per AppQuota (client-go maps
// each index value to a set of keys, and controller-runtime indexes each value
// per namespace and across namespaces): two maps of about 200 bytes per
// AppQuota, 40 MB at 100,000. Buckets hold the same keys in 8,192 sets; at
// 100,000 AppQuotas a bucket has about 25, which the webhook filters by appID.
const appIDBuckets = 4096

// AppIDBucket is the IndexAppIDBucket value of an appID: FNV-1a modulo
// appIDBuckets, the hash that assigns apps to shards.
func AppIDBucket(appID string) string {
	return strconv.Itoa(quotaconfig.ShardOf(appID, appIDBuckets))
}

// SetupWithManager registers the index and both validators with mgr;
// appQuotas is the manager's AppQuota informer.
func SetupWithManager(ctx context.Context, mgr ctrl.Manager, appQuotas toolscache.SharedIndexInformer) error {
	indexer := mgr.GetFieldIndexer()
	if err := indexer.IndexField(ctx, &quotav1.AppQuota{}, IndexAppIDBucket, func(o client.Object) []string {
		return []string{AppIDBucket(o.(*quotav1.AppQuota).Spec.AppID)}
	}); err != nil {
		return fmt.Errorf("index AppQuotas by appID: %w", err)
	}
	if err := ctrl.NewWebhookManagedBy(mgr, &quotav1.AppQuota{}).
		WithValidator(&AppQuotaValidator{Reader: mgr.GetClient(), ProfileReader: mgr.GetAPIReader()}).Complete(); err != nil {
		return fmt.Errorf("AppQuota webhook: %w", err)
	}
	if err := ctrl.NewWebhookManagedBy(mgr, &quotav1.QuotaProfile{}).
		WithValidator(&QuotaProfileValidator{AppQuotas: appQuotas}).Complete(); err != nil {
		return fmt.Errorf("QuotaProfile webhook: %w", err)
	}
	return nil
}

// +kubebuilder:webhook:path=/validate-quota-appquota-io-v1alpha1-appquota,mutating=false,failurePolicy=fail,sideEffects=None,groups=quota.appquota.io,resources=appquotas,verbs=create;update,versions=v1alpha1,name=vappquota.quota.appquota.io,admissionReviewVersions=v1,timeoutSeconds=5

// AppQuotaValidator validates AppQuotas against their profile and the other
// AppQuotas.
type AppQuotaValidator struct {
	// Reader is the manager's cached client, with the indexes above.
	Reader client.Reader
	// ProfileReader reads the AppQuota's profile from the API server when the
	// cache has not seen it: `kubectl apply` of a new profile and its AppQuotas in
	// one go must not be refused because the cache lags.
	ProfileReader client.Reader
	// Now is the clock; time.Now when nil.
	Now func() time.Time
}

var _ admission.Validator[*quotav1.AppQuota] = &AppQuotaValidator{}

func (v *AppQuotaValidator) now() time.Time {
	if v.Now != nil {
		return v.Now()
	}
	return time.Now()
}

// ValidateCreate implements admission.Validator.
func (v *AppQuotaValidator) ValidateCreate(ctx context.Context, a *quotav1.AppQuota) (admission.Warnings, error) {
	return v.validate(ctx, nil, a)
}

// ValidateUpdate implements admission.Validator.
func (v *AppQuotaValidator) ValidateUpdate(ctx context.Context, old, a *quotav1.AppQuota) (admission.Warnings, error) {
	return v.validate(ctx, old, a)
}

// ValidateDelete implements admission.Validator; deleting an AppQuota is always allowed.
func (v *AppQuotaValidator) ValidateDelete(context.Context, *quotav1.AppQuota) (admission.Warnings, error) {
	return nil, nil
}

func (v *AppQuotaValidator) validate(ctx context.Context, old, a *quotav1.AppQuota) (admission.Warnings, error) {
	var ref validation.Reference
	var p quotav1.QuotaProfile
	// The cache answers almost always; a profile it has not seen yet (created a
	// moment ago in the same `kubectl apply`) is looked up on the API server.
	err := v.Reader.Get(ctx, client.ObjectKey{Name: a.ProfileName()}, &p)
	if apierrors.IsNotFound(err) {
		err = v.ProfileReader.Get(ctx, client.ObjectKey{Name: a.ProfileName()}, &p)
	}
	switch {
	case err == nil:
		ref.Profile = &p
	case !apierrors.IsNotFound(err):
		return nil, apierrors.NewInternalError(fmt.Errorf("read QuotaProfile %s: %w", a.ProfileName(), err))
	}
	var same quotav1.AppQuotaList
	// The bucket's objects are only read here: no copies.
	if err := v.Reader.List(ctx, &same, client.MatchingFields{IndexAppIDBucket: AppIDBucket(a.Spec.AppID)}, client.UnsafeDisableDeepCopy); err != nil {
		return nil, apierrors.NewInternalError(fmt.Errorf("list AppQuotas by appID: %w", err))
	}
	for _, o := range same.Items {
		if o.Spec.AppID == a.Spec.AppID && (o.Namespace != a.Namespace || o.Name != a.Name) {
			ref.AppIDOwner = o.Key()
			break
		}
	}
	warnings, errs := validation.AppQuotaAdmission(old, a, ref, v.now())
	if len(errs) > 0 {
		return warnings, apierrors.NewInvalid(quotav1.GroupVersion.WithKind("AppQuota").GroupKind(), a.Name, errs)
	}
	return warnings, nil
}

// +kubebuilder:webhook:path=/validate-quota-appquota-io-v1alpha1-quotaprofile,mutating=false,failurePolicy=fail,sideEffects=None,groups=quota.appquota.io,resources=quotaprofiles,verbs=create;update;delete,versions=v1alpha1,name=vquotaprofile.quota.appquota.io,admissionReviewVersions=v1,timeoutSeconds=5

// QuotaProfileValidator validates QuotaProfiles and refuses deleting one that
// AppQuotas still use.
type QuotaProfileValidator struct {
	// AppQuotas is the cache's AppQuota informer. A deletion walks its store,
	// pointers and no copies: deleting a profile is rare, and an index by
	// profile would hold an entry per AppQuota, twice (controller-runtime
	// indexes per namespace and across them), about 5 MB at 100,000.
	AppQuotas toolscache.SharedIndexInformer
}

var _ admission.Validator[*quotav1.QuotaProfile] = &QuotaProfileValidator{}

// ValidateCreate implements admission.Validator.
func (v *QuotaProfileValidator) ValidateCreate(_ context.Context, p *quotav1.QuotaProfile) (admission.Warnings, error) {
	return nil, invalid(p, validation.QuotaProfile(p))
}

// ValidateUpdate implements admission.Validator.
func (v *QuotaProfileValidator) ValidateUpdate(_ context.Context, _, p *quotav1.QuotaProfile) (admission.Warnings, error) {
	return nil, invalid(p, validation.QuotaProfile(p))
}

// usersShown is how many of a profile's AppQuotas a refused deletion names.
const usersShown = 3

// ValidateDelete implements admission.Validator.
func (v *QuotaProfileValidator) ValidateDelete(ctx context.Context, p *quotav1.QuotaProfile) (admission.Warnings, error) {
	// Before its first list the store would answer that nobody uses the profile.
	if !toolscache.WaitForCacheSync(ctx.Done(), v.AppQuotas.HasSynced) {
		return nil, apierrors.NewInternalError(fmt.Errorf("the AppQuota cache has not synced: %w", ctx.Err()))
	}
	var names []string
	for _, o := range v.AppQuotas.GetStore().List() {
		if a, ok := o.(*quotav1.AppQuota); ok && a.ProfileName() == p.Name {
			names = append(names, a.Key())
		}
	}
	if len(names) == 0 {
		return nil, nil
	}
	slices.Sort(names)
	shown := strings.Join(names[:min(usersShown, len(names))], ", ")
	if len(names) > usersShown {
		shown += fmt.Sprintf(" and %d more", len(names)-usersShown)
	}
	return nil, apierrors.NewForbidden(quotav1.GroupVersion.WithResource("quotaprofiles").GroupResource(), p.Name,
		fmt.Errorf("%d AppQuotas still use it (%s); move them to another profile or delete them first", len(names), shown))
}

func invalid(p *quotav1.QuotaProfile, errs field.ErrorList) error {
	if len(errs) == 0 {
		return nil
	}
	return apierrors.NewInvalid(quotav1.GroupVersion.WithKind("QuotaProfile").GroupKind(), p.Name, errs)
}
