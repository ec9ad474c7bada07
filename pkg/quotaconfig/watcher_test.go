package quotaconfig_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/appquota/appquota/internal/layout"

	qc "github.com/appquota/appquota/pkg/quotaconfig"
)

// kubelet mimics how the kubelet updates a mounted ConfigMap: files go into a
// new timestamped directory, ..data is swapped to it atomically, the old
// directory is removed; the key files are symlinks through ..data.
type kubelet struct {
	t   *testing.T
	dir string
	n   int
	cur string
}

func newKubelet(t *testing.T, files map[string]string) *kubelet {
	k := &kubelet{t: t, dir: t.TempDir()}
	k.update(files)
	for name := range files {
		if err := os.Symlink(filepath.Join("..data", name), filepath.Join(k.dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	return k
}

func (k *kubelet) update(files map[string]string) {
	k.t.Helper()
	k.n++
	ts := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).Add(time.Duration(k.n)*time.Second).Format("..2006_01_02_15_04_05.") + "1"
	if err := os.Mkdir(filepath.Join(k.dir, ts), 0o755); err != nil {
		k.t.Fatal(err)
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(k.dir, ts, name), []byte(content), 0o644); err != nil {
			k.t.Fatal(err)
		}
	}
	tmp := filepath.Join(k.dir, "..data_tmp")
	if err := os.Symlink(ts, tmp); err != nil {
		k.t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(k.dir, "..data")); err != nil {
		k.t.Fatal(err)
	}
	if k.cur != "" {
		if err := os.RemoveAll(filepath.Join(k.dir, k.cur)); err != nil {
			k.t.Fatal(err)
		}
	}
	k.cur = ts
}

// configMap returns the files of a ConfigMap holding a document whose fallback
// allows max calls per second, with a correct hash.
func configMap(t *testing.T, max int64) map[string]string {
	d := resolveDoc()
	p := d.Profiles["default"]
	p.Fallback = []qc.Limit{lim("Requests", "Second", "App", max)}
	d.Profiles["default"] = p
	return withHash(mustJSON(t, d))
}

func withHash(data []byte) map[string]string {
	sum := sha256.Sum256(data)
	return map[string]string{qc.DataKey: string(data), qc.HashKey: "sha256:" + hex.EncodeToString(sum[:]) + "\n"}
}

func fallbackMax(c *qc.Config) int64 {
	return c.Resolve("plain", "GET", "/nowhere").Limits[0].Max
}

// eventually waits up to 10 s for cond, checking every 10 ms.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

type recorder struct {
	mu      sync.Mutex
	errs    []error
	reloads []*qc.Config
}

func (r *recorder) onError(err error) { r.mu.Lock(); r.errs = append(r.errs, err); r.mu.Unlock() }
func (r *recorder) onReload(c *qc.Config) {
	r.mu.Lock()
	r.reloads = append(r.reloads, c)
	r.mu.Unlock()
}
func (r *recorder) counts() (errs, reloads int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.errs), len(r.reloads)
}
func (r *recorder) lastErr() error { r.mu.Lock(); defer r.mu.Unlock(); return r.errs[len(r.errs)-1] }

