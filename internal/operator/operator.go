// Package operator wires appquota's controllers, webhooks and health checks into
// a controller-runtime manager. The manager binary, the demo and the benchmarks
// all call Setup, so they run the same operator.
package operator

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"time"
	"unique"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	toolscache "k8s.io/client-go/tools/cache"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/healthz"

	quotav1alpha1 "github.com/appquota/appquota/api/v1alpha1"
	"github.com/appquota/appquota/controllers"
	"github.com/appquota/appquota/internal/render"
	"github.com/appquota/appquota/webhook"
)

// Options are the operator's settings; the manager binary exposes each as a flag.
type Options struct {
	// Namespace holds the output ConfigMap (the manager's own namespace).
	Namespace string
	// ConfigMapName is the name of the ConfigMap gateways read.
	ConfigMapName string
	// DefaultProfile is the QuotaProfile that applies to apps without an AppQuota.
	DefaultProfile string
	// MaxConfigBytes is the size budget of the rendered document, kept well under
	// the 1 MiB object limit so an object plus its metadata always fits.
	MaxConfigBytes int
	// ShardAboveBytes keeps what one change rewrites small: a configuration
	// stored larger than this (compressed) is sharded, and the apps changed
	// since their shards were written ride in the index, the one object a
	// change rewrites, until CompactAfter without a write (docs/scale.md,
	// "Layouts"; the bounds: docs/decisions/2026-11-27-sharding-bounds.md).
	// It also scales the plain layout's bound (render.PlainFactor times it)
	// and the index's (render.RecentFactor times it). 0 turns this off:
	// plain, then compressed, then sharded only over MaxConfigBytes, every
	// app in its shard.
	ShardAboveBytes int
	// CompactAfter is how long the configuration stays unwritten before the
	// apps the index carries are folded into their shards.
	CompactAfter time.Duration
	// MinWriteInterval is the least time between two writes of the ConfigMaps:
	// a burst of changes is written once per interval, not once per render.
	MinWriteInterval time.Duration
	// EventRate and EventBurst bound the events the operator emits, per event
	// type (Normal, Warning): EventRate a second, in bursts of up to EventBurst.
	// Beyond that events are dropped (counted in appquota_events_dropped_total);
	// the objects' statuses still tell everything.
	EventRate  float64
	EventBurst int
	// DisableWebhook leaves the admission webhook out (tests that need to create
	// objects a webhook would refuse, as if it had been down).
	DisableWebhook bool
}

// DefaultOptions returns the defaults the manager's flags start from.
func DefaultOptions() Options {
	return Options{
		Namespace:        "appquota-system",
		ConfigMapName:    "appquota-limits",
		DefaultProfile:   "default",
		MaxConfigBytes:   900 * 1024,
		ShardAboveBytes:  16 * 1024,
		CompactAfter:     10 * time.Second,
		MinWriteInterval: time.Second,
		EventRate:        10,
		EventBurst:       100,
	}
}

// Validate reports options that cannot work.
func (o Options) Validate() error {
	var errs []error
	if o.Namespace == "" {
		errs = append(errs, errors.New("namespace must not be empty"))
	}
	if o.ConfigMapName == "" || len(o.ConfigMapName) > 240 {
		// 240 leaves room for the shard suffix within the 253-character limit.
		errs = append(errs, errors.New("configmap name must have 1 to 240 characters"))
	}
	if o.MinWriteInterval < 0 {
		errs = append(errs, errors.New("min write interval must not be negative"))
	}
	if o.MaxConfigBytes <= 0 || o.MaxConfigBytes > 1000*1024 {
		errs = append(errs, errors.New("max config bytes must be between 1 and 1024000"))
	}
	if o.ShardAboveBytes < 0 {
		errs = append(errs, errors.New("shard above bytes must not be negative"))
	}
	if o.CompactAfter <= 0 {
		errs = append(errs, errors.New("compact after must be positive"))
	}
	if o.EventRate <= 0 || o.EventBurst < 1 {
		errs = append(errs, errors.New("event rate must be positive and event burst at least 1"))
	}
	if o.DefaultProfile == "" {
		errs = append(errs, errors.New("default profile must not be empty"))
	}
	return errors.Join(errs...)
}

// Scheme returns a scheme with the built-in types and quota.appquota.io/v1alpha1.
func Scheme() (*runtime.Scheme, error) {
	s := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(s); err != nil {
		return nil, err
	}
	if err := quotav1alpha1.AddToScheme(s); err != nil {
		return nil, err
	}
	return s, nil
}

// The operator's permissions, least privilege: read the quota objects cluster-wide,
// write their status, emit events, and write ConfigMaps only in its own namespace
// ("system" becomes the install namespace through config/default).
//
// +kubebuilder:rbac:groups=quota.appquota.io,resources=appquotas;quotaprofiles,verbs=get;list;watch
// +kubebuilder:rbac:groups=quota.appquota.io,resources=appquotas/status;quotaprofiles/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch
// +kubebuilder:rbac:groups="",namespace=system,resources=configmaps,verbs=get;list;watch;create;update;patch;delete

// CacheOptions limits the manager's cache to what the operator reads: of all
// ConfigMaps, only those it writes (labelled app.kubernetes.io/managed-by=appquota
// in its namespace: the named one and its shards), so a cluster with many
// ConfigMaps costs no memory. It also strips managed fields and kubectl's
// last-applied annotation from cached objects: nothing reads them, and with
// 100,000 AppQuotas they would be most of the cache. Pass it as
// ctrl.Options.Cache.
func CacheOptions(o Options) cache.Options {
	return cache.Options{
		ByObject: map[client.Object]cache.ByObject{
			&corev1.ConfigMap{}: {
				Namespaces: map[string]cache.Config{o.Namespace: {}},
				Label:      labels.SelectorFromSet(labels.Set{controllers.ManagedByLabel: controllers.ManagedByValue}),
			},
		},
		DefaultTransform: stripForCache,
	}
}

