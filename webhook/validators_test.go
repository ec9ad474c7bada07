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
)

type fakeLookup struct {
	profiles map[string]*quotav1.QuotaProfile
	owner    string
	err      error
	asked    []string
}

func (l *fakeLookup) QuotaProfile(_ context.Context, name string) (*quotav1.QuotaProfile, error) {
	l.asked = append(l.asked, "profile "+name)
	return l.profiles[name], l.err
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
	if got := strings.Join(l.asked, ", "); got != "profile default, owner of 1" {
		t.Errorf("asked %s", got)
	}
	l = &fakeLookup{profiles: map[string]*quotav1.QuotaProfile{"default": {ObjectMeta: metav1.ObjectMeta{Name: "default"}}}, owner: "other/y"}
	if _, errs, err = AdmitAppQuota(context.Background(), l, nil, a, time.Now()); err != nil || len(errs) != 1 || !strings.Contains(errs[0].Error(), "already claimed by AppQuota other/y") {
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
