package controllers_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	quotav1 "github.com/appquota/appquota/api/v1alpha1"
	"github.com/appquota/appquota/internal/reservation"
)

// TestAppIDReservation: with overlapping grants (both namespaces may claim
// rsv-*) and no webhook (a bypass), the app ID of a deleted AppQuota stays
// with its namespace: another namespace's claim is held (AppIDReserved, a
// message that does not name the owner) and the ID stays out of the
// configuration, across a restart of the manager (a new merger, the
// reservation read back from its ConfigMap); the owner's namespace claims it
// again at once and keeps it. With a short grace, a held claim becomes Ready
// when the reservation ends.
func TestAppIDReservation(t *testing.T) {
	ctx := context.Background()
	grantedNamespace(t, "reserve-owner", "rsv-*")
	grantedNamespace(t, "reserve-other", "rsv-*")
	o := opts
	o.AppIDReservation = time.Hour
	runWith(t, o)

	owner := appQuota("reserve-owner", "app", "rsv-1", raise(sendGroup, 500))
	if err := k8s.Create(ctx, owner); err != nil {
		t.Fatal(err)
	}
	applied(t, owner, "rsv-1", 500)
	if err := k8s.Delete(ctx, owner); err != nil {
		t.Fatal(err)
	}
	eventually(t, wait, reservedFor("rsv-1", "reserve-owner"))
	eventually(t, wait, absent("rsv-1"))

	grab := appQuota("reserve-other", "grab", "rsv-1", raise(sendGroup, 900))
	if err := k8s.Create(ctx, grab); err != nil {
		t.Fatal(err)
	}
	eventually(t, wait, ready(client.ObjectKeyFromObject(grab), metav1.ConditionFalse, quotav1.ReasonAppIDReserved))
	var got quotav1.AppQuota
	if err := k8s.Get(ctx, client.ObjectKeyFromObject(grab), &got); err != nil {
		t.Fatal(err)
	}
	msg := meta.FindStatusCondition(got.Status.Conditions, quotav1.ConditionReady).Message
	if !strings.Contains(msg, `app ID "rsv-1" is reserved for the namespace that held it until `) || strings.Contains(msg, "reserve-owner") {
		t.Errorf("the held claim's message: %s", msg)
	}
	if err := absent("rsv-1")(); err != nil {
		t.Error(err)
	}

	// A restart: the new manager reads the reservation back and still holds
	// the claim, at its next generation too.
	runWith(t, o)
	got.Spec.Overrides[0].Limits[0].Max = 901
	if err := k8s.Update(ctx, &got); err != nil {
		t.Fatal(err)
	}
	eventually(t, wait, ready(client.ObjectKeyFromObject(grab), metav1.ConditionFalse, quotav1.ReasonAppIDReserved))
	if err := absent("rsv-1")(); err != nil {
		t.Errorf("after a restart: %v", err)
	}

	// The owner's namespace re-creates it under another name: it holds the ID
	// at once, and keeps it against the older claim, which is a duplicate.
	again := appQuota("reserve-owner", "renamed", "rsv-1", raise(sendGroup, 600))
	if err := k8s.Create(ctx, again); err != nil {
		t.Fatal(err)
	}
	applied(t, again, "rsv-1", 600)
	eventually(t, wait, ready(client.ObjectKeyFromObject(grab), metav1.ConditionFalse, quotav1.ReasonDuplicateAppID))
	eventually(t, wait, reservedFor("rsv-1", ""))

	// A short grace: a held claim becomes Ready when the reservation ends,
	// not before.
	o.AppIDReservation = 3 * time.Second
	runWith(t, o)
	short := appQuota("reserve-owner", "short", "rsv-2", raise(sendGroup, 300))
	if err := k8s.Create(ctx, short); err != nil {
		t.Fatal(err)
	}
	applied(t, short, "rsv-2", 300)
	if err := k8s.Delete(ctx, short); err != nil {
		t.Fatal(err)
	}
	var until time.Time
	eventually(t, wait, func() error {
		set, err := storedReservations()
		if err != nil {
			return err
		}
		r, ok := set["rsv-2"]
		if !ok {
			return fmt.Errorf("rsv-2 not reserved: %v", set)
		}
		until = r.Until
		return nil
	})
	later := appQuota("reserve-other", "later", "rsv-2", raise(sendGroup, 700))
	if err := k8s.Create(ctx, later); err != nil {
		t.Fatal(err)
	}
	applied(t, later, "rsv-2", 700)
	if err := k8s.Get(ctx, client.ObjectKeyFromObject(later), &got); err != nil {
		t.Fatal(err)
	}
	// Condition times have one-second resolution.
	if at := meta.FindStatusCondition(got.Status.Conditions, quotav1.ConditionReady).LastTransitionTime; at.Add(time.Second).Before(until) {
		t.Errorf("the held claim became Ready at %s, before the reservation ended at %s", at, until)
	}
	eventually(t, wait, reservedFor("rsv-2", ""))
}

// storedReservations reads the reservations ConfigMap.
func storedReservations() (reservation.Set, error) {
	var cm corev1.ConfigMap
	if err := k8s.Get(context.Background(), client.ObjectKey{Namespace: opts.Namespace, Name: reservation.ConfigMapName}, &cm); err != nil {
		return nil, err
	}
	return reservation.Decode(cm.Data[reservation.DataKey])
}

// reservedFor waits for appID to be reserved for ns in the stored
// reservations, "" for not reserved.
func reservedFor(appID, ns string) func() error {
	return func() error {
		set, err := storedReservations()
		if err != nil {
			return err
		}
		if got := set[appID].Namespace; got != ns {
			return fmt.Errorf("app ID %s reserved for %q, want %q", appID, got, ns)
		}
		return nil
	}
}

// absent waits for appID to have no entry in the configuration.
func absent(appID string) func() error {
	return func() error {
		doc, _, err := document()
		if err != nil {
			return err
		}
		if e, ok := doc.Apps[appID]; ok {
			return fmt.Errorf("app %s in the configuration, from %s", appID, e.Source)
		}
		return nil
	}
}