func TestWatcher(t *testing.T) {
	k := newKubelet(t, configMap(t, 100))
	rec := &recorder{}
	w, err := qc.NewWatcher(k.dir, qc.WithOnError(rec.onError), qc.WithOnReload(rec.onReload))
	if err != nil {
		t.Fatal(err)
	}
	if got := fallbackMax(w.Current()); got != 100 {
		t.Fatalf("initial fallback = %d, want 100", got)
	}

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()

	// A new version is picked up.
	k.update(configMap(t, 200))
	eventually(t, "the new config", func() bool { return fallbackMax(w.Current()) == 200 })
	eventually(t, "OnReload", func() bool { _, n := rec.counts(); return n == 1 })
	good := w.Current()

	// An invalid document is refused and reported; the last good one stays.
	bad := resolveDoc()
	bad.Apps["raise"].Overrides[0].Group = "no-such-group"
	k.update(withHash(mustJSON(t, bad)))
	eventually(t, "OnError for the invalid document", func() bool { n, _ := rec.counts(); return n == 1 })
	if err := rec.lastErr(); !strings.Contains(err.Error(), `apps["raise"].overrides[0].group: "no-such-group" is not a group of profile "default"`) {
		t.Errorf("OnError got %v", err)
	}
	if w.Current() != good {
		t.Error("the invalid document replaced the config")
	}

	// A document that does not match its hash is refused too.
	files := configMap(t, 300)
	files[qc.HashKey] = "sha256:" + strings.Repeat("0", 64)
	k.update(files)
	eventually(t, "OnError for the hash mismatch", func() bool { n, _ := rec.counts(); return n == 2 })
	if err := rec.lastErr(); !strings.Contains(err.Error(), `limits.sha256 is "sha256:0000`) {
		t.Errorf("OnError got %v", err)
	}
	if w.Current() != good {
		t.Error("the mismatched document replaced the config")
	}

	// The same document with a correct hash loads: a refusal is for the pair.
	k.update(configMap(t, 300))
	eventually(t, "recovery", func() bool { return fallbackMax(w.Current()) == 300 })
	if errs, reloads := rec.counts(); errs != 2 || reloads != 2 {
		t.Errorf("OnError called %d times, OnReload %d times; want 2 and 2", errs, reloads)
	}
}

// TestWatcherChangeBeforeRun checks that a change between NewWatcher and Run,
// which no watch saw, is still picked up.
func TestWatcherChangeBeforeRun(t *testing.T) {
	k := newKubelet(t, configMap(t, 100))
	w, err := qc.NewWatcher(k.dir)
	if err != nil {
		t.Fatal(err)
	}
	k.update(configMap(t, 200))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	eventually(t, "the new config", func() bool { return fallbackMax(w.Current()) == 200 })
	if err := w.Run(ctx); err == nil || !strings.Contains(err.Error(), "already running") {
		t.Errorf("second Run: %v, want an error", err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run: %v", err)
	}
}

func TestNewWatcherFails(t *testing.T) {
	invalid := resolveDoc()
	invalid.Version = "v0"
	mismatch := configMap(t, 100)
	mismatch[qc.HashKey] = "sha256:abc"
	noHash := configMap(t, 100)
	delete(noHash, qc.HashKey)
	withoutShard := func(files map[string]string, key string) map[string]string { delete(files, key); return files }

	tests := []struct {
		name  string
		files map[string]string
		want  string // substring of the error; "" for success
	}{
		{"valid without a hash file", noHash, ""},
		{"invalid document", withHash(mustJSON(t, invalid)), `limits.json: version: "v0" is not "quota.appquota.io/v1"`},
		{"hash mismatch", mismatch, `limits.sha256 is "sha256:abc" but`},
		{"no document", map[string]string{"other": "x"}, "limits.json: no such file or directory"},
		{"sharded", mountedShards(t, shardedDoc(20), 2), ""},
		{"a shard missing", withoutShard(mountedShards(t, shardedDoc(20), 2), layout.ShardKey(1, 2)), "shard 1 (ConfigMap appquota-limits-shard-1, key limits-1-of-2.json.gz): not in "},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k := newKubelet(t, tt.files)
			w, err := qc.NewWatcher(k.dir)
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("NewWatcher: %v", err)
			case tt.want == "" && w.Current() == nil:
				t.Fatal("Current is nil")
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Fatalf("NewWatcher error %v, want one containing %q", err, tt.want)
			}
		})
	}
}

// link adds the top-level symlink for a key that a later version introduced.
func (k *kubelet) link(name string) {
	k.t.Helper()
	if err := os.Symlink(filepath.Join("..data", name), filepath.Join(k.dir, name)); err != nil {
		k.t.Fatal(err)
	}
}

