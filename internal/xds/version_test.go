package xds_test

import (
	"strings"
	"testing"

	rlsconfv3 "github.com/envoyproxy/go-control-plane/ratelimit/config/ratelimit/v3"

	"github.com/appquota/appquota/internal/xds"
)

func TestParseVersion(t *testing.T) {
	for _, tc := range []struct {
		in      string
		seq     uint64
		hash    string
		wantErr string
	}{
		{in: "1-abc", seq: 1, hash: "abc"},
		{in: "18446744073709551615-f00d", seq: 18446744073709551615, hash: "f00d"},
		{in: "12-a-b", seq: 12, hash: "a-b"},
		{in: "", wantErr: "want <sequence>-<hash>"},
		{in: "7", wantErr: "want <sequence>-<hash>"},
		{in: "7-", wantErr: "want <sequence>-<hash>"},
		{in: "-abc", wantErr: "not a canonical decimal number"},
		{in: "007-abc", wantErr: "not a canonical decimal number"},
		{in: "0-abc", wantErr: "sequence starts at 1"},
		{in: "+7-abc", wantErr: "invalid syntax"},
		{in: "x7-abc", wantErr: "invalid syntax"},
		{in: "18446744073709551616-abc", wantErr: "value out of range"},
	} {
		seq, hash, err := xds.ParseVersion(tc.in)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("ParseVersion(%q) = %d, %q, %v; want an error containing %q", tc.in, seq, hash, err, tc.wantErr)
			}
			continue
		}
		if err != nil || seq != tc.seq || hash != tc.hash {
			t.Errorf("ParseVersion(%q) = %d, %q, %v; want %d, %q", tc.in, seq, hash, err, tc.seq, tc.hash)
		}
		if back := xds.FormatVersion(seq, hash); back != tc.in {
			t.Errorf("FormatVersion(ParseVersion(%q)) = %q", tc.in, back)
		}
	}
}

func TestCompareVersions(t *testing.T) {
	for _, tc := range []struct {
		a, b    string
		want    int
		wantErr bool
	}{
		{a: "1-x", b: "2-x", want: -1},
		{a: "2-x", b: "1-y", want: 1},
		// Numeric, not lexical: 10 follows 9.
		{a: "10-x", b: "9-x", want: 1},
		{a: "3-x", b: "3-x", want: 0},
		{a: "3-x", b: "3-y", wantErr: true},
		{a: "3-x", b: "three", wantErr: true},
		{a: "", b: "1-x", wantErr: true},
	} {
		got, err := xds.CompareVersions(tc.a, tc.b)
		if (err != nil) != tc.wantErr || (!tc.wantErr && got != tc.want) {
			t.Errorf("CompareVersions(%q, %q) = %d, %v; want %d, error %v", tc.a, tc.b, got, err, tc.want, tc.wantErr)
		}
	}
}

func TestNewVersion(t *testing.T) {
	a, b := testConfig("a", "chat"), testConfig("b", "chat")
	v1, err := xds.NewVersion(4, []*rlsconfv3.RateLimitConfig{a, b})
	if err != nil {
		t.Fatal(err)
	}
	seq, hash, err := xds.ParseVersion(v1)
	if err != nil || seq != 4 || len(hash) != 16 {
		t.Fatalf("NewVersion = %q: ParseVersion gives %d, %q, %v; want sequence 4 and a 16-character hash", v1, seq, hash, err)
	}
	swapped, err := xds.NewVersion(4, []*rlsconfv3.RateLimitConfig{b, a})
	if err != nil {
		t.Fatal(err)
	}
	if swapped != v1 {
		t.Errorf("NewVersion depends on the order of configs: %q, then %q", v1, swapped)
	}
	changed := testConfig("b", "chat")
	changed.Descriptors[0].RateLimit.RequestsPerUnit++
	other, err := xds.NewVersion(4, []*rlsconfv3.RateLimitConfig{a, changed})
	if err != nil {
		t.Fatal(err)
	}
	if other == v1 {
		t.Errorf("NewVersion gives %q for two different contents", v1)
	}
	empty, err := xds.NewVersion(1, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := xds.ParseVersion(empty); err != nil {
		t.Errorf("NewVersion(1, nil) = %q: %v", empty, err)
	}
}
