package wiring

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/util/uuid"
	coordinationv1client "k8s.io/client-go/kubernetes/typed/coordination/v1"
	corev1client "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
)

// LeaseLock is the leader election's Lease lock, remembering when this
// replica last renewed it, so that the controller can check, just before it
// writes, that it still leads.
//
// Why: client-go's elector finds out it lost the Lease only at its next
// renewal, and gives up renewDeadline after the last success. A replica
// frozen past the lease duration (a paused VM, a stopped process, a long
// GC or a partition) resumes believing it leads, and for up to
// renewDeadline its controllers keep writing. The resourceVersion
// preconditions refuse its first writes, but once its cache has caught up
// with its successor's objects they pass: two writers alternate, and the
// deposed one writes from a cache that may lag its successor's. With the
// renewal time checked before each write, a replica whose last renewal
// started renewDeadline ago or more writes nothing: by then the elector is
// about to give up anyway, and no other replica can have taken over before
// the lease duration (longer) has passed since that renewal's start.
type LeaseLock struct {
	resourcelock.Interface
	renewDeadline time.Duration
	now           func() time.Time // time.Now; a test's clock

	mu      sync.Mutex
	renewed time.Time // the start of the last successful renewal, with its monotonic reading
}

// NewLeaseLock is the Lease lock controller-runtime would build for the
// Lease ns/name (same identity scheme and client timeout), remembering its
// renewals.
func NewLeaseLock(cfg *rest.Config, ns, name string, renewDeadline time.Duration) (*LeaseLock, error) {
	host, err := os.Hostname()
	if err != nil {
		return nil, fmt.Errorf("leader election identity: %w", err)
	}
	cfg = rest.AddUserAgent(rest.CopyConfig(cfg), "leader-election")
	// As controller-runtime does: a hung request must not outlast the
	// renew deadline.
	cfg.Timeout = max(renewDeadline/2, time.Second)
	core, err := corev1client.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("leader election client: %w", err)
	}
	coord, err := coordinationv1client.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("leader election client: %w", err)
	}
	lock, err := resourcelock.New(resourcelock.LeasesResourceLock, ns, name, core, coord,
		resourcelock.ResourceLockConfig{Identity: host + "_" + string(uuid.NewUUID())})
	if err != nil {
		return nil, fmt.Errorf("leader election lock: %w", err)
	}
	return newLeaseLock(lock, renewDeadline, time.Now), nil
}

func newLeaseLock(lock resourcelock.Interface, renewDeadline time.Duration, now func() time.Time) *LeaseLock {
	return &LeaseLock{Interface: lock, renewDeadline: renewDeadline, now: now}
}

// Create records an acquisition of an absent Lease.
func (l *LeaseLock) Create(ctx context.Context, ler resourcelock.LeaderElectionRecord) error {
	start := l.now()
	err := l.Interface.Create(ctx, ler)
	l.record(start, ler, err)
	return err
}

// Update records a renewal or an acquisition (the elector's release, which
// clears the holder, is neither).
func (l *LeaseLock) Update(ctx context.Context, ler resourcelock.LeaderElectionRecord) error {
	start := l.now()
	err := l.Interface.Update(ctx, ler)
	l.record(start, ler, err)
	return err
}

func (l *LeaseLock) record(start time.Time, ler resourcelock.LeaderElectionRecord, err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if err == nil && ler.HolderIdentity == l.Identity() {
		l.renewed = start
	} else if err == nil {
		l.renewed = time.Time{}
	}
}

// ErrLeaseNotHeld is what Held returns when this replica may not write.
var ErrLeaseNotHeld = errors.New("this replica has not renewed the leader Lease within the renew deadline")

// Held returns nil when this replica's last renewal of the Lease started
// less than the renew deadline ago, else ErrLeaseNotHeld (wrapped).
func (l *LeaseLock) Held() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.renewed.IsZero() {
		return fmt.Errorf("%w: it never acquired it", ErrLeaseNotHeld)
	}
	if since := l.now().Sub(l.renewed); since >= l.renewDeadline {
		return fmt.Errorf("%w: the last renewal started %s ago", ErrLeaseNotHeld, since.Round(time.Millisecond))
	}
	return nil
}