// unlink removes the top-level symlink of a key the ConfigMap no longer has.
func (k *kubelet) unlink(name string) {
	k.t.Helper()
	if err := os.Remove(filepath.Join(k.dir, name)); err != nil {
		k.t.Fatal(err)
	}
}

// shardedFallback is shardedDoc(200) with a fallback of max calls per second.
func shardedFallback(max int64) *qc.Document {
	d := shardedDoc(200)
	p := d.Profiles["default"]
	p.Fallback = []qc.Limit{lim("Requests", "Second", "App", max)}
	d.Profiles["default"] = p
	return d
}

// mountedShards returns the files of a projected volume mounting the index of d
// split in n and its n shard ConfigMaps.
func mountedShards(t *testing.T, d *qc.Document, n int) map[string]string {
	t.Helper()
	index, shards, err := layout.Split(d, n, func(i int) string { return fmt.Sprintf("appquota-limits-shard-%d", i) })
	if err != nil {
		t.Fatal(err)
	}
	files := withHash(index)
	for i, gz := range shards {
		files[layout.ShardKey(i, n)] = string(gz)
	}
	return files
}

// relink makes the top-level links match the keys of files, as the kubelet does
// after a swap.
func (k *kubelet) relink(old, files map[string]string) {
	k.t.Helper()
	for name := range files {
		if _, ok := old[name]; !ok {
			k.link(name)
		}
	}
	for name := range old {
		if _, ok := files[name]; !ok {
			k.unlink(name)
		}
	}
}

// assembled checks that c holds every app of shardedDoc(200), not just the index.
func assembled(t *testing.T, c *qc.Config) {
	t.Helper()
	if n := len(c.Document().Apps); n != len(shardedDoc(200).Apps) {
		t.Errorf("the config has %d apps, want %d", n, len(shardedDoc(200).Apps))
	}
	if r := c.Resolve("app-00042", "POST", "/app-id/x/messages/users"); r.Override == nil || r.Limits[0].Max != 142 {
		t.Errorf("app-00042 resolves to %+v, want its override", r)
	}
}

// TestWatcherSharded follows a projected volume holding an index and its
// shards: a new shard count, a missing shard, a shard not matching the index,
// and switches to and from the unsharded layout.
func TestWatcherSharded(t *testing.T) {
	files := mountedShards(t, shardedFallback(100), 2)
	k := newKubelet(t, files)
	update := func(next map[string]string) {
		t.Helper()
		k.update(next)
		k.relink(files, next)
		files = next
	}
	rec := &recorder{}
	w, err := qc.NewWatcher(k.dir, qc.WithOnError(rec.onError), qc.WithOnReload(rec.onReload))
	if err != nil {
		t.Fatal(err)
	}
	if got := fallbackMax(w.Current()); got != 100 {
		t.Fatalf("initial fallback = %d, want 100", got)
	}
	assembled(t, w.Current())

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()

	// 2 shards become 4: the old shard files are gone, the new ones there.
	update(mountedShards(t, shardedFallback(200), 4))
	eventually(t, "the config in 4 shards", func() bool { return fallbackMax(w.Current()) == 200 })
	assembled(t, w.Current())
	good := w.Current()

	// An index whose shard is not mounted keeps the config.
	next := mountedShards(t, shardedFallback(300), 4)
	delete(next, layout.ShardKey(3, 4))
	update(next)
	eventually(t, "OnError for the missing shard", func() bool { n, _ := rec.counts(); return n == 1 })
	if err := rec.lastErr(); !strings.Contains(err.Error(), "shard 3 (ConfigMap appquota-limits-shard-3, key limits-3-of-4.json.gz): not in "+k.dir+" (does the volume mount ConfigMap appquota-limits-shard-3?)") {
		t.Errorf("OnError got %v", err)
	}
	if w.Current() != good {
		t.Error("an index with a missing shard replaced the config")
	}

	// A shard from another version than the index keeps the config.
	next = mountedShards(t, shardedFallback(400), 4)
	other := shardedDoc(200)
	other.Apps["app-00001"] = qc.App{Profile: "default", Source: "tenants/changed"}
	stale := layout.ShardKey(qc.ShardOf("app-00001", 4), 4)
	fixed := next[stale]
	next[stale] = mountedShards(t, other, 4)[stale]
	update(next)
	eventually(t, "OnError for the stale shard", func() bool { n, _ := rec.counts(); return n == 2 })
	if err := rec.lastErr(); !strings.Contains(err.Error(), "not the index's") {
		t.Errorf("OnError got %v", err)
	}
	if w.Current() != good {
		t.Error("an index with a stale shard replaced the config")
	}

	// The same index with the right shard loads: a refusal is for the whole set.
	next = maps.Clone(next)
	next[stale] = fixed
	update(next)
	eventually(t, "the corrected shard", func() bool { return fallbackMax(w.Current()) == 400 })
	assembled(t, w.Current())

	// Sharded to unsharded and back.
	update(withHash(mustJSON(t, shardedFallback(500))))
	eventually(t, "the unsharded config", func() bool { return fallbackMax(w.Current()) == 500 })
	assembled(t, w.Current())
	update(mountedShards(t, shardedFallback(600), 2))
	eventually(t, "the sharded config again", func() bool { return fallbackMax(w.Current()) == 600 })
	assembled(t, w.Current())

	if errs, reloads := rec.counts(); errs != 2 || reloads != 4 {
		t.Errorf("OnError called %d times, OnReload %d times; want 2 and 4", errs, reloads)
	}
}

