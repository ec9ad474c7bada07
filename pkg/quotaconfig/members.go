package quotaconfig

import (
	"bytes"
	"encoding/json"
	"slices"
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
	return (fnv1a(appID)>>8)&(1<<MemberBits-1) == 0
}

// fnv1a is the 64-bit FNV-1a hash of s (hash/fnv's New64a, without allocating).
func fnv1a(s string) uint64 {
	h := uint64(0xcbf29ce484222325)
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= 0x100000001b3
	}
	return h
}

// CompressDocument returns a document that has no shards as the controller
// stores it under GzipDataKey: json.Marshal(d) in gzip members, as above.
func CompressDocument(d *Document) ([]byte, error) {
	head, err := json.Marshal(&Document{Version: d.Version, DefaultProfile: d.DefaultProfile, Profiles: d.Profiles})
	if err != nil {
		return nil, err
	}
	return compressMembers(head, d.Apps)
}

// compressMembers compresses the object whose JSON is head (its JSON without
// apps, which must come last) with apps added, in members.
func compressMembers(head []byte, apps map[string]App) ([]byte, error) {
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
