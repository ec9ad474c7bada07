package main

import (
	"context"
	"fmt"
	"sync"
	"syscall"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	quotav1 "github.com/appquota/appquota/api/v1alpha1"
)

// skew is how far each replica's clock is off: a runs skew ahead, b skew
// behind (--clock-offset, the clock that decides when overrides expire).
const skew = 90 * time.Second

// The schedule of a clock-skew run, from t0 (the expiries set and stored):
// expiries every expiryStep from t0+firstExpiry, the leader SIGKILLed at
// t0+kills[0] and its successor at t0+kills[1]. With skew 90 s the
// expiries span both replicas' windows at both failovers: some overrides
// expired beyond the skew before the second failover (they must not come
// back), some within it (they may), some not yet.
const (
	firstExpiry = -60 * time.Second
	expiryStep  = 10 * time.Second
	expiries    = 21
)

var kills = []time.Duration{30 * time.Second, 90 * time.Second}

// Slack for the checks: a write lands some time after the render that took
// the leader's clock (comebackSlack), and a read some time after it started.
const (
	comebackSlack  = 5 * time.Second
	earlyDropSlack = time.Second
)

// clockSkew runs two replicas whose clocks differ by 2×skew around
// overrides' expiresAt and fails the leader over twice, so that each
// replica leads after the other. The stored configuration is watched
// throughout: an override may leave it up to skew before its expiresAt (the
// ahead replica) and come back after a failover to the behind replica, but
// never come back once skew has passed since its expiresAt, nor leave it
// earlier than skew before. After the second failover the oracle must hold,
// rendered at the leader's clock.
func clockSkew(ctx context.Context, cfg Config, bin string) result {
	res := result{Fault: "Clock skew around expiresAt",
		Injection: fmt.Sprintf("replicas' clocks %s and -%s (--clock-offset); %d overrides expiring every %s around the failovers, "+
			"on %d AppQuotas; leader SIGKILLed twice so that each replica leads after the other; %d repeats",
			"+"+skew.String(), skew, expiries, expiryStep, cfg.Apps, cfg.Repeats)}
	var comebacks, early int
	res = repeated(res, cfg.Repeats, func(res *result) error { return clockSkewOnce(ctx, cfg, bin, res, &comebacks, &early) })
	res.Injection += fmt.Sprintf("; within the skew, %d overrides came back after a failover to the behind replica "+
		"and %d left before their expiresAt", comebacks, early)
	return res
}

func clockSkewOnce(ctx context.Context, cfg Config, bin string, res *result, comebacks, early *int) error {
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	h, err := newHarness(runCtx, cfg.Log, bin)
	if err != nil {
		return err
	}
	defer h.stop()
	h.replicaArgs = [2][]string{{"--clock-offset", skew.String()}, {"--clock-offset", (-skew).String()}}
	if err := h.start(runCtx); err != nil {
		return err
	}
	apps := max(cfg.Apps, expiries)
	if err := h.createApps(runCtx, 0, apps, cfg.Workers); err != nil {
		return err
	}
	// The oracle renders at the clock of the replica that leads.
	o := &oracle{h: h, now: func() time.Time {
		if l := h.leader(); l != nil {
			return time.Now().Add(h.offset(l))
		}
		return time.Now()
	}}
	if _, _, err := o.settle(runCtx, time.Now(), 5*time.Minute); err != nil {
		return fmt.Errorf("before the fault: %w", err)
	}
	if o.previous, _, _, err = h.stored(runCtx); err != nil {
		return err
	}
	t0 := time.Now()
	w := &expiryWatch{h: h, at: map[string]time.Time{}, group: map[string]string{}}
	for j := range expiries {
		at := t0.Add(firstExpiry + time.Duration(j)*expiryStep).Truncate(time.Second)
		key := client.ObjectKey{Namespace: appNamespace, Name: appName(j)}
		// An expiresAt already past is refused on create only: on update
		// the webhook warns.
		if err := h.update(runCtx, key, func(a *quotav1.AppQuota) { a.Spec.Overrides[0].ExpiresAt = &metav1.Time{Time: at} }); err != nil {
			return err
		}
		w.at[appName(j)], w.group[appName(j)] = at, h.appQuota(j).Spec.Overrides[0].Group
	}
	if _, _, err := o.settle(runCtx, time.Now(), 2*time.Minute); err != nil {
		return fmt.Errorf("with the expiries set: %w", err)
	}
	restartsBefore, conflictsBefore := h.restarts(), h.conflicts()
	stopWatch := w.run(runCtx)
	defer stopWatch()
	var lastFailover time.Time
	for _, k := range kills {
		// The schedule is the fault: the kill lands when it is due.
		select {
		case <-runCtx.Done():
			return runCtx.Err()
		case <-time.After(time.Until(t0.Add(k))):
		}
		l, err := h.waitLeader(runCtx)
		if err != nil {
			return err
		}
		failover, err := h.failoverToOther(runCtx, l)
		if err != nil {
			return err
		}
		res.Failover = append(res.Failover, failover)
		lastFailover = time.Now()
		fmt.Fprintf(h.log, "clock-skew: replica %s (clock %s) SIGKILLed at t0+%s; the other leads after %s\n",
			l.name, h.offset(l), k, failover.Round(100*time.Millisecond))
	}
	recovery, lost, err := o.settle(runCtx, lastFailover, 5*time.Minute)
	res.Lost += lost
	stopWatch()
	if err != nil {
		return fmt.Errorf("after the failovers: %w", err)
	}
	res.Recovery = append(res.Recovery, recovery)
	res.Restarts += h.restarts() - restartsBefore
	res.Stale += h.conflicts() - conflictsBefore
	w.mu.Lock()
	defer w.mu.Unlock()
	*comebacks += w.comebacks
	*early += len(w.early)
	fmt.Fprintf(h.log, "clock-skew: %d comebacks within the skew, %d early drops within the skew, %d violations\n",
		w.comebacks, len(w.early), len(w.violations))
	if len(w.violations) > 0 {
		return fmt.Errorf("%d violations of the skew window, the first: %s", len(w.violations), w.violations[0])
	}
	// Each run has a failover from the ahead replica to the behind one, at
	// which overrides the ahead one dropped within the skew come back: none
	// means the run did not test what it is for.
	if w.comebacks == 0 {
		return fmt.Errorf("no override came back after the failover to the behind replica (%d reads): the run did not exercise it", w.reads)
	}
	return nil
}

