package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// HTTPMethod is the method of a route.
// +kubebuilder:validation:Enum=GET;POST;PUT;PATCH;DELETE;HEAD;OPTIONS
type HTTPMethod string

// Route is one REST endpoint: a method and a path template.
// +kubebuilder:validation:XValidation:rule="!has(self.userParam) || self.path.contains('{' + self.userParam + '}')",message="userParam must name a parameter of path, written {userParam} in it",fieldPath=".userParam"
type Route struct {
	// method is the HTTP method, upper case: GET, POST, PUT, PATCH, DELETE, HEAD or OPTIONS.
	// +required
	Method HTTPMethod `json:"method"`

	// path is the route template, e.g. /app-id/{app_id}/users/{username}. It starts
	// with '/', has no query string (gateways ignore the query when matching), and
	// each segment is either a literal or one parameter written {name}, which matches
	// any single segment. When two templates match a request, the one whose first
	// differing segment is a literal wins.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=256
	// +kubebuilder:validation:XValidation:rule="self.startsWith('/')",message="must start with '/'"
	// +kubebuilder:validation:XValidation:rule="!self.contains('?')",message="must not contain a query string ('?'): gateways match the path only"
	// +kubebuilder:validation:XValidation:rule="!self.startsWith('/') || self.contains('?') || self.matches('^(/([^/{}?#]+|[{][A-Za-z_][A-Za-z0-9_]*[}]))+$')",message="each segment between '/' must be a non-empty literal without '{', '}' or '#', or exactly one parameter {name} (a letter or '_', then letters, digits, '_')"
	Path string `json:"path"`

	// userParam names the path parameter that identifies the user for limits with
	// scope User. When omitted, the first parameter named username, userName,
	// user_name, userId, user_id, uid or owner_username (any case) is used.
	// +optional
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:XValidation:rule="self.matches('^[A-Za-z_][A-Za-z0-9_]*$')",message="must be a parameter name: a letter or '_', then letters, digits or '_'"
	UserParam string `json:"userParam,omitempty"`
}

// EndpointGroup is one counting budget: every route in it draws from the same
// limits.
// +kubebuilder:validation:XValidation:rule="!self.limits.exists(l, has(l.scope) && l.scope == 'User') || self.routes.all(r, has(r.userParam) || r.path.matches('[{](?i:user_?name|user_?id|uid|owner_?username)[}]'))",message="a limit with scope User needs a user parameter in every route: set userParam, or name the parameter {username}, {userName}, {userId}, {user_id}, {uid} or {owner_username}",fieldPath=".routes"
type EndpointGroup struct {
	// name identifies the group, DNS-label style (lower case letters, digits and '-',
	// at most 63). Gateways key their counters by it and AppQuota overrides refer to
	// it, so keep it stable.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:XValidation:rule="self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$')",message="must be a DNS label: lower-case letters, digits and '-', starting and ending with a letter or digit"
	Name string `json:"name"`

	// description says what the routes do, for people reading the catalog.
	// +optional
	// +kubebuilder:validation:MaxLength=256
	Description string `json:"description,omitempty"`

	// restOnly is true when only REST calls count against the group (the table's '*'
	// rows, which have no client-SDK equivalent). When false, REST calls and the
	// matching client-SDK calls share the budget.
	// +optional
	RestOnly bool `json:"restOnly,omitempty"`

	// routes are the endpoints that share this group's budget. A method and template
	// may appear in only one group of a profile.
	// +required
	// +listType=map
	// +listMapKey=method
	// +listMapKey=path
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=8
	Routes []Route `json:"routes"`

	// limits are the group's counting rules; a call must fit all of them. At most one
	// limit per (unit, window, scope).
	// +required
	// +listType=map
	// +listMapKey=unit
	// +listMapKey=window
	// +listMapKey=scope
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=6
	Limits []Limit `json:"limits"`

	// perCall bounds a single call, e.g. the most recipients one message may address.
	// +optional
	PerCall *PerCall `json:"perCall,omitempty"`
}

