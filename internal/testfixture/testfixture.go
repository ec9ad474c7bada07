// Package testfixture holds data that tests and benchmarks of several
// packages share, so that they measure the same thing. It imports only
// pkg/quotaconfig, so any package's tests may import it.
package testfixture

import qc "github.com/appquota/appquota/pkg/quotaconfig"

// TypicalOverrides are what sales sells most, for apps to take one by one in
// turn: a raise of 1:1 messages, of registrations, of daily broadcasts, of
// per-user deletes. Each call returns a new copy, so a caller may change it.
func TypicalOverrides() []qc.Override {
	requests := func(window string, scope string, max int64) []qc.Limit {
		return []qc.Limit{{Unit: qc.UnitRequests, Window: window, Scope: scope, Max: max}}
	}
	return []qc.Override{
		{Group: "messages-send-users", Limits: requests(qc.WindowSecond, qc.ScopeApp, 500), MaxTargets: 1000, Reason: "SALES-1234"},
		{Group: "users-register", Limits: requests(qc.WindowSecond, qc.ScopeApp, 300), Reason: "SALES-1234"},
		{Group: "messages-broadcast-users", Limits: requests(qc.WindowDay, qc.ScopeApp, 500), Reason: "SALES-2001"},
		{Group: "conversations-delete", Limits: requests(qc.WindowMinute, qc.ScopeUser, 20), Reason: "SALES-3003"},
	}
}
