package controllers

import (
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	quotav1 "github.com/appquota/appquota/api/v1alpha1"
)

// TestBoardLastChange: which record a status write carries. A note for the
// generation written, or an earlier one never written, is carried until a
// write records it (and only that note is dropped); none for a later
// generation than the object's; an uncompared render marks only the first
// write of a new generation, so a manager's first render after a restart
// records nothing for AppQuotas whose status already describes their
// generation.
func TestBoardLastChange(t *testing.T) {
	at := time.Date(2026, 12, 5, 14, 0, 0, 0, time.UTC)
	app := func(gen int64, by string) *quotav1.AppQuota {
		return &quotav1.AppQuota{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "a", Generation: gen,
			Annotations: map[string]string{quotav1.ChangedByAnnotation: by}}}
	}
	observed := func(gen int64) *quotav1.AppQuotaStatus { return &quotav1.AppQuotaStatus{ObservedGeneration: gen} }
	b := NewBoard(nil)

	if rec, _ := b.lastChange(app(2, "alice"), observed(1), 1); rec != nil {
		t.Fatalf("no note, a compared render: %+v, want no record", rec)
	}
	b.noteChanges(map[string]changeNote{"ns/a": {generation: 2, by: "alice", at: at, summary: "raised"}})
	if rec, _ := b.lastChange(app(1, "alice"), observed(1), 1); rec != nil {
		t.Errorf("a note for generation 2 on the cache's generation 1: %+v, want none", rec)
	}
	// Generation 3 (bob's edit of a reason) came before generation 2's status
	// was written: its write carries alice's change.
	rec, note := b.lastChange(app(3, "bob"), observed(1), 1)
	if rec == nil || rec.By != "alice" || rec.Generation != 2 || rec.Summary != "raised" || !rec.At.Time.Equal(at) {
		t.Fatalf("generation 3's write: %+v, want alice's change of generation 2", rec)
	}
	// A later render noted another change meanwhile: recording the first
	// keeps it.
	b.noteChanges(map[string]changeNote{"ns/a": {generation: 4, by: "carol", at: at.Add(time.Minute), summary: "lowered"}})
	b.recorded("ns/a", note)
	if rec, _ := b.lastChange(app(4, "carol"), observed(3), 1); rec == nil || rec.By != "carol" {
		t.Fatalf("carol's note after alice's was recorded: %+v", rec)
	}
	_, note = b.lastChange(app(4, "carol"), observed(3), 1)
	b.recorded("ns/a", note)
	if rec, _ := b.lastChange(app(4, "carol"), observed(4), 1); rec != nil {
		t.Errorf("after carol's was recorded: %+v, want none", rec)
	}

	b.noteUncompared(7, changeNote{at: at, summary: "applied in a bulk write"})
	if rec, _ := b.lastChange(app(5, "dave"), observed(4), 7); rec == nil || rec.By != "dave" || rec.Generation != 5 || rec.Summary != "applied in a bulk write" {
		t.Errorf("generation 5 first written after an uncompared render: %+v, want dave's, not compared", rec)
	}
	if rec, _ := b.lastChange(app(5, "dave"), observed(5), 7); rec != nil {
		t.Errorf("generation 5 already written (a restart's first render): %+v, want none", rec)
	}
	if rec, _ := b.lastChange(app(5, "dave"), observed(4), 8); rec != nil {
		t.Errorf("first carried by a compared render: %+v, want none", rec)
	}
	for seq := uint64(100); seq < 100+2*maxUncompared; seq++ {
		b.noteUncompared(seq, changeNote{at: at})
	}
	if _, ok := b.uncompared[7]; ok || len(b.uncompared) != maxUncompared {
		t.Errorf("uncompared renders kept: %d (7 among them: %t), want the last %d", len(b.uncompared), ok, maxUncompared)
	}
}