// failoverToOther SIGKILLs the leader l and returns once the other replica
// leads, with the time from the kill to the Lease naming another holder.
// The supervisor holds l's restart until then: l's next incarnation would
// otherwise compete for the expired Lease, and win it about half the time.
func (h *harness) failoverToOther(ctx context.Context, l *replica) (time.Duration, error) {
	holder, err := h.holder(ctx)
	if err != nil {
		return 0, err
	}
	h.mu.Lock()
	l.leading, l.stopping = false, true
	h.mu.Unlock()
	defer func() {
		h.mu.Lock()
		l.stopping = false
		h.mu.Unlock()
	}()
	killed := time.Now()
	if err := h.signal(l, syscall.SIGKILL); err != nil {
		return 0, err
	}
	failover, err := h.waitHolderChange(ctx, holder, killed)
	if err != nil {
		return 0, err
	}
	next, err := h.waitLeader(ctx)
	if err != nil {
		return 0, err
	}
	if next == l {
		return 0, fmt.Errorf("replica %s leads again after its kill", l.name)
	}
	return failover, nil
}

// offset is the clock offset replica r runs with.
func (h *harness) offset(r *replica) time.Duration {
	if r == h.replicas[0] {
		return skew
	}
	return -skew
}

// expiryWatch reads the stored configuration over and over and checks each
// expiring override against the real time: present no later than skew
// (plus slack) before its expiresAt, and not come back once skew has passed
// after it.
type expiryWatch struct {
	h     *harness
	at    map[string]time.Time // expiresAt by app
	group map[string]string    // the group of the app's override

	mu         sync.Mutex
	reads      int
	comebacks  int
	early      map[string]bool // apps whose override left before its expiresAt
	violations []string
}

func (w *expiryWatch) run(ctx context.Context) (stop func()) {
	w.early = map[string]bool{}
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		present := map[string]bool{}
		var prevStart time.Time
		first := true
		for ctx.Err() == nil {
			start := time.Now()
			doc, _, _, err := w.h.stored(ctx)
			end := time.Now()
			if err == nil {
				w.mu.Lock()
				w.reads++
				for app, at := range w.at {
					now := false
					for _, ov := range doc.Apps[app].Overrides {
						if ov.Group == w.group[app] && ov.ExpiresAt != nil {
							now = true
						}
					}
					// Left early beyond the skew: its render took a clock at
					// most end, which must have been within skew of at.
					if !now && end.Add(skew+earlyDropSlack).Before(at) {
						w.violations = append(w.violations, fmt.Sprintf("%s's override, expiring at %s, was not stored at %s, more than %s before",
							app, at.Format(time.TimeOnly), end.Format(time.TimeOnly), skew))
					}
					if !now && end.Before(at) {
						w.early[app] = true
					}
					if now && !present[app] && !first {
						// Came back: the render that put it back ran after the
						// previous read started, give or take a write's time.
						if prevStart.Add(-comebackSlack).After(at.Add(skew)) {
							w.violations = append(w.violations, fmt.Sprintf("%s's override, expired at %s, came back by %s, more than %s after",
								app, at.Format(time.TimeOnly), end.Format(time.TimeOnly), skew))
						} else {
							w.comebacks++
						}
					}
					present[app] = now
				}
				w.mu.Unlock()
				first, prevStart = false, start
			}
			select {
			case <-ctx.Done():
			case <-time.After(300 * time.Millisecond):
			}
		}
	}()
	return func() {
		cancel()
		<-done
	}
}
