// Package v1alpha1 holds the quota.appquota.io/v1alpha1 API: QuotaProfile, the
// platform's default limits per endpoint group, and AppQuota, one tenant app's
// overrides of them.
//
// The package imports only apimachinery so that gateways and tools can use the
// types without pulling in controller-runtime.
//
// +kubebuilder:object:generate=true
// +groupName=quota.appquota.io
package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// GroupVersion is the API group and version of every type in this package.
var GroupVersion = schema.GroupVersion{Group: "quota.appquota.io", Version: "v1alpha1"}

var (
	// SchemeBuilder registers this package's types with a runtime.Scheme.
	SchemeBuilder = runtime.NewSchemeBuilder(addKnownTypes)
	// AddToScheme adds this package's types to a runtime.Scheme.
	AddToScheme = SchemeBuilder.AddToScheme
)

func addKnownTypes(scheme *runtime.Scheme) error {
	scheme.AddKnownTypes(GroupVersion,
		&QuotaProfile{}, &QuotaProfileList{},
		&AppQuota{}, &AppQuotaList{},
	)
	metav1.AddToGroupVersion(scheme, GroupVersion)
	return nil
}
