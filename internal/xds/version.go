package xds

import (
	"cmp"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	rlsconfv3 "github.com/envoyproxy/go-control-plane/ratelimit/config/ratelimit/v3"
	"google.golang.org/protobuf/proto"
)

// hashChars is how much of the content hash a version keeps: 64 bits tell
// two renders apart for a reader; ordering comes from the sequence number.
const hashChars = 16

// FormatVersion names a configuration "<seq>-<hash>": seq orders the
// configurations one manager publishes, hash names their content. seq starts
// at 1; 0 stands for "nothing acknowledged" in the lag metric.
func FormatVersion(seq uint64, hash string) string {
	return strconv.FormatUint(seq, 10) + "-" + hash
}

// NewVersion is FormatVersion with the hash of configs, so that two replicas
// that rendered the same objects name the same content alike even where
// their sequence numbers differ. The order of configs does not matter: the
// snapshot holds them by name.
func NewVersion(seq uint64, configs []*rlsconfv3.RateLimitConfig) (string, error) {
	sorted := slices.Clone(configs)
	slices.SortFunc(sorted, func(a, b *rlsconfv3.RateLimitConfig) int { return cmp.Compare(a.GetName(), b.GetName()) })
	h := sha256.New()
	opts := proto.MarshalOptions{Deterministic: true}
	var buf []byte
	for _, c := range sorted {
		var err error
		buf, err = opts.MarshalAppend(buf[:0], c)
		if err != nil {
			return "", fmt.Errorf("marshal rate limit config %q: %w", c.GetName(), err)
		}
		// The length prefix keeps the boundaries between configs in the hash.
		h.Write(strconv.AppendInt(nil, int64(len(buf)), 10))
		h.Write([]byte{':'})
		h.Write(buf)
	}
	return FormatVersion(seq, hex.EncodeToString(h.Sum(nil))[:hashChars]), nil
}

// ParseVersion splits a version made by FormatVersion. seq is decimal without
// sign or leading zeros, so that one sequence number has one spelling.
func ParseVersion(v string) (seq uint64, hash string, err error) {
	num, hash, ok := strings.Cut(v, "-")
	if !ok || hash == "" {
		return 0, "", fmt.Errorf("parse version %q: want <sequence>-<hash>", v)
	}
	if num == "" || (len(num) > 1 && num[0] == '0') {
		return 0, "", fmt.Errorf("parse version %q: sequence %q is not a canonical decimal number", v, num)
	}
	seq, err = strconv.ParseUint(num, 10, 64)
	if err != nil {
		return 0, "", fmt.Errorf("parse version %q: %w", v, err)
	}
	if seq == 0 {
		return 0, "", fmt.Errorf("parse version %q: sequence starts at 1", v)
	}
	return seq, hash, nil
}

// errSameSequence says two versions claim one place in the order with
// different content; only mixing the versions of two managers does that.
var errSameSequence = errors.New("same sequence number, different content")

// CompareVersions orders two versions by sequence number: -1 if a is older
// than b, 0 if they are the same version, +1 if a is newer. Two different
// versions with the same sequence number do not compare.
func CompareVersions(a, b string) (int, error) {
	sa, _, err := ParseVersion(a)
	if err != nil {
		return 0, err
	}
	sb, _, err := ParseVersion(b)
	if err != nil {
		return 0, err
	}
	if sa == sb && a != b {
		return 0, fmt.Errorf("compare versions %q and %q: %w", a, b, errSameSequence)
	}
	return cmp.Compare(sa, sb), nil
}

// seqOf is the sequence number of a version this package accepted, or 0 for
// none. Every version the tracker records went through Publish, which parsed
// it, so an error here cannot happen and maps to "none".
func seqOf(v string) uint64 {
	seq, _, err := ParseVersion(v)
	if err != nil {
		return 0
	}
	return seq
}
