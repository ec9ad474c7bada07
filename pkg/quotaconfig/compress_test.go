package quotaconfig_test

import (
	"bytes"
	"context"
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
	gz, err := qc.Compress([]byte(next[qc.DataKey]))
	if err != nil {
		t.Fatal(err)
	}
	// The kubelet links every key of the ConfigMap; a key that disappears keeps a
	// dangling link, which the reader must not mistake for the document.
	k.update(map[string]string{qc.GzipDataKey: string(gz), qc.HashKey: next[qc.HashKey]})
	k.link(qc.GzipDataKey)
	k.unlink(qc.DataKey)
	eventually(t, "the compressed document", func() bool { return fallbackMax(w.Current()) == 20 })
}
