package render

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"hash"
	"slices"
	"strconv"
	"time"

	"github.com/appquota/appquota/pkg/quotaconfig"
)

// Layout is how a document is stored, chosen by Store from its size.
type Layout int

const (
	// Plain: the whole document under data limits.json.
	Plain Layout = iota
	// Compressed: the whole document gzip-compressed under binaryData limits.json.gz.
	Compressed
	// Sharded: an index in the named ConfigMap and the apps in shard ConfigMaps.
	Sharded
)

func (l Layout) String() string {
	return [...]string{"plain", "compressed", "sharded"}[l]
}

// Stored is a document as the controller writes it.
type Stored struct {
	Layout Layout
	// Hash is limits.sha256 of the named ConfigMap: the hash of its uncompressed
	// document (the whole document, or the index, which lists every shard's hash,
	// so it identifies the whole configuration too).
	Hash string
	// Key and Data are the named ConfigMap's document key (DataKey or GzipDataKey)
	// and stored bytes.
	Key  string
	Data []byte
	// Shards are the shard ConfigMaps, in order; nil unless Sharded.
	Shards []StoredShard
	// PlainBytes is the size of the uncompressed configuration (index and shards
	// together), StoredBytes the size of the largest object written.
	PlainBytes, StoredBytes int
	// TooLarge is set when even MaxShards shards do not fit the budget; nothing
	// else is set then, and nothing must be written.
	TooLarge bool
}

// StoredShard is one shard ConfigMap's content.
type StoredShard struct {
	Ref quotaconfig.ShardRef
	// Data is the compressed shard, stored under binaryData Ref.Key.
	Data []byte
}

// Store lays a document out within budget bytes per object: plain while it
// fits, else gzip-compressed, else sharded (docs/scale.md). The Renderer keeps
// each app's encoding and each shard's compressed bytes from the previous call,
// so a change to one app re-encodes and compresses only its shard. shardName
// names shard i's ConfigMap. The bytes are those json.Marshal and
// quotaconfig.Split produce; tests hold it to that.
func (r *Renderer) Store(doc *quotaconfig.Document, budget int, shardName func(i int) string) (*Stored, error) {
	r.seq++
	r.budget = budget
	if r.enc == nil {
		r.enc = map[string]*appEncoding{}
	}
	header, err := json.Marshal(&quotaconfig.Document{Version: doc.Version, DefaultProfile: doc.DefaultProfile, Profiles: doc.Profiles})
	if err != nil {
		return nil, fmt.Errorf("encode profiles: %w", err)
	}
	changed := !bytes.Equal(header, r.header)
	// The apps whose entry may have changed: those Merge says (when doc is the
	// document it just merged), else all of them.
	var removed []string
	update := func(id string) error {
		a, ok := doc.Apps[id]
		e := r.enc[id]
		switch {
		case !ok:
			if e != nil {
				r.appsBytes -= len(e.bytes) + 1
				delete(r.enc, id)
				removed = append(removed, id)
				changed = true
			}
			return nil
		case e == nil:
			e = &appEncoding{}
			r.enc[id] = e
		case sameApp(&e.app, &a):
			e.seen = r.seq
			return nil
		default:
			r.appsBytes -= len(e.bytes) + 1
		}
		var err error
		e.app = a
		if e.bytes, err = appBytes(id, &a); err != nil {
			return err
		}
		r.appsBytes += len(e.bytes) + 1
		e.changed, e.seen = r.seq, r.seq
		changed = true
		return nil
	}
	if r.last != nil {
		r.last.stored = false // until this Store is done
	}
	if doc == r.merged && r.pending != nil {
		for id := range r.pending {
			if err := update(id); err != nil {
				return nil, err
			}
		}
	} else {
		for id := range doc.Apps {
			if err := update(id); err != nil {
				return nil, err
			}
		}
		for id, e := range r.enc {
			if e.seen != r.seq {
				r.appsBytes -= len(e.bytes) + 1
				delete(r.enc, id)
				removed = append(removed, id)
				changed = true
			}
		}
	}
	r.pending = nil
	if r.last != nil && doc == r.merged {
		r.last.stored = true
	}
	plain := len(header) + r.appsBytes
	r.header, r.lastProfiles = header, doc.Profiles

	if len(doc.Apps) > 0 {
		plain += len(`,"apps":{}`) - 1 // the header's closing brace makes way for these, and one comma fewer than apps
	}
	if plain <= budget {
		data := r.whole(header, doc)
		r.shards, r.compressed = nil, nil
		return &Stored{Layout: Plain, Hash: quotaconfig.Hash(data), Key: quotaconfig.DataKey, Data: data, PlainBytes: len(data), StoredBytes: len(data)}, nil
	}

	// How many objects the compressed configuration needs: one (the whole
	// document compressed) or a power of two of shards. A new layout is sized
	// from the compression ratio last seen, to 70% of the budget; after that the
	// count doubles only when an object no longer fits and halves only when a
	// quarter of it would do, so a configuration near a boundary does not flip
	// between layouts and every shard is not rewritten for a small change.
	if r.ratio == 0 {
		// No ratio seen yet (a new Renderer): compress the whole document once to
		// learn it, and keep the result if it fits.
		st, err := r.layout(header, doc, 1, shardName, true, nil)
		if err != nil {
			return nil, err
		}
		r.ratio = float64(r.compressed.PlainBytes) / float64(r.compressed.StoredBytes)
		if st != nil {
			return st, nil
		}
	}
	ratio := r.ratio
	want := 1
	for want < MaxShards && float64(plain)/ratio/float64(want) > 0.7*float64(budget) {
		want *= 2
	}
	n := len(r.shards)
	if n == 0 && r.compressed != nil {
		n = 1
	}
	if n == 0 || n >= 4*want {
		n = want
	}
	for ; n <= MaxShards; n *= 2 {
		st, err := r.layout(header, doc, n, shardName, changed, removed)
		if err != nil {
			return nil, err
		}
		if st != nil {
			r.ratio = float64(st.PlainBytes) / float64(r.storedTotal(st))
			return st, nil
		}
	}
	return &Stored{TooLarge: true, PlainBytes: plain}, nil
}

