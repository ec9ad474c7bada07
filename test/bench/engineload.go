package main

import (
	"context"
	"fmt"
	"strings"
	"time"

	rlsconfv3 "github.com/envoyproxy/go-control-plane/ratelimit/config/ratelimit/v3"

	"github.com/appquota/appquota/internal/engine"
	"github.com/appquota/appquota/internal/xds"
	qc "github.com/appquota/appquota/pkg/quotaconfig"
)

// The engine version rows' notes.
const (
	noteXDSSize = "The xDS message: the DiscoveryResponse that carries the configuration translated " +
		"(ratelimit.Translate) from the document of that many apps with one override each, rendered offline " +
		"as the controller renders it, as internal/xds sizes it against the instances' limit; against gRPC's " +
		"default limit, which ratelimit keeps unless XDS_CLIENT_MAX_MSG_SIZE_IN_BYTES raises it."
	noteVersion = "One version: a configuration of that many apps (one app's limit changed from the version before) " +
		"published by an xDS server of the operator's package (internal/xds) in the bench's process, from " +
		"Publish to ratelimit's acknowledgement, which it sends once it has loaded the whole configuration; " +
		"the median of the versions. Baseline: the same for a one-rule configuration. Run after the manager " +
		"and the control plane stopped, one ratelimit instance connected."
	noteVersionCP = "ratelimit's CPU time (user and system, /proc) per version, the median of the versions: each version " +
		"is a full reload, whatever changed."
	noteEngineRSS = "ratelimit's resident memory with that configuration loaded, after its versions."
	noteDelivered = "Delivered: a ratelimit instance at its default message limit (4 MiB) acknowledged the configuration " +
		"of every app, and its /rlconfig lists a limit for each bench app."
)

// oneRuleMax is the one-rule configuration's limit: no call reaches it.
const oneRuleMax = 1 << 30

// oneRule is a configuration of one rule that every app-scoped descriptor
// (profile, group, limit, app) matches: key-only entries down to the app.
func oneRule(domain string) *rlsconfv3.RateLimitConfig {
	d := &rlsconfv3.RateLimitDescriptor{Key: qc.DescriptorApp,
		RateLimit: &rlsconfv3.RateLimitPolicy{Unit: rlsconfv3.RateLimitUnit_HOUR, RequestsPerUnit: oneRuleMax}}
	for _, key := range []string{qc.DescriptorLimit, qc.DescriptorGroup, qc.DescriptorProfile} {
		d = &rlsconfv3.RateLimitDescriptor{Key: key, Descriptors: []*rlsconfv3.RateLimitDescriptor{d}}
	}
	return &rlsconfv3.RateLimitConfig{Name: domain, Domain: domain, Descriptors: []*rlsconfv3.RateLimitDescriptor{d}}
}