// stripForCache drops what no reader of the cache needs, and makes the strings
// that 100,000 AppQuotas repeat (namespace, kind, condition, configuration
// hash, group and unit names) share one copy each: the decoder allocates every
// string of every object anew (docs/scale.md, "Memory at 100,000 apps (profiled)").
func stripForCache(in any) (any, error) {
	if o, ok := in.(metav1.Object); ok {
		o.SetManagedFields(nil)
		if a := o.GetAnnotations(); a[corev1.LastAppliedConfigAnnotation] != "" {
			delete(a, corev1.LastAppliedConfigAnnotation)
			o.SetAnnotations(a)
		}
	}
	if a, ok := in.(*quotav1alpha1.AppQuota); ok {
		internAppQuota(a)
	}
	return in, nil
}

func intern[S ~string](s S) S { return S(unique.Make(string(s)).Value()) }

func internAppQuota(a *quotav1alpha1.AppQuota) {
	a.APIVersion, a.Kind, a.Namespace = intern(a.APIVersion), intern(a.Kind), intern(a.Namespace)
	a.Spec.Profile = intern(a.Spec.Profile)
	for i := range a.Spec.Overrides {
		o := &a.Spec.Overrides[i]
		o.Group, o.Reason = intern(o.Group), intern(o.Reason)
		for j := range o.Limits {
			l := &o.Limits[j]
			l.Unit, l.Window, l.Scope = intern(l.Unit), intern(l.Window), intern(l.Scope)
		}
	}
	a.Status.ConfigHash = intern(a.Status.ConfigHash)
	for i := range a.Status.Conditions {
		c := &a.Status.Conditions[i]
		c.Type, c.Reason, c.Message = intern(c.Type), intern(c.Reason), intern(c.Message)
		c.Status = intern(c.Status)
	}
}

// ServerTLSOpts are the TLS settings of the manager's webhook and metrics
// servers. Without enableHTTP2 they offer HTTP/1.1 only, as kubebuilder's
// scaffold does against the HTTP/2 stream cancellation and rapid reset CVEs
// (GHSA-qppj-fm5r-hxr3, GHSA-4374-p667-p6c8). The API server's call to the
// AppQuota webhook is also cheaper over HTTP/1.1 here
// (docs/decisions/2026-11-26-webhook-and-metrics-serve-http1.md).
func ServerTLSOpts(enableHTTP2 bool) []func(*tls.Config) {
	if enableHTTP2 {
		return nil
	}
	return []func(*tls.Config){func(c *tls.Config) { c.NextProtos = []string{"http/1.1"} }}
}

// Setup registers the operator with mgr.
func Setup(mgr ctrl.Manager, o Options) error {
	if err := o.Validate(); err != nil {
		return fmt.Errorf("operator options: %w", err)
	}
	if least := render.MaxAppBytes + render.ShardOverheadBytes; o.MaxConfigBytes < least {
		// Such a budget works for ordinary AppQuotas; only one near its size
		// bounds could not be written (it would report ConfigTooLarge).
		mgr.GetLogger().Info("the size budget is below what the largest possible AppQuota needs; an AppQuota near its size bounds could not be written",
			"maxConfigBytes", o.MaxConfigBytes, "largestAppQuotaBytes", least)
	}
	// The render loop and the webhook read AppQuotas from the informer's store
	// itself (pointers, no list copies); both share the manager's informer.
	inf, err := mgr.GetCache().GetInformer(context.Background(), &quotav1alpha1.AppQuota{})
	if err != nil {
		return fmt.Errorf("AppQuota informer: %w", err)
	}
	appQuotas, ok := inf.(toolscache.SharedIndexInformer)
	if !ok {
		return fmt.Errorf("the cache's AppQuota informer is a %T, not a client-go SharedIndexInformer", inf)
	}
	board := controllers.NewBoard()
	recorder := controllers.NewLimitedRecorder(mgr.GetEventRecorder("appquota-controller"), o.EventRate, o.EventBurst)
	r := &controllers.QuotaReconciler{
		Client:           mgr.GetClient(),
		Recorder:         recorder,
		Board:            board,
		ConfigMap:        types.NamespacedName{Namespace: o.Namespace, Name: o.ConfigMapName},
		DefaultProfile:   o.DefaultProfile,
		MaxConfigBytes:   o.MaxConfigBytes,
		ShardAbove:       o.ShardAboveBytes,
		CompactAfter:     o.CompactAfter,
		MinWriteInterval: o.MinWriteInterval,
		AppQuotas:        appQuotas.GetStore(),
	}
	if err := r.SetupWithManager(mgr); err != nil {
		return fmt.Errorf("set up controller: %w", err)
	}
	status := &controllers.StatusReconciler{Client: mgr.GetClient(), Recorder: recorder, Board: board}
	if err := status.SetupWithManager(mgr); err != nil {
		return fmt.Errorf("set up status controller: %w", err)
	}
	if !o.DisableWebhook {
		if err := webhook.SetupWithManager(context.Background(), mgr, appQuotas); err != nil {
			return fmt.Errorf("set up webhook: %w", err)
		}
	}
	if err := mgr.AddHealthzCheck("healthz", healthz.Ping); err != nil {
		return fmt.Errorf("add healthz check: %w", err)
	}
	if err := mgr.AddReadyzCheck("readyz", healthz.Ping); err != nil {
		return fmt.Errorf("add readyz check: %w", err)
	}
	return nil
}
