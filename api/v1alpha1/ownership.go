package v1alpha1

// AppIDsAnnotation, on a Namespace, lists the app IDs AppQuotas in that
// namespace may claim, comma-separated: an exact app ID ("acme"), a prefix
// ending in '*' ("acme-*"), or "*" for any. The platform team sets it; a
// namespace without it may claim none. The ValidatingAdmissionPolicy in
// config/policy refuses other claims, and the controller holds any that got
// past it (docs/security.md).
const AppIDsAnnotation = "quota.appquota.io/app-ids"

// ChangedByAnnotation, on an AppQuota, is the user whose request last changed
// its spec, stamped by the API server from the request's user info
// (config/policy's MutatingAdmissionPolicy); the webhook refuses a value
// that is not the requester's own.
const ChangedByAnnotation = "quota.appquota.io/changed-by"
