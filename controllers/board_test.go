package controllers

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"testing"

	"k8s.io/apimachinery/pkg/types"

	"github.com/appquota/appquota/internal/layout"
	"github.com/appquota/appquota/internal/render"
)

// TestBoardPublish: the Board keeps its own copy of the outcomes, updated from
// an incremental result's Changed alone, and queues exactly the AppQuotas
// whose outcome differs, those touched, and all while the configuration is
// too large.
func TestBoardPublish(t *testing.T) {
	valid := &render.Outcome{Valid: true, Generation: 1}
	invalid := &render.Outcome{Reason: "Invalid", Generation: 2}
	sameAsValid := &render.Outcome{Valid: true, Generation: 1}
	stored := &snapshot{stored: &layout.Stored{Hash: "sha256:1"}}
	tooLarge := &snapshot{stored: &layout.Stored{TooLarge: true}}
	// apps is the Renderer's map, which it updates in place between results.
	apps := map[string]*render.Outcome{"ns/a": valid, "ns/b": valid, "ns/c": valid}

	b := NewBoard(nil)
	steps := []struct {
		name    string
		change  func()
		res     func() *render.Result
		snap    *snapshot
		touched []types.NamespacedName
		queued  []string
		holds   map[string]*render.Outcome
	}{{
		name:   "first render: every AppQuota",
		res:    func() *render.Result { return &render.Result{Apps: apps} },
		snap:   stored,
		queued: []string{"ns/a", "ns/b", "ns/c"},
		holds:  map[string]*render.Outcome{"ns/a": valid, "ns/b": valid, "ns/c": valid},
	}, {
		name:   "incremental: b invalid, c deleted, a not in Changed",
		change: func() { apps["ns/b"] = invalid; delete(apps, "ns/c") },
		res: func() *render.Result {
			return &render.Result{Apps: apps, Incremental: true, Changed: []string{"ns/b", "ns/c"}}
		},
		snap:   stored,
		queued: []string{"ns/b"},
		holds:  map[string]*render.Outcome{"ns/a": valid, "ns/b": invalid},
	}, {
		name:    "incremental: an equal outcome is not queued, a touched one is, once",
		change:  func() { apps["ns/a"] = sameAsValid },
		res:     func() *render.Result { return &render.Result{Apps: apps, Incremental: true, Changed: []string{"ns/a"}} },
		snap:    stored,
		touched: []types.NamespacedName{{Namespace: "ns", Name: "b"}, {Namespace: "ns", Name: "b"}, {Namespace: "ns", Name: "gone"}},
		queued:  []string{"ns/b"},
		holds:   map[string]*render.Outcome{"ns/a": sameAsValid, "ns/b": invalid},
	}, {
		name:   "too large: every AppQuota",
		res:    func() *render.Result { return &render.Result{Apps: apps, Incremental: true} },
		snap:   tooLarge,
		queued: []string{"ns/a", "ns/b"},
		holds:  map[string]*render.Outcome{"ns/a": sameAsValid, "ns/b": invalid},
	}, {
		name:   "a render not published, then an incremental one: every outcome compared",
		change: func() { b.missedOne(); apps["ns/b"] = valid; apps["ns/a"] = invalid },
		res:    func() *render.Result { return &render.Result{Apps: apps, Incremental: true, Changed: []string{"ns/a"}} },
		snap:   stored,
		queued: []string{"ns/a", "ns/b"},
		holds:  map[string]*render.Outcome{"ns/a": invalid, "ns/b": valid},
	}, {
		name:   "then incremental again",
		change: func() { apps["ns/b"] = invalid },
		res:    func() *render.Result { return &render.Result{Apps: apps, Incremental: true, Changed: []string{"ns/b"}} },
		snap:   stored,
		queued: []string{"ns/b"},
		holds:  map[string]*render.Outcome{"ns/a": invalid, "ns/b": invalid},
	}, {
		name: "full render: a new map, only what differs",
		res: func() *render.Result {
			apps = map[string]*render.Outcome{"ns/a": sameAsValid, "ns/b": valid, "ns/d": valid}
			return &render.Result{Apps: apps}
		},
		snap:   stored,
		queued: []string{"ns/a", "ns/b", "ns/d"},
		holds:  map[string]*render.Outcome{"ns/a": sameAsValid, "ns/b": valid, "ns/d": valid},
	}}

	for _, s := range steps {
		if s.change != nil {
			s.change()
		}
		b.publish(context.Background(), s.res(), s.snap, s.touched)
		var queued []string
		for len(b.changed) > 0 {
			o := (<-b.changed).Object
			queued = append(queued, o.GetNamespace()+"/"+o.GetName())
		}
		slices.Sort(queued)
		if !slices.Equal(queued, s.queued) {
			t.Errorf("%s: queued %v, want %v", s.name, queued, s.queued)
		}
		if !maps.Equal(b.outcomes, s.holds) {
			t.Errorf("%s: the Board holds %v, want %v", s.name, b.outcomes, s.holds)
		}
		for key, want := range s.holds {
			if snap, got, _, ok := b.read(key); !ok || got != want || snap != s.snap {
				t.Errorf("%s: read(%s) = %v %v %t, want %v %v", s.name, key, snap, got, ok, s.snap, want)
			}
		}
	}
	// The Renderer's next in-place update does not reach the Board's copy.
	apps["ns/a"] = valid
	if _, got, _, _ := b.read("ns/a"); got != sameAsValid {
		t.Errorf("the Board's outcome for ns/a changed with the Renderer's map: %v", got)
	}
}

