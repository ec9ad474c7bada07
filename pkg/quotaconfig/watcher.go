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
	debounce time.Duration
	running  atomic.Bool

	// Sums of the last loaded and the last refused document, so the burst of
	// events one kubelet update makes compiles a document once, and a bad one is
	// reported once. Only NewWatcher and Run's goroutine touch them.
	goodSum, badSum [sha256.Size]byte
}

// WatcherOption configures a Watcher.
type WatcherOption func(*Watcher)

// WithOnReload sets a function called, from Run's goroutine, with each Config
// that replaces the current one (not with the one NewWatcher loads).
func WithOnReload(f func(*Config)) WatcherOption {
	return func(w *Watcher) { w.onReload = f }
}

// WithOnError sets a function called, from Run's goroutine, when a change
// cannot be loaded; the previous Config stays current. A refused document is
// reported once, not on every event, until its content changes.
func WithOnError(f func(error)) WatcherOption {
	return func(w *Watcher) { w.onError = f }
}

// defaultDebounce is how long Run waits after an event for more: one kubelet
// update is several events (new directory, ..data_tmp, rename, removal of the
// old directory), and reading once they settle avoids a read in the middle.
const defaultDebounce = 100 * time.Millisecond

// NewWatcher loads dir/limits.json (checked against dir/limits.sha256 when that
// exists). It fails if the document cannot be loaded: a gateway should not
// start without limits. It does not watch yet; call Run.
func NewWatcher(dir string, opts ...WatcherOption) (*Watcher, error) {
	w := &Watcher{dir: dir, debounce: defaultDebounce}
	for _, o := range opts {
		o(w)
	}
	data, err := readDocument(dir)
	if err != nil {
		return nil, err
	}
	cfg, err := Load(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(dir, DataKey), err)
	}
	w.goodSum = sha256.Sum256(data)
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

	timer := time.NewTimer(w.debounce)
	timer.Stop()
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case _, ok := <-fsw.Events:
			if !ok {
				return fmt.Errorf("quotaconfig: watch %s: event channel closed", w.dir)
			}
			timer.Reset(w.debounce)
		case err, ok := <-fsw.Errors:
			if !ok {
				return fmt.Errorf("quotaconfig: watch %s: error channel closed", w.dir)
			}
			// Typically an overflow: events were lost, so read again to be sure.
			w.report(fmt.Errorf("quotaconfig: watch %s: %w", w.dir, err))
			timer.Reset(w.debounce)
		case <-timer.C:
			w.reload()
		}
	}
}

// reload reads the document and makes it current if it changed and loads.
func (w *Watcher) reload() {
	data, err := readDocument(w.dir)
	if err != nil {
		w.report(err)
		return
	}
	sum := sha256.Sum256(data)
	if sum == w.goodSum || sum == w.badSum {
		return
	}
	cfg, err := Load(data)
	if err != nil {
		w.badSum = sum
		w.report(fmt.Errorf("%s: %w", filepath.Join(w.dir, DataKey), err))
		return
	}
	w.goodSum = sum
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

// readDocument reads limits.json and checks it against limits.sha256 when
// present. Both are read from the directory limits.json resolves to, so a
// ..data swap between the two reads cannot pair one version's document with
// another's hash. The kubelet removes the old directory right after the swap,
// so a read that finds its directory gone resolves again.
func readDocument(dir string) ([]byte, error) {
	for attempt := 1; ; attempt++ {
		data, err := readVersion(dir)
		if err == nil || !errors.Is(err, os.ErrNotExist) || attempt == 3 {
			return data, err
		}
	}
}

func readVersion(dir string) ([]byte, error) {
	file, err := filepath.EvalSymlinks(filepath.Join(dir, DataKey))
	if err != nil {
		return nil, fmt.Errorf("quotaconfig: %w", err)
	}
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("quotaconfig: %w", err)
	}
	hashFile := filepath.Join(filepath.Dir(file), HashKey)
	want, err := os.ReadFile(hashFile)
	if errors.Is(err, os.ErrNotExist) {
		// No hash file, or the version was removed since: only the latter is
		// worth another try.
		if _, err := os.Stat(file); err != nil {
			return nil, fmt.Errorf("quotaconfig: %w", err)
		}
		return data, nil
	}
	if err != nil {
		return nil, fmt.Errorf("quotaconfig: %w", err)
	}
	want = bytes.TrimSpace(want)
	if got := hashOf(data); string(want) != got {
		return nil, fmt.Errorf("quotaconfig: %s is %q but %s hashes to %q", hashFile, want, file, got)
	}
	return data, nil
}

// hashOf is the HashKey form of data's hash.
func hashOf(data []byte) string {
	sum := sha256.Sum256(data)
	return "sha256:" + hex.EncodeToString(sum[:])
}