// MaxShards bounds the shard count (quotaconfig.MaxShards).
const MaxShards = quotaconfig.MaxShards

// layout stores the document in n objects (1: compressed whole), or returns nil
// if one of them is over budget.
func (r *Renderer) layout(header []byte, doc *quotaconfig.Document, n int, shardName func(int) string, changed bool, removed []string) (*Stored, error) {
	if n == 1 {
		if changed || r.compressed == nil {
			data := r.whole(header, doc)
			gz, err := quotaconfig.Compress(data)
			if err != nil {
				return nil, fmt.Errorf("compress: %w", err)
			}
			r.compressed = &Stored{Layout: Compressed, Hash: quotaconfig.Hash(data), Key: quotaconfig.GzipDataKey, Data: gz, PlainBytes: len(data), StoredBytes: len(gz)}
		}
		r.shards = nil
		if r.compressed.StoredBytes > r.budget {
			return nil, nil
		}
		return r.compressed, nil
	}
	r.compressed = nil

	// Which shards changed: all of them when the count did, otherwise those
	// holding an app that was added, changed or removed.
	dirty := make([]bool, n)
	if len(r.shards) != n {
		r.shards = make([]shardEncoding, n)
		for i := range dirty {
			dirty[i] = true
		}
	}
	members := make([][]string, n)
	for id, e := range r.enc {
		i := quotaconfig.ShardOf(id, n)
		members[i] = append(members[i], id)
		if e.changed == r.seq {
			dirty[i] = true
		}
	}
	for _, id := range removed {
		dirty[quotaconfig.ShardOf(id, n)] = true
	}

	st := &Stored{Layout: Sharded}
	index := quotaconfig.Document{Version: doc.Version, DefaultProfile: doc.DefaultProfile, Profiles: doc.Profiles}
	var stream *shardStream
	for i := range n {
		s := &r.shards[i]
		if dirty[i] {
			if stream == nil {
				stream = newShardStream()
			}
			slices.Sort(members[i])
			stream.reset(len(s.gz))
			stream.writeString(`{"version":`)
			v, _ := json.Marshal(doc.Version) // a string always encodes
			stream.write(v)
			stream.writeString(`,"shard":` + strconv.Itoa(i) + `,"shards":` + strconv.Itoa(n))
			if len(members[i]) > 0 {
				stream.writeString(`,"apps":{`)
				for j, id := range members[i] {
					if j > 0 {
						stream.write(comma)
					}
					stream.write(r.enc[id].bytes)
				}
				stream.writeString("}")
			}
			stream.writeString("}")
			hash, gz, err := stream.finish()
			if err != nil {
				return nil, fmt.Errorf("compress shard %d: %w", i, err)
			}
			*s = shardEncoding{hash: hash, plain: stream.plain, gz: gz, apps: len(members[i])}
		}
		if len(s.gz) > r.budget {
			// Too large at this count: every shard is re-encoded at the next one.
			r.shards = nil
			return nil, nil
		}
		ref := quotaconfig.ShardRef{ConfigMap: shardName(i), Key: quotaconfig.ShardKey(i, n), Hash: s.hash, Apps: s.apps}
		index.Shards = append(index.Shards, ref)
		st.Shards = append(st.Shards, StoredShard{Ref: ref, Data: s.gz})
		st.PlainBytes += s.plain
		st.StoredBytes = max(st.StoredBytes, len(s.gz))
	}
	data, err := json.Marshal(&index)
	if err != nil {
		return nil, fmt.Errorf("encode index: %w", err)
	}
	st.Hash, st.Key, st.Data = quotaconfig.Hash(data), quotaconfig.DataKey, data
	st.PlainBytes += len(data)
	if len(data) > r.budget {
		// Many large profiles: the index goes compressed too.
		if st.Data, err = quotaconfig.Compress(data); err != nil {
			return nil, fmt.Errorf("compress index: %w", err)
		}
		st.Key = quotaconfig.GzipDataKey
		if len(st.Data) > r.budget {
			return nil, nil
		}
	}
	st.StoredBytes = max(st.StoredBytes, len(st.Data))
	return st, nil
}

