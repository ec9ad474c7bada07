package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// DefaultProfileName is the QuotaProfile an AppQuota uses when it names none.
const DefaultProfileName = "default"

// Override changes one endpoint group's limits for one app.
// +kubebuilder:validation:XValidation:rule="has(self.limits) || has(self.perCall)",message="an override must set limits, perCall or both"
type Override struct {
	// group is the name of the endpoint group in the app's QuotaProfile.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:XValidation:rule="self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$')",message="must be a DNS label: lower-case letters, digits and '-', starting and ending with a letter or digit"
	Group string `json:"group"`

	// limits replace the profile's limits with the same (unit, window, scope); a key
	// the profile lacks adds a limit. max 0 blocks the group for this app.
	// +optional
	// +listType=map
	// +listMapKey=unit
	// +listMapKey=window
	// +listMapKey=scope
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=6
	Limits []OverrideLimit `json:"limits,omitempty"`

	// perCall replaces the profile's per-call bounds for this group.
	// +optional
	PerCall *PerCall `json:"perCall,omitempty"`

	// expiresAt, when set, is the instant after which the override no longer applies
	// and the profile's limits return (RFC 3339, e.g. 2027-01-31T00:00:00Z).
	// +optional
	ExpiresAt *metav1.Time `json:"expiresAt,omitempty"`

	// reason records why the override exists (a ticket, a contract), for people and
	// for the controller's LimitsChanged events. Required when the override raises a
	// limit above its profile's (or lifts it with unlimited); lowering and blocking
	// need none.
	// +optional
	// +kubebuilder:validation:MaxLength=256
	Reason string `json:"reason,omitempty"`
}

// AppQuotaSpec is one tenant app's quota.
type AppQuotaSpec struct {
	// appID is the app's ID as gateways see it in the {app_id} path segment: letters,
	// digits, '.', '_' and '-', starting with a letter or digit, at most 64. It is
	// immutable; one app has at most one AppQuota in the cluster, and the namespace
	// must be granted the ID by its quota.appquota.io/app-ids annotation (set by the
	// platform team: exact IDs or prefixes ending in '*').
	// +required
	// +kubebuilder:validation:MaxLength=64
	// +kubebuilder:validation:XValidation:rule="self.matches('^[A-Za-z0-9][A-Za-z0-9._-]*$')",message="must be letters, digits, '.', '_' or '-', starting with a letter or digit"
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="appID is immutable: create a new AppQuota for another app"
	AppID string `json:"appID"`

	// profile is the name of the QuotaProfile whose limits apply to the app before
	// overrides. Defaults to "default".
	// +optional
	// +kubebuilder:default=default
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:XValidation:rule="self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*$')",message="must be a QuotaProfile name: lower-case letters, digits, '-' and '.', starting and ending with a letter or digit"
	Profile string `json:"profile,omitempty"`

	// overrides change the profile's limits for this app, at most one per endpoint
	// group. For wider changes, give the app its own QuotaProfile.
	// +optional
	// +listType=map
	// +listMapKey=group
	// +kubebuilder:validation:MaxItems=128
	Overrides []Override `json:"overrides,omitempty"`
}

// AppQuotaStatus is the observed state of an AppQuota.
type AppQuotaStatus struct {
	// conditions describe the quota's state. Ready is True when the configuration
	// gateways read holds the current generation; Enforced is True when every
	// connected rate-limit engine instance has acknowledged it.
	// +optional
	// +listType=map
	// +listMapKey=type
	// +kubebuilder:validation:MaxItems=8
	Conditions []metav1.Condition `json:"conditions,omitempty"`

	// observedGeneration is the generation the conditions describe.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// activeOverrides is the number of overrides in force (not expired).
	// +optional
	ActiveOverrides int32 `json:"activeOverrides,omitempty"`

	// nextExpiry is the earliest expiresAt among the overrides in force.
	// +optional
	NextExpiry *metav1.Time `json:"nextExpiry,omitempty"`

	// configHash is the content hash ("sha256:<hex>", the ConfigMap's
	// limits.sha256) of the configuration the app's current generation was first
	// written into; gateways that loaded a configuration with this hash or a later
	// one enforce it. When the configuration is sharded it is the index's hash,
	// which covers every shard.
	// +optional
	// +kubebuilder:validation:MaxLength=128
	ConfigHash string `json:"configHash,omitempty"`

	// lastChange is the last change to the app's effective limits that the
	// controller applied: who made it, when it reached the configuration, and
	// what it did. It outlives the LimitsChanged events, which expire. An edit
	// that leaves every effective limit as it was (a new reason alone, say)
	// does not replace it, and neither does an expiry (OverrideExpired events
	// and nextExpiry tell those). Only the last change is kept: the API
	// server's audit log is the complete history.
	// +optional
	LastChange *LimitsChange `json:"lastChange,omitempty"`
}

// LimitsChange is one change to an app's effective limits, as the controller
// applied it.
type LimitsChange struct {
	// by is the user whose request made the change: the AppQuota's
	// quota.appquota.io/changed-by annotation, which the API server stamps, at
	// the generation applied. Empty when the annotation was not set.
	// +optional
	// +kubebuilder:validation:MaxLength=512
	By string `json:"by"` // no omitempty: a merge patch of lastChange must clear the previous change's user

	// at is when the controller wrote the configuration holding the change
	// (when the request was made is in the object's managedFields).
	// +optional
	At *metav1.Time `json:"at,omitempty"`

	// generation is the AppQuota's generation that made the change.
	// +optional
	// +kubebuilder:validation:Minimum=0
	Generation int64 `json:"generation,omitempty"`

	// summary says what the change did, a clause per limit in the words of the
	// LimitsChanged events: "raised group messages-send-users Requests/Second
	// from 100 to 500 until 2027-01-31T00:00:00Z: SALES-1234". Too many clauses
	// end with "and N more". When the controller could not compare the limits
	// before and after (a bulk write of many apps, or its first write after
	// starting), it says so instead.
	// +optional
	// +kubebuilder:validation:MaxLength=1024
	Summary string `json:"summary,omitempty"`
}

// AppQuota holds one tenant app's quota: the profile it uses and its overrides,
// the "contact sales to raise the limit" path.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:scope=Namespaced,shortName=aq
// +kubebuilder:printcolumn:name="App ID",type=string,JSONPath=`.spec.appID`
// +kubebuilder:printcolumn:name="Profile",type=string,JSONPath=`.spec.profile`
// +kubebuilder:printcolumn:name="Overrides",type=integer,JSONPath=`.status.activeOverrides`
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Enforced",type=string,JSONPath=`.status.conditions[?(@.type=="Enforced")].status`
// +kubebuilder:printcolumn:name="Changed",type=date,JSONPath=`.status.lastChange.at`,priority=1,description="When the controller applied the last change to the app's limits"
// +kubebuilder:printcolumn:name="Changed By",type=string,JSONPath=`.status.lastChange.by`,priority=1,description="Who made the last change to the app's limits"
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type AppQuota struct {
	metav1.TypeMeta `json:",inline"`
	// metadata is the object's standard metadata.
	// +optional
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// spec is the app's quota.
	// +required
	Spec AppQuotaSpec `json:"spec"`

	// status is the observed state, written by the controller.
	// +optional
	Status AppQuotaStatus `json:"status,omitempty"`
}

// AppQuotaList is a list of AppQuotas.
//
// +kubebuilder:object:root=true
type AppQuotaList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []AppQuota `json:"items"`
}
