package quotaconfig_test

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"testing"

	qc "github.com/appquota/appquota/pkg/quotaconfig"
)

func TestCompressIsDeterministicAndReversible(t *testing.T) {
	doc := []byte(configMap(t, 77)[qc.DataKey])
	a, err := qc.Compress(doc)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := qc.Compress(doc)
	if !bytes.Equal(a, b) {
		t.Error("compressing the same document twice gave different bytes")
	}
	back, err := qc.Decompress(a)
	if err != nil || !bytes.Equal(back, doc) {
		t.Errorf("round trip: %v", err)
	}
	if _, err := qc.Decompress([]byte("not gzip")); err == nil || !strings.Contains(err.Error(), "limits.json.gz") {
		t.Errorf("garbage: %v", err)
	}
}

func TestFromConfigMap(t *testing.T) {
	files := configMap(t, 5)
	doc := []byte(files[qc.DataKey])
	gz, _ := qc.Compress(doc)
	hash := strings.TrimSpace(files[qc.HashKey])
	cases := []struct {
		name   string
		data   map[string]string
		binary map[string][]byte
		err    string
	}{
		{"plain", map[string]string{qc.DataKey: string(doc), qc.HashKey: hash}, nil, ""},
		{"compressed", map[string]string{qc.HashKey: hash}, map[string][]byte{qc.GzipDataKey: gz}, ""},
		{"neither", map[string]string{qc.HashKey: hash}, nil, `quotaconfig: the ConfigMap has neither data "limits.json" nor binaryData "limits.json.gz"`},
		{"hash mismatch", map[string]string{qc.HashKey: "sha256:00"}, map[string][]byte{qc.GzipDataKey: gz}, `quotaconfig: limits.sha256 is "sha256:00" but the document hashes to "` + hash + `"`},
	}
	for _, tc := range cases {
		got, err := qc.FromConfigMap(tc.data, tc.binary)
		switch {
		case tc.err == "" && (err != nil || !bytes.Equal(got, doc)):
			t.Errorf("%s: %v", tc.name, err)
		case tc.err != "" && (err == nil || err.Error() != tc.err):
			t.Errorf("%s: got %v, want %s", tc.name, err, tc.err)
		}
	}
}

// TestWatcherFollowsCompressedDocument: a mounted ConfigMap that switches from
// plain to compressed (the controller does so near the size budget) keeps
// reloading.
func TestWatcherFollowsCompressedDocument(t *testing.T) {
	k := newKubelet(t, configMap(t, 10))
	w, err := qc.NewWatcher(k.dir)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = w.Run(ctx) }()

	next := configMap(t, 20)
	// In two gzip members, as the controller writes it.
	plain := []byte(next[qc.DataKey])
	gz, err := qc.Compress(plain[:len(plain)/2])
	if err != nil {
		t.Fatal(err)
	}
	rest, _ := qc.Compress(plain[len(plain)/2:])
	gz = append(gz, rest...)
	// The kubelet links every key of the ConfigMap; a key that disappears keeps a
	// dangling link, which the reader must not mistake for the document.
	k.update(map[string]string{qc.GzipDataKey: string(gz), qc.HashKey: next[qc.HashKey]})
	k.link(qc.GzipDataKey)
	k.unlink(qc.DataKey)
	eventually(t, "the compressed document", func() bool { return fallbackMax(w.Current()) == 20 })
}

// A gzip file of several members (as the controller writes large documents)
// decompresses to the concatenation of the members' contents, in every reader.
func TestDecompressReadsEveryMember(t *testing.T) {
	doc := []byte(configMap(t, 9)[qc.DataKey])
	cut := len(doc) / 3
	first, _ := qc.Compress(doc[:cut])
	second, _ := qc.Compress(doc[cut:])
	gz := append(append([]byte{}, first...), second...)
	back, err := qc.Decompress(gz)
	if err != nil || !bytes.Equal(back, doc) {
		t.Fatalf("two members: %v, %d of %d bytes", err, len(back), len(doc))
	}
	got, err := qc.FromConfigMap(map[string]string{qc.HashKey: qc.Hash(doc)}, map[string][]byte{qc.GzipDataKey: gz})
	if err != nil || !bytes.Equal(got, doc) {
		t.Errorf("FromConfigMap, two members: %v", err)
	}
	if _, err := qc.Decompress(gz[:len(gz)-3]); err == nil {
		t.Error("a truncated last member decompressed")
	}
}

// CompressDocument's bytes are json.Marshal's, in a member for the head and
// one per run of apps that StartsMember cuts, and do not depend on anything
// but the document.
func TestCompressDocumentMembers(t *testing.T) {
	d := shardedDoc(3000)
	plain, _ := json.Marshal(d)
	gz, err := qc.CompressDocument(d)
	if err != nil {
		t.Fatal(err)
	}
	if back, err := qc.Decompress(gz); err != nil || !bytes.Equal(back, plain) {
		t.Fatalf("does not decompress to json.Marshal's bytes: %v", err)
	}
	runs := 1
	for id := range d.Apps {
		if qc.StartsMember(id) {
			runs++
		}
	}
	// The first app starts the first run whether or not StartsMember says so.
	ids := slices.Sorted(maps.Keys(d.Apps))
	if qc.StartsMember(ids[0]) {
		runs--
	}
	if got := countMembers(t, gz); got != 1+runs || runs < 5 {
		t.Errorf("%d members, want the head and %d runs", got, runs)
	}
	again, _ := qc.CompressDocument(d)
	if !bytes.Equal(gz, again) {
		t.Error("not deterministic")
	}
	small := shardedDoc(0)
	small.Apps = nil
	gz, _ = qc.CompressDocument(small)
	plain, _ = json.Marshal(small)
	if back, err := qc.Decompress(gz); err != nil || !bytes.Equal(back, plain) || countMembers(t, gz) != 1 {
		t.Errorf("no apps: %v, %d members", err, countMembers(t, gz))
	}
}

func countMembers(t *testing.T, gz []byte) int {
	t.Helper()
	r := bytes.NewReader(gz)
	n := 0
	for r.Len() > 0 {
		zr, err := gzip.NewReader(r)
		if err != nil {
			t.Fatal(err)
		}
		zr.Multistream(false)
		if _, err := io.Copy(io.Discard, zr); err != nil {
			t.Fatal(err)
		}
		n++
	}
	return n
}

// StartsMember cuts sequential IDs too (FNV-1a's top bits would not).
func TestStartsMemberRate(t *testing.T) {
	for _, format := range []string{"app-%d", "app-%06d", "%d"} {
		n := 0
		for i := range 100000 {
			if qc.StartsMember(fmt.Sprintf(format, 1000000000+i)) {
				n++
			}
		}
		if want := 100000 >> qc.MemberBits; n < want*3/4 || n > want*5/4 {
			t.Errorf("%s: %d of 100000 start a member, want about %d", format, n, want)
		}
	}
}
