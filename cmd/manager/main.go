// Command manager runs the appquota operator: the controller that renders
// QuotaProfiles and AppQuotas into the ConfigMap gateways read, and the
// admission webhook that validates them.
package main

import (
	"cmp"
	"flag"
	"net/http"
	"os"
	"strconv"
	"time"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/leaderelection/resourcelock"

	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	"sigs.k8s.io/controller-runtime/pkg/webhook"

	"github.com/appquota/appquota/internal/metricsauth"
	"github.com/appquota/appquota/internal/wiring"
)

// leaderElectionID names the leader election Lease.
const leaderElectionID = "appquota-leader.quota.appquota.io"

func main() {
	opts := wiring.DefaultOptions()
	if ns := os.Getenv("POD_NAMESPACE"); ns != "" {
		opts.Namespace = ns
	}
	var (
		metricsAddr    string
		probeAddr      string
		pprofAddr      string
		leaderElect    bool
		leaderElectNS  string
		leaseDuration  time.Duration
		renewDeadline  time.Duration
		retryPeriod    time.Duration
		shutdown       time.Duration
		webhookCertDir string
		webhookHost    string
		webhookPort    int
		metricsSecure  bool
		apiQPS         float64
		apiBurst       int
		enableHTTP2    bool
	)
	flag.StringVar(&metricsAddr, "metrics-bind-address", ":8443", "Address the metrics endpoint (HTTPS, authenticated) binds to; 0 disables it.")
	flag.StringVar(&probeAddr, "health-probe-bind-address", ":8081", "Address the /healthz and /readyz endpoints bind to.")
	flag.StringVar(&pprofAddr, "pprof-bind-address", "0",
		"Address Go's pprof endpoints (/debug/pprof/) bind to, unauthenticated: keep it on localhost or off; 0 disables them.")
	flag.BoolVar(&leaderElect, "leader-elect", false, "Elect a leader so that only one replica writes the ConfigMap; every replica serves the webhook.")
	flag.StringVar(&leaderElectNS, "leader-election-namespace", "",
		"Namespace of the leader election Lease (default: --namespace): needed to elect outside a cluster.")
	flag.DurationVar(&leaseDuration, "leader-election-lease-duration", 15*time.Second,
		"How long the other replicas wait, after the leader last renewed, before one takes over.")
	flag.DurationVar(&renewDeadline, "leader-election-renew-deadline", 10*time.Second,
		"How long the leader keeps trying to renew before it stops leading (and exits).")
	flag.DurationVar(&retryPeriod, "leader-election-retry-period", 2*time.Second, "How often candidates try to acquire or renew the Lease.")
	flag.DurationVar(&shutdown, "graceful-shutdown-timeout", 20*time.Second,
		"How long the manager waits for its runnables to stop on SIGTERM; keep it under the Pod's terminationGracePeriodSeconds.")
	flag.Float64Var(&apiQPS, "kube-api-qps", 100, "Requests per second to the API server (status writes after a bulk change are the bulk of them).")
	flag.IntVar(&apiBurst, "kube-api-burst", 200, "Burst of requests to the API server.")
	flag.Func("status-qps", "Requests per second of the AppQuota status writes, a client of their own (default 1000).", func(v string) error {
		q, err := strconv.ParseFloat(v, 32)
		opts.StatusQPS = float32(q)
		return err
	})
	flag.IntVar(&opts.StatusBurst, "status-burst", opts.StatusBurst, "Burst of AppQuota status writes above --status-qps.")
	flag.BoolVar(&opts.RequireAppIDGrants, "require-app-id-grants", true,
		"Accept an AppQuota only when its Namespace's quota.appquota.io/app-ids annotation grants its appID (webhook and render); "+
			"false: any namespace may claim any unclaimed appID.")
	flag.DurationVar(&opts.AppIDReservation, "app-id-reservation", 24*time.Hour,
		"How long a deleted AppQuota's appID stays reserved for its namespace: meanwhile a claim on it from another namespace "+
			"is refused (webhook) and held (render, reason AppIDReserved); 0 reserves nothing.")
	flag.DurationVar(&opts.ClockOffset, "clock-offset", 0,
		"Testing only: shifts the clock that decides when overrides expire, to inject clock skew between replicas.")
	flag.StringVar(&webhookHost, "webhook-host", "", "Address the webhook server binds to (default: all).")
	flag.IntVar(&webhookPort, "webhook-port", 9443, "Port the webhook server listens on.")
	flag.BoolVar(&enableHTTP2, "enable-http2", false,
		"Serve HTTP/2 on the webhook and metrics servers; off by default, as in kubebuilder's scaffold, "+
			"for the HTTP/2 stream cancellation and rapid reset CVEs (GHSA-qppj-fm5r-hxr3, GHSA-4374-p667-p6c8).")
	flag.BoolVar(&metricsSecure, "metrics-secure", true,
		"Serve metrics over HTTPS with authentication and authorization; false serves plain HTTP, for local benchmarks only.")
	flag.StringVar(&webhookCertDir, "webhook-cert-dir", "", "Directory with tls.crt and tls.key for the webhook server (default: controller-runtime's).")
	flag.StringVar(&opts.Namespace, "namespace", opts.Namespace, "Namespace of the output ConfigMap (defaults to $POD_NAMESPACE, else appquota-system).")
	flag.StringVar(&opts.ConfigMapName, "configmap-name", opts.ConfigMapName, "Name of the ConfigMap gateways read.")
	flag.IntVar(&opts.MaxConfigBytes, "max-config-bytes", opts.MaxConfigBytes,
		"Size budget of each ConfigMap written: over it the document is compressed, then sharded; "+
			"over it even in 64 shards the last good one stays and objects report ConfigTooLarge.")
	flag.IntVar(&opts.ShardAboveBytes, "shard-above-bytes", opts.ShardAboveBytes,
		"Keeps what one change rewrites small: a configuration larger than this compressed is sharded, "+
			"and the apps changed since their shards were written ride in the index until --compact-after or past 16 times this; "+
			"a plain one is compressed past 4 times this. 0: plain, then compressed, then sharded only over --max-config-bytes.")
	flag.DurationVar(&opts.CompactAfter, "compact-after", opts.CompactAfter,
		"How long the configuration stays unwritten before the apps its index carries are folded into their shards.")
	flag.DurationVar(&opts.MinWriteInterval, "min-write-interval", opts.MinWriteInterval,
		"Least time between two writes of the ConfigMaps: a burst of changes is written once per interval.")
	flag.Float64Var(&opts.EventRate, "event-rate", opts.EventRate,
		"Events emitted per second, per type (Normal, Warning); more are dropped and counted in appquota_events_dropped_total. "+
			"Statuses always tell everything.")
	flag.IntVar(&opts.EventBurst, "event-burst", opts.EventBurst, "Burst of events allowed above --event-rate.")
	flag.StringVar(&opts.XDSBindAddress, "xds-bind-address", ":18000",
		"Address the leader serves the rate-limit engine's configuration on, over xDS (envoyproxy/ratelimit with "+
			"CONFIG_TYPE=GRPC_XDS_SOTW); 0 serves none.")
	flag.StringVar(&opts.XDSCertDir, "xds-cert-dir", "",
		"Directory with tls.crt and tls.key for the xDS server, reloaded when they change; empty serves plain gRPC.")
	flag.IntVar(&opts.XDSMaxMessageBytes, "xds-max-message-bytes", opts.XDSMaxMessageBytes,
		"Largest configuration sent to the engine; set it to the engine's XDS_CLIENT_MAX_MSG_SIZE_IN_BYTES. "+
			"A larger one is not sent and the engine keeps the last one.")
	flag.StringVar(&opts.RateLimitDomain, "ratelimit-domain", opts.RateLimitDomain, "The rate-limit engine's domain the configuration is served in.")
	flag.StringVar(&opts.DefaultProfile, "default-profile", opts.DefaultProfile, "QuotaProfile that applies to apps without an AppQuota.")
	zapOpts := zap.Options{}
	zapOpts.BindFlags(flag.CommandLine)
	flag.Parse()
	ctrl.SetLogger(zap.New(zap.UseFlagOptions(&zapOpts)))
	log := ctrl.Log.WithName("setup")

	scheme, err := wiring.Scheme()
	if err != nil {
		log.Error(err, "build scheme")
		os.Exit(1)
	}
	tlsOpts := wiring.ServerTLSOpts(enableHTTP2)
	cfg := ctrl.GetConfigOrDie()
	cfg.QPS, cfg.Burst = float32(apiQPS), apiBurst
	// The Lease lock is built here rather than by controller-runtime so that
	// the controller can check, before each write, that this replica renewed
	// it recently (wiring.LeaseLock: a replica resuming from a freeze must
	// not write while it finds out it was deposed).
	var leaseLock resourcelock.Interface
	if leaderElect {
		lock, err := wiring.NewLeaseLock(cfg, cmp.Or(leaderElectNS, opts.Namespace), leaderElectionID, renewDeadline)
		if err != nil {
			log.Error(err, "leader election")
			os.Exit(1)
		}
		leaseLock, opts.LeaseHeld = lock, lock.Held
	}
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme: scheme,
		Metrics: metricsserver.Options{
			BindAddress:   metricsAddr,
			SecureServing: metricsSecure,
			// Only callers allowed to GET /metrics (see config/rbac) may scrape.
			FilterProvider: metricsFilter(metricsSecure),
			TLSOpts:        tlsOpts,
		},
		HealthProbeBindAddress:  probeAddr,
		PprofBindAddress:        pprofAddr,
		Cache:                   wiring.CacheOptions(opts),
		LeaderElection:          leaderElect,
		LeaderElectionID:        leaderElectionID,
		LeaderElectionNamespace: cmp.Or(leaderElectNS, opts.Namespace),
		// Used only with LeaderElection.
		LeaderElectionResourceLockInterface: leaseLock,
		// Hand the Lease over on SIGTERM instead of making the next leader wait
		// out its duration: the manager exits once it stops leading, so nothing
		// runs as a leader after the release.
		LeaderElectionReleaseOnCancel: true,
		LeaseDuration:                 &leaseDuration,
		RenewDeadline:                 &renewDeadline,
		RetryPeriod:                   &retryPeriod,
		GracefulShutdownTimeout:       &shutdown,
		WebhookServer:                 webhook.NewServer(webhook.Options{Host: webhookHost, Port: webhookPort, CertDir: webhookCertDir, TLSOpts: tlsOpts}),
	})
	if err != nil {
		log.Error(err, "create manager")
		os.Exit(1)
	}
	if err := wiring.Setup(mgr, opts); err != nil {
		log.Error(err, "set up operator")
		os.Exit(1)
	}
	log.Info("starting manager", "namespace", opts.Namespace, "configMap", opts.ConfigMapName, "defaultProfile", opts.DefaultProfile)
	if err := mgr.Start(ctrl.SetupSignalHandler()); err != nil {
		log.Error(err, "manager stopped")
		os.Exit(1)
	}
}

func metricsFilter(secure bool) func(*rest.Config, *http.Client) (metricsserver.Filter, error) {
	if !secure {
		return nil
	}
	return metricsauth.Filter
}
