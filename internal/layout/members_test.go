package layout_test

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"testing"

	"github.com/appquota/appquota/internal/layout"

	qc "github.com/appquota/appquota/pkg/quotaconfig"
)

func TestCompressIsDeterministicAndReversible(t *testing.T) {
	doc, err := json.Marshal(storeDoc(77))
	if err != nil {
		t.Fatal(err)
	}
	a, err := layout.Compress(doc)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := layout.Compress(doc)
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

// CompressDocument's bytes are json.Marshal's, in a member for the head and
// one per run of apps that StartsMember cuts, and do not depend on anything
// but the document.
func TestCompressDocumentMembers(t *testing.T) {
	d := storeDoc(3000)
	plain, _ := json.Marshal(d)
	gz, err := layout.CompressDocument(d)
	if err != nil {
		t.Fatal(err)
	}
	if back, err := qc.Decompress(gz); err != nil || !bytes.Equal(back, plain) {
		t.Fatalf("does not decompress to json.Marshal's bytes: %v", err)
	}
	runs := 1
	for id := range d.Apps {
		if layout.StartsMember(id) {
			runs++
		}
	}
	// The first app starts the first run whether or not StartsMember says so.
	ids := slices.Sorted(maps.Keys(d.Apps))
	if layout.StartsMember(ids[0]) {
		runs--
	}
	if got := countMembers(t, gz); got != 1+runs || runs < 5 {
		t.Errorf("%d members, want the head and %d runs", got, runs)
	}
	again, _ := layout.CompressDocument(d)
	if !bytes.Equal(gz, again) {
		t.Error("not deterministic")
	}
	small := storeDoc(0)
	small.Apps = nil
	gz, _ = layout.CompressDocument(small)
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
			if layout.StartsMember(fmt.Sprintf(format, 1000000000+i)) {
				n++
			}
		}
		if want := 100000 >> layout.MemberBits; n < want*3/4 || n > want*5/4 {
			t.Errorf("%s: %d of 100000 start a member, want about %d", format, n, want)
		}
	}
}
