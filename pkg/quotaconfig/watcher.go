package quotaconfig

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
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
// A sharded configuration (docs/config-format.md) is followed too: mount the
// index ConfigMap and its shard ConfigMaps in one projected volume, and the
// Watcher reads the index and every shard it lists from the same version of the
// directory, so they come from one kubelet update.
//
// A new document replaces the current Config only if it loads: a bad document
// (invalid, not matching limits.sha256, or with a shard missing or not matching
// the index) keeps the last good Config, so a controller bug or a volume that
// does not mount every shard degrades to stale limits rather than none.
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
	// The last index parsed, by its content key: an update that changes only
	// shards, or nothing, does not parse it again.
	parsed *parsedIndex
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
// invalid document, one that does not match limits.sha256, or an index whose
// shards are missing or do not match it) is reported once, not on every event,
// until the files change; a failed read each time.
func WithOnError(f func(error)) WatcherOption {
	return func(w *Watcher) { w.onError = f }
}

// debounce is how long Run waits after an event before reading: one kubelet
// update is several events (new directory, ..data_tmp, rename, removal of the
// old directory), and one read after them does for all. The wait counts from
// the first event, not the last, so a directory that never goes quiet still
// gets read.
const debounce = 100 * time.Millisecond

// NewWatcher loads dir/limits.json or dir/limits.json.gz (checked against
// dir/limits.sha256 when that exists) and, when that is a sharded index, the
// shard files it lists. It fails if the configuration cannot be loaded: a
// gateway should not start without limits. It does not watch yet; call Run.
func NewWatcher(dir string, opts ...WatcherOption) (*Watcher, error) {
	w := &Watcher{dir: dir}
	for _, o := range opts {
		o(w)
	}
	v, err := readVersion(dir, nil)
	if err != nil {
		return nil, err
	}
	w.parsed = v.parsed
	cfg, err := v.load()
	if err != nil {
		return nil, err
	}
	w.goodKey = v.key
	w.current.Store(cfg)
	return w, nil
}

