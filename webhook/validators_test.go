package webhook

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	quotav1 "github.com/appquota/appquota/api/v1alpha1"
	"github.com/appquota/appquota/internal/reservation"
	"github.com/appquota/appquota/internal/validation"
)

type fakeLookup struct {
	profiles map[string]*quotav1.QuotaProfile
	owner    string
	reserved *reservation.Reservation
	err      error
	asked    []string
}

func (l *fakeLookup) QuotaProfile(_ context.Context, name string) (*quotav1.QuotaProfile, error) {
	l.asked = append(l.asked, "profile "+name)
	return l.profiles[name], l.err
}

func (l *fakeLookup) Grant(context.Context, string) (*validation.Grant, error) { return nil, nil }

func (l *fakeLookup) Reservation(_ context.Context, appID string) (*reservation.Reservation, error) {
	l.asked = append(l.asked, "reservation of "+appID)
	return l.reserved, nil
}

func (l *fakeLookup) AppIDOwner(_ context.Context, a *quotav1.AppQuota) (string, error) {
	l.asked = append(l.asked, "owner of "+a.Spec.AppID)
	return l.owner, nil
}

// TestAdmitAppQuota: the sequence asks for the profile the AppQuota names
// (the default when it names none) and the appID's owner, and judges by
// their answers; a failed lookup is an error, not a verdict.
func TestAdmitAppQuota(t *testing.T) {
	a := &quotav1.AppQuota{ObjectMeta: metav1.ObjectMeta{Namespace: "team", Name: "x"}, Spec: quotav1.AppQuotaSpec{AppID: "1"}}
	l := &fakeLookup{}
	_, errs, err := AdmitAppQuota(context.Background(), l, nil, a, time.Now())
	if err != nil || len(errs) != 1 || !strings.Contains(errs[0].Error(), "no QuotaProfile of that name exists") {
		t.Errorf("no profile: errs %v, err %v", errs, err)
	}
	if got := strings.Join(l.asked, ", "); got != "profile default, owner of 1, reservation of 1" {
		t.Errorf("asked %s", got)
	}
	l = &fakeLookup{profiles: map[string]*quotav1.QuotaProfile{"default": {ObjectMeta: metav1.ObjectMeta{Name: "default"}}}, owner: "other/y"}
	if _, errs, err = AdmitAppQuota(context.Background(), l, nil, a, time.Now()); err != nil || len(errs) != 1 || !strings.Contains(errs[0].Error(), "already claimed by an AppQuota in another namespace") {
		t.Errorf("appID claimed: errs %v, err %v", errs, err)
	}
	l.owner = ""
	if _, errs, err = AdmitAppQuota(context.Background(), l, nil, a, time.Now()); err != nil || len(errs) != 0 {
		t.Errorf("valid: errs %v, err %v", errs, err)
	}
	l.err = errors.New("cache down")
	if _, _, err = AdmitAppQuota(context.Background(), l, nil, a, time.Now()); err == nil {
		t.Error("a failed lookup is not an error")
	}
}

// TestAdmitReservedAppID: a claim on an app ID reserved for another
// namespace is refused, with a message that does not name that namespace;
// the namespace it is reserved for may claim it, and so may anyone once the
// reservation has ended.
func TestAdmitReservedAppID(t *testing.T) {
	now := time.Date(2026, 12, 5, 12, 0, 0, 0, time.UTC)
	a := &quotav1.AppQuota{ObjectMeta: metav1.ObjectMeta{Namespace: "team", Name: "x"}, Spec: quotav1.AppQuotaSpec{AppID: "1"}}
	l := &fakeLookup{profiles: map[string]*quotav1.QuotaProfile{"default": {ObjectMeta: metav1.ObjectMeta{Name: "default"}}},
		reserved: &reservation.Reservation{Namespace: "owner-team", Until: now.Add(time.Hour)}}
	_, errs, err := AdmitAppQuota(context.Background(), l, nil, a, now)
	want := `spec.appID: Forbidden: app ID "1" is reserved for the namespace that held it until 2026-12-05T13:00:00Z: ` +
		`its AppQuota was deleted, and the ID stays with that namespace for a while in case it is re-created`
	if err != nil || len(errs) != 1 || errs[0].Error() != want {
		t.Errorf("reserved for another namespace: errs %v, err %v; want\n%s", errs, err, want)
	}
	if len(errs) == 1 && strings.Contains(errs[0].Error(), "owner-team") {
		t.Error("the refusal names the namespace the ID is reserved for")
	}
	l.reserved.Namespace = "team"
	if _, errs, err = AdmitAppQuota(context.Background(), l, nil, a, now); err != nil || len(errs) != 0 {
		t.Errorf("reserved for its own namespace: errs %v, err %v; want admitted", errs, err)
	}
	l.reserved.Namespace = "owner-team"
	if _, errs, err = AdmitAppQuota(context.Background(), l, nil, a, now.Add(time.Hour)); err != nil || len(errs) != 0 {
		t.Errorf("reservation ended: errs %v, err %v; want admitted", errs, err)
	}
}

