package main

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"syscall"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/appquota/appquota/internal/localcluster"
)

// apiserverOutages are how long kube-apiserver stays down, in turn: under
// the renew deadline (the leader should keep the Lease), past it (the leader
// must step down), and past the lease duration several times over.
var apiserverOutages = []time.Duration{5 * time.Second, 2 * renewDeadline, 60 * time.Second}

// apiserverRestart stops kube-apiserver for each of apiserverOutages while
// the editor changes AppQuotas, and starts it again on the same flags, port
// and certificates; after each the oracle must hold. It is SIGKILLed, a crash: on SIGTERM it drains for up to a minute
// with the managers' watches open, which would blur the outage's length.
// Edits refused while it is down are retried by the editor, and only
// the accepted ones count, so none of those may be lost.
func apiserverRestart(ctx context.Context, cfg Config, bin string) result {
	outages := make([]string, len(apiserverOutages))
	for i, d := range apiserverOutages {
		outages[i] = d.String()
	}
	res := result{Fault: "API server restart",
		Injection: fmt.Sprintf("kube-apiserver SIGKILLed and kept down for %s in turn, then started on the same flags, port and certificates, "+
			"with edits in flight, on %d AppQuotas; the failover time is from the API accepting writes again "+
			"to a leader renewing the Lease, when the leader changed; %d repeats",
			strings.Join(outages, ", "), cfg.Apps, cfg.Repeats)}
	return controlPlaneOutages(ctx, cfg, bin, res, localcluster.APIServer, apiserverOutages)
}

// controlPlaneOutages runs the outages of comp, in a fresh harness per
// repeat, and adds to the row what the managers saw: the API unavailable
// from the kill to the first write it accepts again, the outage plus the
// restart (several seconds on a loaded machine).
func controlPlaneOutages(ctx context.Context, cfg Config, bin string, res result, comp localcluster.Component, outages []time.Duration) result {
	var unavailable []time.Duration
	res = repeated(res, cfg.Repeats, func(res *result) error { return outagesOnce(ctx, cfg, bin, res, comp, outages, &unavailable) })
	res.Injection += "; API unavailable (kill to a write accepted) p50 / max " + quantiles(unavailable)
	return res
}

func outagesOnce(ctx context.Context, cfg Config, bin string, res *result, comp localcluster.Component, outages []time.Duration,
	unavailable *[]time.Duration) error {
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	h, err := newHarness(runCtx, cfg.Log, bin)
	if err != nil {
		return err
	}
	defer h.stop()
	if err := h.start(runCtx); err != nil {
		return err
	}
	// Apps below reserved are deleted, one per outage, just before it, so
	// that the deletion may reach the managers only through their relist.
	reserved := len(outages)
	apps := max(cfg.Apps, reserved+2)
	if err := h.createApps(runCtx, 0, apps, cfg.Workers); err != nil {
		return err
	}
	o := &oracle{h: h}
	if _, _, err := o.settle(runCtx, time.Now(), 5*time.Minute); err != nil {
		return fmt.Errorf("before the fault: %w", err)
	}
	restartsBefore, conflictsBefore := h.restarts(), h.conflicts()
	for i, outage := range outages {
		if err := h.outage(runCtx, o, comp, outage, i, reserved, apps, res, unavailable); err != nil {
			return fmt.Errorf("%s down %s: %w", comp, outage, err)
		}
	}
	res.Restarts += h.restarts() - restartsBefore
	res.Stale += h.conflicts() - conflictsBefore
	return nil
}

