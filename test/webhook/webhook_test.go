// Package webhook_test applies manifests with kubectl through a real API server
// whose admission webhook is served by the operator in this process, and asserts
// what the user reads: the rejection with its field path, or the warnings.
package webhook_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/appquota/appquota/internal/operatortest"

	"github.com/appquota/appquota/internal/localcluster"
	"github.com/appquota/appquota/internal/wiring"
	"github.com/appquota/appquota/webhook"
)

var cluster *localcluster.Cluster

func TestMain(m *testing.M) {
	opts := wiring.DefaultOptions()
	opts.RequireAppIDGrants = true
	opts.AppIDReservation = time.Hour // as the manager binary's 24h, for TestReservedAppIDRefused
	os.Exit(operatortest.RunTests(m, localcluster.Options{}, &opts, func(c *localcluster.Cluster) error {
		cluster = c
		if err := c.CreateNamespaces(context.Background(), "team-a", "team-b"); err != nil {
			return err
		}
		return installPolicies(c)
	}))
}

// kubectl runs kubectl with manifest on stdin and returns its combined output
// and whether it succeeded.
func kubectl(t *testing.T, manifest string, args ...string) (string, bool) {
	t.Helper()
	cmd := exec.Command(cluster.Kubectl(), append([]string{"--kubeconfig", cluster.KubeconfigPath}, args...)...)
	cmd.Stdin = strings.NewReader(manifest)
	out, err := cmd.CombinedOutput()
	return string(out), err == nil
}

func mustApply(t *testing.T, manifest string) string {
	t.Helper()
	out, ok := kubectl(t, manifest, "apply", "-f", "-")
	if !ok {
		t.Fatalf("kubectl apply failed:\n%s\n%s", out, manifest)
	}
	return out
}

const profile = `apiVersion: quota.appquota.io/v1alpha1
kind: QuotaProfile
metadata: {name: default}
spec:
  fallback:
    limits: [{unit: Requests, window: Second, max: 100}]
  endpointGroups:
  - name: messages-send-users
    routes: [{method: POST, path: "/app-id/{app_id}/messages/users"}]
    limits:
    - {unit: Requests, window: Second, max: 100}
    - {unit: Messages, window: Minute, max: 6000}
    perCall: {maxTargets: 600}
  - name: conversations-delete
    routes: [{method: DELETE, path: "/app-id/{app_id}/users/{userName}/user_channel"}]
    limits:
    - {unit: Requests, window: Minute, scope: User, max: 5}
    - {unit: Requests, window: Second, max: 100}
  - name: messages-broadcast-users
    routes: [{method: POST, path: "/app-id/{app_id}/messages/users/broadcast"}]
    limits:
    - {unit: Requests, window: Minute, max: 1}
    - {unit: Requests, window: Day, max: 50}
`

// appQuota is an AppQuota manifest; each override without a reason gets one,
// which a raise needs (TestRejections checks the one refused without).
func appQuota(ns, name, appID, overrides string) string {
	var lines []string
	for l := range strings.SplitSeq(overrides, "\n") {
		if !strings.Contains(l, "reason:") {
			l = strings.Replace(l, "{group:", "{reason: TICKET-1, group:", 1)
		}
		lines = append(lines, l)
	}
	overrides = strings.Join(lines, "\n")
	return fmt.Sprintf(`apiVersion: quota.appquota.io/v1alpha1
kind: AppQuota
metadata: {name: %s, namespace: %s}
spec:
  appID: "%s"
  overrides:
%s`, name, ns, appID, overrides)
}

// denied is how kubectl prints a webhook's 422 (the webhook's name is not shown,
// but no schema or CEL rule produces these messages).
const denied = `The %[2]s "%[3]s" is invalid: %[4]s`

