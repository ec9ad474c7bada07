package webhook_test

import (
	"strings"
	"testing"
	"time"

	"github.com/appquota/appquota/internal/reservation"
)

// TestReservedAppIDRefused: once an AppQuota that held an app ID is
// deleted, the webhook refuses another namespace's claim on the ID (both
// namespaces are granted every ID), with a message that does not name the
// namespace it is reserved for; that namespace may claim it again.
func TestReservedAppIDRefused(t *testing.T) {
	mustApply(t, profile)
	const override = "  - {group: messages-send-users, limits: [{unit: Requests, window: Second, max: 1}]}\n"
	mustApply(t, appQuota("team-a", "held", "6300", override))
	// The render writes the app into the configuration; the deletion is
	// noticed from there.
	waitFor(t, "app 6300 in the configuration", func() bool {
		out, _ := kubectl(t, "", "-n", "appquota-system", "get", "configmap", "appquota-limits", "-o", "jsonpath={.metadata.name}")
		if out != "appquota-limits" {
			return false
		}
		out, _ = kubectl(t, "", "get", "appquota", "-n", "team-a", "held", "-o", `jsonpath={.status.conditions[?(@.type=="Ready")].status}`)
		return out == "True"
	})
	if out, ok := kubectl(t, "", "-n", "team-a", "delete", "appquota", "held"); !ok {
		t.Fatal(out)
	}
	waitFor(t, "app ID 6300 reserved", func() bool {
		out, _ := kubectl(t, "", "-n", "appquota-system", "get", "configmap", reservation.ConfigMapName,
			"-o", "jsonpath={.data.reservations\\.json}")
		set, err := reservation.Decode(out)
		return err == nil && set["6300"].Namespace == "team-a"
	})
	grab := appQuota("team-b", "grab", "6300", override)
	var out string
	// The webhook reads the reservations from the manager's cache, which
	// may lag the write by a moment.
	waitFor(t, "the claim refused", func() bool {
		var ok bool
		out, ok = kubectl(t, grab, "create", "--dry-run=server", "-f", "-")
		return !ok
	})
	if !strings.Contains(out, `spec.appID: Forbidden: app ID "6300" is reserved for the namespace that held it until `) || strings.Contains(out, "team-a") {
		t.Errorf("the refusal is missing, or names the namespace:\n%s", out)
	}
	if out, ok := kubectl(t, grab, "create", "-f", "-"); ok {
		t.Errorf("created a claim on a reserved app ID:\n%s", out)
	}
	if out, ok := kubectl(t, appQuota("team-a", "again", "6300", override), "create", "-f", "-"); !ok {
		t.Errorf("the namespace the ID is reserved for may not claim it:\n%s", out)
	}
}

// waitFor polls cond for up to 20 seconds.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 20s", what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
