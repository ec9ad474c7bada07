package wiring

import (
	"context"
	"errors"
	"testing"
	"time"

	"k8s.io/client-go/tools/leaderelection/resourcelock"
)

// fakeLock is a resourcelock.Interface whose writes succeed unless fail is set.
type fakeLock struct {
	resourcelock.Interface
	fail error
}

func (f *fakeLock) Create(context.Context, resourcelock.LeaderElectionRecord) error { return f.fail }
func (f *fakeLock) Update(context.Context, resourcelock.LeaderElectionRecord) error { return f.fail }
func (f *fakeLock) Identity() string                                                { return "me" }

// TestLeaseLockHeld: a replica may write while its last renewal started
// less than the renew deadline ago, and not after (a replica frozen past
// it), nor after a failed renewal let the deadline pass, nor after the
// Lease went to another holder or was released.
func TestLeaseLockHeld(t *testing.T) {
	ctx := context.Background()
	t0 := time.Date(2026, 12, 5, 9, 0, 0, 0, time.UTC)
	now := t0
	f := &fakeLock{}
	l := newLeaseLock(f, 10*time.Second, func() time.Time { return now })
	if err := l.Held(); !errors.Is(err, ErrLeaseNotHeld) {
		t.Fatalf("before any acquisition: Held() = %v, want ErrLeaseNotHeld", err)
	}
	if err := l.Create(ctx, resourcelock.LeaderElectionRecord{HolderIdentity: "me"}); err != nil {
		t.Fatal(err)
	}
	now = t0.Add(9 * time.Second)
	if err := l.Held(); err != nil {
		t.Fatalf("9 s after acquiring: Held() = %v, want nil", err)
	}
	now = t0.Add(10 * time.Second)
	if err := l.Held(); !errors.Is(err, ErrLeaseNotHeld) {
		t.Fatalf("10 s after acquiring, never renewed (frozen): Held() = %v, want ErrLeaseNotHeld", err)
	}
	if err := l.Update(ctx, resourcelock.LeaderElectionRecord{HolderIdentity: "me"}); err != nil {
		t.Fatal(err)
	}
	if err := l.Held(); err != nil {
		t.Fatalf("just renewed: Held() = %v, want nil", err)
	}
	f.fail = errors.New("the API server is down")
	now = t0.Add(15 * time.Second)
	_ = l.Update(ctx, resourcelock.LeaderElectionRecord{HolderIdentity: "me"})
	now = t0.Add(20 * time.Second)
	if err := l.Held(); !errors.Is(err, ErrLeaseNotHeld) {
		t.Fatalf("renewals failing past the deadline: Held() = %v, want ErrLeaseNotHeld", err)
	}
	f.fail = nil
	if err := l.Update(ctx, resourcelock.LeaderElectionRecord{HolderIdentity: "me"}); err != nil {
		t.Fatal(err)
	}
	if err := l.Update(ctx, resourcelock.LeaderElectionRecord{HolderIdentity: ""}); err != nil {
		t.Fatal(err)
	}
	if err := l.Held(); !errors.Is(err, ErrLeaseNotHeld) {
		t.Fatalf("after releasing the Lease: Held() = %v, want ErrLeaseNotHeld", err)
	}
}
