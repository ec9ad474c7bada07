package ratelimit_test

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	rlsconfv3 "github.com/envoyproxy/go-control-plane/ratelimit/config/ratelimit/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"sigs.k8s.io/yaml"

	"github.com/appquota/appquota/internal/ratelimit"
	qc "github.com/appquota/appquota/pkg/quotaconfig"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

// goldenNow is before the samples' temporary raise expires (2027-01-31), so
// the goldens show it.
var goldenNow = time.Date(2026, 7, 1, 0, 0, 0, 0, time.UTC)

// loadDoc reads a testdata document. samples.document.json is
// `go run ./cmd/kubectl-appquota render -f config/catalog -f config/samples` byte for byte, so
// these tests do not depend on the render package, and comparing the two
// shows when it is stale.
func loadDoc(tb testing.TB, name string) *qc.Document {
	tb.Helper()
	data, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		tb.Fatal(err)
	}
	d, err := qc.Parse(data)
	if err != nil {
		tb.Fatalf("parse %s: %v", name, err)
	}
	return d
}

// TestGolden renders each testdata document as ratelimit's file and as Envoy
// routes; go test -run TestGolden -update rewrites the goldens, to be reviewed
// in the diff.
func TestGolden(t *testing.T) {
	for _, name := range []string{"samples", "profiles"} {
		t.Run(name, func(t *testing.T) {
			doc := loadDoc(t, name+".document.json")
			opts := ratelimit.Options{Now: goldenNow}
			cfg, err := ratelimit.Translate(doc, opts)
			if err != nil {
				t.Fatal(err)
			}
			y, err := ratelimit.YAML(cfg)
			if err != nil {
				t.Fatal(err)
			}
			golden(t, name+".ratelimit.yaml.golden", y)

			routes, err := ratelimit.EnvoyActions(doc, opts)
			if err != nil {
				t.Fatal(err)
			}
			ey, err := ratelimit.EnvoyYAML(routes, opts)
			if err != nil {
				t.Fatal(err)
			}
			golden(t, name+".envoy.yaml.golden", ey)
			checkEnvoyYAML(t, ey, routes, opts)
		})
	}
}

// checkEnvoyYAML reads the printed routes back as Envoy does (YAML to JSON to
// proto) and compares them with the protos.
func checkEnvoyYAML(t *testing.T, y []byte, routes []ratelimit.EnvoyRoute, opts ratelimit.Options) {
	t.Helper()
	js, err := yaml.YAMLToJSON(y)
	if err != nil {
		t.Fatal(err)
	}
	var list []json.RawMessage
	if err := json.Unmarshal(js, &list); err != nil {
		t.Fatal(err)
	}
	if len(list) != len(routes) {
		t.Fatalf("%d routes printed, %d rendered", len(list), len(routes))
	}
	for i, raw := range list {
		var got routev3.Route
		if err := protojson.Unmarshal(raw, &got); err != nil {
			t.Fatalf("route %d: %v", i, err)
		}
		want, err := routes[i].Route(opts)
		if err != nil {
			t.Fatal(err)
		}
		if !proto.Equal(&got, want) {
			t.Errorf("route %d (%s) reads back differently", i, want.Name)
		}
	}
}

func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs from the rendering (go test -update rewrites it):\n%s", name, firstDiff(string(want), string(got)))
	}
}

func firstDiff(want, got string) string {
	w, g := strings.Split(want, "\n"), strings.Split(got, "\n")
	for i := range max(len(w), len(g)) {
		var wl, gl string
		if i < len(w) {
			wl = w[i]
		}
		if i < len(g) {
			gl = g[i]
		}
		if wl != gl {
			return "line " + strconv.Itoa(i+1) + ":\n  want: " + wl + "\n  got:  " + gl
		}
	}
	return "(same lines)"
}

