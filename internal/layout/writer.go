// Package layout stores a merged document in ConfigMaps as the controller
// writes them: plain, gzip-compressed in members, or an index and shards
// within a byte budget per object, rewriting only what a change touched. It is
// the writer's side of pkg/quotaconfig, which gateways use to read it back
// (docs/config-format.md).
package layout

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"hash"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/appquota/appquota/internal/delta"
	"github.com/appquota/appquota/pkg/quotaconfig"
)

// Layout is how a document is stored, chosen by Writer.Write from its size.
type Layout int

const (
	// Plain: the whole document under data limits.json.
	Plain Layout = iota
	// Compressed: the whole document gzip-compressed under binaryData
	// limits.json.gz, in gzip members (CompressDocument).
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
	// Recent is how many apps the index carries (changed, added or removed
	// since their shards were written; Writer.ShardAbove), 0 when none.
	Recent int
	// TooLarge is set when even MaxShards shards do not fit the budget; nothing
	// else is set then, and nothing must be written.
	TooLarge bool
}

// StoredShard is one shard ConfigMap's content.
type StoredShard struct {
	Ref quotaconfig.ShardRef
	// Data is the compressed shard, in gzip members, stored under binaryData
	// Ref.Key.
	Data []byte
}

// Writer lays merged documents out as the controller stores them, within a
// byte budget per object: plain while it fits, else gzip-compressed, else
// sharded (docs/scale.md). It remembers each app's encoding and each
// compressed object's gzip members from the last Write, so a change to one
// app re-encodes it and compresses only the member holding it. A Writer is
// not safe for concurrent use.
type Writer struct {
	// ShardAbove, when above 0, keeps what one change rewrites small: a
	// configuration whose compressed whole is larger than ShardAbove bytes is
	// sharded, and the apps changed since their shards were written ride in
	// the index until Compact, or until their entries pass RecentFactor times
	// ShardAbove; a plain one is compressed past PlainFactor times
	// ShardAbove. 0 keeps the canonical layout: plain, then compressed, then
	// sharded only over the budget, every app in its shard.
	ShardAbove int
	// Slot, when set, picks where shard i of n, whose uncompressed document
	// hashes to hash, is stored: slot 0 is shardName(i) under ShardKey(i, n),
	// slot 1 shardName(i+MaxShards) under SlotKey(i, n, 1). The controller
	// answers the slot that already holds exactly this shard, else the one
	// its current index does not name, so that a write never changes an
	// object a stored index refers to (docs/config-format.md, "Writes"). Nil
	// stores every shard in slot 0.
	Slot func(i, n int, hash string) int

	// seed is Seed's shard count, taken by the next sharded layout of a
	// Writer without shards of its own.
	seed int

	// applied is the Seq of the last Change written, 0 when the next Write
	// must start from its document alone.
	applied uint64
	seq     uint64
	budget  int
	enc     map[string]*appEncoding
	// appsBytes is the size of the apps' entries in enc, a comma each.
	appsBytes int
	// header is the last document's JSON without apps.
	header     []byte
	shards     []shardEncoding
	compressed *Stored
	ratio      float64
	// recent are the apps added, changed or removed since their shards were
	// last encoded, which the index carries (ShardAbove); compact asks the
	// next Write to fold them into their shards.
	recent  map[string]struct{}
	compact bool
	// indexHeadGz is the first gzip member of a compressed index: the JSON
	// of indexHead (a Write's header) to its profiles.
	indexHead, indexHeadGz []byte
}

