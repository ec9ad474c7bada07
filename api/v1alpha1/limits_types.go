package v1alpha1

// LimitUnit is what a call consumes from a limit.
// +kubebuilder:validation:Enum=Requests;Messages
type LimitUnit string

const (
	// UnitRequests counts each call once.
	UnitRequests LimitUnit = "Requests"
	// UnitMessages counts each target of a call once: a message sent to 600 users
	// consumes 600.
	UnitMessages LimitUnit = "Messages"
)

// LimitWindow is the length of the window a limit counts over.
// +kubebuilder:validation:Enum=Second;Minute;Hour;Day
type LimitWindow string

const (
	WindowSecond LimitWindow = "Second"
	WindowMinute LimitWindow = "Minute"
	WindowHour   LimitWindow = "Hour"
	WindowDay    LimitWindow = "Day"
)

// LimitScope is what a limit's counter is keyed on.
// +kubebuilder:validation:Enum=App;User
type LimitScope string

const (
	// ScopeApp keeps one counter per app.
	ScopeApp LimitScope = "App"
	// ScopeUser keeps one counter per app and user, the user being the route's
	// user path parameter (see Route.userParam).
	ScopeUser LimitScope = "User"
)

// Limit is one counting rule of an endpoint group in a QuotaProfile.
// +kubebuilder:validation:XValidation:rule="!has(self.raiseCeiling) || self.raiseCeiling >= self.max",message="raiseCeiling must be at least max: it bounds raises, not the default",fieldPath=".raiseCeiling"
type Limit struct {
	// unit is what a call consumes: Requests counts each call once; Messages counts
	// each target of the call (each recipient user, group or chat room) once.
	// +required
	Unit LimitUnit `json:"unit"`

	// window is the period the limit counts over: Second, Minute, Hour or Day.
	// +required
	Window LimitWindow `json:"window"`

	// scope is what the counter is keyed on: App (the default) keeps one counter per
	// app; User keeps one per app and user, the user being taken from the route's
	// user path parameter.
	// +optional
	// +kubebuilder:default=App
	Scope LimitScope `json:"scope,omitempty"`

	// max is the most the window allows, at least 1. To block a group for one app,
	// use an AppQuota override with max 0.
	// +required
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=1000000000
	Max int64 `json:"max"`

	// raiseCeiling is the most an AppQuota may raise this limit to: an
	// override above it (or unlimited) is refused, naming the ceiling, and
	// the platform team raises the ceiling for a tenant who needs more.
	// Lowering and blocking are always allowed. Unset: no ceiling. Only the
	// limits of endpoint groups have one (overrides name a group).
	// +optional
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=1000000000
	RaiseCeiling int64 `json:"raiseCeiling,omitempty"`
}

// OverrideLimit is one counting rule in an AppQuota override. It replaces the
// profile's limit with the same (unit, window, scope), or adds a limit when the
// profile has none with that key.
// +kubebuilder:validation:XValidation:rule="!has(self.unlimited) || !self.unlimited || self.max == 0",message="max must be 0 when unlimited is true: unlimited lifts the limit, so no max applies",fieldPath=".max"
type OverrideLimit struct {
	// unit is what a call consumes: Requests counts each call once; Messages counts
	// each target of the call once.
	// +required
	Unit LimitUnit `json:"unit"`

	// window is the period the limit counts over: Second, Minute, Hour or Day.
	// +required
	Window LimitWindow `json:"window"`

	// scope is what the counter is keyed on: App (the default) or User.
	// +optional
	// +kubebuilder:default=App
	Scope LimitScope `json:"scope,omitempty"`

	// max is the most the window allows for this app. 0 blocks the group for the
	// app, unless unlimited is true.
	// +required
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=1000000000
	Max int64 `json:"max"`

	// unlimited, when true, lifts this limit for the app: nothing is counted
	// against it (envoyproxy/ratelimit's unlimited). max must then be 0.
	// +optional
	Unlimited bool `json:"unlimited,omitempty"`
}

// PerCall bounds a single call, independent of any window.
type PerCall struct {
	// maxTargets is the most targets (recipient users, groups or chat rooms) one call
	// may address; a call to more is refused outright, without consuming any limit.
	// +required
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=100000
	MaxTargets int32 `json:"maxTargets"`
}
