// Package testfixture holds data that tests and benchmarks of several
// packages share, so that they measure the same thing. It imports only
// pkg/quotaconfig, so any package's tests may import it.
package testfixture

import qc "github.com/appquota/appquota/pkg/quotaconfig"

// TypicalOverrides are what sales sells most, for apps to take one by one in
// turn: a raise of 1:1 messages, of registrations, of daily broadcasts, of
// per-user deletes. Each call returns a new copy, so a caller may change it.
func TypicalOverrides() []qc.Override {
	return []qc.Override{
		{Group: "messages-send-users", Limits: []qc.Limit{{Unit: "Requests", Window: "Second", Scope: "App", Max: 500}}, MaxTargets: 1000, Reason: "SALES-1234"},
		{Group: "users-register", Limits: []qc.Limit{{Unit: "Requests", Window: "Second", Scope: "App", Max: 300}}, Reason: "SALES-1234"},
		{Group: "messages-broadcast-users", Limits: []qc.Limit{{Unit: "Requests", Window: "Day", Scope: "App", Max: 500}}, Reason: "SALES-2001"},
		{Group: "conversations-delete", Limits: []qc.Limit{{Unit: "Requests", Window: "Minute", Scope: "User", Max: 20}}, Reason: "SALES-3003"},
	}
}
