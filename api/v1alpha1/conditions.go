package v1alpha1

// Condition types.
const (
	// ConditionReady is True when the object's current generation is in the
	// configuration that gateways read.
	ConditionReady = "Ready"
	// ConditionEnforced is True when every connected instance of the
	// rate-limit engine (envoyproxy/ratelimit, fed over xDS) has acknowledged
	// a configuration that holds the AppQuota's current generation.
	ConditionEnforced = "Enforced"
)

// Reasons for the Ready condition.
const (
	// ReasonApplied: the current generation is in the configuration.
	ReasonApplied = "Applied"
	// ReasonPending: the controller has not written the current generation yet.
	ReasonPending = "Pending"
	// ReasonInvalidSpec: the object fails validation; the last good version stays
	// in the configuration.
	ReasonInvalidSpec = "InvalidSpec"
	// ReasonProfileNotFound: the AppQuota names a QuotaProfile that does not exist.
	ReasonProfileNotFound = "ProfileNotFound"
	// ReasonDuplicateAppID: an older AppQuota already holds this appID.
	ReasonDuplicateAppID = "DuplicateAppID"
	// ReasonConfigTooLarge: the configuration would exceed its size budget even
	// compressed and split into the most shards allowed; the last good
	// configuration stays in place.
	ReasonConfigTooLarge = "ConfigTooLarge"
)

// Reasons for the Enforced condition.
const (
	// ReasonAcknowledged: every connected engine instance acknowledged a
	// configuration holding the current generation.
	ReasonAcknowledged = "Acknowledged"
	// ReasonPropagating: the configuration holding the current generation is
	// served, and not every connected instance has acknowledged it yet.
	ReasonPropagating = "Propagating"
	// ReasonEngineRejected: an engine instance refused (NACKed) the
	// configuration holding the current generation, or the manager could not
	// serve it (too large); the instances keep their last good configuration.
	ReasonEngineRejected = "EngineRejected"
	// ReasonNoEngineConnected: no engine instance is connected, so nothing
	// enforces the limits but the gateways that read the ConfigMap.
	ReasonNoEngineConnected = "NoEngineConnected"
)

// Reasons for the Ready condition about who may claim an appID.
const (
	// ReasonAppIDNotGranted: the AppQuota's namespace may not claim its appID
	// (the Namespace's AppIDsAnnotation does not list it). Whatever the
	// AppQuota's own last good version held stays; nothing else is written.
	ReasonAppIDNotGranted = "AppIDNotGranted"
	// ReasonAppIDReserved: the appID is reserved for the namespace whose
	// AppQuota held it until that AppQuota was deleted, for the manager's
	// grace period (--app-id-reservation); this claim, from another
	// namespace, is no claim until the reservation ends, when it is tried
	// again. The message says until when, not for which namespace.
	ReasonAppIDReserved = "AppIDReserved"
)
