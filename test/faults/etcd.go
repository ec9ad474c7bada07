package main

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/appquota/appquota/internal/localcluster"
)

// etcdOutages are how long etcd stays down after its SIGKILL, in turn: a
// restart at once, and an outage past the renew deadline.
var etcdOutages = []time.Duration{0, 2 * renewDeadline}

// etcdRestart SIGKILLs etcd while the editor changes AppQuotas and starts it
// again on the same data directory and flags, at once and then after an
// outage past the renew deadline; the API server reconnects on its own, and
// the managers must recover through it: the oracle must hold after each.
func etcdRestart(ctx context.Context, cfg Config, bin string) result {
	outages := make([]string, len(etcdOutages))
	for i, d := range etcdOutages {
		outages[i] = d.String()
	}
	res := result{Fault: "etcd restart",
		Injection: fmt.Sprintf("etcd SIGKILLed and started again on the same data directory and flags after %s in turn, "+
			"with edits in flight, on %d AppQuotas; the failover time is from the API accepting writes again "+
			"to a leader renewing the Lease, when the leader changed; %d repeats",
			strings.Join(outages, ", "), cfg.Apps, cfg.Repeats)}
	return controlPlaneOutages(ctx, cfg, bin, res, localcluster.Etcd, etcdOutages)
}
