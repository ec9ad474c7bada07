package quotaconfig

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	"github.com/fsnotify/fsnotify"
)

// Watcher keeps the Config of a mounted ConfigMap directory current.
//
// The kubelet updates a mounted ConfigMap by writing the files into a new
// timestamped directory and swapping the ..data symlink to it; limits.json is
// itself a symlink through ..data. A watch on limits.json would keep following
// the old inode, so the Watcher watches the directory and re-reads on any event
// in it.
//
// A new document replaces the current Config only if it loads: a bad document
// (invalid, or not matching limits.sha256) keeps the last good Config, so a
// controller bug degrades to stale limits rather than none.
//
// Use: NewWatcher loads the current document; Run follows changes until its
// context ends; Current may be called at any time from any goroutine.
type Watcher struct {
	dir      string
	current  atomic.Pointer[Config]
	onReload func(*Config)
	onError  func(error)
	running  atomic.Bool

	// Keys of the last loaded and the last refused version, so the burst of
	// events one kubelet update makes compiles a document once, and a bad one is
	// reported once. Only NewWatcher and Run's goroutine touch them.
	goodKey, badKey [sha256.Size]byte
}

// WatcherOption configures a Watcher.
type WatcherOption func(*Watcher)

// WithOnReload sets a function called, from Run's goroutine, with each Config
// that replaces the current one (not with the one NewWatcher loads).
func WithOnReload(f func(*Config)) WatcherOption {
	return func(w *Watcher) { w.onReload = f }
}

// WithOnError sets a function called, from Run's goroutine, when a change
// cannot be loaded; the previous Config stays current. A refused version (an
// invalid document, or one that does not match limits.sha256) is reported once,
// not on every event, until the files change; a failed read each time.
func WithOnError(f func(error)) WatcherOption {
	return func(w *Watcher) { w.onError = f }
}

// debounce is how long Run waits after an event before reading: one kubelet
// update is several events (new directory, ..data_tmp, rename, removal of the
// old directory), and one read after them does for all. The wait counts from
// the first event, not the last, so a directory that never goes quiet still
// gets read.
const debounce = 100 * time.Millisecond

// NewWatcher loads dir/limits.json (checked against dir/limits.sha256 when that
// exists). It fails if the document cannot be loaded: a gateway should not
// start without limits. It does not watch yet; call Run.
func NewWatcher(dir string, opts ...WatcherOption) (*Watcher, error) {
	w := &Watcher{dir: dir}
	for _, o := range opts {
		o(w)
	}
	v, err := readVersion(dir)
	if err != nil {
		return nil, err
	}
	cfg, err := v.load()
	if err != nil {
		return nil, err
	}
	w.goodKey = v.key()
	w.current.Store(cfg)
	return w, nil
}

// Current returns the current Config, never nil.
func (w *Watcher) Current() *Config { return w.current.Load() }

// Run watches the directory and reloads on changes until ctx ends, then returns
// nil. It re-reads once after the watch is in place, so a change between
// NewWatcher and Run is not missed. It returns an error if the watch cannot be
// set up or fails; only one Run may be active at a time.
func (w *Watcher) Run(ctx context.Context) error {
	if !w.running.CompareAndSwap(false, true) {
		return errors.New("quotaconfig: Watcher.Run is already running")
	}
	defer w.running.Store(false)

	fsw, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("quotaconfig: watch %s: %w", w.dir, err)
	}
	defer fsw.Close()
	if err := fsw.Add(w.dir); err != nil {
		return fmt.Errorf("quotaconfig: watch %s: %w", w.dir, err)
	}
	w.reload()

	timer := time.NewTimer(debounce)
	timer.Stop()
	defer timer.Stop()
	pending := false
	schedule := func() {
		if !pending {
			pending = true
			timer.Reset(debounce)
		}
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case _, ok := <-fsw.Events:
			if !ok {
				return fmt.Errorf("quotaconfig: watch %s: event channel closed", w.dir)
			}
			schedule()
		case err, ok := <-fsw.Errors:
			if !ok {
				return fmt.Errorf("quotaconfig: watch %s: error channel closed", w.dir)
			}
			// Typically an overflow: events were lost, so read again to be sure.
			w.report(fmt.Errorf("quotaconfig: watch %s: %w", w.dir, err))
			schedule()
		case <-timer.C:
			pending = false
			w.reload()
		}
	}
}

