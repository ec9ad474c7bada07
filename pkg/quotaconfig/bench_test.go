package quotaconfig_test

import (
	"encoding/json"
	"math/rand/v2"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/time/rate"

	qc "github.com/appquota/appquota/pkg/quotaconfig"
)

// instantiate fills a template's parameters: {app_id} with appID, any other
// {name} with "v-name".
func instantiate(template, appID string) string {
	var b strings.Builder
	for _, seg := range strings.Split(template, "/")[1:] {
		b.WriteByte('/')
		switch {
		case seg == "{app_id}":
			b.WriteString(appID)
		case strings.HasPrefix(seg, "{"):
			b.WriteString("v-" + strings.Trim(seg, "{}"))
		default:
			b.WriteString(seg)
		}
	}
	return b.String()
}

const benchApps = 100_000

// benchDoc is the default catalog with 100,000 apps, each overriding one group
// (groups in turn), every tenth override expiring in a day: the size of the
// document a large cluster would hand its gateways.
func benchDoc(b *testing.B) *qc.Document {
	d := catalogDoc(b)
	groups := d.Profiles["default"].Groups
	expires := time.Now().Add(24 * time.Hour).UTC()
	d.Apps = make(map[string]qc.App, benchApps)
	for i := range benchApps {
		g := &groups[i%len(groups)]
		l := g.Limits[0]
		l.Max *= 2
		o := qc.Override{Group: g.Name, Limits: []qc.Limit{l}, Reason: "SALES-" + strconv.Itoa(i)}
		if i%10 == 0 {
			o.ExpiresAt = &expires
		}
		d.Apps[appID(i)] = qc.App{Profile: "default", Overrides: []qc.Override{o}, Source: "tenants/app-" + strconv.Itoa(i)}
	}
	return d
}

func appID(i int) string { return strconv.Itoa(1_100_000_000 + i) }

type call struct{ app, method, path string }

// benchCalls is a rotating mix of realistic calls: mostly catalog routes with
// parameters filled in, a quarter of them to the caller's overridden group (a
// tenth of which carry an expiry, so the clock is read), some with a query
// string or a trailing '/', a few unknown apps and a few unclaimed routes.
func benchCalls(d *qc.Document, n int) []call {
	groups := d.Profiles["default"].Groups
	rng := rand.New(rand.NewPCG(1, 2))
	calls := make([]call, n)
	for i := range calls {
		n := rng.IntN(benchApps)
		id := appID(n)
		if rng.IntN(50) == 0 {
			id = "9" + id // no AppQuota: the default profile
		}
		g := &groups[rng.IntN(len(groups))]
		if rng.IntN(4) == 0 {
			g = &groups[n%len(groups)]
		}
		r := g.Routes[rng.IntN(len(g.Routes))]
		c := call{app: id, method: r.Method, path: instantiate(r.Path, id)}
		switch rng.IntN(20) {
		case 0:
			c.path += "?limit=10&cursor=abc"
		case 1:
			c.path += "/"
		case 2:
			c.path = "/app-id/" + id + "/not/a/route"
		}
		calls[i] = c
	}
	return calls
}

// BenchmarkResolve resolves a rotating set of 4,096 calls: the apps they name
// stay mostly in cache, as a gateway's busiest apps would.
func BenchmarkResolve(b *testing.B) { benchResolve(b, 1<<12) }

// BenchmarkResolveColdApps resolves 65,536 calls spread over all 100,000 apps,
// so nearly every call's app data comes from memory: the long tail of tenants.
func BenchmarkResolveColdApps(b *testing.B) { benchResolve(b, 1<<16) }

func benchResolve(b *testing.B, ncalls int) {
	d := benchDoc(b)
	calls := benchCalls(d, ncalls)
	start := time.Now()
	cfg, err := qc.Compile(d)
	if err != nil {
		b.Fatal(err)
	}
	b.Logf("Compile (validate + compile, %d apps): %v", len(d.Apps), time.Since(start))
	b.ReportAllocs()
	b.ResetTimer()
	var sink qc.Result
	for i := 0; b.Loop(); i++ {
		c := &calls[i&(len(calls)-1)]
		sink = cfg.Resolve(c.app, c.method, c.path)
	}
	_ = sink
}

// BenchmarkLoad measures what a Watcher reload costs on the document of
// BenchmarkResolve: parse, validate and compile.
func BenchmarkLoad(b *testing.B) {
	data, err := json.Marshal(benchDoc(b))
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		if _, err := qc.Load(data); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkRateLimiterAllow is a yardstick: one token-bucket check, which a
// gateway does at least once per call after Resolve.
func BenchmarkRateLimiterAllow(b *testing.B) {
	l := rate.NewLimiter(rate.Limit(100), 100)
	b.ReportAllocs()
	var sink bool
	for b.Loop() {
		sink = l.Allow()
	}
	_ = sink
}
