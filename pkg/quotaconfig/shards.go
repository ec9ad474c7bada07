package quotaconfig

import (
	"fmt"
	"strconv"
	"strings"
)

// A configuration too large for one ConfigMap is split: the ConfigMap gateways
// name (the index) holds the document without its apps plus Document.Shards,
// and each shard, in a ConfigMap of its own, holds the apps ShardOf assigns to
// it. docs/config-format.md describes the layout; LoadConfigMaps and the
// Watcher put the pieces back together, so Resolve never sees the difference.

// MaxShards bounds Document.Shards. At the default 900 KiB budget, 64 shards
// hold several million apps with one override each.
const MaxShards = 64

// ShardRef is where one shard is stored.
type ShardRef struct {
	// ConfigMap is the name of the ConfigMap holding the shard, in the index's
	// namespace.
	ConfigMap string `json:"configMap"`
	// Key is the shard's key in that ConfigMap and its file name when mounted:
	// ending in ".json.gz" it is gzip-compressed under binaryData, ending in
	// ".json" it is plain under data. Keys are unique across all shards and shard
	// counts, so one projected volume can mount every shard ConfigMap.
	Key string `json:"key"`
	// Hash is "sha256:<hex>" of the uncompressed shard document.
	Hash string `json:"hash"`
	// Apps is how many apps the shard holds.
	Apps int `json:"apps"`
}

// Shard is the document stored under a ShardRef's key.
type Shard struct {
	// Version is FormatVersion.
	Version string `json:"version"`
	// Shard is this shard's position in the index's Shards, Shards their number.
	Shard  int `json:"shard"`
	Shards int `json:"shards"`
	// Apps by app ID: exactly the apps for which ShardOf(id, Shards) == Shard.
	Apps map[string]App `json:"apps,omitempty"`
}

// ShardOf is the shard of an app among n: FNV-1a (64-bit) of the app ID modulo
// n. With n a power of two, doubling n splits each shard in two (shard i into i
// and i+n) and moves no app anywhere else.
func ShardOf(appID string, n int) int {
	return int(AppHash(appID) % uint64(n))
}

// AppHash is the 64-bit FNV-1a hash of an app ID (hash/fnv's New64a, without
// allocating). ShardOf uses its low bits; a writer may use others (the
// layout's gzip members do) and stays independent of the shard count.
func AppHash(appID string) uint64 {
	h := uint64(0xcbf29ce484222325)
	for i := 0; i < len(appID); i++ {
		h ^= uint64(appID[i])
		h *= 0x100000001b3
	}
	return h
}

// shards checks an index's shard list.
func (v *validator) shards(d *Document) {
	if len(d.Shards) == 0 {
		if len(d.RemovedApps) > 0 {
			v.add("removedApps", "must be empty in a document without shards (%d entries)", len(d.RemovedApps))
		}
		return
	}
	if len(d.Shards) > MaxShards {
		v.add("shards", "has %d entries, more than %d", len(d.Shards), MaxShards)
	}
	for i, id := range d.RemovedApps {
		at := "removedApps[" + strconv.Itoa(i) + "]"
		switch _, listed := d.Apps[id]; {
		case id == "":
			v.add(at, "an app ID must not be empty")
		case i > 0 && id <= d.RemovedApps[i-1]:
			v.add(at, "%q is not after %q: the list is sorted and has no duplicates", id, d.RemovedApps[i-1])
		case listed:
			v.add(at, "%q is also in apps: an app is either changed or removed", id)
		}
	}
	keys := map[string]int{}
	for i, s := range d.Shards {
		at := "shards[" + strconv.Itoa(i) + "]"
		if s.ConfigMap == "" || len(s.ConfigMap) > 253 {
			v.add(at+".configMap", "must be a ConfigMap name of 1 to 253 characters")
		}
		if !validKey(s.Key) || (!strings.HasSuffix(s.Key, ".json") && !strings.HasSuffix(s.Key, ".json.gz")) {
			v.add(at+".key", "%q must be a ConfigMap key (letters, digits, '-', '_', '.') ending in .json or .json.gz", s.Key)
		} else if prev, dup := keys[s.Key]; dup {
			v.add(at+".key", "%q duplicates shards[%d]", s.Key, prev)
		} else {
			keys[s.Key] = i
		}
		if !validHash(s.Hash) {
			v.add(at+".hash", "%q is not sha256:<64 lowercase hex digits>", s.Hash)
		}
		if s.Apps < 0 {
			v.add(at+".apps", "%d is below 0", s.Apps)
		}
	}
}

func validKey(k string) bool {
	if k == "" || len(k) > 253 || k == "." || k == ".." {
		return false
	}
	for i := 0; i < len(k); i++ {
		if !isKeyByte(k[i]) {
			return false
		}
	}
	return true
}

// isKeyByte reports whether c may appear in a ConfigMap key: an ASCII
// letter or digit, '-', '_' or '.'.
func isKeyByte(c byte) bool {
	return c == '-' || c == '_' || c == '.' || ('a' <= c && c <= 'z') || ('A' <= c && c <= 'Z') || ('0' <= c && c <= '9')
}

