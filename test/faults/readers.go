package main

import (
	"bytes"
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/appquota/appquota/controllers"
	"github.com/appquota/appquota/pkg/quotaconfig"
)

// readerPeriods are how often each gateway reader's "kubelet" looks for a
// change of the ConfigMaps: one reader per period. The kubelet's own sync is
// about a minute; shorter periods make more versions per fault, and periods
// that differ make the readers see different ones.
var readerPeriods = []time.Duration{700 * time.Millisecond, 1500 * time.Millisecond, 3100 * time.Millisecond}

// readers are gateway pods of the harness: each has a directory fed as the
// kubelet feeds a projected ConfigMap volume (the index ConfigMap and its
// shards), and a quotaconfig.Watcher that follows it. The oracle checks that
// no reader ever loaded a configuration no manager wrote, and that each ends
// with the stored one.
type readers struct {
	h      *harness
	dir    string
	list   []*reader
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu sync.Mutex
	// fed maps the key of a document (docKey) that a fed version holds, when
	// that version loads, to the index hash it was stored under. A reader's
	// loaded document must be one of these, and its hash one a manager wrote.
	fed map[string]string
	// versionDocs caches, by the content of a version's files, the key of the
	// document it loads ("" when it does not), so that readers fed the same
	// version load it once.
	versionDocs map[string]string
}

// reader is one gateway pod.
type reader struct {
	name   string
	dir    string // the mounted volume
	period time.Duration
	last   map[string][]byte // the files of the version mounted now; only run's goroutine uses it

	mu      sync.Mutex
	seq     int // versions fed
	watcher *quotaconfig.Watcher
	loaded  []string // docKeys of every configuration the Watcher made current
	errs    int      // changes the Watcher refused (kept the one it had)
	current string   // docKey of the current configuration
}

// startReaders starts the readers; they mount the configuration once it
// exists and stop when ctx ends.
func (h *harness) startReaders(ctx context.Context) error {
	dir, err := os.MkdirTemp("", "appquota-readers-")
	if err != nil {
		return err
	}
	// The readers end before the control plane does (stop), so that they do
	// not report its absence.
	ctx, cancel := context.WithCancel(ctx)
	rs := &readers{h: h, dir: dir, cancel: cancel, fed: map[string]string{}, versionDocs: map[string]string{}}
	for i, p := range readerPeriods {
		r := &reader{name: fmt.Sprintf("gateway-%d", i), dir: filepath.Join(dir, fmt.Sprintf("gateway-%d", i)), period: p}
		if err := os.MkdirAll(r.dir, 0o755); err != nil {
			return err
		}
		rs.list = append(rs.list, r)
		rs.wg.Go(func() { rs.run(ctx, r) })
	}
	h.mu.Lock()
	h.readers = rs
	h.mu.Unlock()
	return nil
}