// outage is one outage: edits running, app del deleted, comp SIGKILLed and
// kept down for outage, then started again; the oracle must hold after it.
func (h *harness) outage(ctx context.Context, o *oracle, comp localcluster.Component, outage time.Duration, del, reserved, apps int,
	res *result, unavailables *[]time.Duration) error {
	var err error
	if o.previous, _, _, err = h.stored(ctx); err != nil {
		return err
	}
	leader, err := h.waitLeader(ctx)
	if err != nil {
		return err
	}
	holder, err := h.holder(ctx)
	if err != nil {
		return err
	}
	restartsBefore := h.restarts()
	o.editor = newEditor(h, reserved, apps)
	stopEdits := o.editor.run(ctx, 4)
	defer stopEdits()
	if err := waitEdits(ctx, o.editor, 10); err != nil {
		return err
	}
	if err := h.deleteApps(ctx, o, del, del+1); err != nil {
		return err
	}
	down := time.Now()
	if err := h.cluster.Kill(comp, syscall.SIGKILL); err != nil {
		return err
	}
	// The outage itself: nothing to wait for but its end.
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(outage):
	}
	if err := h.cluster.Restart(comp); err != nil {
		return err
	}
	// The managers see the API back when it accepts writes: after the API
	// server's start, or its etcd client's reconnection.
	if err := h.waitWritable(ctx); err != nil {
		return err
	}
	up := time.Now()
	unavailable := up.Sub(down)
	*unavailables = append(*unavailables, unavailable)
	fmt.Fprintf(h.log, "%s down %s, API unavailable %s\n", comp, outage, unavailable.Round(100*time.Millisecond))
	failover, err := h.waitRenewed(ctx, up)
	if err != nil {
		return err
	}
	// The editor must get through again before it stops: edits after the
	// outage are part of what must not be lost.
	if err := waitEdits(ctx, o.editor, o.editor.edits.Load()+10); err != nil {
		return err
	}
	stopEdits()
	recovery, lost, err := o.settle(ctx, up, 5*time.Minute)
	res.Lost += lost
	res.Edits += o.editor.edits.Load()
	if err != nil {
		return err
	}
	res.Recovery = append(res.Recovery, recovery)
	now, err := h.holder(ctx)
	if err != nil {
		return err
	}
	kept := now == holder && h.restarts() == restartsBefore && h.leader() == leader
	// The leader renews every retry period and gives up renewDeadline after
	// its last renewal: an API back within renewDeadline-retryPeriod of
	// going is back before a renewal that must succeed.
	if unavailable < renewDeadline-retryPeriod && !kept {
		return fmt.Errorf("the API, unavailable %s (under the renew deadline less a retry period), "+
			"changed the leader (%s → %s) or restarted a replica (%d restarts)",
			unavailable.Round(100*time.Millisecond), holder, now, h.restarts()-restartsBefore)
	}
	if !kept {
		res.Failover = append(res.Failover, failover)
	}
	return nil
}

// waitWritable waits until the API server accepts a write (a probe
// ConfigMap's update), which needs both it and etcd.
func (h *harness) waitWritable(ctx context.Context) error {
	probe := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: appNamespace, Name: "faults-probe"}}
	n := 0
	return poll(ctx, "the API to accept a write", 2*time.Minute, func(ctx context.Context) (bool, error) {
		n++
		probe.Data = map[string]string{"n": strconv.Itoa(n)}
		probe.ResourceVersion = ""
		err := h.c.Update(ctx, probe)
		if apierrors.IsNotFound(err) {
			err = h.c.Create(ctx, probe)
		}
		return err == nil, err
	})
}

// waitEdits waits until the editor has made n accepted edits.
func waitEdits(ctx context.Context, e *editor, n int64) error {
	return poll(ctx, fmt.Sprintf("%d accepted edits", n), 2*time.Minute, func(context.Context) (bool, error) {
		return e.edits.Load() >= n, nil
	})
}

// waitRenewed waits until a replica that logged acquiring the Lease runs and
// the Lease was renewed after since, and returns how long after since that
// was: the time without a working leader once the API server is back.
func (h *harness) waitRenewed(ctx context.Context, since time.Time) (time.Duration, error) {
	var at time.Time
	err := poll(ctx, "a leader to renew the Lease", 2*leaseDuration+time.Minute, func(ctx context.Context) (bool, error) {
		var l coordinationv1.Lease
		if err := h.c.Get(ctx, client.ObjectKey{Namespace: h.opts.Namespace, Name: leaseName}, &l); err != nil {
			return false, fmt.Errorf("read the Lease: %w", err)
		}
		at = time.Now()
		return h.leader() != nil && l.Spec.RenewTime != nil && l.Spec.RenewTime.After(since), nil
	})
	return at.Sub(since), err
}