// TestBoardEnforcementVersions: an AppQuota's outcome is enforced from the
// render that first carried it, and it waits for the engine until reported
// Enforced; an acknowledgement queues only those whose version it covers.
func TestBoardEnforcementVersions(t *testing.T) {
	valid := &render.Outcome{Valid: true, Generation: 1}
	changed := &render.Outcome{Valid: true, Generation: 2}
	apps := map[string]*render.Outcome{"ns/a": valid, "ns/b": valid}
	b := NewBoard(nil)
	drain := func() {
		for len(b.changed) > 0 {
			<-b.changed
		}
	}
	b.publish(context.Background(), &render.Result{Apps: apps}, &snapshot{stored: &layout.Stored{Hash: "sha256:1"}, seq: 1}, nil)
	drain()
	apps["ns/b"] = changed
	b.publish(context.Background(), &render.Result{Apps: apps, Incremental: true, Changed: []string{"ns/b"}}, &snapshot{stored: &layout.Stored{Hash: "sha256:2"}, seq: 2}, nil)
	drain()
	for key, want := range map[string]uint64{"ns/a": 1, "ns/b": 2} {
		if _, _, since, _ := b.read(key); since != want {
			t.Errorf("%s: enforced from version %d, want %d", key, since, want)
		}
	}
	if got := b.waitingKeys(EngineState{Acked: 1}, false); !slices.Equal(got, []string{"ns/a"}) {
		t.Errorf("acknowledged version 1: queued %v, want [ns/a]", got)
	}
	b.enforced("ns/a", true)
	keys := b.waitingKeys(EngineState{Acked: 2}, false)
	if !slices.Equal(keys, []string{"ns/b"}) {
		t.Errorf("after ns/a was reported Enforced, version 2 acknowledged: queued %v, want [ns/b]", keys)
	}
	if got := b.waitingKeys(EngineState{}, true); !slices.Equal(got, []string{"ns/b"}) {
		t.Errorf("connectivity changed: queued %v, want every waiting AppQuota [ns/b]", got)
	}
}

// BenchmarkPublish: what handing one render to the status controller costs
// with 10,000 and 100,000 AppQuotas, after an incremental merge that changed
// one (the common case) and after a full one (every outcome looked at).
func BenchmarkPublish(b *testing.B) {
	for _, n := range []int{10_000, 100_000} {
		apps := make(map[string]*render.Outcome, n)
		for i := range n {
			apps[fmt.Sprintf("ns/app-%07d", i)] = &render.Outcome{Valid: true, Generation: 1}
		}
		snap := &snapshot{stored: &layout.Stored{Hash: "sha256:1"}}
		for _, incremental := range []bool{true, false} {
			b.Run(fmt.Sprintf("apps-%d/incremental-%t", n, incremental), func(b *testing.B) {
				board := NewBoard(nil)
				// The status controller's intake, which takes what is queued.
				done := make(chan struct{})
				go func() {
					for range board.changed {
					}
					close(done)
				}()
				board.publish(context.Background(), &render.Result{Apps: apps}, snap, nil)
				for i := 0; b.Loop(); i++ {
					key := fmt.Sprintf("ns/app-%07d", i%n)
					apps[key] = &render.Outcome{Valid: true, Generation: int64(i + 2)}
					board.publish(context.Background(), &render.Result{Apps: apps, Incremental: incremental, Changed: []string{key}}, snap, nil)
				}
				close(board.changed)
				<-done
			})
		}
	}
}
