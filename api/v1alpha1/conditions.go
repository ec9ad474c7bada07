package v1alpha1

// Condition types.
const (
	// ConditionReady is True when the object's current generation is in the
	// configuration that gateways read.
	ConditionReady = "Ready"
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
