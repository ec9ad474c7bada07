package webhook_test

import (
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	quotav1 "github.com/appquota/appquota/api/v1alpha1"
	"github.com/appquota/appquota/internal/localcluster"
	"github.com/appquota/appquota/internal/validation"
)

// installPolicies applies config/policy, as a platform team does after
// config/default, and waits until the API server enforces both policies
// (it compiles them a moment after they are created).
func installPolicies(c *localcluster.Cluster) error {
	root, err := localcluster.RepoRoot()
	if err != nil {
		return err
	}
	run := func(stdin string, args ...string) (string, error) {
		cmd := exec.Command(c.Kubectl(), append([]string{"--kubeconfig", c.KubeconfigPath}, args...)...)
		cmd.Stdin = strings.NewReader(stdin)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	if out, err := run("", "apply", "-k", filepath.Join(root, "config", "policy")); err != nil {
		return fmt.Errorf("apply config/policy: %v\n%s", err, out)
	}
	if out, err := run("", "create", "namespace", "policy-probe"); err != nil && !strings.Contains(out, "AlreadyExists") {
		return fmt.Errorf("%v\n%s", err, out)
	}
	// The probe in team-a must pass the webhook: it needs its profile.
	if out, err := run(profile, "apply", "-f", "-"); err != nil {
		return fmt.Errorf("%v\n%s", err, out)
	}
	probe := appQuota("policy-probe", "probe", "probe", "  - {group: messages-send-users, limits: [{unit: Requests, window: Second, max: 1}]}\n")
	deadline := time.Now().Add(time.Minute)
	for {
		// Denied by the grants policy (the namespace has no grant) once it
		// is in force; the stamp is checked on a granted namespace.
		out, _ := run(probe, "create", "--dry-run=server", "-f", "-")
		denied := strings.Contains(out, "ValidatingAdmissionPolicy")
		stamp, _ := run(strings.Replace(probe, "policy-probe", "team-a", 1), "create", "--dry-run=server", "-f", "-",
			"-o", "jsonpath={.metadata.annotations}")
		if denied && strings.Contains(stamp, quotav1.ChangedByAnnotation) {
			return nil
		}
		if time.Now().After(deadline) {
			return errors.New("the admission policies are not in force after a minute: " + out + stamp)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// TestAppIDGrantsPolicy: the ValidatingAdmissionPolicy and the Go rule the
// webhook and the render apply agree on every case, and the refusal names
// no other namespace.
func TestAppIDGrantsPolicy(t *testing.T) {
	mustApply(t, profile)
	cases := []struct {
		annotation string // "-" for none
		appID      string
	}{
		{"-", "acme"},
		{"", "acme"},
		{"acme", "acme"},
		{"acme", "acme2"},
		{" acme , beta ", "beta"},
		{"acme-*", "acme-eu"},
		{"acme-*", "acme"},
		{"*", "anything"},
		{",,", "acme"},
	}
	for i, tc := range cases {
		ns := fmt.Sprintf("grants-%d", i)
		meta := fmt.Sprintf("apiVersion: v1\nkind: Namespace\nmetadata: {name: %s}\n", ns)
		ann := map[string]string{}
		if tc.annotation != "-" {
			meta = fmt.Sprintf("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: %s\n  annotations: {%q: %q}\n", ns, quotav1.AppIDsAnnotation, tc.annotation)
			ann[quotav1.AppIDsAnnotation] = tc.annotation
		}
		mustApply(t, meta)
		grant := validation.ParseGrant(ns, ann)
		out, ok := kubectl(t, appQuota(ns, "app", tc.appID, "  - {group: messages-send-users, limits: [{unit: Requests, window: Second, max: 1}]}\n"),
			"create", "--dry-run=server", "-f", "-")
		if ok != grant.Allows(tc.appID) {
			t.Errorf("grant %q, app ID %q: the API server says allowed=%v, the Go rule %v:\n%s", tc.annotation, tc.appID, ok, !ok, out)
			continue
		}
		if !ok {
			a := &quotav1.AppQuota{}
			a.Namespace, a.Spec.AppID = ns, tc.appID
			want := validation.Claim(a, grant).Error()
			if !strings.Contains(out, want) {
				t.Errorf("grant %q, app ID %q: the policy's message\n%s\ndoes not contain the Go rule's\n%s", tc.annotation, tc.appID, out, want)
			}
		}
	}
}

// TestAppIDTakenElsewhereNotNamed: a namespace granted an ID that another
// namespace's AppQuota holds is refused without learning where it lives.
func TestAppIDTakenElsewhereNotNamed(t *testing.T) {
	mustApply(t, profile)
	mustApply(t, appQuota("team-a", "secret-owner", "6100", "  - {group: messages-send-users, limits: [{unit: Requests, window: Second, max: 1}]}\n"))
	out, ok := kubectl(t, appQuota("team-b", "probe", "6100", "  - {group: messages-send-users, limits: [{unit: Requests, window: Second, max: 1}]}\n"),
		"create", "-f", "-")
	if ok || !strings.Contains(out, "already claimed by an AppQuota in another namespace") || strings.Contains(out, "team-a") || strings.Contains(out, "secret-owner") {
		t.Errorf("the refusal names the owner, or is missing:\n%s", out)
	}
}

// TestChangedByStamped: the API server stamps who changed an AppQuota's
// spec, whatever the client sent, and keeps it on other updates; the
// webhook refuses a forged value where the policy is not in force.
func TestChangedByStamped(t *testing.T) {
	mustApply(t, profile)
	as := func(user string, manifest string, args ...string) string {
		t.Helper()
		out, ok := kubectl(t, manifest, append([]string{"--as", user, "--as-group", "system:masters"}, args...)...)
		if !ok {
			t.Fatalf("kubectl as %s %v: %s", user, args, out)
		}
		return out
	}
	stamp := func() string {
		t.Helper()
		out, ok := kubectl(t, "", "get", "appquota", "-n", "team-a", "stamped", "-o",
			`jsonpath={.metadata.annotations.quota\.appquota\.io/changed-by}`)
		if !ok {
			t.Fatal(out)
		}
		return out
	}
	// Alice creates it, claiming to be mallory.
	forged := strings.Replace(appQuota("team-a", "stamped", "6200", "  - {group: messages-send-users, reason: SALES-7, limits: [{unit: Requests, window: Second, max: 300}]}\n"),
		"metadata: {name: stamped, namespace: team-a}", "metadata: {name: stamped, namespace: team-a, annotations: {quota.appquota.io/changed-by: mallory}}", 1)
	as("alice", forged, "create", "-f", "-")
	if got := stamp(); got != "alice" {
		t.Errorf("after alice's create: changed-by %q, want alice", got)
	}
	as("bob", "", "label", "appquota", "-n", "team-a", "stamped", "touched=yes")
	if got := stamp(); got != "alice" {
		t.Errorf("after bob's label: changed-by %q, want alice (bob did not change the spec)", got)
	}
	as("bob", "", "patch", "appquota", "-n", "team-a", "stamped", "--type=json",
		"-p", `[{"op":"replace","path":"/spec/overrides/0/limits/0/max","value":400}]`)
	if got := stamp(); got != "bob" {
		t.Errorf("after bob's raise: changed-by %q, want bob", got)
	}

	// Without the policy, the webhook alone refuses a forgery.
	if out, ok := kubectl(t, "", "delete", "mutatingadmissionpolicybinding", "appquota-changed-by"); !ok {
		t.Fatal(out)
	}
	t.Cleanup(func() { _ = installPolicies(cluster) })
	forged = strings.ReplaceAll(forged, "stamped", "forged")
	forged = strings.Replace(forged, "6200", "6201", 1)
	deadline := time.Now().Add(time.Minute)
	for {
		out, ok := kubectl(t, forged, "--as", "alice", "--as-group", "system:masters", "create", "--dry-run=server", "-f", "-")
		if !ok && strings.Contains(out, `metadata.annotations[quota.appquota.io/changed-by]: Forbidden`) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("a forged changed-by is not refused without the policy:\n%s", out)
		}
		time.Sleep(200 * time.Millisecond) // the binding's removal takes a moment to apply
	}
}