// reload reads the files and makes the document current if they changed and it
// loads.
func (w *Watcher) reload() {
	v, err := readVersion(w.dir)
	if err != nil {
		w.report(err)
		return
	}
	key := v.key()
	if key == w.goodKey || key == w.badKey {
		return
	}
	cfg, err := v.load()
	if err != nil {
		w.badKey = key
		w.report(err)
		return
	}
	w.goodKey = key
	w.current.Store(cfg)
	if w.onReload != nil {
		w.onReload(cfg)
	}
}

func (w *Watcher) report(err error) {
	if w.onError != nil {
		w.onError(err)
	}
}

// version is the content of one version of the mounted files.
type version struct {
	file, hashFile string
	data           []byte
	hash           []byte // hashFile's content, trimmed; nil when there is no hashFile
}

// key identifies the content, hash file included: a document refused for a
// wrong hash must be tried again when only the hash changes.
func (v *version) key() [sha256.Size]byte {
	h := sha256.New()
	h.Write(v.data)
	if v.hash != nil {
		h.Write([]byte{0})
		h.Write(v.hash)
	}
	var k [sha256.Size]byte
	h.Sum(k[:0])
	return k
}

// load checks the document against its hash, then loads it.
func (v *version) load() (*Config, error) {
	if v.hash != nil {
		if got := Hash(v.data); string(v.hash) != got {
			return nil, fmt.Errorf("quotaconfig: %s is %q but %s hashes to %q", v.hashFile, v.hash, v.file, got)
		}
	}
	cfg, err := Load(v.data)
	if err != nil {
		return nil, fmt.Errorf("quotaconfig: %s: %w", v.file, err)
	}
	return cfg, nil
}

// readVersion reads limits.json and, when present, limits.sha256. Both are read
// from the directory limits.json resolves to, so a ..data swap between the two
// reads cannot pair one version's document with another's hash. The kubelet
// removes the old directory right after a swap, so a read that finds its
// directory gone resolves again.
func readVersion(dir string) (*version, error) {
	for attempt := 1; ; attempt++ {
		v, err := readVersionOnce(dir)
		if err == nil || !errors.Is(err, os.ErrNotExist) || attempt == 3 {
			return v, err
		}
	}
}

func readVersionOnce(dir string) (*version, error) {
	// The document is plain or, for large ones, gzip-compressed.
	name, compressed := DataKey, false
	if _, err := os.Lstat(filepath.Join(dir, DataKey)); errors.Is(err, os.ErrNotExist) {
		if _, err := os.Lstat(filepath.Join(dir, GzipDataKey)); err == nil {
			name, compressed = GzipDataKey, true
		}
	}
	file, err := filepath.EvalSymlinks(filepath.Join(dir, name))
	if err != nil {
		return nil, fmt.Errorf("quotaconfig: %w", err)
	}
	v := &version{file: file, hashFile: filepath.Join(filepath.Dir(file), HashKey)}
	if v.data, err = os.ReadFile(file); err != nil {
		return nil, fmt.Errorf("quotaconfig: %w", err)
	}
	if compressed {
		if v.data, err = Decompress(v.data); err != nil {
			return nil, err
		}
	}
	hash, err := os.ReadFile(v.hashFile)
	switch {
	case errors.Is(err, os.ErrNotExist):
		// No hash file, or the version was removed since: only the latter is
		// worth another try.
		if _, err := os.Stat(file); err != nil {
			return nil, fmt.Errorf("quotaconfig: %w", err)
		}
	case err != nil:
		return nil, fmt.Errorf("quotaconfig: %w", err)
	default:
		v.hash = bytes.TrimSpace(hash)
	}
	return v, nil
}

// Hash is the content hash written under HashKey: "sha256:" and the lowercase
// hex SHA-256 of the uncompressed document.
func Hash(data []byte) string {
	sum := sha256.Sum256(data)
	return "sha256:" + hex.EncodeToString(sum[:])
}