// engineOffline runs the engine rows that need no cluster, after it stopped:
// the xDS message size, what a version costs the engine, and
// ShouldRateLimit's latency and throughput.
func (b *bench) engineOffline(ctx context.Context, rep *Report) error {
	if b.cfg.SkipEngine != "" {
		return nil
	}
	sizes := []int{b.cfg.Apps}
	if b.cfg.BigApps > b.cfg.Apps {
		sizes = append(sizes, b.cfg.BigApps)
	}
	fmt.Fprintf(b.log, "engine: versions at %v apps, then ShouldRateLimit\n", sizes)
	procs, err := startRedis(ctx)
	if err != nil {
		return err
	}
	defer func() {
		if err := procs.stop(); err != nil {
			fmt.Fprintf(b.log, "the engine's processes ended badly: %v\n", err)
		}
	}()
	f, err := startFeed(ctx)
	if err != nil {
		return err
	}
	defer func() {
		if err := f.stop(); err != nil {
			fmt.Fprintf(b.log, "the xDS feed ended badly: %v\n", err)
		}
	}()
	domain := b.opts.RateLimitDomain
	one := oneRule(domain)
	if _, err := f.publish(ctx, one, 0); err != nil {
		return err
	}
	rl, err := procs.ratelimit(ctx, f.addr, "bench-1", domain)
	if err != nil {
		return err
	}
	versions := min(max(3, b.cfg.Samples/40), 5)
	baseline, _, err := versionCosts(ctx, f, rl, versions, func(int) (*rlsconfv3.RateLimitConfig, error) { return one, nil })
	if err != nil {
		return err
	}
	var doc *qc.Document
	var cfg *rlsconfv3.RateLimitConfig
	var perVersion []string
	for _, n := range sizes {
		if doc, err = b.offlineDocument(n); err != nil {
			return err
		}
		if cfg, err = b.translate(doc); err != nil {
			return err
		}
		size, err := responseSize(xds.FormatVersion(1, strings.Repeat("0", 16)), cfg)
		if err != nil {
			return err
		}
		if n == sizes[len(sizes)-1] && size > xds.DefaultMaxMessageBytes {
			return fmt.Errorf("the configuration of %d apps is a %d-byte xDS message, over ratelimit's default limit of %d",
				n, size, xds.DefaultMaxMessageBytes)
		}
		took, cpu, err := versionCosts(ctx, f, rl, versions, func(v int) (*rlsconfv3.RateLimitConfig, error) {
			return b.translate(withMax(doc, appID(v%n), int64(9_000_000+v)))
		})
		if err != nil {
			return fmt.Errorf("engine versions at %d apps: %w", n, err)
		}
		rss, _, err := procRSS(rl.PID())
		if err != nil {
			return err
		}
		t50, c50 := quantile(took, 0.5), quantile(cpu, 0.5)
		perVersion = append(perVersion, fmt.Sprintf("%s at %d apps (%s of ratelimit's CPU)", ms(t50), n, ms(c50)))
		big := n == sizes[len(sizes)-1]
		sizeRow := Row{Name: fmt.Sprintf("xDS message, %d apps", n), Notes: []string{noteXDSSize}, Measured: fmt.Sprintf("%.2f MB", float64(size)/1e6),
			Baseline: "4 MiB (gRPC default)", Ratio: fmt.Sprintf("%.2fx", float64(size)/float64(xds.DefaultMaxMessageBytes))}
		if big {
			sizeRow.Target, sizeRow.Met = "≤ 4 MiB", met(size <= xds.DefaultMaxMessageBytes)
		}
		b50 := quantile(baseline, 0.5)
		rep.add(sizeRow,
			Row{Name: fmt.Sprintf("Engine: one version, %d apps, p50", n), Notes: []string{noteVersion}, Measured: ms(t50),
				Baseline: "one rule " + ms(b50), Ratio: fmt.Sprintf("%.0fx", over(t50, b50))},
			Row{Name: fmt.Sprintf("Engine: CPU per version, %d apps", n), Notes: []string{noteVersionCP}, Measured: ms(c50)},
			Row{Name: fmt.Sprintf("Engine: ratelimit RSS, %d apps", n), Notes: []string{noteEngineRSS},
				Measured: fmt.Sprintf("%.0f MiB", float64(rss)/(1<<20))},
		)
		if big {
			loaded, err := loadedApps(ctx, rl)
			if err != nil {
				return err
			}
			rep.add(Row{Name: fmt.Sprintf("Delivered to ratelimit, %d apps", n), Notes: []string{noteDelivered},
				Measured: fmt.Sprintf("%d of %d apps' limits loaded", loaded, n), Target: "every app", Met: met(loaded == n)})
		}
	}
	rep.Notes = append(rep.Notes, fmt.Sprintf("Versions during a bulk load: the render loop writes the ConfigMaps at most once "+
		"per --min-write-interval (%s), and hands each write's document to the engine as one xDS version (none when nothing "+
		"the engine sees changed). Each version is a full reload for every ratelimit instance: %s. An instance busy loading "+
		"answers the next version only after it acknowledged the one before, and the xDS server then sends the latest: "+
		"the versions published meanwhile are skipped, not queued.",
		b.opts.MinWriteInterval, strings.Join(perVersion, ", ")))
	return b.shouldRateLimit(ctx, rep, procs, f, rl, doc, cfg, one)
}

// versionCosts publishes versions configurations (config(v)) one after the
// other and returns, for each, the time to rl's acknowledgement and rl's CPU
// time meanwhile.
func versionCosts(ctx context.Context, f *feed, rl *engine.Ratelimit, versions int,
	config func(int) (*rlsconfv3.RateLimitConfig, error)) (took, cpu []time.Duration, err error) {
	for v := range versions {
		cfg, err := config(v)
		if err != nil {
			return nil, nil, err
		}
		before, err := cpuTime(rl.PID())
		if err != nil {
			return nil, nil, err
		}
		d, err := f.publish(ctx, cfg, 1)
		if err != nil {
			return nil, nil, err
		}
		after, err := cpuTime(rl.PID())
		if err != nil {
			return nil, nil, err
		}
		took, cpu = append(took, d), append(cpu, after-before)
	}
	return took, cpu, nil
}

// loadedApps counts the bench apps with a limit in what rl has loaded
// (/rlconfig: one line per limit, its entries as key_value).
func loadedApps(ctx context.Context, rl *engine.Ratelimit) (int, error) {
	dump, err := rl.LoadedConfig(ctx)
	if err != nil {
		return 0, err
	}
	n := 0
	for line := range strings.Lines(dump) {
		if strings.Contains(line, "."+qc.DescriptorApp+"_bench-") {
			n++
		}
	}
	return n, nil
}