// TestWatcherShardedCompressedIndex: an index large enough to be stored
// compressed is followed as well.
func TestWatcherShardedCompressedIndex(t *testing.T) {
	files := mountedShards(t, shardedFallback(100), 4)
	gz, err := layout.Compress([]byte(files[qc.DataKey]))
	if err != nil {
		t.Fatal(err)
	}
	files[qc.GzipDataKey] = string(gz)
	delete(files, qc.DataKey)
	w, err := qc.NewWatcher(newKubelet(t, files).dir)
	if err != nil {
		t.Fatal(err)
	}
	if got := fallbackMax(w.Current()); got != 100 {
		t.Fatalf("fallback = %d, want 100", got)
	}
	assembled(t, w.Current())
}

// TestWatcherIndexCarriesChanges: a mounted index (compressed, as the
// controller stores it) that carries apps changed and removed since its
// shards were written is applied over them.
func TestWatcherIndexCarriesChanges(t *testing.T) {
	files := mountedShards(t, shardedFallback(100), 4)
	var index qc.Document
	if err := json.Unmarshal([]byte(files[qc.DataKey]), &index); err != nil {
		t.Fatal(err)
	}
	index.Apps = map[string]qc.App{"app-00042": {Profile: "default", Source: "tenants/raised",
		Overrides: []qc.Override{{Group: "messages-send-users", Limits: []qc.Limit{lim("Requests", "Second", "App", 999)}}}}}
	index.RemovedApps = []string{"app-00007"}
	plain, err := json.Marshal(&index)
	if err != nil {
		t.Fatal(err)
	}
	gz, err := layout.Compress(plain)
	if err != nil {
		t.Fatal(err)
	}
	delete(files, qc.DataKey)
	files[qc.GzipDataKey], files[qc.HashKey] = string(gz), qc.Hash(plain)
	w, err := qc.NewWatcher(newKubelet(t, files).dir)
	if err != nil {
		t.Fatal(err)
	}
	c := w.Current()
	if r := c.Resolve("app-00042", "POST", "/app-id/x/messages/users"); r.Override == nil || r.Limits[0].Max != 999 {
		t.Errorf("app-00042 resolves to %+v, want the index's override", r)
	}
	if _, ok := c.Document().Apps["app-00007"]; ok || len(c.Document().Apps) != len(shardedDoc(200).Apps)-1 {
		t.Errorf("the config has %d apps (app-00007 present: %v), want one fewer than %d", len(c.Document().Apps), ok, len(shardedDoc(200).Apps))
	}
}