// TestDeterministic: the same document gives the same bytes, though Go
// randomizes map order, and a copy of it rebuilt in another order too.
func TestDeterministic(t *testing.T) {
	opts := ratelimit.Options{Now: goldenNow}
	var first []byte
	for i := range 5 {
		doc := loadDoc(t, "profiles.document.json")
		if i%2 == 1 {
			// The same document in another order: the translator sorts.
			for name, p := range doc.Profiles {
				slices.Reverse(p.Groups)
				for _, g := range p.Groups {
					slices.Reverse(g.Routes)
					slices.Reverse(g.Limits)
				}
				doc.Profiles[name] = p
			}
		}
		cfg, err := ratelimit.Translate(doc, opts)
		if err != nil {
			t.Fatal(err)
		}
		b, err := proto.MarshalOptions{Deterministic: true}.Marshal(cfg)
		if err != nil {
			t.Fatal(err)
		}
		routes, err := ratelimit.EnvoyActions(doc, opts)
		if err != nil {
			t.Fatal(err)
		}
		ey, err := ratelimit.EnvoyYAML(routes, opts)
		if err != nil {
			t.Fatal(err)
		}
		b = append(b, ey...)
		if first == nil {
			first = b
		} else if !bytes.Equal(b, first) {
			t.Fatalf("run %d: %d bytes differ from run 0's %d", i, len(b), len(first))
		}
	}
}

// TestOptions checks the domain, the expiry of overrides at Now, shadow mode
// and what Translate refuses.
func TestOptions(t *testing.T) {
	doc := loadDoc(t, "profiles.document.json")

	cfg, err := ratelimit.Translate(doc, ratelimit.Options{Now: goldenNow})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Domain != ratelimit.DefaultDomain || cfg.Name != ratelimit.DefaultDomain {
		t.Errorf("domain %q, name %q, want %q", cfg.Domain, cfg.Name, ratelimit.DefaultDomain)
	}
	temporary := []qc.Entry{{Key: "profile", Value: "default"}, {Key: "group", Value: "messages-broadcast-users"},
		{Key: "limit", Value: "requests-day"}, {Key: "app", Value: "5566778899"}}
	if p := lookup(t, cfg, temporary); p == nil || p.RequestsPerUnit != 500 {
		t.Errorf("before expiry: temporary raise = %v, want 500/day", p)
	}

	cfg, err = ratelimit.Translate(doc, ratelimit.Options{Domain: "im", Now: time.Date(2027, 1, 31, 0, 0, 0, 0, time.UTC), ShadowMode: true})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Domain != "im" {
		t.Errorf("domain %q, want im", cfg.Domain)
	}
	if p := lookup(t, cfg, temporary); p == nil || p.RequestsPerUnit != 50 {
		t.Errorf("at expiry: temporary raise = %v, want the profile's 50/day", p)
	}
	walk(cfg.Descriptors, func(d *rlsconfv3.RateLimitDescriptor) {
		if d.RateLimit != nil && !d.ShadowMode {
			t.Errorf("descriptor %s=%s has a limit without shadow_mode", d.Key, d.Value)
		}
	})

	sharded := loadDoc(t, "profiles.document.json")
	sharded.Shards = []qc.ShardRef{{ConfigMap: "x-shard-0", Key: "limits-0-of-2.json.gz", Hash: "sha256:00", Apps: 1}}
	if _, err := ratelimit.Translate(sharded, ratelimit.Options{}); err == nil {
		t.Error("Translate of a sharded index: no error")
	}
	bad := loadDoc(t, "profiles.document.json")
	bad.Version = "v0"
	if _, err := ratelimit.Translate(bad, ratelimit.Options{}); err == nil || !strings.HasPrefix(err.Error(), "validate document: ") {
		t.Errorf("Translate of an invalid document: %v, want a validation error", err)
	}
	wild := loadDoc(t, "profiles.document.json")
	wild.Apps["11*"] = wild.Apps["1122334455"]
	if _, err := ratelimit.Translate(wild, ratelimit.Options{}); err == nil || !strings.Contains(err.Error(), "wildcard") {
		t.Errorf("Translate of an app ID ending in '*': %v, want an error", err)
	}
	huge := loadDoc(t, "profiles.document.json")
	a := huge.Apps["1122334455"]
	a.Overrides[0].Limits[0].Max = 1 << 33
	if _, err := ratelimit.Translate(huge, ratelimit.Options{}); err == nil || !strings.Contains(err.Error(), "requests_per_unit") {
		t.Errorf("Translate of a max beyond uint32: %v, want an error", err)
	}
}

func walk(ds []*rlsconfv3.RateLimitDescriptor, f func(*rlsconfv3.RateLimitDescriptor)) {
	for _, d := range ds {
		f(d)
		walk(d.Descriptors, f)
	}
}

