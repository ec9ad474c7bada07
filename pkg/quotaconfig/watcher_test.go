package quotaconfig_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

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

	tests := []struct {
		name  string
		files map[string]string
		want  string // substring of the error; "" for success
	}{
		{"valid without a hash file", noHash, ""},
		{"invalid document", withHash(mustJSON(t, invalid)), `limits.json: version: "v0" is not "quota.appquota.io/v1"`},
		{"hash mismatch", mismatch, `limits.sha256 is "sha256:abc" but`},
		{"no document", map[string]string{"other": "x"}, "limits.json: no such file or directory"},
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