func (r *Renderer) storedTotal(st *Stored) int {
	total := len(st.Data)
	for _, s := range st.Shards {
		total += len(s.Data)
	}
	return total
}

// whole is the whole document's JSON: header without its closing brace, then
// the apps sorted by ID (as json.Marshal sorts map keys).
func (r *Renderer) whole(header []byte, doc *quotaconfig.Document) []byte {
	if len(doc.Apps) == 0 {
		return header
	}
	ids := make([]string, 0, len(doc.Apps))
	size := len(header) + len(`,"apps":{}`)
	for id := range doc.Apps {
		ids = append(ids, id)
		size += len(r.enc[id].bytes) + 1
	}
	slices.Sort(ids)
	b := make([]byte, 0, size)
	b = append(b, header[:len(header)-1]...)
	b = append(b, `,"apps":{`...)
	for i, id := range ids {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, r.enc[id].bytes...)
	}
	return append(b, "}}"...)
}

var comma = []byte{','}

// shardStream hashes and compresses a shard as it is written, so the shard's
// plain JSON (10 MB at 100,000 apps in two shards) is never held whole. Its
// output is exactly quotaconfig.Hash and quotaconfig.Compress of those bytes.
type shardStream struct {
	gz    bytes.Buffer
	zw    *gzip.Writer
	sum   hash.Hash
	plain int
	err   error
}

func newShardStream() *shardStream {
	st := &shardStream{sum: sha256.New()}
	st.zw = quotaconfig.NewCompressor(&st.gz)
	return st
}

// reset starts a shard; sizeHint is its likely compressed size.
func (s *shardStream) reset(sizeHint int) {
	s.gz = bytes.Buffer{}
	s.gz.Grow(sizeHint + sizeHint/8)
	s.zw.Reset(&s.gz)
	s.sum.Reset()
	s.plain, s.err = 0, nil
}

func (s *shardStream) write(p []byte) {
	if s.err != nil {
		return
	}
	s.plain += len(p)
	s.sum.Write(p)
	_, s.err = s.zw.Write(p)
}

func (s *shardStream) writeString(p string) { s.write([]byte(p)) }

// finish returns the shard's hash and compressed bytes.
func (s *shardStream) finish() (string, []byte, error) {
	if s.err == nil {
		s.err = s.zw.Close()
	}
	if s.err != nil {
		return "", nil, s.err
	}
	return quotaconfig.FormatHash(s.sum.Sum(nil)), s.gz.Bytes(), nil
}

// appEncoding is one app's entry as it appears in the document, `"id":{...}`.
type appEncoding struct {
	app   quotaconfig.App
	bytes []byte
	// changed and seen are the Store call that last changed and last saw it.
	changed, seen uint64
}

// shardEncoding is one shard as last stored.
type shardEncoding struct {
	hash  string
	plain int
	gz    []byte
	apps  int
}

func appBytes(id string, a *quotaconfig.App) ([]byte, error) {
	k, _ := json.Marshal(id) // a string always encodes
	v, err := json.Marshal(a)
	if err != nil {
		return nil, fmt.Errorf("encode app %q: %w", id, err)
	}
	// Exactly sized: 100,000 of these stay in memory.
	out := make([]byte, 0, len(k)+1+len(v))
	out = append(append(append(out, k...), ':'), v...)
	return out, nil
}

// sameApp reports whether two entries encode the same.
func sameApp(x, y *quotaconfig.App) bool {
	return x.Profile == y.Profile && x.Source == y.Source &&
		slices.EqualFunc(x.Overrides, y.Overrides, func(a, b quotaconfig.Override) bool {
			return a.Group == b.Group && a.MaxTargets == b.MaxTargets && a.Reason == b.Reason &&
				slices.Equal(a.Limits, b.Limits) &&
				(a.ExpiresAt == nil) == (b.ExpiresAt == nil) &&
				(a.ExpiresAt == nil || a.ExpiresAt.Format(time.RFC3339Nano) == b.ExpiresAt.Format(time.RFC3339Nano))
		})
}

// MaxAppBytes bounds one app's entry in the document, `"id":{...}`: the
// AppQuota CRD bounds every list and string in it (128 overrides of 6 limits,
// a 256-character reason each...), and TestLargestAppQuotaFits checks this
// bound against the CRD's. A shard can hold a single app, so with a budget of
// at least MaxAppBytes+ShardOverheadBytes no AppQuota is too large to be
// written, and the webhook has nothing to refuse for size.
const MaxAppBytes = 280 << 10

// ShardOverheadBytes is room for what a shard adds around its apps (version,
// position, and gzip's header and worst-case expansion of incompressible data,
// 5 bytes per 16 KiB block).
const ShardOverheadBytes = 1 << 10