func TestRejections(t *testing.T) {
	mustApply(t, profile)
	mustApply(t, appQuota("team-a", "taken", "5000", `  - {group: messages-send-users, limits: [{unit: Requests, window: Second, max: 200}]}`))

	past := time.Now().Add(-time.Hour).UTC().Format(time.RFC3339)
	cases := []struct {
		name, manifest, want string
	}{
		{"profile does not exist", strings.Replace(appQuota("team-b", "p", "6001", `  - {group: messages-send-users, perCall: {maxTargets: 10}}`), "overrides:", "profile: enterprise\n  overrides:", 1),
			fmt.Sprintf(denied, "vappquota.quota.appquota.io", "AppQuota", "p", `spec.profile: Invalid value: "enterprise": no QuotaProfile of that name exists`)},
		{"group not in the profile, with a suggestion", appQuota("team-b", "g", "6002", `  - {group: messages-send-user, limits: [{unit: Requests, window: Second, max: 200}]}`),
			fmt.Sprintf(denied, "vappquota.quota.appquota.io", "AppQuota", "g", `spec.overrides[0].group: Invalid value: "messages-send-user": not a group of QuotaProfile "default"; did you mean "messages-send-users"?`)},
		{"appID already claimed in another namespace", appQuota("team-b", "dup", "5000", `  - {group: messages-send-users, limits: [{unit: Requests, window: Second, max: 300}]}`),
			fmt.Sprintf(denied, "vappquota.quota.appquota.io", "AppQuota", "dup", `spec.appID: Invalid value: "5000": already claimed by an AppQuota in another namespace; an app may have only one AppQuota`)},
		{"expiresAt in the past on create", appQuota("team-b", "old", "6003", fmt.Sprintf(`  - {group: messages-send-users, limits: [{unit: Requests, window: Second, max: 300}], expiresAt: "%s"}`, past)),
			fmt.Sprintf(denied, "vappquota.quota.appquota.io", "AppQuota", "old", fmt.Sprintf(`spec.overrides[0].expiresAt: Invalid value: "%s": already in the past: the override would never apply; use a future instant, or omit expiresAt for a permanent override`, past))},
		{"a raise without a reason", appQuota("team-b", "r", "6005", `  - {reason: "", group: messages-send-users, limits: [{unit: Requests, window: Second, max: 300}]}`),
			fmt.Sprintf(denied, "vappquota.quota.appquota.io", "AppQuota", "r", `spec.overrides[0].reason: Required value: required when an override raises a limit above its QuotaProfile's (Requests/Second of group "messages-send-users" in QuotaProfile "default": 100 to 300): name the ticket or contract, at most 256 characters`)},
		{"per-user limit on a group without a user parameter", appQuota("team-b", "u", "6004", `  - {group: messages-send-users, limits: [{unit: Requests, window: Minute, scope: User, max: 10}]}`),
			fmt.Sprintf(denied, "vappquota.quota.appquota.io", "AppQuota", "u", `spec.overrides[0].limits[0].scope: Invalid value: "User": group "messages-send-users" has a route without a user parameter (POST /app-id/{app_id}/messages/users); use scope App`)},
		{"two groups a gateway cannot tell apart", `apiVersion: quota.appquota.io/v1alpha1
kind: QuotaProfile
metadata: {name: clash}
spec:
  fallback: {limits: [{unit: Requests, window: Second, max: 100}]}
  endpointGroups:
  - {name: remove-one, routes: [{method: DELETE, path: "/app-id/{app_id}/chatgroups/{group_id}/users/{username}"}], limits: [{unit: Requests, window: Second, max: 100}]}
  - {name: remove-many, routes: [{method: DELETE, path: "/app-id/{app_id}/chatgroups/{group_id}/users/{usernames}"}], limits: [{unit: Requests, window: Second, max: 100}]}
`, fmt.Sprintf(denied, "vquotaprofile.quota.appquota.io", "QuotaProfile", "clash", `spec.endpointGroups[1].routes[0].path: Invalid value: "/app-id/{app_id}/chatgroups/{group_id}/users/{usernames}": DELETE /app-id/{app_id}/chatgroups/{group_id}/users/{usernames} cannot be told apart by a gateway from spec.endpointGroups[0].routes[0] in group "remove-one" (same method and template once parameter names are ignored); merge them into one group`)},
		{"a parameter named twice", `apiVersion: quota.appquota.io/v1alpha1
kind: QuotaProfile
metadata: {name: twice}
spec:
  fallback: {limits: [{unit: Requests, window: Second, max: 100}]}
  endpointGroups:
  - {name: g, routes: [{method: GET, path: "/app-id/{app_id}/users/{id}/friends/{id}"}], limits: [{unit: Requests, window: Second, max: 100}]}
`, fmt.Sprintf(denied, "vquotaprofile.quota.appquota.io", "QuotaProfile", "twice", `spec.endpointGroups[0].routes[0].path: Invalid value: "/app-id/{app_id}/users/{id}/friends/{id}": parameter {id} appears twice; each parameter needs its own name`)},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			out, ok := kubectl(t, tc.manifest, "create", "-f", "-")
			if ok {
				t.Fatalf("accepted; want rejection:\n%s", out)
			}
			if got := strings.TrimSpace(out); got != tc.want {
				t.Errorf("kubectl printed\n  %s\nwant\n  %s", got, tc.want)
			}
		})
	}
}

