package quotaconfig_test

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/appquota/appquota/internal/layout"

	qc "github.com/appquota/appquota/pkg/quotaconfig"
)

func TestFromConfigMap(t *testing.T) {
	files := configMap(t, 5)
	doc := []byte(files[qc.DataKey])
	gz, _ := layout.Compress(doc)
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
	gz, err := layout.Compress(plain[:len(plain)/2])
	if err != nil {
		t.Fatal(err)
	}
	rest, _ := layout.Compress(plain[len(plain)/2:])
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
	first, _ := layout.Compress(doc[:cut])
	second, _ := layout.Compress(doc[cut:])
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
