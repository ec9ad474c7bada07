package controllers

import (
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/appquota/appquota/internal/layout"
	"github.com/appquota/appquota/internal/render"
)

// publisher is what the render loop remembers from one render to the next:
// the merger and the layout writer (each keeps its own per-object work), and
// what was last written. Only the render loop's one worker uses it.
type publisher struct {
	merger render.Merger
	writer layout.Writer

	// published is set while the merger's last result is the document the
	// ConfigMaps hold (the merger keeps it, so no second copy of every app
	// is kept here), and lastGoodHash is its hash: while the ConfigMap still
	// holds it, it need not be parsed again.
	published    bool
	lastGoodHash string
	// trusted is set while the merger's last result carries every last good
	// entry: it was merged from a stored document that verified, from a
	// trusted last result, or when nothing was stored. When the stored set
	// cannot be read it stands in for it; a merge without either is not
	// trusted, and is held (see previous).
	trusted bool
	// rv are the resourceVersions our last writes returned, by ConfigMap
	// name: the preconditions of the next writes, so that a deposed leader's
	// write fails instead of landing over its successor's.
	rv map[string]string
	// lastWrite is when the ConfigMaps were last written.
	lastWrite time.Time
	// written is what the last render laid out, while the ConfigMaps were
	// brought in line with it, and nextExpiry its earliest expiry or end of
	// a reservation. Together
	// they tell a render that would change nothing.
	written    *layout.Stored
	nextExpiry *time.Time
	// reservations are the app ID reservations as stored (reservations.go).
	reservations reservations
}

// merge merges in, taking the merger's last result as the previous document
// when in has none and prev says so.
func (p *publisher) merge(in render.Input, prev previous) (*render.Result, error) {
	in.PreviousIsLast = in.Previous == nil && (prev == previousLast || prev == previousFallback)
	// Until this result is written, the ConfigMaps hold something else.
	p.published = false
	res, err := p.merger.Merge(in)
	if err != nil {
		return nil, err
	}
	// The output changes on its own at an override's expiry, and at the end
	// of a reservation (a claim it held may take its ID).
	p.nextExpiry = res.NextExpiry
	if u := res.ReservedUntil; u != nil && (p.nextExpiry == nil || u.Before(*p.nextExpiry)) {
		p.nextExpiry = u
	}
	// previousNone with nothing stored (a new install) is trusted: there is
	// no last good entry to keep.
	p.trusted = prev != previousUnverified
	return res, nil
}

// lay lays the merged document out: plain while it fits ShardAbove and the
// budget, then gzip-compressed, then sharded with changes in the index; over
// the budget even in MaxShards shards it is TooLarge, and nothing is to be
// written. The apps the index carries are folded into their shards once
// writes have been quiet for compactAfter.
func (p *publisher) lay(res *render.Result, budget int, compactAfter time.Duration, shardName func(int) string) (*layout.Stored, error) {
	if p.foldDue(compactAfter) {
		p.writer.Compact()
	}
	p.written = nil
	return p.writer.Write(res.Change, budget, shardName)
}

// wrote records a write of st to the ConfigMaps: whether anything was
// written (from start), and whether it completed.
func (p *publisher) wrote(st *layout.Stored, wrote, complete bool, start time.Time) {
	if wrote {
		p.lastWrite = start
	}
	if complete {
		p.published, p.lastGoodHash, p.written = true, st.Hash, st
	}
}

// requeueAfter is when the last render's output changes with no event: the
// next override expiry, or the fold of the apps the index carries once writes
// are quiet; 0 when neither.
func (p *publisher) requeueAfter(now time.Time, compactAfter time.Duration) time.Duration {
	var next time.Duration
	if p.nextExpiry != nil {
		next = max(p.nextExpiry.Sub(now), time.Millisecond)
	}
	if p.writer.Recent() > 0 {
		fold := max(time.Until(p.lastWrite.Add(compactAfter)), time.Millisecond)
		if next == 0 || fold < next {
			next = fold
		}
	}
	return next
}

// foldDue reports whether the index carries apps and writes have been quiet
// for compactAfter: then they are folded into their shards.
func (p *publisher) foldDue(compactAfter time.Duration) bool {
	return p.writer.Recent() > 0 && time.Since(p.lastWrite) >= compactAfter
}

// idle reports whether a render now would change nothing, given that no
// AppQuota or QuotaProfile changed since the last: our ConfigMaps (ours, by
// name; the index is named index) hold exactly what it wrote, no override
// has expired since and no fold is due.
func (p *publisher) idle(now time.Time, compactAfter time.Duration, ours map[string]*corev1.ConfigMap, index string) bool {
	st := p.written
	if st == nil || (p.nextExpiry != nil && !now.Before(*p.nextExpiry)) || p.foldDue(compactAfter) ||
		len(ours) != 1+len(st.Shards) {
		return false
	}
	if cm := ours[index]; cm == nil || !holds(cm, st) {
		return false // not as written: repair it
	}
	for _, s := range st.Shards {
		if cm := ours[s.Ref.ConfigMap]; cm == nil || !holdsShard(cm, s) {
			return false
		}
	}
	return true
}
