package controllers_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"

	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/appquota/appquota/internal/wiring"
)

// TestNoWriteWithoutTheLease: while the replica's Lease check fails (a
// replica thawed after its successor took over, wiring.LeaseLock), a change
// is not written, however often the controller tries; once the check
// passes again, it is. The partition fault of test/faults found the
// deposed replica writing without this check.
func TestNoWriteWithoutTheLease(t *testing.T) {
	ctx := context.Background()
	var held atomic.Bool
	var refused atomic.Int64
	held.Store(true)
	o := opts
	o.LeaseHeld = func() error {
		if held.Load() {
			return nil
		}
		refused.Add(1)
		return fmt.Errorf("test: %w", wiring.ErrLeaseNotHeld)
	}
	runWith(t, o)
	ns := namespace(t)
	a := appQuota(ns, "fenced", "lease-1", raise(sendGroup, 500))
	if err := k8s.Create(ctx, a); err != nil {
		t.Fatal(err)
	}
	applied(t, a, "lease-1", 500)

	held.Store(false)
	if err := k8s.Get(ctx, client.ObjectKeyFromObject(a), a); err != nil {
		t.Fatal(err)
	}
	a.Spec.Overrides[0].Limits[0].Max = 800
	if err := k8s.Update(ctx, a); err != nil {
		t.Fatal(err)
	}
	// The controller rendered the change and was refused its write, then
	// tried again after its backoff and was refused again.
	eventually(t, wait, func() error {
		if n := refused.Load(); n < 2 {
			return fmt.Errorf("%d writes refused, want at least 2", n)
		}
		return nil
	})
	if err := wantLimit("lease-1", 500)(); err != nil {
		t.Fatalf("written without the Lease: %v", err)
	}
	held.Store(true)
	applied(t, a, "lease-1", 800)
}