// run is one reader's kubelet: every period, copy the ConfigMaps into a new
// version of the volume; once the volume loads, start the Watcher on it.
func (rs *readers) run(ctx context.Context, r *reader) {
	t := time.NewTicker(r.period)
	defer t.Stop()
	for {
		if err := rs.sync(ctx, r); err != nil && ctx.Err() == nil {
			fmt.Fprintf(rs.h.log, "reader %s: %v\n", r.name, err)
		}
		r.mu.Lock()
		started := r.watcher != nil
		r.mu.Unlock()
		if !started && r.last != nil {
			rs.startWatcher(ctx, r)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// startWatcher starts the Watcher when the volume loads; a gateway does not
// start without limits, so one that does not load is tried again next time.
func (rs *readers) startWatcher(ctx context.Context, r *reader) {
	w, err := quotaconfig.NewWatcher(r.dir,
		quotaconfig.WithOnReload(func(cfg *quotaconfig.Config) { rs.loaded(r, cfg) }),
		quotaconfig.WithOnError(func(error) {
			r.mu.Lock()
			r.errs++
			r.mu.Unlock()
		}))
	if err != nil {
		return
	}
	r.mu.Lock()
	r.watcher = w
	r.mu.Unlock()
	rs.loaded(r, w.Current())
	rs.wg.Go(func() {
		if err := w.Run(ctx); err != nil {
			fmt.Fprintf(rs.h.log, "reader %s: %v\n", r.name, err)
		}
	})
}

// loaded records a configuration the Watcher made current.
func (rs *readers) loaded(r *reader, cfg *quotaconfig.Config) {
	key, err := docKey(cfg.Document())
	if err != nil {
		key = "unencodable: " + err.Error()
	}
	r.mu.Lock()
	r.loaded = append(r.loaded, key)
	r.current = key
	r.mu.Unlock()
}

// docKey identifies a document by its content: the SHA-256 of its JSON
// (encoding/json writes map keys sorted, so equal documents encode alike).
func docKey(d *quotaconfig.Document) (string, error) {
	b, err := json.Marshal(d)
	if err != nil {
		return "", fmt.Errorf("encode the document: %w", err)
	}
	return quotaconfig.Hash(b), nil
}

// sync copies the index ConfigMap and its shards into a new version of r's
// volume when they changed, as the kubelet updates a projected volume. It
// reads the ConfigMaps one by one, as the kubelet does, so a version may
// pair an index with shards of another write: the Watcher must refuse
// those. While the index is missing the volume keeps what it had, as the
// kubelet keeps a volume whose ConfigMap is gone.
func (rs *readers) sync(ctx context.Context, r *reader) error {
	h := rs.h
	// The names only: the volume names its ConfigMaps, the list stands in
	// for that (shards come and go with the set's size).
	var names metav1.PartialObjectMetadataList
	names.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("ConfigMapList"))
	if err := h.c.List(ctx, &names, client.InNamespace(h.opts.Namespace)); err != nil {
		return fmt.Errorf("list the ConfigMaps: %w", err)
	}
	var mounted []string
	for _, m := range names.Items {
		if m.Name == h.opts.ConfigMapName || strings.HasPrefix(m.Name, h.opts.ConfigMapName+controllers.ShardSuffix) {
			mounted = append(mounted, m.Name)
		}
	}
	// The index first, then its shards, each read on its own.
	slices.SortFunc(mounted, func(a, b string) int {
		return cmp.Compare(boolInt(a != h.opts.ConfigMapName), boolInt(b != h.opts.ConfigMapName))
	})
	files := map[string][]byte{}
	var indexHash string
	found := false
	for _, name := range mounted {
		var cm corev1.ConfigMap
		if err := h.c.Get(ctx, client.ObjectKey{Namespace: h.opts.Namespace, Name: name}, &cm); err != nil {
			if apierrors.IsNotFound(err) {
				continue // gone since the list: not in this version
			}
			return fmt.Errorf("read ConfigMap %s: %w", name, err)
		}
		if cm.Name == h.opts.ConfigMapName {
			found, indexHash = true, cm.Data[quotaconfig.HashKey]
		}
		for k, v := range cm.Data {
			files[k] = []byte(v)
		}
		maps.Copy(files, cm.BinaryData)
	}
	if !found || sameFiles(files, r.last) {
		return nil
	}
	r.mu.Lock()
	r.seq++
	version := fmt.Sprintf("..%s_%d", time.Now().UTC().Format("2006_01_02_15_04_05.000000000"), r.seq)
	r.mu.Unlock()
	if err := writeVersion(r.dir, version, files, r.last); err != nil {
		return err
	}
	r.last = files
	rs.record(filepath.Join(r.dir, version), files, indexHash)
	return nil
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// record notes the document a fed version loads to, if it loads.
func (rs *readers) record(versionDir string, files map[string][]byte, indexHash string) {
	content := filesKey(files)
	rs.mu.Lock()
	key, seen := rs.versionDocs[content]
	rs.mu.Unlock()
	if !seen {
		// The version's own directory, as the Watcher reads it through ..data.
		if cfg, err := quotaconfig.LoadDir(versionDir); err == nil {
			key, _ = docKey(cfg.Document())
		}
	}
	rs.mu.Lock()
	defer rs.mu.Unlock()
	rs.versionDocs[content] = key
	if key != "" {
		rs.fed[key] = indexHash
	}
}

func sameFiles(a, b map[string][]byte) bool {
	return b != nil && maps.EqualFunc(a, b, bytes.Equal)
}

func filesKey(files map[string][]byte) string {
	sum := sha256.New()
	for _, k := range slices.Sorted(maps.Keys(files)) {
		fmt.Fprintf(sum, "%d:%s%d:", len(k), k, len(files[k]))
		sum.Write(files[k])
	}
	return string(sum.Sum(nil))
}

// writeVersion writes files into dir/version and makes it the volume's
// content the way the kubelet's atomic writer does: the files go into a new
// timestamped directory, a ..data_tmp symlink to it is renamed over ..data
// (one atomic step), each key is a symlink to ..data/key, and the keys and
// the directory of the previous version are then removed.
func writeVersion(dir, version string, files, previous map[string][]byte) error {
	vdir := filepath.Join(dir, version)
	if err := os.Mkdir(vdir, 0o755); err != nil {
		return fmt.Errorf("write a version: %w", err)
	}
	for k, b := range files {
		if err := os.WriteFile(filepath.Join(vdir, k), b, 0o644); err != nil {
			return fmt.Errorf("write a version: %w", err)
		}
	}
	old, _ := os.Readlink(filepath.Join(dir, "..data"))
	tmp := filepath.Join(dir, "..data_tmp")
	_ = os.Remove(tmp)
	if err := os.Symlink(version, tmp); err != nil {
		return fmt.Errorf("write a version: %w", err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, "..data")); err != nil {
		return fmt.Errorf("swap ..data: %w", err)
	}
	for k := range files {
		link := filepath.Join(dir, k)
		if _, err := os.Lstat(link); errors.Is(err, os.ErrNotExist) {
			if err := os.Symlink(filepath.Join("..data", k), link); err != nil {
				return fmt.Errorf("link %s: %w", k, err)
			}
		}
	}
	for k := range previous {
		if _, ok := files[k]; !ok {
			if err := os.Remove(filepath.Join(dir, k)); err != nil {
				return fmt.Errorf("unlink %s: %w", k, err)
			}
		}
	}
	if old != "" {
		if err := os.RemoveAll(filepath.Join(dir, old)); err != nil {
			return fmt.Errorf("remove the previous version: %w", err)
		}
	}
	return nil
}

// check returns an error when a reader loaded a configuration that no fed
// version holds, or one whose index no manager logged writing.
func (rs *readers) check() error {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	for _, r := range rs.list {
		r.mu.Lock()
		loaded := slices.Clone(r.loaded)
		r.mu.Unlock()
		for _, key := range loaded {
			hash, ok := rs.fed[key]
			if !ok {
				return fmt.Errorf("gateway reader %s loaded a configuration (document %s) that no version of its volume holds", r.name, key)
			}
			if !rs.h.written(hash) {
				return fmt.Errorf("gateway reader %s loaded a configuration stored under index %s, which no manager logged writing", r.name, hash)
			}
		}
	}
	return nil
}

// converged reports whether every reader's current configuration is the
// document want; the error names the first that is not.
func (rs *readers) converged(want *quotaconfig.Document) error {
	key, err := docKey(want)
	if err != nil {
		return err
	}
	for _, r := range rs.list {
		r.mu.Lock()
		cur, started := r.current, r.watcher != nil
		r.mu.Unlock()
		if !started {
			return fmt.Errorf("gateway reader %s has not loaded a configuration yet", r.name)
		}
		if cur != key {
			return fmt.Errorf("gateway reader %s holds document %s, not the stored %s", r.name, cur, key)
		}
	}
	return nil
}

// settle waits until the readers hold the stored configuration and checks
// that none loaded one that no manager wrote.
func (rs *readers) settle(ctx context.Context, timeout time.Duration) error {
	if err := poll(ctx, "the gateway readers to load the stored configuration", timeout, func(ctx context.Context) (bool, error) {
		want, _, _, err := rs.h.stored(ctx)
		if err != nil {
			return false, err
		}
		err = rs.converged(want)
		return err == nil, err
	}); err != nil {
		return err
	}
	return rs.check()
}

// summary is how many configurations the readers loaded and refused.
func (rs *readers) summary(w io.Writer) {
	for _, r := range rs.list {
		r.mu.Lock()
		fmt.Fprintf(w, "reader %s: %d versions fed, %d configurations loaded, %d refused\n", r.name, r.seq, len(r.loaded), r.errs)
		r.mu.Unlock()
	}
}

// stop ends the readers and deletes their volumes.
func (rs *readers) stop() {
	rs.cancel()
	rs.wg.Wait()
	_ = os.RemoveAll(rs.dir)
}

// gatewayReaders are the harness's readers, nil before they start.
func (h *harness) gatewayReaders() *readers {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.readers
}