// TestAppIDBucket: the index values are the bucket numbers, and appIDs
// spread over all of them.
func TestAppIDBucket(t *testing.T) {
	seen := map[string]int{}
	for i := range 100 * appIDBuckets {
		b := AppIDBucket(strconv.Itoa(i))
		if n, err := strconv.Atoi(b); err != nil || n < 0 || n >= appIDBuckets {
			t.Fatalf("bucket %q", b)
		}
		seen[b]++
	}
	if len(seen) != appIDBuckets {
		t.Errorf("%d of %d buckets used", len(seen), appIDBuckets)
	}
	if first, again := AppIDBucket("7000"), AppIDBucket("7000"); first != again {
		t.Error("one appID, two buckets")
	}
}

// TestAdmitAppQuotaWarnings: what admission allows but warns about, as the
// user reads it: a block, a lowering, a raise of more than 100x, a lifted
// limit, and a limit a shorter window makes unreachable; a plain raise
// passes silently.
func TestAdmitAppQuotaWarnings(t *testing.T) {
	profile := &quotav1.QuotaProfile{ObjectMeta: metav1.ObjectMeta{Name: "default"}, Spec: quotav1.QuotaProfileSpec{
		Fallback: quotav1.Fallback{Limits: []quotav1.Limit{{Unit: quotav1.UnitRequests, Window: quotav1.WindowSecond, Scope: quotav1.ScopeApp, Max: 100}}},
		EndpointGroups: []quotav1.EndpointGroup{{
			Name:   "messages-send-users",
			Routes: []quotav1.Route{{Method: "POST", Path: "/app-id/{app_id}/messages/users"}},
			Limits: []quotav1.Limit{{Unit: quotav1.UnitRequests, Window: quotav1.WindowSecond, Scope: quotav1.ScopeApp, Max: 100}},
		}},
	}}
	limit := func(window quotav1.LimitWindow, max int64) quotav1.OverrideLimit {
		return quotav1.OverrideLimit{Unit: quotav1.UnitRequests, Window: window, Scope: quotav1.ScopeApp, Max: max}
	}
	for _, tc := range []struct {
		name   string
		limits []quotav1.OverrideLimit
		want   string // "" for no warning
	}{
		{"a raise", []quotav1.OverrideLimit{limit(quotav1.WindowSecond, 500)}, ""},
		{"a block", []quotav1.OverrideLimit{limit(quotav1.WindowSecond, 0)},
			"spec.overrides[0].limits[0]: max 0 blocks group messages-send-users for app 1"},
		{"a lowering", []quotav1.OverrideLimit{limit(quotav1.WindowSecond, 20)},
			"spec.overrides[0].limits[0]: lowers Requests/Second for group messages-send-users from the profile's 100 to 20"},
		{"a raise over 100x", []quotav1.OverrideLimit{limit(quotav1.WindowSecond, 20000)},
			"spec.overrides[0].limits[0]: raises Requests/Second for group messages-send-users more than 100x, from the profile's 100 to 20000"},
		{"a lifted limit", []quotav1.OverrideLimit{{Unit: quotav1.UnitRequests, Window: quotav1.WindowSecond, Unlimited: true}},
			"spec.overrides[0].limits[0]: lifts Requests/Second for group messages-send-users for app 1: nothing counts against it"},
		{"an unreachable minute limit", []quotav1.OverrideLimit{limit(quotav1.WindowMinute, 10000)},
			"can never be reached for group messages-send-users"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := &quotav1.AppQuota{ObjectMeta: metav1.ObjectMeta{Namespace: "team", Name: "x"}, Spec: quotav1.AppQuotaSpec{AppID: "1",
				Overrides: []quotav1.Override{{Group: "messages-send-users", Limits: tc.limits, Reason: "test"}}}}
			l := &fakeLookup{profiles: map[string]*quotav1.QuotaProfile{"default": profile}}
			warnings, errs, err := AdmitAppQuota(context.Background(), l, nil, a, time.Now())
			if err != nil || len(errs) != 0 {
				t.Fatalf("refused: errs %v, err %v", errs, err)
			}
			got := strings.Join(warnings, "\n")
			switch {
			case tc.want == "" && got != "":
				t.Errorf("warned %q, want nothing", got)
			case tc.want != "" && !strings.Contains(got, tc.want):
				t.Errorf("warned %q, want %q", got, tc.want)
			}
		})
	}
}