// TestAppIDBucketNeighbour checks that an appID sharing its index bucket with a
// claimed one is not taken for a duplicate: the webhook looks AppQuotas up by a
// hash bucket of their appID and must compare the appIDs themselves.
func TestAppIDBucketNeighbour(t *testing.T) {
	mustApply(t, profile)
	mustApply(t, appQuota("team-a", "bucket-owner", "7000", `  - {group: messages-send-users, limits: [{unit: Requests, window: Second, max: 200}]}`))
	neighbour := ""
	for i := 7001; neighbour == ""; i++ {
		if id := strconv.Itoa(i); webhook.AppIDBucket(id) == webhook.AppIDBucket("7000") {
			neighbour = id
		}
	}
	if out, ok := kubectl(t, appQuota("team-b", "bucket-neighbour", neighbour, `  - {group: messages-send-users, limits: [{unit: Requests, window: Second, max: 300}]}`), "create", "-f", "-"); !ok {
		t.Fatalf("appID %s, in the same bucket as 7000, refused:\n%s", neighbour, out)
	}
}

func TestAcceptedWithWarnings(t *testing.T) {
	mustApply(t, profile)
	cases := []struct {
		name, overrides string
		warnings        []string
	}{
		{"a block", `  - {group: messages-broadcast-users, limits: [{unit: Requests, window: Minute, max: 0}, {unit: Requests, window: Day, max: 0}]}`, []string{
			"Warning: spec.overrides[0].limits[0]: max 0 blocks group messages-broadcast-users for app 7001",
			"Warning: spec.overrides[0].limits[1]: max 0 blocks group messages-broadcast-users for app 7001",
		}},
		{"a lowering", `  - {group: messages-send-users, limits: [{unit: Requests, window: Second, max: 20}]}`, []string{
			"Warning: spec.overrides[0].limits[0]: lowers Requests/Second for group messages-send-users from the profile's 100 to 20",
		}},
		{"a raise over 100x", `  - {group: messages-send-users, limits: [{unit: Requests, window: Second, max: 100000}]}`, []string{
			"Warning: spec.overrides[0].limits[0]: raises Requests/Second for group messages-send-users more than 100x, from the profile's 100 to 100000",
		}},
		{"an unreachable limit", `  - {group: messages-send-users, limits: [{unit: Requests, window: Second, max: 100}, {unit: Requests, window: Minute, max: 9000}]}`, []string{
			"Warning: spec.overrides[0].limits[1]: 9000 Requests/Minute (scope App) can never be reached for group messages-send-users: 100 Requests/Second (scope App) allows at most 6000 per Minute",
		}},
		{"a new window on a group, no warning", `  - {group: messages-send-users, limits: [{unit: Requests, window: Hour, max: 300000}]}`, nil},
		{"a temporary raise, no warning", fmt.Sprintf(`  - {group: messages-broadcast-users, limits: [{unit: Requests, window: Day, max: 500}], expiresAt: "%s"}`, time.Now().Add(24*time.Hour).UTC().Format(time.RFC3339)), nil},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			name := fmt.Sprintf("ok-%d", i)
			m := appQuota("team-b", name, fmt.Sprint(7001+i), tc.overrides)
			if i == 0 {
				m = appQuota("team-b", name, "7001", tc.overrides)
			}
			out := mustApply(t, m)
			var warnings []string
			for _, line := range strings.Split(out, "\n") {
				if strings.HasPrefix(line, "Warning: ") {
					warnings = append(warnings, line)
				}
			}
			if strings.Join(warnings, "\n") != strings.Join(tc.warnings, "\n") {
				t.Errorf("warnings:\n  %s\nwant:\n  %s", strings.Join(warnings, "\n  "), strings.Join(tc.warnings, "\n  "))
			}
		})
	}
}

func TestExpiredOverrideWarnsOnUpdate(t *testing.T) {
	mustApply(t, profile)
	expires := time.Now().Add(2 * time.Second).UTC().Truncate(time.Second).Add(time.Second)
	m := appQuota("team-b", "soon", "8001", fmt.Sprintf(`  - {group: messages-broadcast-users, limits: [{unit: Requests, window: Day, max: 60}], expiresAt: "%s"}`, expires.Format(time.RFC3339)))
	mustApply(t, m)
	// The rule is about the instant, so the test waits for the instant.
	time.Sleep(time.Until(expires) + 100*time.Millisecond)
	out := mustApply(t, strings.Replace(m, "max: 60", "max: 70", 1))
	want := fmt.Sprintf("Warning: spec.overrides[0].expiresAt: %s has passed; the override no longer applies and the profile's limits are back", expires.Format(time.RFC3339))
	if !strings.Contains(out, want) {
		t.Errorf("kubectl printed\n%s\nwant a line\n%s", out, want)
	}
}

