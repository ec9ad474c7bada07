// Package webhook serves appquota's validating admission webhook: the rules
// that need other objects (the profile an AppQuota names, another AppQuota with
// the same appID, AppQuotas still using a profile) and warnings for what is
// allowed but probably a mistake. The rules themselves live in
// internal/validation, shared with the controller and the CLI.
package webhook

import (
	"context"
	"fmt"
	"hash/maphash"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation/field"
	toolscache "k8s.io/client-go/tools/cache"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	quotav1 "github.com/appquota/appquota/api/v1alpha1"
	"github.com/appquota/appquota/internal/reservation"
	"github.com/appquota/appquota/internal/validation"
)

// IndexAppIDBucket is the cache index, by AppIDBucket(spec.appID), the
// webhook looks AppQuotas up by, so that admitting one stays a map lookup
// with 100,000 AppQuotas in the cache.
const IndexAppIDBucket = "spec.appID.bucket"

// appIDBuckets is how many index values AppQuotas are spread over by appID.
// An index by the appID itself would cost two sets per AppQuota (client-go maps
// each index value to a set of keys, and controller-runtime indexes each value
// per namespace and across namespaces). Buckets hold the same keys in 8,192
// sets; at 100,000 AppQuotas a bucket has about 25, which the webhook filters
// by appID (docs/decisions/2026-11-26-webhook-lookups-without-per-object-indexes.md).
const appIDBuckets = 4096

// AppIDBucket is the IndexAppIDBucket value of an appID: its hash modulo
// appIDBuckets. The index lives in the manager's memory only, so the hash is
// the process's own (maphash, seeded at start): nothing outside can predict
// which appIDs share a bucket, and it owes nothing to how the configuration
// assigns apps to shards.
func AppIDBucket(appID string) string {
	return strconv.FormatUint(maphash.String(appIDSeed, appID)%appIDBuckets, 10)
}

var appIDSeed = maphash.MakeSeed()

// SetupWithManager registers the index and both validators with mgr;
// appQuotas is the manager's AppQuota informer. requireGrants makes the
// AppQuota webhook check that a namespace may claim the appID
// (quotav1.AppIDsAnnotation), as the admission policy does.
//
// reservations, when set, is the ConfigMap of app ID reservations the
// manager's render loop writes (internal/reservation; the manager's cache
// holds it): a claim on an ID reserved for another namespace is refused.
func SetupWithManager(ctx context.Context, mgr ctrl.Manager, appQuotas toolscache.SharedIndexInformer, requireGrants bool,
	reservations *client.ObjectKey) error {
	indexer := mgr.GetFieldIndexer()
	if err := indexer.IndexField(ctx, &quotav1.AppQuota{}, IndexAppIDBucket, func(o client.Object) []string {
		return []string{AppIDBucket(o.(*quotav1.AppQuota).Spec.AppID)}
	}); err != nil {
		return fmt.Errorf("index AppQuotas by appID: %w", err)
	}
	if err := ctrl.NewWebhookManagedBy(mgr, &quotav1.AppQuota{}).
		WithValidator(&AppQuotaValidator{Reader: mgr.GetClient(), ProfileReader: mgr.GetAPIReader(), RequireGrants: requireGrants,
			Reservations: reservations}).Complete(); err != nil {
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
	// RequireGrants checks the namespace's grant (quotav1.AppIDsAnnotation),
	// read through Reader (Namespaces' metadata).
	RequireGrants bool
	// Reservations, when set, is the ConfigMap of app ID reservations, read
	// through Reader; nil checks none.
	Reservations *client.ObjectKey

	// reserved is the last reservations ConfigMap decoded, by its
	// resourceVersion: admissions between two writes parse it once.
	reservedMu sync.Mutex
	reservedRV string
	reserved   reservation.Set
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
	warnings, errs, err := AdmitAppQuota(ctx, clusterLookup{v}, old, a, v.now())
	if err != nil {
		return nil, apierrors.NewInternalError(err)
	}
	if req, err := admission.RequestFromContext(ctx); err == nil {
		errs = append(errs, validation.ChangedBy(old, a, req.UserInfo.Username)...)
	}
	if len(errs) > 0 {
		return warnings, apierrors.NewInvalid(quotav1.GroupVersion.WithKind("AppQuota").GroupKind(), a.Name, errs)
	}
	return warnings, nil
}

// Lookup answers what admitting an AppQuota asks about the other objects.
type Lookup interface {
	// QuotaProfile returns the QuotaProfile named name, nil when there is none.
	QuotaProfile(ctx context.Context, name string) (*quotav1.QuotaProfile, error)
	// AppIDOwner returns the AppQuota ("namespace/name") other than a that
	// claims a's appID, "" when none does.
	AppIDOwner(ctx context.Context, a *quotav1.AppQuota) (string, error)
	// Grant returns what namespace may claim (quotav1.AppIDsAnnotation),
	// nil when grants are not required or not known.
	Grant(ctx context.Context, namespace string) (*validation.Grant, error)
	// Reservation returns the reservation of appID (a deleted AppQuota's ID
	// held for its namespace), nil when there is none or none is known.
	Reservation(ctx context.Context, appID string) (*reservation.Reservation, error)
}

// AdmitAppQuota is the AppQuota webhook's admission sequence, which the CLI
// runs offline too: it looks up the profile a names and the AppQuota that
// already claims its appID, and validates a (old is the object an update
// replaces, nil for a create) against them at now. A failed lookup is err;
// what is wrong with a is errs.
func AdmitAppQuota(ctx context.Context, l Lookup, old, a *quotav1.AppQuota, now time.Time) (admission.Warnings, field.ErrorList, error) {
	var ref validation.Reference
	var err error
	if ref.Profile, err = l.QuotaProfile(ctx, a.ProfileName()); err != nil {
		return nil, nil, err
	}
	if ref.AppIDOwner, err = l.AppIDOwner(ctx, a); err != nil {
		return nil, nil, err
	}
	if ref.Grant, err = l.Grant(ctx, a.Namespace); err != nil {
		return nil, nil, err
	}
	if ref.Reservation, err = l.Reservation(ctx, a.Spec.AppID); err != nil {
		return nil, nil, err
	}
	warnings, errs := validation.AppQuotaAdmission(old, a, ref, now)
	return warnings, errs, nil
}

// clusterLookup answers the webhook's lookups from the manager's cache, and
// from the API server for a profile the cache has not seen.
type clusterLookup struct{ v *AppQuotaValidator }

func (l clusterLookup) QuotaProfile(ctx context.Context, name string) (*quotav1.QuotaProfile, error) {
	var p quotav1.QuotaProfile
	// The cache answers almost always; a profile it has not seen yet (created a
	// moment ago in the same `kubectl apply`) is looked up on the API server.
	err := l.v.Reader.Get(ctx, client.ObjectKey{Name: name}, &p)
	if apierrors.IsNotFound(err) {
		err = l.v.ProfileReader.Get(ctx, client.ObjectKey{Name: name}, &p)
	}
	switch {
	case err == nil:
		return &p, nil
	case apierrors.IsNotFound(err):
		return nil, nil
	}
	return nil, fmt.Errorf("read QuotaProfile %s: %w", name, err)
}

func (l clusterLookup) Grant(ctx context.Context, namespace string) (*validation.Grant, error) {
	if !l.v.RequireGrants {
		return nil, nil
	}
	ns := &metav1.PartialObjectMetadata{}
	ns.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("Namespace"))
	if err := l.v.Reader.Get(ctx, client.ObjectKey{Name: namespace}, ns); err != nil {
		return nil, fmt.Errorf("read Namespace %s: %w", namespace, err)
	}
	g := validation.ParseGrant(namespace, ns.Annotations)
	return &g, nil
}

