package controllers

import (
	"maps"
	"slices"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	quotav1 "github.com/appquota/appquota/api/v1alpha1"
	"github.com/appquota/appquota/internal/audit"
	"github.com/appquota/appquota/internal/layout"
	"github.com/appquota/appquota/internal/render"
	"github.com/appquota/appquota/pkg/quotaconfig"
)

// The record of the last change in AppQuota status (status.lastChange,
// docs/decisions/2026-12-05-last-change-in-status.md). The render loop knows
// what a write changed; the status controller writes the status. The render
// loop leaves a note on the Board before it publishes the render, so the
// status write that the new generation causes anyway carries the record: no
// write of its own.

// Bounds of the record, as the CRD's.
const (
	maxSummary = 1024
	maxBy      = 512
	// maxUncompared bounds the renders remembered as not compared: more
	// bulk writes than this before the statuses of the first caught up leave
	// its AppQuotas without a record, which is better than a Board that grows
	// with them.
	maxUncompared = 64
)

// changeNote is a change a render applied to one AppQuota's effective limits,
// until a status write records it.
type changeNote struct {
	generation int64
	by         string
	at         time.Time
	summary    string
}

// appChange is what one write did to one AppQuota's effective limits.
type appChange struct {
	app     *quotav1.AppQuota // the cache's: not to be modified
	appID   string
	changes []audit.Change
}

// limitChanges lists, for each AppQuota whose entry the write st changed,
// what that did to its effective limits, leaving out the overrides that
// expired (they have their own event). Empty when the write changed nothing
// or when the render could not compare (res.Before nil, a bulk change or a
// first render), and for an AppQuota since deleted.
func (r *QuotaReconciler) limitChanges(res *render.Result, st *layout.Stored) []appChange {
	if st.TooLarge || res.Before == nil {
		return nil
	}
	expired := map[string][]string{}
	for _, e := range res.Expirations {
		expired[e.Key] = append(expired[e.Key], e.Group)
	}
	doc := res.Document
	var out []appChange
	for id, before := range res.Before {
		var after *quotaconfig.App
		if a, ok := doc.Apps[id]; ok {
			after = &a
		}
		// The AppQuota the entry is now from, or the one it was from.
		src := ""
		switch {
		case after != nil:
			src = after.Source
		case before != nil:
			src = before.Source
		}
		obj, ok, err := r.AppQuotas.GetByKey(src)
		a, isApp := obj.(*quotav1.AppQuota)
		if err != nil || !ok || !isApp {
			continue // deleted: nothing to attach the change to
		}
		changes := audit.Changes(doc.Profiles, doc.DefaultProfile, before, after)
		changes = slices.DeleteFunc(changes, func(c audit.Change) bool { return slices.Contains(expired[src], c.Group) })
		if len(changes) > 0 {
			out = append(out, appChange{app: a, appID: id, changes: changes})
		}
	}
	return out
}

// noteChanges leaves on the Board what the write st of res did, at when it
// was written, for the status writes of the AppQuotas it changed. It must be
// called before the render is published, so that those writes find it.
func (r *QuotaReconciler) noteChanges(res *render.Result, st *layout.Stored, changed []appChange, at time.Time) {
	if st.TooLarge {
		return
	}
	if res.Before == nil {
		summary := "applied in the first configuration written since the manager started: the limits before are not known"
		if res.Change.Base != 0 {
			summary = "applied in a bulk write: more apps changed than are compared one by one; the overrides say what is in force"
		}
		r.Board.noteUncompared(res.Change.Seq, changeNote{at: at, summary: summary})
		return
	}
	notes := make(map[string]changeNote, len(changed))
	for _, c := range changed {
		out := res.Apps[c.app.Key()]
		if out == nil || !out.Valid {
			continue
		}
		notes[c.app.Key()] = changeNote{generation: out.Generation, by: c.app.Annotations[quotav1.ChangedByAnnotation],
			at: at, summary: audit.Summary(c.changes, maxSummary)}
	}
	r.Board.noteChanges(notes)
}

// noteChanges records the changes a render applied, by AppQuota key; a
// later one replaces an earlier one not recorded yet.
func (b *Board) noteChanges(notes map[string]changeNote) {
	if len(notes) == 0 {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	for key, n := range notes {
		b.changeNotes[key] = n
	}
}

// noteUncompared records that the render seq could not compare the limits
// before and after.
func (b *Board) noteUncompared(seq uint64, n changeNote) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.uncompared[seq] = n
	for len(b.uncompared) > maxUncompared {
		delete(b.uncompared, slices.Min(slices.Collect(maps.Keys(b.uncompared))))
	}
}

// lastChange is the record a status write of a, at the generation applied
// (orig is the status before), should carry, with the note to drop once it
// is written; nil when there is none: the AppQuota's changes since the last
// record left its effective limits as they were. since is the render that
// first carried a's outcome.
func (b *Board) lastChange(a *quotav1.AppQuota, orig *quotav1.AppQuotaStatus, since uint64) (*quotav1.LimitsChange, *changeNote) {
	b.mu.RLock()
	defer b.mu.RUnlock()
	n, ok := b.changeNotes[a.Key()]
	switch {
	case ok && n.generation <= a.Generation:
		// An earlier generation's change whose status was never written (a
		// later generation came first) is still the last change applied.
	case orig.ObservedGeneration != a.Generation:
		// The first status write of this generation: if its render could not
		// compare, say so rather than keep a record that may be stale.
		u, ok := b.uncompared[since]
		if !ok {
			return nil, nil
		}
		n = u
		n.generation, n.by = a.Generation, a.Annotations[quotav1.ChangedByAnnotation]
	default:
		return nil, nil
	}
	t := metav1.NewTime(n.at)
	return &quotav1.LimitsChange{By: truncateString(n.by, maxBy), At: &t, Generation: n.generation, Summary: n.summary}, &n
}

// recorded drops the note once a status write recorded it, unless a later
// render replaced it meanwhile.
func (b *Board) recorded(key string, n *changeNote) {
	if n == nil {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if cur, ok := b.changeNotes[key]; ok && cur == *n {
		delete(b.changeNotes, key)
	}
}

// truncateString cuts s to at most n bytes, dropping a UTF-8 sequence the
// cut would split.
func truncateString(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return strings.ToValidUTF8(s[:n], "")
}
