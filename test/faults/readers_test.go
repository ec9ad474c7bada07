package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	rlsconfv3 "github.com/envoyproxy/go-control-plane/ratelimit/config/ratelimit/v3"

	"github.com/appquota/appquota/pkg/quotaconfig"
)

// TestWriteVersionIsAKubeletVolume: the reader's volume is laid out as the
// kubelet's atomic writer lays it out, so that the Watcher follows it: each
// key a symlink through ..data, the previous version's directory and keys
// gone after a swap.
func TestWriteVersionIsAKubeletVolume(t *testing.T) {
	dir := t.TempDir()
	doc := func(app string) map[string][]byte {
		data := []byte(`{"version":"` + quotaconfig.FormatVersion + `","defaultProfile":"default","profiles":{"default":{"fallback":[{"unit":"Requests","window":"Second","scope":"App","max":100}]}},` +
			`"apps":{"` + app + `":{"profile":"default"}}}`)
		return map[string][]byte{quotaconfig.DataKey: data, quotaconfig.HashKey: []byte(quotaconfig.Hash(data))}
	}
	first := doc("a1")
	first["extra.json"] = []byte("{}")
	if err := writeVersion(dir, "..v1", first, nil); err != nil {
		t.Fatal(err)
	}
	w, err := quotaconfig.NewWatcher(dir)
	if err != nil {
		t.Fatalf("the Watcher does not load the first version: %v", err)
	}
	if _, ok := w.Current().Document().Apps["a1"]; !ok {
		t.Fatalf("first version: apps %v, want a1", w.Current().Document().Apps)
	}
	second := doc("a2")
	if err := writeVersion(dir, "..v2", second, first); err != nil {
		t.Fatal(err)
	}
	if target, err := os.Readlink(filepath.Join(dir, quotaconfig.DataKey)); err != nil || target != filepath.Join("..data", quotaconfig.DataKey) {
		t.Errorf("%s links to %q (%v), want ..data/%s", quotaconfig.DataKey, target, err, quotaconfig.DataKey)
	}
	if target, err := os.Readlink(filepath.Join(dir, "..data")); err != nil || target != "..v2" {
		t.Errorf("..data links to %q (%v), want ..v2", target, err)
	}
	for _, gone := range []string{"..v1", "extra.json", "..data_tmp"} {
		if _, err := os.Lstat(filepath.Join(dir, gone)); !os.IsNotExist(err) {
			t.Errorf("%s is still there after the swap (%v)", gone, err)
		}
	}
	cfg, err := quotaconfig.LoadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := cfg.Document().Apps["a2"]; !ok {
		t.Errorf("second version: apps %v, want a2", cfg.Document().Apps)
	}
}

// TestDumpConfigMatchesRatelimit: dumpConfig writes a configuration as
// ratelimit's /rlconfig does (lines copied from ratelimit's dump), and
// diffLimits tells a missing limit from an extra one.
func TestDumpConfigMatchesRatelimit(t *testing.T) {
	cfg := &rlsconfv3.RateLimitConfig{Domain: "appquota", Descriptors: []*rlsconfv3.RateLimitDescriptor{{
		Key: "profile", Value: "default", Descriptors: []*rlsconfv3.RateLimitDescriptor{{
			Key: "group", Value: "g", Descriptors: []*rlsconfv3.RateLimitDescriptor{{
				Key: "limit", Value: "requests-second", Descriptors: []*rlsconfv3.RateLimitDescriptor{
					{Key: "app", RateLimit: &rlsconfv3.RateLimitPolicy{Unit: rlsconfv3.RateLimitUnit_SECOND, RequestsPerUnit: 100}},
					{Key: "app", Value: "7", RateLimit: &rlsconfv3.RateLimitPolicy{Unit: rlsconfv3.RateLimitUnit_SECOND, RequestsPerUnit: 500}},
				},
			}},
		}},
	}}}
	dump := "appquota.profile_default.group_g.limit_requests-second.app_7: unit=SECOND requests_per_unit=500, shadow_mode: false, quota_mode: false\n" +
		"appquota.profile_default.group_g.limit_requests-second.app: unit=SECOND requests_per_unit=100, shadow_mode: false, quota_mode: false\n"
	if err := diffLimits(parseDump(dump), dumpConfig(cfg)); err != nil {
		t.Errorf("equal configurations: %v", err)
	}
	changed := strings.Replace(dump, "=500", "=600", 1)
	err := diffLimits(parseDump(changed), dumpConfig(cfg))
	if err == nil || !strings.Contains(err.Error(), "1 limits missing") || !strings.Contains(err.Error(), "1 not in the render") {
		t.Errorf("a changed limit: %v, want one missing and one extra", err)
	}
}

// TestReadersCheck: a reader that loaded a document no version fed to it
// holds, or one stored under an index no manager logged writing, fails the
// check; one that loaded only written versions passes.
func TestReadersCheck(t *testing.T) {
	h := &harness{hashes: map[string]bool{"sha256:written": true}}
	r := &reader{name: "gateway-0"}
	rs := &readers{h: h, list: []*reader{r}, fed: map[string]string{"doc-a": "sha256:written", "doc-b": "sha256:foreign"}}
	r.loaded = []string{"doc-a"}
	if err := rs.check(); err != nil {
		t.Errorf("a written version: %v", err)
	}
	r.loaded = []string{"doc-a", "doc-b"}
	if err := rs.check(); err == nil || !strings.Contains(err.Error(), "no manager logged writing") {
		t.Errorf("a version under an index no manager wrote: %v, want an error", err)
	}
	r.loaded = []string{"doc-a", "doc-c"}
	if err := rs.check(); err == nil || !strings.Contains(err.Error(), "no version of its volume holds") {
		t.Errorf("a document never fed: %v, want an error", err)
	}
}