// Fallback holds the limits for routes that no endpoint group claims.
// +kubebuilder:validation:XValidation:rule="self.limits.all(l, !has(l.scope) || l.scope == 'App')",message="fallback limits must have scope App: an unclaimed route has no known user parameter",fieldPath=".limits"
type Fallback struct {
	// limits apply to each call of an app to a route that no group claims; each such
	// route counts separately (per method and path template). Scope must be App.
	// +required
	// +listType=map
	// +listMapKey=unit
	// +listMapKey=window
	// +listMapKey=scope
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=6
	Limits []Limit `json:"limits"`
}

// QuotaProfileSpec is a catalog of default limits.
type QuotaProfileSpec struct {
	// fallback holds the limits of any route that no endpoint group claims, e.g.
	// "100 calls per second unless stated otherwise".
	// +required
	Fallback Fallback `json:"fallback"`

	// endpointGroups are the catalog's counting budgets, keyed by name.
	// +optional
	// +listType=map
	// +listMapKey=name
	// +kubebuilder:validation:MaxItems=256
	EndpointGroups []EndpointGroup `json:"endpointGroups,omitempty"`
}

// QuotaProfileStatus is the observed state of a QuotaProfile.
type QuotaProfileStatus struct {
	// conditions describe the profile's state. Ready is True when the current
	// generation is in the configuration gateways read.
	// +optional
	// +listType=map
	// +listMapKey=type
	// +kubebuilder:validation:MaxItems=8
	Conditions []metav1.Condition `json:"conditions,omitempty"`

	// observedGeneration is the generation the conditions describe.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// groups is the number of endpoint groups in the profile.
	// +optional
	Groups int32 `json:"groups,omitempty"`

	// engine reports the rate-limit engine instances (envoyproxy/ratelimit)
	// connected to the manager's xDS server; absent when it serves none.
	// +optional
	Engine *EngineStatus `json:"engine,omitempty"`
}

// EngineStatus counts the rate-limit engine instances that take their
// configuration from the manager. It is reported at most once a second, so it
// can trail a version by that much; each AppQuota's Enforced condition says
// when its own change is in force.
type EngineStatus struct {
	// connected is the number of engine instances connected to the manager.
	// +optional
	// +kubebuilder:validation:Minimum=0
	Connected int32 `json:"connected,omitempty"`

	// inSync is the number of connected instances that acknowledged the
	// latest configuration.
	// +optional
	// +kubebuilder:validation:Minimum=0
	InSync int32 `json:"inSync,omitempty"`

	// version is the latest configuration version served.
	// +optional
	// +kubebuilder:validation:MaxLength=128
	Version string `json:"version,omitempty"`
}

// QuotaProfile holds the default rate limits per endpoint group: the platform
// team's catalog. AppQuotas refer to one by name and override parts of it.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:scope=Cluster,shortName=qp
// +kubebuilder:printcolumn:name="Groups",type=integer,JSONPath=`.status.groups`
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Engines",type=integer,JSONPath=`.status.engine.connected`,description="Rate-limit engine instances connected"
// +kubebuilder:printcolumn:name="In Sync",type=integer,JSONPath=`.status.engine.inSync`,description="Instances that acknowledged the latest configuration"
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type QuotaProfile struct {
	metav1.TypeMeta `json:",inline"`
	// metadata is the object's standard metadata.
	// +optional
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// spec is the catalog of default limits.
	// +required
	Spec QuotaProfileSpec `json:"spec"`

	// status is the observed state, written by the controller.
	// +optional
	Status QuotaProfileStatus `json:"status,omitempty"`
}

// QuotaProfileList is a list of QuotaProfiles.
//
// +kubebuilder:object:root=true
type QuotaProfileList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []QuotaProfile `json:"items"`
}