// Write lays a merged document out within budget bytes per object: plain
// while it fits, else gzip-compressed, else sharded. With ShardAbove set, the
// plain document must fit PlainFactor times ShardAbove as well and the
// compressed one ShardAbove, and in the sharded layout the apps changed since
// their shards were encoded go into the index instead (Stored.Recent), so
// that a change rewrites only the index; they are folded into their shards by
// the Write after Compact, or once their entries pass RecentFactor times
// ShardAbove bytes (or the budget). Each compressed object is gzip members
// cut where StartsMember says.
//
// When ch follows the last Change written (delta.Change.Follows), only the
// apps it lists are encoded again; otherwise every app is. shardName names
// shard i's ConfigMap. The bytes are those json.Marshal, CompressDocument and
// Split produce; tests hold it to that.
func (r *Writer) Write(ch delta.Change, budget int, shardName func(i int) string) (*Stored, error) {
	doc := ch.Document
	incremental := ch.Follows(r.applied) && r.header != nil
	// Until this Write is done, a failure leaves state the next must rebuild.
	r.applied = 0
	r.seq++
	r.budget = budget
	if r.enc == nil {
		r.enc = map[string]*appEncoding{}
	}
	header := r.header
	if !incremental || ch.Profiles {
		var err error
		header, err = json.Marshal(&quotaconfig.Document{Version: doc.Version, DefaultProfile: doc.DefaultProfile, Profiles: doc.Profiles})
		if err != nil {
			return nil, fmt.Errorf("encode profiles: %w", err)
		}
	}
	changed := !bytes.Equal(header, r.header)
	// The apps this call added or changed, and removed, for the compressed
	// layouts to find the members they touch.
	var edited, removed []string
	update := func(id string) error {
		a, ok := doc.Apps[id]
		e := r.enc[id]
		if !ok {
			if e != nil {
				r.appsBytes -= len(e.bytes) + 1
				delete(r.enc, id)
				removed = append(removed, id)
				changed = true
			}
			return nil
		}
		b, err := appBytes(id, &a)
		if err != nil {
			return err
		}
		switch {
		case e == nil:
			e = &appEncoding{}
			r.enc[id] = e
		case bytes.Equal(e.bytes, b):
			e.seen = r.seq
			return nil
		default:
			r.appsBytes -= len(e.bytes) + 1
		}
		e.bytes = b
		r.appsBytes += len(e.bytes) + 1
		e.changed, e.seen = r.seq, r.seq
		edited = append(edited, id)
		changed = true
		return nil
	}
	if incremental {
		for _, id := range ch.Apps {
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
	st, err := r.lay(header, doc, shardName, changed, edited, removed)
	if err != nil {
		return nil, err
	}
	r.applied = ch.Seq
	return st, nil
}

// lay chooses the layout for the apps encoded and the profiles' header.
func (r *Writer) lay(header []byte, doc *quotaconfig.Document, shardName func(int) string, changed bool, edited, removed []string) (*Stored, error) {
	budget := r.budget
	r.header = header
	plain := len(header) + r.appsBytes

	if len(doc.Apps) > 0 {
		plain += len(`,"apps":{}`) - 1 // the header's closing brace makes way for these, and one comma fewer than apps
	}
	if plain <= r.bound(PlainFactor) {
		data := r.whole(header, doc)
		r.shards, r.compressed, r.recent, r.compact = nil, nil, nil, false
		return &Stored{
			Layout: Plain, Hash: quotaconfig.Hash(data), Key: quotaconfig.DataKey, Data: data,
			PlainBytes: len(data), StoredBytes: len(data),
		}, nil
	}

	// How many objects the compressed configuration needs: one (the whole
	// document compressed) or a power of two of shards. A new layout is sized
	// from the compression ratio last seen, to 70% of the budget; after that the
	// count doubles only when an object no longer fits and halves only when a
	// quarter of it would do, so a configuration near a boundary does not flip
	// between layouts and every shard is not rewritten for a small change.
	if r.ratio == 0 {
		// No ratio seen yet (a new Writer): compress the whole document once to
		// learn it, and keep the result if it fits.
		st, err := r.layout(header, doc, 1, shardName, true, edited, removed)
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
	if n == 0 && r.seed > 0 {
		n = r.seed
	}
	r.seed = 0
	if n == 0 && r.compressed != nil {
		n = 1
	}
	if n == 0 || n >= 4*want {
		n = want
	}
	for ; n <= MaxShards; n *= 2 {
		st, err := r.layout(header, doc, n, shardName, changed, edited, removed)
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

// RecentFactor bounds the apps the index carries (Writer.ShardAbove): once
// their entries pass RecentFactor times ShardAbove bytes, uncompressed, Write
// folds them into their shards. Sixteen times (256 KiB with the manager's
// default, about 1,300 apps with one override) keeps a burst of thousands of
// changes to a few shard writes, and the index a few tens of KB compressed.
const RecentFactor = 16

// PlainFactor bounds the plain layout (Writer.ShardAbove): the document is
// written uncompressed while it is at most PlainFactor times ShardAbove bytes.
// Four times (64 KiB with the manager's default: the catalog and a hundred or
// so apps) keeps a small configuration readable with kubectl, while its
// compressed form would be a few KB, no cheaper to write than the index.
const PlainFactor = 4

// Seed tells a Writer that starts on a stored configuration how many shards
// it has (0: not sharded): the next Write starts from that count, as the
// Writer that stored it would, instead of sizing a new layout. The same
// document then lays out into the same objects, so a new leader writes
// nothing when nothing changed. A Writer with shards of its own ignores it.
func (r *Writer) Seed(shards int) {
	if len(r.shards) == 0 {
		r.seed = shards
	}
}

// Compact makes the next Write fold the apps the index carries into their
// shards, so that the stored layout is again every app in its shard.
func (r *Writer) Compact() { r.compact = true }

// Recent is how many apps the index carries since the last Write.
func (r *Writer) Recent() int { return len(r.recent) }

// bound is factor times ShardAbove within the budget, or the budget alone
// when ShardAbove is off: the largest plain document (PlainFactor), compressed
// whole (1) and apps the index carries (RecentFactor) Write keeps.
func (r *Writer) bound(factor int) int {
	if r.ShardAbove > 0 {
		return min(r.budget, factor*r.ShardAbove)
	}
	return r.budget
}

// recentBytes is the size of the entries of the apps the index carries.
func (r *Writer) recentBytes() int {
	size := 0
	for id := range r.recent {
		if e, ok := r.enc[id]; ok {
			size += len(e.bytes) + 1
		}
	}
	return size
}

// foldRecent brings the apps the index carries into their shards (of n),
// marking those shards dirty.
func (r *Writer) foldRecent(n int, dirty []bool) {
	var edited, removed []string
	for id := range r.recent {
		if e, ok := r.enc[id]; ok {
			// Changed since its shard was encoded, maybe in an earlier Write:
			// its member is compressed again.
			e.changed = r.seq
			edited = append(edited, id)
		} else {
			removed = append(removed, id)
		}
	}
	r.syncShards(n, dirty, edited, removed)
	r.recent, r.compact = nil, false
}

// syncShards updates the shards (of n) holding the apps edited (added or
// changed) and removed, marking them dirty.
func (r *Writer) syncShards(n int, dirty []bool, edited, removed []string) {
	ed, rm := make([][]string, n), make([][]string, n)
	for _, id := range edited {
		i := quotaconfig.ShardOf(id, n)
		ed[i] = append(ed[i], id)
		dirty[i] = true
	}
	for _, id := range removed {
		i := quotaconfig.ShardOf(id, n)
		rm[i] = append(rm[i], id)
		dirty[i] = true
	}
	for i := range n {
		if dirty[i] {
			r.shards[i].sync(r.enc, ed[i], rm[i])
		}
	}
}

// layout stores the document in n objects (1: compressed whole), or returns nil
// if one of them is over budget. edited are the apps this Write call added or
// changed, removed those it removed.
func (r *Writer) layout(
	header []byte, doc *quotaconfig.Document, n int, shardName func(int) string, changed bool, edited, removed []string,
) (*Stored, error) {
	if n == 1 {
		return r.layoutWhole(header, changed, edited, removed)
	}
	r.compressed = nil
	dirty := r.dirtyShards(n, edited, removed)

	st := &Stored{Layout: Sharded}
	var refs []quotaconfig.ShardRef
	var w *memberWriter
	for i := range n {
		s := &r.shards[i]
		bare, _ := json.Marshal(&quotaconfig.Shard{Version: doc.Version, Shard: i, Shards: n}) // a string and ints always encode
		if dirty[i] || !bytes.Equal(bare, s.bare) {
			if w == nil {
				w = writers.Get().(*memberWriter)
				defer writers.Put(w)
			}
			if err := s.encode(r.seq, bare, w); err != nil {
				r.shards = nil
				return nil, fmt.Errorf("compress shard %d: %w", i, err)
			}
		}
		if len(s.gz) > r.budget {
			// Too large at this count: every shard is re-encoded at the next one.
			r.shards = nil
			return nil, nil
		}
		slot := 0
		if r.Slot != nil {
			slot = r.Slot(i, n, s.hash)
		}
		ref := quotaconfig.ShardRef{ConfigMap: shardName(i + slot*quotaconfig.MaxShards), Key: SlotKey(i, n, slot), Hash: s.hash, Apps: len(s.apps)}
		refs = append(refs, ref)
		st.Shards = append(st.Shards, StoredShard{Ref: ref, Data: s.gz})
		st.PlainBytes += s.plain
		st.StoredBytes = max(st.StoredBytes, len(s.gz))
	}
	tail, err := r.indexTail(n, refs, st)
	if err != nil {
		return nil, err
	}
	data := make([]byte, 0, len(header)-1+len(tail))
	data = append(append(data, header[:len(header)-1]...), tail...)
	st.Hash, st.Key, st.Data = quotaconfig.Hash(data), quotaconfig.DataKey, data
	st.PlainBytes += len(data)
	// The index is what a change rewrites when ShardAbove is set: compressed,
	// the catalog's 35 KB take 3 KB. Otherwise it is compressed only when many
	// large profiles make it large. It is two gzip members, the profiles and
	// the rest, so that a change compresses the catalog again only when it
	// changed.
	if r.ShardAbove > 0 || len(data) > r.budget {
		if !bytes.Equal(r.indexHead, header) || r.indexHeadGz == nil {
			gz, err := Compress(header[:len(header)-1])
			if err != nil {
				return nil, fmt.Errorf("compress index: %w", err)
			}
			r.indexHead, r.indexHeadGz = header, gz
		}
		rest, err := Compress(tail)
		if err != nil {
			return nil, fmt.Errorf("compress index: %w", err)
		}
		st.Data = append(slices.Clip(r.indexHeadGz), rest...)
		st.Key = quotaconfig.GzipDataKey
		if len(st.Data) > r.budget {
			return nil, nil
		}
	}
	st.StoredBytes = max(st.StoredBytes, len(st.Data))
	return st, nil
}

// layoutWhole stores the document compressed whole, in one object, or returns
// nil if that is over budget (ShardAbove's, or the budget).
func (r *Writer) layoutWhole(header []byte, changed bool, edited, removed []string) (*Stored, error) {
	// r.shards holds the whole document's one object, with every app.
	r.recent, r.compact = nil, false
	if len(r.shards) != 1 {
		r.shards, r.compressed = make([]shardEncoding, 1), nil
		ids := make([]string, 0, len(r.enc))
		for id := range r.enc {
			ids = append(ids, id)
		}
		r.shards[0].fill(r.enc, ids)
	} else if changed {
		r.shards[0].sync(r.enc, edited, removed)
	}
	if changed || r.compressed == nil {
		s := &r.shards[0]
		w := writers.Get().(*memberWriter)
		err := s.encode(r.seq, header, w)
		writers.Put(w)
		if err != nil {
			r.shards, r.compressed = nil, nil
			return nil, fmt.Errorf("compress: %w", err)
		}
		r.compressed = &Stored{Layout: Compressed, Hash: s.hash, Key: quotaconfig.GzipDataKey, Data: s.gz, PlainBytes: s.plain, StoredBytes: len(s.gz)}
	}
	if r.compressed.StoredBytes > r.bound(1) {
		return nil, nil
	}
	return r.compressed, nil
}

// dirtyShards brings r.shards to n shards holding the apps edited (added or
// changed) and removed, and says which changed: all of them when the count
// did, otherwise those holding an app that was added, changed or removed
// (with ShardAbove, only when the index's apps are folded into them).
func (r *Writer) dirtyShards(n int, edited, removed []string) []bool {
	dirty := make([]bool, n)
	switch {
	case len(r.shards) != n:
		r.recent, r.compact = nil, false
		r.shards = make([]shardEncoding, n)
		members := make([][]string, n)
		for id := range r.enc {
			i := quotaconfig.ShardOf(id, n)
			members[i] = append(members[i], id)
		}
		for i := range n {
			r.shards[i].fill(r.enc, members[i])
			dirty[i] = true
		}
	case r.ShardAbove > 0:
		if r.recent == nil {
			r.recent = map[string]struct{}{}
		}
		for _, id := range edited {
			r.recent[id] = struct{}{}
		}
		for _, id := range removed {
			r.recent[id] = struct{}{}
		}
		if r.compact || r.recentBytes() > r.bound(RecentFactor) {
			r.foldRecent(n, dirty)
		}
	default:
		r.syncShards(n, dirty, edited, removed)
	}
	return dirty
}

// indexTail is the index's JSON after its profiles, as json.Marshal writes
// a Document: the apps the index carries (from their encodings), the ones it
// removes, its shards (refs, of n), and the closing brace. It sets
// st.Recent.
func (r *Writer) indexTail(n int, refs []quotaconfig.ShardRef, st *Stored) ([]byte, error) {
	var ids, removed []string
	size := 0
	for id := range r.recent {
		if e, ok := r.enc[id]; ok {
			ids = append(ids, id)
			size += len(e.bytes) + 1
		} else if _, held := slices.BinarySearchFunc(r.shards[quotaconfig.ShardOf(id, n)].apps, id, compareApp); held {
			removed = append(removed, id)
		}
	}
	slices.Sort(ids)
	slices.Sort(removed)
	st.Recent = len(ids) + len(removed)
	shards, err := json.Marshal(refs)
	if err != nil {
		return nil, fmt.Errorf("encode index: %w", err)
	}
	b := make([]byte, 0, size+len(shards)+64)
	if len(ids) > 0 {
		b = append(b, `,"apps":{`...)
		for i, id := range ids {
			if i > 0 {
				b = append(b, ',')
			}
			b = append(b, r.enc[id].bytes...)
		}
		b = append(b, '}')
	}
	if len(removed) > 0 {
		b = append(b, `,"removedApps":`...)
		list, _ := json.Marshal(removed) // strings always encode
		b = append(b, list...)
	}
	b = append(b, `,"shards":`...)
	b = append(b, shards...)
	return append(b, '}'), nil
}

func (r *Writer) storedTotal(st *Stored) int {
	total := len(st.Data)
	for _, s := range st.Shards {
		total += len(s.Data)
	}
	return total
}

// whole is the whole document's JSON: header without its closing brace, then
// the apps sorted by ID (as json.Marshal sorts map keys).
func (r *Writer) whole(header []byte, doc *quotaconfig.Document) []byte {
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

// shardEncoding is one compressed object as last stored (the whole document in
// the Compressed layout, a shard in the Sharded one): its apps in ID order and
// the gzip members it was cut into (StartsMember), so that a
// change recompresses only the members holding what changed and the rest are
// copied. The plain JSON is never held whole: it streams through sha256 and,
// for the members that changed, gzip.
type shardEncoding struct {
	// apps are the object's apps, sorted by ID.
	apps []memberApp
	// bare is the object's JSON without apps, as last encoded; head the first
	// member's plain bytes (bare opened for the apps), headGz that member.
	bare, head, headGz []byte
	// runs are the members after the first, in order.
	runs []memberRun
	// hash, plain and gz are the object's hash, plain size and stored bytes.
	hash  string
	plain int
	gz    []byte
}

// memberApp is one app of an object.
type memberApp struct {
	id  string
	enc *appEncoding
	// starts is StartsMember(id).
	starts bool
}

// memberRun is a run of apps compressed as one member: from first to last, n
// apps, after a comma when lead, with the closing braces when tail.
type memberRun struct {
	first, last string
	n           int
	lead, tail  bool
	gz          []byte
}

// membersCompressed counts the gzip members compressed, for tests.
var membersCompressed atomic.Int64

// fill makes s an object holding the apps ids, with nothing compressed yet.
func (s *shardEncoding) fill(enc map[string]*appEncoding, ids []string) {
	slices.Sort(ids)
	*s = shardEncoding{apps: make([]memberApp, len(ids))}
	for i, id := range ids {
		s.apps[i] = memberApp{id: id, enc: enc[id], starts: StartsMember(id)}
	}
}

func compareApp(a memberApp, id string) int { return strings.Compare(a.id, id) }

// sync updates s.apps: edited are its apps added or changed since the last
// call, removed those removed.
func (s *shardEncoding) sync(enc map[string]*appEncoding, edited, removed []string) {
	if len(removed) <= 16 {
		for _, id := range removed {
			if j, found := slices.BinarySearchFunc(s.apps, id, compareApp); found {
				s.apps = slices.Delete(s.apps, j, j+1)
			}
		}
	} else {
		gone := make(map[string]bool, len(removed))
		for _, id := range removed {
			gone[id] = true
		}
		s.apps = slices.DeleteFunc(s.apps, func(a memberApp) bool { return gone[a.id] })
	}
	var added []memberApp
	for _, id := range edited {
		if j, found := slices.BinarySearchFunc(s.apps, id, compareApp); found {
			s.apps[j].enc = enc[id] // the same encoding, unless it was replaced
		} else {
			added = append(added, memberApp{id: id, enc: enc[id], starts: StartsMember(id)})
		}
	}
	if len(added) <= 16 {
		for _, a := range added {
			j, _ := slices.BinarySearchFunc(s.apps, a.id, compareApp)
			s.apps = slices.Insert(s.apps, j, a)
		}
	} else {
		s.apps = append(s.apps, added...)
		slices.SortFunc(s.apps, func(a, b memberApp) int { return strings.Compare(a.id, b.id) })
	}
}

// encode lays the object out again, bare being its JSON without apps:
// hashing all of it, compressing the members that changed (an app of theirs was
// added, changed or removed, or they became the first or last) and copying the
// others. Apps changed in Write call seq are those with appEncoding.changed ==
// seq.
func (s *shardEncoding) encode(seq uint64, bare []byte, w *memberWriter) error {
	head := bare
	if len(s.apps) > 0 {
		head = append(bare[:len(bare)-1:len(bare)-1], `,"apps":{`...)
	}
	w.sum.Reset()
	w.plain, w.compressing = 0, false
	if s.headGz == nil || !bytes.Equal(head, s.head) {
		w.begin(len(s.headGz))
		w.write(head)
		gz, err := w.end()
		if err != nil {
			return err
		}
		s.head, s.headGz = head, gz
	} else {
		w.write(head)
	}
	s.bare = bare
	total := len(s.headGz)
	runs := make([]memberRun, 0, len(s.runs)+1)
	k := 0
	for lo := 0; lo < len(s.apps); {
		hi, changed := lo+1, s.apps[lo].enc.changed == seq
		for hi < len(s.apps) && !s.apps[hi].starts {
			changed = changed || s.apps[hi].enc.changed == seq
			hi++
		}
		run := memberRun{first: s.apps[lo].id, last: s.apps[hi-1].id, n: hi - lo, lead: lo > 0, tail: hi == len(s.apps)}
		for k < len(s.runs) && s.runs[k].first < run.first {
			k++
		}
		// An old run from the same first to the same last app holds the same apps
		// if none was added (an added app is changed) and it held as many: the
		// run's apps are then among the old run's, which held every app between
		// the two.
		reuse := !changed && k < len(s.runs) && s.runs[k].first == run.first &&
			s.runs[k].last == run.last && s.runs[k].n == run.n && s.runs[k].lead == run.lead && s.runs[k].tail == run.tail
		if reuse {
			run.gz = s.runs[k].gz
		} else {
			hint := 8 << 10
			if k < len(s.runs) {
				hint = len(s.runs[k].gz)
			}
			w.begin(hint)
		}
		// One write per run: sha256 and gzip have a cost per call.
		b := w.buf[:0]
		if run.lead {
			b = append(b, ',')
		}
		for j := lo; j < hi; j++ {
			if j > lo {
				b = append(b, ',')
			}
			b = append(b, s.apps[j].enc.bytes...)
		}
		if run.tail {
			b = append(b, "}}"...)
		}
		w.write(b)
		w.buf = b
		if !reuse {
			gz, err := w.end()
			if err != nil {
				return err
			}
			run.gz = gz
		}
		total += len(run.gz)
		runs = append(runs, run)
		lo = hi
	}
	s.runs = runs
	gz := make([]byte, 0, total)
	gz = append(gz, s.headGz...)
	for _, run := range runs {
		gz = append(gz, run.gz...)
	}
	s.gz, s.plain, s.hash = gz, w.plain, quotaconfig.FormatHash(w.sum.Sum(nil))
	return nil
}

// memberWriter hashes an object as it is written and compresses the members
// being replaced, each as a gzip member of its own (Compress's
// bytes for the same input).
type memberWriter struct {
	sum hash.Hash
	zw  *gzip.Writer
	// gz receives the member being compressed, if any.
	gz          bytes.Buffer
	compressing bool
	plain       int
	err         error
	// buf holds a run's plain bytes while they are written.
	buf []byte
}

// writers keeps memberWriters (a gzip writer allocates about 1 MB) from one
// Write call to the next.
var writers = sync.Pool{New: func() any {
	w := &memberWriter{sum: sha256.New()}
	w.zw = NewCompressor(&w.gz)
	return w
}}

// begin starts a member; sizeHint is its likely compressed size.
func (w *memberWriter) begin(sizeHint int) {
	w.gz = bytes.Buffer{}
	w.gz.Grow(sizeHint + sizeHint/8)
	w.zw.Reset(&w.gz)
	w.compressing, w.err = true, nil
}

func (w *memberWriter) write(p []byte) {
	w.plain += len(p)
	w.sum.Write(p)
	if w.compressing && w.err == nil {
		_, w.err = w.zw.Write(p)
	}
}

// end finishes the member and returns its bytes.
func (w *memberWriter) end() ([]byte, error) {
	w.compressing = false
	if w.err == nil {
		w.err = w.zw.Close()
	}
	if w.err != nil {
		return nil, w.err
	}
	membersCompressed.Add(1)
	return w.gz.Bytes(), nil
}

// appEncoding is one app's entry as it appears in the document, `"id":{...}`.
type appEncoding struct {
	bytes []byte
	// changed and seen are the Write call that last changed and last saw it.
	changed, seen uint64
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