func TestProfileDeletionWhileReferenced(t *testing.T) {
	p := strings.Replace(profile, "name: default", "name: shared", 1)
	mustApply(t, p)
	for i := range 5 {
		mustApply(t, strings.Replace(appQuota("team-a", fmt.Sprintf("user-%d", i), fmt.Sprint(9000+i),
			`  - {group: messages-send-users, limits: [{unit: Requests, window: Second, max: 150}]}`), "overrides:", "profile: shared\n  overrides:", 1))
	}
	// The webhook lists AppQuotas from the manager's cache: wait until it has all five.
	var out string
	deadline := time.Now().Add(20 * time.Second)
	for {
		var ok bool
		out, ok = kubectl(t, "", "delete", "quotaprofile", "shared")
		if ok {
			t.Fatalf("deleted a profile in use:\n%s", out)
		}
		if strings.Contains(out, "5 AppQuotas") || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	want := `Error from server (Forbidden): admission webhook "vquotaprofile.quota.appquota.io" denied the request: quotaprofiles.quota.appquota.io "shared" is forbidden: 5 AppQuotas still use it (team-a/user-0, team-a/user-1, team-a/user-2 and 2 more); move them to another profile or delete them first`
	if got := strings.TrimSpace(out); got != want {
		t.Errorf("kubectl printed\n  %s\nwant\n  %s", got, want)
	}
	for i := range 5 {
		if out, ok := kubectl(t, "", "-n", "team-a", "delete", "appquota", fmt.Sprintf("user-%d", i)); !ok {
			t.Fatal(out)
		}
	}
	deadline = time.Now().Add(20 * time.Second)
	for {
		out, ok := kubectl(t, "", "delete", "quotaprofile", "shared")
		if ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("deleting the profile no AppQuota uses still fails:\n%s", out)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestWebhookServesHTTP1Only checks the webhook server's default TLS settings
// (wiring.ServerTLSOpts): a client offering HTTP/2 first, as the API server
// does, is answered in HTTP/1.1.
func TestWebhookServesHTTP1Only(t *testing.T) {
	wh := cluster.Env.WebhookInstallOptions
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(wh.LocalServingCAData) {
		t.Fatal("envtest's webhook CA is not PEM")
	}
	addr := net.JoinHostPort(wh.LocalServingHost, strconv.Itoa(wh.LocalServingPort))
	conn, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: roots, ServerName: wh.LocalServingHost, NextProtos: []string{"h2", "http/1.1"}})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if got := conn.ConnectionState().NegotiatedProtocol; got != "http/1.1" {
		t.Errorf("webhook server negotiated %q with a client offering h2 and http/1.1, want http/1.1 (HTTP/2 is off unless --enable-http2)", got)
	}
}

// TestRaiseCeiling: a QuotaProfile's raiseCeiling bounds what an AppQuota may
// raise to: above it kubectl prints the ceiling and who can lift it; up to it,
// lowering and blocking go through; a ceiling under the default is refused
// by the schema.
func TestRaiseCeiling(t *testing.T) {
	mustApply(t, `apiVersion: quota.appquota.io/v1alpha1
kind: QuotaProfile
metadata: {name: ceilinged}
spec:
  fallback: {limits: [{unit: Requests, window: Second, max: 100}]}
  endpointGroups:
  - {name: send, routes: [{method: POST, path: "/app-id/{app_id}/send"}], limits: [{unit: Requests, window: Second, max: 100, raiseCeiling: 500}]}
`)
	withProfile := func(name, appID, max string) string {
		return strings.Replace(appQuota("team-b", name, appID, `  - {group: send, limits: [{unit: Requests, window: Second, max: `+max+`}]}`),
			"overrides:", "profile: ceilinged\n  overrides:", 1)
	}
	out, ok := kubectl(t, withProfile("over", "ceil-over", "501"), "create", "-f", "-")
	want := fmt.Sprintf(denied, "vappquota.quota.appquota.io", "AppQuota", "over",
		`spec.overrides[0].limits[0].max: Invalid value: 501: above the raise ceiling of 500 Requests/Second that QuotaProfile "ceilinged" sets for group "send"; `+
			`lowering and blocking are allowed, raising further needs the platform team to raise the ceiling`)
	if ok || strings.TrimSpace(out) != want {
		t.Errorf("a raise above the ceiling: kubectl printed\n  %s\nwant\n  %s", strings.TrimSpace(out), want)
	}
	for i, max := range []string{"500", "10", "0"} {
		mustApply(t, withProfile(fmt.Sprintf("within-%d", i), fmt.Sprintf("ceil-%d", i), max))
	}
	out, ok = kubectl(t, `apiVersion: quota.appquota.io/v1alpha1
kind: QuotaProfile
metadata: {name: low-ceiling}
spec:
  fallback: {limits: [{unit: Requests, window: Second, max: 100}]}
  endpointGroups:
  - {name: send, routes: [{method: POST, path: "/app-id/{app_id}/send"}], limits: [{unit: Requests, window: Second, max: 100, raiseCeiling: 50}]}
`, "create", "-f", "-")
	if ok || !strings.Contains(out, "spec.endpointGroups[0].limits[0].raiseCeiling: Invalid value") ||
		!strings.Contains(out, "raiseCeiling must be at least max") {
		t.Errorf("a ceiling under the default: kubectl printed\n%s", out)
	}
}
