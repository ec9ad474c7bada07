package layout

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strconv"
	"sync"

	"github.com/appquota/appquota/pkg/quotaconfig"
)

// A compressed document or shard is stored as several gzip members, back to
// back (RFC 1952 section 2.2: that is one valid gzip file, and every gzip
// reader, Decompress included, returns the concatenation of their contents).
// The cut points depend only on the app IDs, so the same document always gives
// the same bytes, and a writer that changes one app recompresses only the
// member holding it. A reader needs none of this: it decompresses all members.
//
// The members of an object (document or shard) whose JSON is
// HEAD + APP_1 + "," + APP_2 + ... + APP_n + TAIL, HEAD being everything up to
// and including `"apps":{`, APP_i the entries `"id":{...}` in ID order and TAIL
// the closing `}}`, are:
//
//   - HEAD alone (the whole JSON when the object has no apps);
//   - one member per run of apps: a run starts at APP_1 and before every later
//     app for which StartsMember is true; a run other than the first begins
//     with the comma that precedes its first app, and the last run ends with
//     TAIL.

// MemberBits sets the members' size: a member starts before one app in
// 2^MemberBits, on average. At 256 apps of 150 to 250 bytes a member holds
// about 50 KB of JSON: large enough that compression loses little (about 13%
// against one member for the whole document), small enough that recompressing
// one takes half a millisecond.
const MemberBits = 8

// StartsMember reports whether a new gzip member starts before the app appID
// (unless it is the object's first app, which always starts one): whether bits
// 8 to 8+MemberBits-1 of the 64-bit FNV-1a hash of its ID (ShardOf's hash) are
// all zero. ShardOf uses bits 0 to 5 (at most 64 shards), so members are as
// frequent in every shard. Not the top bits: FNV-1a's top bits hardly depend on
// an ID's last characters, so sequential IDs (app-000001, app-000002, ...)
// would seldom start a member.
func StartsMember(appID string) bool {
	return (quotaconfig.AppHash(appID)>>8)&(1<<MemberBits-1) == 0
}

// CompressDocument returns a document that has no shards as the controller
// stores it under quotaconfig.GzipDataKey: json.Marshal(d) in gzip members, as above.
func CompressDocument(d *quotaconfig.Document) ([]byte, error) {
	head, err := json.Marshal(&quotaconfig.Document{Version: d.Version, DefaultProfile: d.DefaultProfile, Profiles: d.Profiles})
	if err != nil {
		return nil, err
	}
	return compressMembers(head, d.Apps)
}

// compressMembers compresses the object whose JSON is head (its JSON without
// apps, which must come last) with apps added, in members.
func compressMembers(head []byte, apps map[string]quotaconfig.App) ([]byte, error) {
	if len(apps) == 0 {
		return Compress(head)
	}
	head = append(head[:len(head)-1:len(head)-1], `,"apps":{`...)
	out, err := Compress(head)
	if err != nil {
		return nil, err
	}
	ids := make([]string, 0, len(apps))
	for id := range apps {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	var run bytes.Buffer
	for i, id := range ids {
		if i > 0 && StartsMember(id) {
			gz, err := Compress(run.Bytes())
			if err != nil {
				return nil, err
			}
			out = append(out, gz...)
			run.Reset()
		}
		if i > 0 {
			run.WriteByte(',')
		}
		k, _ := json.Marshal(id) // a string always encodes
		a := apps[id]
		v, err := json.Marshal(&a)
		if err != nil {
			return nil, err
		}
		run.Write(k)
		run.WriteByte(':')
		run.Write(v)
	}
	run.WriteString("}}")
	gz, err := Compress(run.Bytes())
	if err != nil {
		return nil, err
	}
	return append(out, gz...), nil
}

// ShardKey is the key (and mounted file name) of shard i of n, compressed.
func ShardKey(i, n int) string { return SlotKey(i, n, 0) }

// SlotKey is the key (and mounted file name) of shard i of n stored in slot
// 0 or 1 (Writer.Slot): ShardKey's for slot 0, with ".b" before the
// extension for slot 1, so that both slots mount into one volume.
func SlotKey(i, n, slot int) string {
	k := "limits-" + strconv.Itoa(i) + "-of-" + strconv.Itoa(n)
	if slot == 1 {
		k += ".b"
	}
	return k + ".json.gz"
}

// Split divides a document into an index and n shards as the controller stores
// them: the index's JSON (which goes under quotaconfig.DataKey, or quotaconfig.GzipDataKey when large)
// and each shard's JSON gzip-compressed in members (see StartsMember), to be
// stored in ConfigMap configMap(i) under binaryData ShardKey(i, n). Split is the
// reference for writers; the controller produces the same bytes without
// re-encoding unchanged shards or members.
func Split(d *quotaconfig.Document, n int, configMap func(i int) string) (index []byte, shards [][]byte, err error) {
	if n < 1 || n > quotaconfig.MaxShards {
		return nil, nil, fmt.Errorf("shard count %d is not between 1 and %d", n, quotaconfig.MaxShards)
	}
	parts := make([]quotaconfig.Shard, n)
	for i := range parts {
		parts[i] = quotaconfig.Shard{Version: quotaconfig.FormatVersion, Shard: i, Shards: n, Apps: map[string]quotaconfig.App{}}
	}
	for id, a := range d.Apps {
		parts[quotaconfig.ShardOf(id, n)].Apps[id] = a
	}
	idx := quotaconfig.Document{Version: d.Version, DefaultProfile: d.DefaultProfile, Profiles: d.Profiles}
	for i := range parts {
		plain, err := json.Marshal(&parts[i])
		if err != nil {
			return nil, nil, err
		}
		head, _ := json.Marshal(&quotaconfig.Shard{Version: parts[i].Version, Shard: i, Shards: n}) // ints and a string always encode
		gz, err := compressMembers(head, parts[i].Apps)
		if err != nil {
			return nil, nil, err
		}
		shards = append(shards, gz)
		idx.Shards = append(idx.Shards, quotaconfig.ShardRef{
			ConfigMap: configMap(i),
			Key:       ShardKey(i, n),
			Hash:      quotaconfig.Hash(plain),
			Apps:      len(parts[i].Apps),
		})
	}
	if index, err = json.Marshal(&idx); err != nil {
		return nil, nil, err
	}
	return index, shards, nil
}

// Compress gzips a document deterministically (at the default level: the
// best level is several times slower for a few percent): the same bytes in, the same
// bytes out (no timestamp or name in the header), so an unchanged document is
// never rewritten.
func Compress(doc []byte) ([]byte, error) {
	var buf bytes.Buffer
	zw := compressors.Get().(*gzip.Writer)
	defer compressors.Put(zw)
	zw.Reset(&buf)
	if _, err := zw.Write(doc); err != nil {
		return nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// compressors keeps Compress's gzip writers from one call to the next: each
// allocates about 1 MB of state, and the controller compresses on every
// change it stores (Reset makes one as good as new).
var compressors = sync.Pool{New: func() any { return NewCompressor(io.Discard) }}

// NewCompressor returns the gzip writer Compress writes through, for a
// document compressed while it is being written rather than held whole.
func NewCompressor(w io.Writer) *gzip.Writer {
	// The default level is a valid level: no error.
	zw, _ := gzip.NewWriterLevel(w, gzip.DefaultCompression)
	return zw
}