// TestYAMLLoads reads the YAML back the way ratelimit's loader does: every key
// must be one it knows (config_impl.go's validKeys), and the fields it fills
// (its YamlRoot) must give back the configuration.
func TestYAMLLoads(t *testing.T) {
	for _, name := range []string{"samples", "profiles"} {
		doc := loadDoc(t, name+".document.json")
		cfg, err := ratelimit.Translate(doc, ratelimit.Options{Now: goldenNow, ShadowMode: name == "profiles"})
		if err != nil {
			t.Fatal(err)
		}
		y, err := ratelimit.YAML(cfg)
		if err != nil {
			t.Fatal(err)
		}
		var generic map[string]any
		if err := yaml.Unmarshal(y, &generic); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		checkKeys(t, generic)
		var root yamlRoot
		if err := yaml.UnmarshalStrict(y, &root); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		back := &rlsconfv3.RateLimitConfig{Name: root.Domain, Domain: root.Domain, Descriptors: root.proto(t)}
		if !proto.Equal(back, cfg) {
			t.Errorf("%s: the YAML read back is not the configuration", name)
		}
	}
}

// validKeys is ratelimit's list (src/config/config_impl.go): its loader
// refuses a file with any other key.
var validKeys = map[string]bool{
	"domain": true, "key": true, "value": true, "descriptors": true, "rate_limit": true, "unit": true,
	"requests_per_unit": true, "unlimited": true, "shadow_mode": true, "quota_mode": true, "name": true,
	"replaces": true, "detailed_metric": true, "value_to_metric": true, "share_threshold": true,
}

func checkKeys(t *testing.T, v any) {
	switch v := v.(type) {
	case map[string]any:
		for k, e := range v {
			if !validKeys[k] {
				t.Errorf("key %q is not one ratelimit knows", k)
			}
			checkKeys(t, e)
		}
	case []any:
		for _, e := range v {
			checkKeys(t, e)
		}
	}
}

// yamlRoot mirrors ratelimit's YamlRoot, YamlDescriptor and YamlRateLimit.
type yamlRoot struct {
	Domain      string           `json:"domain"`
	Descriptors []yamlDescriptor `json:"descriptors"`
}

type yamlDescriptor struct {
	Key            string           `json:"key"`
	Value          string           `json:"value"`
	RateLimit      *yamlRateLimit   `json:"rate_limit"`
	Descriptors    []yamlDescriptor `json:"descriptors"`
	ShadowMode     bool             `json:"shadow_mode"`
	DetailedMetric bool             `json:"detailed_metric"`
}

type yamlRateLimit struct {
	RequestsPerUnit uint32 `json:"requests_per_unit"`
	Unit            string `json:"unit"`
	Unlimited       bool   `json:"unlimited"`
	Name            string `json:"name"`
	Replaces        []struct {
		Name string `json:"name"`
	} `json:"replaces"`
}

func (r yamlRoot) proto(t *testing.T) []*rlsconfv3.RateLimitDescriptor {
	var conv func([]yamlDescriptor) []*rlsconfv3.RateLimitDescriptor
	conv = func(ds []yamlDescriptor) []*rlsconfv3.RateLimitDescriptor {
		out := make([]*rlsconfv3.RateLimitDescriptor, 0, len(ds))
		for _, d := range ds {
			pd := &rlsconfv3.RateLimitDescriptor{Key: d.Key, Value: d.Value, ShadowMode: d.ShadowMode,
				DetailedMetric: d.DetailedMetric, Descriptors: conv(d.Descriptors)}
			if rl := d.RateLimit; rl != nil {
				// The loader upper-cases the unit and looks it up.
				unit, ok := rlsconfv3.RateLimitUnit_value[strings.ToUpper(rl.Unit)]
				if !ok && !rl.Unlimited {
					t.Errorf("unit %q is not one ratelimit knows", rl.Unit)
				}
				pd.RateLimit = &rlsconfv3.RateLimitPolicy{Unit: rlsconfv3.RateLimitUnit(unit),
					RequestsPerUnit: rl.RequestsPerUnit, Unlimited: rl.Unlimited, Name: rl.Name}
			}
			out = append(out, pd)
		}
		return out
	}
	return conv(r.Descriptors)
}
