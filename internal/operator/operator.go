// Package operator wires appquota's controllers, webhooks and health checks into
// a controller-runtime manager. The manager binary, the demo and the benchmarks
// all call Setup, so they run the same operator.
package operator

import (
	"errors"
	"fmt"

	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/healthz"

	quotav1alpha1 "github.com/appquota/appquota/api/v1alpha1"
)

// Options are the operator's settings; the manager binary exposes each as a flag.
type Options struct {
	// Namespace holds the output ConfigMap (the manager's own namespace).
	Namespace string
	// ConfigMapName is the name of the ConfigMap gateways read.
	ConfigMapName string
	// DefaultProfile is the QuotaProfile that applies to apps without an AppQuota.
	DefaultProfile string
}

// DefaultOptions returns the defaults the manager's flags start from.
func DefaultOptions() Options {
	return Options{
		Namespace:      "appquota-system",
		ConfigMapName:  "appquota-limits",
		DefaultProfile: "default",
	}
}

// Validate reports options that cannot work.
func (o Options) Validate() error {
	var errs []error
	if o.Namespace == "" {
		errs = append(errs, errors.New("namespace must not be empty"))
	}
	if o.ConfigMapName == "" {
		errs = append(errs, errors.New("configmap name must not be empty"))
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

// Setup registers the operator with mgr.
func Setup(mgr ctrl.Manager, o Options) error {
	if err := o.Validate(); err != nil {
		return fmt.Errorf("operator options: %w", err)
	}
	if err := mgr.AddHealthzCheck("healthz", healthz.Ping); err != nil {
		return fmt.Errorf("add healthz check: %w", err)
	}
	if err := mgr.AddReadyzCheck("readyz", healthz.Ping); err != nil {
		return fmt.Errorf("add readyz check: %w", err)
	}
	return nil
}