func validHash(h string) bool {
	hex, ok := strings.CutPrefix(h, "sha256:")
	if !ok || len(hex) != 64 {
		return false
	}
	for i := 0; i < len(hex); i++ {
		if !isLowerHex(hex[i]) {
			return false
		}
	}
	return true
}

// isLowerHex reports whether c is a hexadecimal digit as Hash writes them.
func isLowerHex(c byte) bool { return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' }

// Assemble completes a sharded index: it fetches each shard's stored bytes
// (compressed when its key ends in .json.gz), checks them against the index's
// hash and app count, checks that every app is in the shard ShardOf assigns,
// then applies the index's own changes (RemovedApps dropped, Apps replacing or
// adding entries), and returns the whole document, validated, without Shards.
// A document that is not sharded is returned as it is.
//
// A shard that does not match its hash is an error, not a partial result: the
// index and its shards are written one object at a time, and a reader that
// catches them between two writes must keep its previous configuration and read
// again on the next change.
func Assemble(index *Document, fetch func(ShardRef) ([]byte, error)) (*Document, error) {
	if len(index.Shards) == 0 {
		return index, nil
	}
	out := &Document{Version: index.Version, DefaultProfile: index.DefaultProfile, Profiles: index.Profiles, Apps: map[string]App{}}
	n := len(index.Shards)
	for i, ref := range index.Shards {
		stored, err := fetch(ref)
		if err != nil {
			return nil, fmt.Errorf("shard %d (ConfigMap %s, key %s): %w", i, ref.ConfigMap, ref.Key, err)
		}
		s, err := parseShard(ref, stored)
		if err != nil {
			return nil, fmt.Errorf("shard %d (ConfigMap %s, key %s): %w", i, ref.ConfigMap, ref.Key, err)
		}
		if s.Shard != i || s.Shards != n {
			return nil, fmt.Errorf("shard %d (ConfigMap %s, key %s): says it is shard %d of %d", i, ref.ConfigMap, ref.Key, s.Shard, s.Shards)
		}
		for id, a := range s.Apps {
			if got := ShardOf(id, n); got != i {
				return nil, fmt.Errorf("shard %d (ConfigMap %s, key %s): app %q belongs in shard %d", i, ref.ConfigMap, ref.Key, id, got)
			}
			out.Apps[id] = a
		}
	}
	// The changes since the shards were written, which the index carries so
	// that one change rewrites only the index.
	for _, id := range index.RemovedApps {
		delete(out.Apps, id)
	}
	for id, a := range index.Apps {
		out.Apps[id] = a
	}
	if err := out.Validate(); err != nil {
		return nil, err
	}
	return out, nil
}

func parseShard(ref ShardRef, stored []byte) (*Shard, error) {
	data := stored
	if strings.HasSuffix(ref.Key, ".gz") {
		var err error
		if data, err = Decompress(stored); err != nil {
			return nil, err
		}
	}
	if got := Hash(data); got != ref.Hash {
		return nil, fmt.Errorf("hashes to %q, not the index's %q (written since the index was read?)", got, ref.Hash)
	}
	var s Shard
	if err := decodeStrict(data, &s, "shard"); err != nil {
		return nil, err
	}
	if s.Version != FormatVersion {
		return nil, fmt.Errorf("version %q is not %q", s.Version, FormatVersion)
	}
	if len(s.Apps) != ref.Apps {
		return nil, fmt.Errorf("holds %d apps, the index says %d", len(s.Apps), ref.Apps)
	}
	return &s, nil
}

// ConfigMapReader returns the data and binaryData of a ConfigMap by name, in the
// namespace of the index.
type ConfigMapReader func(name string) (data map[string]string, binaryData map[string][]byte, err error)

// LoadConfigMaps reads the document held by ConfigMap name and, when it is
// sharded, by the shard ConfigMaps its index names; it returns it assembled and
// validated.
func LoadConfigMaps(name string, read ConfigMapReader) (*Document, error) {
	data, binaryData, err := read(name)
	if err != nil {
		return nil, err
	}
	raw, err := FromConfigMap(data, binaryData)
	if err != nil {
		return nil, fmt.Errorf("ConfigMap %s: %w", name, err)
	}
	index, err := Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("ConfigMap %s: %w", name, err)
	}
	return Assemble(index, func(ref ShardRef) ([]byte, error) {
		data, binaryData, err := read(ref.ConfigMap)
		if err != nil {
			return nil, err
		}
		return ShardBytes(ref.Key, data, binaryData)
	})
}

// ShardBytes returns a shard's stored bytes from its ConfigMap's data and
// binaryData: under binaryData when the key ends in .gz, under data otherwise.
func ShardBytes(key string, data map[string]string, binaryData map[string][]byte) ([]byte, error) {
	if strings.HasSuffix(key, ".gz") {
		if b, ok := binaryData[key]; ok {
			return b, nil
		}
		return nil, fmt.Errorf("no binaryData key %q", key)
	}
	if s, ok := data[key]; ok {
		return []byte(s), nil
	}
	return nil, fmt.Errorf("no data key %q", key)
}
