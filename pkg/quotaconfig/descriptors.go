package quotaconfig

import (
	"strconv"
	"strings"
)

// This file is the gateway's half of the contract with envoyproxy/ratelimit
// (docs/enforcement.md): the descriptors one call sends, which the
// configuration internal/ratelimit renders from the same document answers with
// the limits Resolve returns. The Envoy route actions that internal/ratelimit
// also renders produce exactly these descriptors from the request headers
// below, so a Go gateway that calls ratelimit itself and an Envoy in front of
// it count against the same Redis counters.

// Descriptor entry keys. A group's limit is the chain profile, group, limit,
// app (and user, for a User-scoped limit); a fallback limit is profile,
// method, path, limit, app. The limit entry keeps every limit of a group in a
// chain of its own: ratelimit keys its Redis counters by the entries and the
// window's start only, so two limits with equal entries would share a counter.
const (
	DescriptorProfile = "profile"
	DescriptorGroup   = "group"
	DescriptorMethod  = "method"
	DescriptorPath    = "path"
	DescriptorLimit   = "limit"
	DescriptorApp     = "app"
	DescriptorUser    = "user"
)

// Request headers the gateway sets before Envoy's rate-limit filter runs, from
// the call's Result (see GatewayHeaders); the Envoy route actions read them.
// The gateway must remove any the client sent: a client that chose its own
// app, user or cost would choose its own counters.
const (
	HeaderApp     = "x-appquota-app-id"
	HeaderProfile = "x-appquota-profile"
	HeaderUser    = "x-appquota-user"
	HeaderPath    = "x-appquota-path"
	HeaderCost    = "x-appquota-cost"
)

// Entry is one key and value of a descriptor.
type Entry struct {
	Key, Value string
}

// Descriptor is one rate-limit descriptor: the entries, in order, and how much
// the call consumes from the limit it matches.
type Descriptor struct {
	Entries []Entry
	// HitsAddend is 1 for a Requests limit and the call's cost (its number of
	// targets) for a Messages limit. It is always sent, never left to the
	// request-wide default, so nothing upstream can change what a call counts.
	HitsAddend uint64
}

// LimitValue is the value of a descriptor's limit entry for l: unit and window,
// lower case, and "-user" for a User-scoped limit, e.g. "requests-second",
// "messages-minute", "requests-minute-user". Scope is part of it because a
// group may hold an App and a User limit of one unit and window, which count
// separately.
func LimitValue(l Limit) string {
	v := strings.ToLower(l.Unit) + "-" + strings.ToLower(l.Window)
	if l.Scope == ScopeUser {
		v += "-user"
	}
	return v
}

// Descriptors returns the descriptors of one call: one per effective limit of
// r, the Result of Resolve (or ResolveAt) for appID and method, in the order of
// r.Limits. cost is the call's number of targets, what a Messages limit
// consumes; Requests limits consume 1 whatever it is.
//
// It returns nil when r has no profile (the app's profile is not in the
// document: the gateway applies its own policy) or appID is empty, and leaves
// out a User-scoped limit when the route gave no user, as Envoy leaves out a
// descriptor whose header is missing. A blocked Result still has its
// descriptors: the blocking limit is 0 in the engine too, so a gateway may
// refuse without asking.
func Descriptors(r *Result, appID, method string, cost uint64) []Descriptor {
	if r.Profile == "" || appID == "" {
		return nil
	}
	ds := make([]Descriptor, 0, len(r.Limits))
	for _, l := range r.Limits {
		var es []Entry
		switch {
		case r.Fallback:
			es = []Entry{
				{DescriptorProfile, r.Profile},
				{DescriptorMethod, method},
				{DescriptorPath, r.Path},
				{DescriptorLimit, LimitValue(l)},
				{DescriptorApp, appID},
			}
		case l.Scope == ScopeUser:
			if r.User == "" {
				continue
			}
			es = []Entry{
				{DescriptorProfile, r.Profile},
				{DescriptorGroup, r.Group},
				{DescriptorLimit, LimitValue(l)},
				{DescriptorApp, appID},
				{DescriptorUser, r.User},
			}
		default:
			es = []Entry{
				{DescriptorProfile, r.Profile},
				{DescriptorGroup, r.Group},
				{DescriptorLimit, LimitValue(l)},
				{DescriptorApp, appID},
			}
		}
		hits := uint64(1)
		if l.Unit == UnitMessages {
			hits = cost
		}
		ds = append(ds, Descriptor{Entries: es, HitsAddend: hits})
	}
	return ds
}

// GatewayHeaders returns the request headers (name, value) an Envoy gateway
// sets for a call before its rate-limit filter runs, so that the route actions
// internal/ratelimit renders produce Descriptors(r, appID, method, cost). r is
// the call's Result; the path header is r.Path, the request path without
// query and trailing '/', which Envoy cannot derive itself. It returns nil
// when r has no profile or appID is empty: no descriptor then applies.
func GatewayHeaders(r *Result, appID string, cost uint64) []Entry {
	if r.Profile == "" || appID == "" {
		return nil
	}
	hs := []Entry{
		{HeaderApp, appID},
		{HeaderProfile, r.Profile},
		{HeaderPath, r.Path},
		{HeaderCost, strconv.FormatUint(cost, 10)},
	}
	if r.User != "" {
		hs = append(hs, Entry{HeaderUser, r.User})
	}
	return hs
}