func (l clusterLookup) Reservation(ctx context.Context, appID string) (*reservation.Reservation, error) {
	if l.v.Reservations == nil {
		return nil, nil
	}
	var cm corev1.ConfigMap
	err := l.v.Reader.Get(ctx, *l.v.Reservations, &cm)
	switch {
	case apierrors.IsNotFound(err):
		return nil, nil
	case err != nil:
		return nil, fmt.Errorf("read ConfigMap %s: %w", *l.v.Reservations, err)
	}
	v := l.v
	v.reservedMu.Lock()
	defer v.reservedMu.Unlock()
	if v.reserved == nil || v.reservedRV != cm.ResourceVersion {
		set, err := reservation.Decode(cm.Data[reservation.DataKey])
		if err != nil {
			// The render loop starts without a damaged record, and so does
			// admission: refusing every AppQuota for it would be worse.
			ctrl.LoggerFrom(ctx).Error(err, "the app ID reservations are unreadable; admitting without them")
			set = reservation.Set{}
		}
		v.reserved, v.reservedRV = set, cm.ResourceVersion
	}
	if r, ok := v.reserved[appID]; ok {
		return &r, nil
	}
	return nil, nil
}

func (l clusterLookup) AppIDOwner(ctx context.Context, a *quotav1.AppQuota) (string, error) {
	var same quotav1.AppQuotaList
	// The bucket's objects are only read here: no copies.
	if err := l.v.Reader.List(ctx, &same, client.MatchingFields{IndexAppIDBucket: AppIDBucket(a.Spec.AppID)}, client.UnsafeDisableDeepCopy); err != nil {
		return "", fmt.Errorf("list AppQuotas by appID: %w", err)
	}
	for _, o := range same.Items {
		if o.Spec.AppID == a.Spec.AppID && (o.Namespace != a.Namespace || o.Name != a.Name) {
			return o.Key(), nil
		}
	}
	return "", nil
}

// +kubebuilder:webhook:path=/validate-quota-appquota-io-v1alpha1-quotaprofile,mutating=false,failurePolicy=fail,sideEffects=None,groups=quota.appquota.io,resources=quotaprofiles,verbs=create;update;delete,versions=v1alpha1,name=vquotaprofile.quota.appquota.io,admissionReviewVersions=v1,timeoutSeconds=5

// QuotaProfileValidator validates QuotaProfiles and refuses deleting one that
// AppQuotas still use.
type QuotaProfileValidator struct {
	// AppQuotas is the cache's AppQuota informer. A deletion walks its store,
	// pointers and no copies: deleting a profile is rare, and an index by
	// profile would hold an entry per AppQuota, twice (controller-runtime
	// indexes per namespace and across them), for as long as the manager runs.
	AppQuotas toolscache.SharedIndexInformer
}

var _ admission.Validator[*quotav1.QuotaProfile] = &QuotaProfileValidator{}

// ValidateCreate implements admission.Validator.
func (v *QuotaProfileValidator) ValidateCreate(_ context.Context, p *quotav1.QuotaProfile) (admission.Warnings, error) {
	return nil, invalid(p, AdmitQuotaProfile(p))
}

// ValidateUpdate implements admission.Validator.
func (v *QuotaProfileValidator) ValidateUpdate(_ context.Context, _, p *quotav1.QuotaProfile) (admission.Warnings, error) {
	return nil, invalid(p, AdmitQuotaProfile(p))
}

// AdmitQuotaProfile is the QuotaProfile webhook's check of a create or an
// update, which the CLI runs offline too.
func AdmitQuotaProfile(p *quotav1.QuotaProfile) field.ErrorList {
	return validation.QuotaProfile(p)
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
