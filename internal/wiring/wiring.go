// Package wiring is appquota's composition root: it wires the reconcilers,
// the webhook, the rate-limit engine's xDS server and the health checks into a
// controller-runtime manager, with the cache each reconciler declares it
// needs. The manager binary, the demo, the tests and the benchmarks all call
// Setup, so they run the same operator.
package wiring

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"path/filepath"
	"time"
	"unique"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	toolscache "k8s.io/client-go/tools/cache"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/certwatcher"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	quotav1alpha1 "github.com/appquota/appquota/api/v1alpha1"
	"github.com/appquota/appquota/controllers"
	"github.com/appquota/appquota/internal/enforce"
	"github.com/appquota/appquota/internal/layout"
	"github.com/appquota/appquota/internal/ratelimit"
	"github.com/appquota/appquota/internal/reservation"
	"github.com/appquota/appquota/internal/xds"
	"github.com/appquota/appquota/webhook"
	"github.com/prometheus/client_golang/prometheus"
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
	// It also scales the plain layout's bound (layout.PlainFactor times it)
	// and the index's (layout.RecentFactor times it). 0 turns this off:
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
	// StatusQPS and StatusBurst pace the AppQuota status writes, which go
	// through a client of their own: after a bulk change they are one write
	// per AppQuota, and at the manager's own pace (--kube-api-qps) 10,000 of
	// them took over a minute. The API server's priority and fairness keeps
	// them from starving other clients (config/manager/flowschema.yaml); they
	// write only statuses that changed, each in one patch.
	StatusQPS   float32
	StatusBurst int
	// XDSBindAddress is where the leader serves the rate-limit engine's
	// configuration over xDS (envoyproxy/ratelimit with
	// CONFIG_TYPE=GRPC_XDS_SOTW connects there); "0" serves none.
	XDSBindAddress string
	// XDSCertDir holds tls.crt and tls.key for the xDS server, reloaded when
	// they change; empty serves plain gRPC (for a local control plane).
	XDSCertDir string
	// XDSMaxMessageBytes bounds a configuration sent to the engine: set it to
	// the engine's XDS_CLIENT_MAX_MSG_SIZE_IN_BYTES. A larger one is not
	// sent, and the instances keep the last one.
	XDSMaxMessageBytes int
	// RateLimitDomain is the engine's domain the configuration is served in.
	RateLimitDomain string
	// ClockOffset is added to the render loop's clock, which decides when
	// overrides expire: a fault-injection knob for clock skew between
	// replicas (test/faults); 0 in production.
	ClockOffset time.Duration
	// LeaseHeld, when set, is checked before each write of the ConfigMaps:
	// a replica that has not renewed the leader Lease recently writes
	// nothing (LeaseLock.Held). Nil without leader election.
	LeaseHeld func() error
	// DisableWebhook leaves the admission webhook out (tests that need to create
	// objects a webhook would refuse, as if it had been down).
	DisableWebhook bool
	// RequireAppIDGrants makes the webhook and the render require that an
	// AppQuota's namespace may claim its appID (quota.appquota.io/app-ids on
	// the Namespace, docs/security.md). The manager binary's flag defaults
	// to true; in process it is off unless asked for.
	RequireAppIDGrants bool
	// AppIDReservation is how long a deleted AppQuota's app ID stays
	// reserved for its namespace: meanwhile the webhook refuses, and the
	// render holds, a claim on it from another namespace
	// (quotav1.ReasonAppIDReserved). 0 reserves nothing. The manager
	// binary's flag defaults to 24h; in process it is off unless asked for.
	AppIDReservation time.Duration
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
		StatusQPS:        1000,
		StatusBurst:      2000,
		// In process (tests, benchmarks) no xDS server unless asked for; the
		// manager binary's flag serves one on :18000.
		XDSBindAddress: "0",
		// gRPC's default limit on a received message, which the engine
		// keeps unless XDS_CLIENT_MAX_MSG_SIZE_IN_BYTES raises it.
		XDSMaxMessageBytes: 4 << 20,
		RateLimitDomain:    ratelimit.DefaultDomain,
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
	if o.StatusQPS <= 0 || o.StatusBurst < 1 {
		errs = append(errs, errors.New("status qps must be positive and status burst at least 1"))
	}
	if o.EventRate <= 0 || o.EventBurst < 1 {
		errs = append(errs, errors.New("event rate must be positive and event burst at least 1"))
	}
	if o.XDSMaxMessageBytes <= 0 {
		errs = append(errs, errors.New("xds max message bytes must be positive"))
	}
	if o.RateLimitDomain == "" {
		errs = append(errs, errors.New("rate-limit domain must not be empty"))
	}
	if o.AppIDReservation < 0 {
		errs = append(errs, errors.New("app ID reservation must not be negative"))
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

// CacheOptions limits the manager's cache to what the reconcilers declare
// they read (controllers.CacheByObject), and strips managed fields and
// kubectl's last-applied annotation from cached objects: nothing reads them,
// and with many AppQuotas they would be most of the cache. Pass it as
// ctrl.Options.Cache.
func CacheOptions(o Options) cache.Options {
	byObject := map[client.Object]cache.ByObject{}
	for _, needs := range []map[client.Object]cache.ByObject{controllers.CacheByObject(o.Namespace)} {
		maps.Copy(byObject, needs)
	}
	return cache.Options{ByObject: byObject, DefaultTransform: stripForCache}
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
		// Written by the status controller, read by people: nothing in the
		// manager reads it back, so it costs the cache nothing.
		a.Status.LastChange = nil
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
	if least := layout.MaxAppBytes + layout.ShardOverheadBytes; o.MaxConfigBytes < least {
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
	engine, err := setupEngine(mgr, o)
	if err != nil {
		return err
	}
	board := controllers.NewBoard(engine)
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
		Now:              clock(o.ClockOffset),
		LeaseHeld:        o.LeaseHeld,
		AppQuotas:        appQuotas.GetStore(),
		Engine:           engine,
		AppIDReservation: o.AppIDReservation,
	}
	if o.RequireAppIDGrants {
		r.Grants = &controllers.Grants{}
	}
	if err := r.SetupWithManager(mgr); err != nil {
		return fmt.Errorf("set up controller: %w", err)
	}
	statusClient, err := newStatusClient(mgr, o)
	if err != nil {
		return err
	}
	status := &controllers.StatusReconciler{Client: statusClient, Recorder: recorder, Board: board}
	if err := status.SetupWithManager(mgr); err != nil {
		return fmt.Errorf("set up status controller: %w", err)
	}
	if !o.DisableWebhook {
		var reservations *client.ObjectKey
		if o.AppIDReservation > 0 {
			reservations = &client.ObjectKey{Namespace: o.Namespace, Name: reservation.ConfigMapName}
		}
		if err := webhook.SetupWithManager(context.Background(), mgr, appQuotas, o.RequireAppIDGrants, reservations); err != nil {
			return fmt.Errorf("set up webhook: %w", err)
		}
	}
	if err := mgr.AddHealthzCheck("healthz", healthz.Ping); err != nil {
		return fmt.Errorf("add healthz check: %w", err)
	}
	// Ready means able to answer: the informers synced (the webhook reads
	// them) and, where served, the webhook listening. A replica that is not
	// gets no admission traffic from the Service.
	if err := mgr.AddReadyzCheck("informers", cacheSynced(mgr.GetCache())); err != nil {
		return fmt.Errorf("add readyz check: %w", err)
	}
	if !o.DisableWebhook {
		if err := mgr.AddReadyzCheck("webhook", mgr.GetWebhookServer().StartedChecker()); err != nil {
			return fmt.Errorf("add readyz check: %w", err)
		}
	}
	return nil
}

// setupEngine adds the xDS server that feeds the rate-limit engine, on the
// leader only: only the leader renders, and the Enforced condition counts the
// instances connected to it. Instances that reach another replica find no
// server there and retry until they reach the leader. It returns nil when
// XDSBindAddress is "0".
func setupEngine(mgr ctrl.Manager, o Options) (controllers.Engine, error) {
	if o.XDSBindAddress == "0" || o.XDSBindAddress == "" {
		return nil, nil
	}
	var tlsConfig *tls.Config
	if o.XDSCertDir != "" {
		cw, err := certwatcher.New(filepath.Join(o.XDSCertDir, "tls.crt"), filepath.Join(o.XDSCertDir, "tls.key"))
		if err != nil {
			return nil, fmt.Errorf("xDS certificate: %w", err)
		}
		if err := mgr.Add(cw); err != nil {
			return nil, fmt.Errorf("add xDS certificate watcher: %w", err)
		}
		tlsConfig = &tls.Config{GetCertificate: cw.GetCertificate, MinVersion: tls.VersionTLS12}
	}
	opts := xds.Options{
		Log:             mgr.GetLogger().WithName("xds"),
		Address:         o.XDSBindAddress,
		MaxMessageBytes: o.XDSMaxMessageBytes,
		TLS:             tlsConfig,
		Registerer:      metrics.Registry,
	}
	srv, err := xds.New(opts)
	if already := (prometheus.AlreadyRegisteredError{}); errors.As(err, &already) {
		// A second operator in one process (tests): the first one's metrics
		// stay registered.
		opts.Registerer = nil
		srv, err = xds.New(opts)
	}
	if err != nil {
		return nil, fmt.Errorf("xDS server: %w", err)
	}
	if err := mgr.Add(leaderOnly{srv}); err != nil {
		return nil, fmt.Errorf("add xDS server: %w", err)
	}
	return enforce.New(srv, o.RateLimitDomain), nil
}

// leaderOnly runs the xDS server on the elected leader alone.
type leaderOnly struct{ *xds.Server }

// NeedLeaderElection: see setupEngine.
func (leaderOnly) NeedLeaderElection() bool { return true }

// cacheSynced is a readiness check that passes once the manager's informers
// have synced; it does not wait.
func cacheSynced(c cache.Cache) healthz.Checker {
	return func(req *http.Request) error {
		ctx, cancel := context.WithCancel(req.Context())
		cancel() // WaitForCacheSync answers at once with a cancelled context
		if !c.WaitForCacheSync(ctx) {
			return errors.New("informers not synced")
		}
		return nil
	}
}

// newStatusClient returns the status writers' client: the manager's, reading
// from its cache, with its own request budget (Options.StatusQPS).
func newStatusClient(mgr ctrl.Manager, o Options) (client.Client, error) {
	cfg := rest.CopyConfig(mgr.GetConfig())
	cfg.QPS, cfg.Burst = o.StatusQPS, o.StatusBurst
	c, err := client.New(cfg, client.Options{
		Scheme: mgr.GetScheme(), Mapper: mgr.GetRESTMapper(),
		Cache: &client.CacheOptions{Reader: mgr.GetCache()},
	})
	if err != nil {
		return nil, fmt.Errorf("status client: %w", err)
	}
	return c, nil
}

// clock is the render loop's clock: time.Now, offset when testing skew.
func clock(offset time.Duration) func() time.Time {
	if offset == 0 {
		return nil
	}
	return func() time.Time { return time.Now().Add(offset) }
}
