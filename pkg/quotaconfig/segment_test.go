package quotaconfig

import (
	"math/rand/v2"
	"strings"
	"testing"
)

// TestSegmentMatchesIndexByte compares segment, which reads eight bytes at a
// time, with the obvious strings.IndexByte on random paths: '/' at every
// offset of a word, bytes one above and below it, and bytes with the high bit
// set (which the zero-byte trick must not mistake for '/').
func TestSegmentMatchesIndexByte(t *testing.T) {
	alphabet := []byte{'/', '/', '.', '0', 'a', 0x2e, 0x30, 0xaf, 0xff, 0x80, 0x00}
	want := func(path string, i int) (string, int) {
		if j := strings.IndexByte(path[i+1:], '/'); j >= 0 {
			return path[i+1 : i+1+j], i + 1 + j
		}
		return path[i+1:], len(path)
	}
	rng := rand.New(rand.NewPCG(7, 8))
	for range 200_000 {
		b := make([]byte, rng.IntN(40))
		for k := range b {
			b[k] = alphabet[rng.IntN(len(alphabet))]
		}
		path := string(b)
		for i := range len(path) {
			if path[i] != '/' {
				continue
			}
			gotSeg, gotNext := segment(path, i)
			wantSeg, wantNext := want(path, i)
			if gotSeg != wantSeg || gotNext != wantNext {
				t.Fatalf("segment(%q, %d) = %q, %d; want %q, %d", path, i, gotSeg, gotNext, wantSeg, wantNext)
			}
		}
	}
}