// LoadDir loads the configuration in a mounted ConfigMap directory once, as
// NewWatcher does.
func LoadDir(dir string) (*Config, error) {
	v, err := readVersion(dir, nil)
	if err != nil {
		return nil, err
	}
	return v.load()
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

// reload reads the files and makes the configuration current if they changed
// and it loads.
func (w *Watcher) reload() {
	v, err := readVersion(w.dir, w.parsed)
	if err != nil {
		w.report(err)
		return
	}
	w.parsed = v.parsed
	if v.key == w.goodKey || v.key == w.badKey {
		return
	}
	cfg, err := v.load()
	if err != nil {
		w.badKey = v.key
		w.report(err)
		return
	}
	w.goodKey = v.key
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
	dir    string       // the directory watched
	file   string       // the document (or index) read, symlinks resolved
	parsed *parsedIndex // the document checked and parsed
	// Stored bytes of the shards the index lists, by key; a shard whose file is
	// missing is absent.
	shards map[string][]byte
	// key identifies the content: the document, its hash file and the shards. A
	// version refused for a wrong hash or a missing or stale shard must be tried
	// again when only that changes.
	key [sha256.Size]byte
}

// parsedIndex is a document (or index) checked against its hash and parsed.
type parsedIndex struct {
	key [sha256.Size]byte // of the document and hash file
	doc *Document         // nil when err is set
	err error
}

// load assembles the shards, if any, and compiles the result.
func (v *version) load() (*Config, error) {
	if v.parsed.err != nil {
		return nil, v.parsed.err
	}
	doc := v.parsed.doc
	if len(doc.Shards) > 0 {
		var err error
		doc, err = Assemble(doc, func(ref ShardRef) ([]byte, error) {
			if b, ok := v.shards[ref.Key]; ok {
				return b, nil
			}
			return nil, fmt.Errorf("not in %s (does the volume mount ConfigMap %s?)", v.dir, ref.ConfigMap)
		})
		if err != nil {
			return nil, fmt.Errorf("quotaconfig: %s: %w", v.file, err)
		}
	}
	cfg, err := Compile(doc)
	if err != nil {
		return nil, fmt.Errorf("quotaconfig: %s: %w", v.file, err)
	}
	return cfg, nil
}

// readVersion reads limits.json (or limits.json.gz), limits.sha256 when present,
// and the shard files an index lists. All are read from the directory
// limits.json resolves to, so a ..data swap between two reads cannot pair one
// version's document with another's hash or shards. The kubelet removes the old
// directory right after a swap, so a read that finds its directory gone
// resolves again. last, when its key matches, spares parsing the same document
// again.
func readVersion(dir string, last *parsedIndex) (*version, error) {
	for attempt := 1; ; attempt++ {
		v, err := readVersionOnce(dir, last)
		if err == nil || !errors.Is(err, os.ErrNotExist) || attempt == 3 {
			return v, err
		}
	}
}

func readVersionOnce(dir string, last *parsedIndex) (*version, error) {
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
	v := &version{dir: dir, file: file}
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("quotaconfig: %w", err)
	}
	if compressed {
		if data, err = Decompress(data); err != nil {
			return nil, err
		}
	}
	// A file missing from the version's directory is either not in this version
	// (no hash file, an unmounted shard) or the version was removed since: only
	// the latter is worth another try.
	// readOptional returns nil for a file not in this version.
	readOptional := func(name string) ([]byte, error) {
		b, err := os.ReadFile(filepath.Join(filepath.Dir(file), name))
		if errors.Is(err, os.ErrNotExist) {
			if _, err := os.Stat(file); err != nil {
				return nil, fmt.Errorf("quotaconfig: %w", err)
			}
			return nil, nil
		}
		if err != nil {
			return nil, fmt.Errorf("quotaconfig: %w", err)
		}
		return b, nil
	}
	hashFile := filepath.Join(filepath.Dir(file), HashKey)
	hashText, err := readOptional(HashKey)
	if err != nil {
		return nil, err
	}
	if hashText != nil {
		hashText = bytes.TrimSpace(hashText)
	}

	h := sha256.New()
	writeField(h, data)
	if hashText != nil {
		writeField(h, hashText)
	}
	var docKey [sha256.Size]byte
	h.Sum(docKey[:0])
	if last != nil && last.key == docKey {
		v.parsed = last
	} else {
		v.parsed = parse(docKey, file, hashFile, data, hashText)
	}

	if doc := v.parsed.doc; doc != nil && len(doc.Shards) > 0 {
		v.shards = map[string][]byte{}
		for _, ref := range doc.Shards {
			b, err := readOptional(ref.Key)
			if err != nil {
				return nil, err
			}
			if b != nil {
				v.shards[ref.Key] = b
			}
		}
	}

	h.Reset()
	h.Write(docKey[:])
	if doc := v.parsed.doc; doc != nil {
		for _, ref := range doc.Shards {
			if b, ok := v.shards[ref.Key]; ok {
				writeField(h, b)
			} else {
				h.Write([]byte{0}) // unlike any present file, even an empty one
			}
		}
	}
	h.Sum(v.key[:0])
	return v, nil
}

// writeField hashes b length-prefixed, so that consecutive fields cannot run
// into each other.
func writeField(h hash.Hash, b []byte) {
	var n [9]byte
	n[0] = 1
	binary.BigEndian.PutUint64(n[1:], uint64(len(b)))
	h.Write(n[:])
	h.Write(b)
}

// parse checks a document against its hash file's content (nil when there is
// none) and parses it.
func parse(key [sha256.Size]byte, file, hashFile string, data, hashText []byte) *parsedIndex {
	p := &parsedIndex{key: key}
	if hashText != nil {
		if got := Hash(data); string(hashText) != got {
			p.err = fmt.Errorf("quotaconfig: %s is %q but %s hashes to %q", hashFile, hashText, file, got)
			return p
		}
	}
	if p.doc, p.err = Parse(data); p.err != nil {
		p.err = fmt.Errorf("quotaconfig: %s: %w", file, p.err)
	}
	return p
}

// Hash is the content hash written under HashKey: "sha256:" and the lowercase
// hex SHA-256 of the uncompressed document.
func Hash(data []byte) string {
	sum := sha256.Sum256(data)
	return FormatHash(sum[:])
}

// FormatHash writes a SHA-256 sum as Hash does, for a document that is hashed
// while it is being written rather than held whole.
func FormatHash(sum []byte) string {
	return "sha256:" + hex.EncodeToString(sum)
}
