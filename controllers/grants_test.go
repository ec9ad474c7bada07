package controllers_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	quotav1 "github.com/appquota/appquota/api/v1alpha1"
	"github.com/appquota/appquota/controllers"
)

// grantedNamespace makes a namespace whose AppQuotas may claim grant.
func grantedNamespace(t *testing.T, name, grant string) {
	t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Annotations: map[string]string{quotav1.AppIDsAnnotation: grant}}}
	if err := k8s.Create(context.Background(), ns); err != nil {
		t.Fatal(err)
	}
}

// TestAppIDGrantsHeldByRender: with no webhook and no admission policy (a
// bypass), a claim its namespace may not make is held by the render, even
// when it is the older claim (an intruder that claimed an ID while its owner
// re-created its AppQuota); a grant withdrawn keeps the app's last good
// limits; and the owner's raise is told in an event naming who made it.
func TestAppIDGrantsHeldByRender(t *testing.T) {
	ctx := context.Background()
	grantedNamespace(t, "grants-owner", "held-1, held-2")
	grantedNamespace(t, "grants-intruder", "intruder-*")

	intruder := appQuota("grants-intruder", "grab", "held-1", raise(sendGroup, 0))
	if err := k8s.Create(ctx, intruder); err != nil {
		t.Fatal(err)
	}
	eventually(t, wait, ready(client.ObjectKeyFromObject(intruder), metav1.ConditionFalse, quotav1.ReasonAppIDNotGranted))
	// creationTimestamp has one-second resolution: the intruder's claim is the older.
	time.Sleep(time.Until(intruder.CreationTimestamp.Add(1100 * time.Millisecond)))

	owner := appQuota("grants-owner", "app", "held-1", raise(sendGroup, 500))
	owner.Annotations = map[string]string{quotav1.ChangedByAnnotation: "alice"}
	owner.Spec.Overrides[0].Reason = "SALES-42"
	if err := k8s.Create(ctx, owner); err != nil {
		t.Fatal(err)
	}
	applied(t, owner, "held-1", 500)
	doc, _, err := document()
	if err != nil {
		t.Fatal(err)
	}
	if src := doc.Apps["held-1"].Source; src != "grants-owner/app" {
		t.Errorf("held-1's entry is from %s, want grants-owner/app", src)
	}
	var got quotav1.AppQuota
	if err := k8s.Get(ctx, client.ObjectKeyFromObject(intruder), &got); err != nil {
		t.Fatal(err)
	}
	want := `spec.appID: Forbidden: namespace "grants-intruder" may not claim app ID "held-1": its quota.appquota.io/app-ids annotation allows only "intruder-*"; ask the platform team to grant it`
	if msg := meta.FindStatusCondition(got.Status.Conditions, quotav1.ConditionReady).Message; msg != want {
		t.Errorf("the intruder's Ready message:\n got  %s\n want %s", msg, want)
	}
	eventually(t, wait, eventNote("grants-owner", "app", controllers.EventLimitsChanged,
		"alice raised app held-1 group messages-send-users Requests/Second from 100 to 500: SALES-42"))

	// The platform team withdraws the grant: the app keeps its last good limits.
	var ns corev1.Namespace
	if err := k8s.Get(ctx, client.ObjectKey{Name: "grants-owner"}, &ns); err != nil {
		t.Fatal(err)
	}
	ns.Annotations[quotav1.AppIDsAnnotation] = "held-2"
	if err := k8s.Update(ctx, &ns); err != nil {
		t.Fatal(err)
	}
	eventually(t, wait, ready(client.ObjectKeyFromObject(owner), metav1.ConditionFalse, quotav1.ReasonAppIDNotGranted))
	if err := wantLimit("held-1", 500)(); err != nil {
		t.Errorf("last good limits lost when the grant was withdrawn: %v", err)
	}
	// And granted again: Ready again.
	if err := k8s.Get(ctx, client.ObjectKey{Name: "grants-owner"}, &ns); err != nil {
		t.Fatal(err)
	}
	ns.Annotations[quotav1.AppIDsAnnotation] = "held-*"
	if err := k8s.Update(ctx, &ns); err != nil {
		t.Fatal(err)
	}
	eventually(t, wait, ready(client.ObjectKeyFromObject(owner), metav1.ConditionTrue, quotav1.ReasonApplied))
}

// eventNote waits for an event with reason on ns/name whose note is note.
func eventNote(ns, name, reason, note string) func() error {
	return func() error {
		var list eventsv1.EventList
		if err := k8s.List(context.Background(), &list, client.InNamespace(ns)); err != nil {
			return err
		}
		var seen []string
		for _, e := range list.Items {
			if e.Regarding.Name == name && e.Reason == reason {
				if e.Note == note {
					return nil
				}
				seen = append(seen, e.Note)
			}
		}
		return fmt.Errorf("no %s event %q for %s/%s; seen: %s", reason, note, ns, name, strings.Join(seen, " | "))
	}
}
