// Package quotaconfig is what an API gateway imports to enforce appquota's
// limits: the format of the document the controller writes into the
// appquota-limits ConfigMap, a parser that validates it, a resolver that maps
// (app, method, path) to the limits that apply, and a watcher that reloads a
// mounted ConfigMap. It imports nothing from Kubernetes.
//
// docs/config-format.md specifies the format for gateway authors.
package quotaconfig

import "time"

// FormatVersion is the value of Document.Version this package reads and writes.
const FormatVersion = "quota.appquota.io/v1"

// DataKey is the ConfigMap key (and file name in a mounted ConfigMap directory)
// that holds the JSON document.
const DataKey = "limits.json"

// HashKey is the ConfigMap key holding the document's content hash,
// "sha256:<hex>" of the bytes under DataKey.
const HashKey = "limits.sha256"

// Units, windows and scopes, as in the quota.appquota.io/v1alpha1 API.
const (
	UnitRequests = "Requests"
	UnitMessages = "Messages"

	WindowSecond = "Second"
	WindowMinute = "Minute"
	WindowHour   = "Hour"
	WindowDay    = "Day"

	ScopeApp  = "App"
	ScopeUser = "User"
)

// Document is the whole configuration: every profile once, and per app only its
// profile name and its active overrides.
type Document struct {
	// Version is FormatVersion.
	Version string `json:"version"`
	// DefaultProfile is the profile of an app that has no entry in Apps.
	DefaultProfile string `json:"defaultProfile"`
	// Profiles by name.
	Profiles map[string]Profile `json:"profiles"`
	// Apps by app ID. In a sharded index, the apps changed since their shards
	// were last written: these entries replace the shards' (see Assemble).
	Apps map[string]App `json:"apps,omitempty"`
	// RemovedApps, only in a sharded index, are the app IDs removed since their
	// shards were last written, sorted: Assemble drops them from the shards' apps.
	RemovedApps []string `json:"removedApps,omitempty"`
	// Shards, when not empty, make this document an index: the apps are in the
	// shards listed, updated by Apps and RemovedApps (see Assemble).
	Shards []ShardRef `json:"shards,omitempty"`
}

// Profile is one QuotaProfile.
type Profile struct {
	// Fallback limits apply to a route no group claims; each such route (method
	// and path) counts separately.
	Fallback []Limit `json:"fallback"`
	// Groups are the counting budgets, sorted by name.
	Groups []Group `json:"groups,omitempty"`
}

// Group is one counting budget shared by its routes.
type Group struct {
	Name     string  `json:"name"`
	RestOnly bool    `json:"restOnly,omitempty"`
	Routes   []Route `json:"routes"`
	Limits   []Limit `json:"limits"`
	// MaxTargets is the per-call cap on targets; 0 means none.
	MaxTargets int32 `json:"maxTargets,omitempty"`
}

// Route is a method and a path template; {param} segments match any one segment.
type Route struct {
	Method string `json:"method"`
	Path   string `json:"path"`
	// UserParam is the parameter that identifies the user for User-scoped limits
	// (explicit in the profile, or found by the naming convention); empty when the
	// route has none.
	UserParam string `json:"userParam,omitempty"`
}

// Limit is one counting rule.
type Limit struct {
	Unit   string `json:"unit"`
	Window string `json:"window"`
	Scope  string `json:"scope"`
	Max    int64  `json:"max"`
	// Unlimited, only in an app's override, lifts the limit: nothing counts
	// against it, and Max is 0.
	Unlimited bool `json:"unlimited,omitempty"`
}

// App is one app's entry: the profile it uses and its active overrides.
type App struct {
	// Profile is the app's QuotaProfile name.
	Profile string `json:"profile"`
	// Overrides, sorted by group.
	Overrides []Override `json:"overrides,omitempty"`
	// Source is the AppQuota the entry comes from, "namespace/name".
	Source string `json:"source,omitempty"`
}

// Override changes one group's limits for one app.
type Override struct {
	Group string `json:"group"`
	// Limits replace the group's limits with the same (unit, window, scope) and add
	// the others.
	Limits []Limit `json:"limits,omitempty"`
	// MaxTargets, when not 0, replaces the group's per-call cap.
	MaxTargets int32 `json:"maxTargets,omitempty"`
	// ExpiresAt, when set, is when the override stops applying. The controller
	// removes expired overrides from the document; Resolve also ignores them, so a
	// late controller never extends a raise.
	ExpiresAt *time.Time `json:"expiresAt,omitempty"`
	Reason    string     `json:"reason,omitempty"`
}
