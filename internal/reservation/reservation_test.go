package reservation

import (
	"fmt"
	"testing"
	"time"
)

// TestEncodeDecode: the stored form reads back as the same set; a damaged
// one is an error, not an empty set.
func TestEncodeDecode(t *testing.T) {
	now := time.Date(2026, 12, 5, 12, 0, 0, 0, time.UTC)
	s := Set{"1": {Namespace: "a", Until: now}, "acme-2": {Namespace: "b", Until: now.Add(time.Hour)}}
	data, err := Encode(s)
	if err != nil {
		t.Fatal(err)
	}
	back, err := Decode(data)
	if err != nil || !back.Equal(s) {
		t.Fatalf("decoded %v, %v; want %v", back, err, s)
	}
	if empty, err := Decode(""); err != nil || len(empty) != 0 {
		t.Errorf("empty: %v, %v", empty, err)
	}
	for _, bad := range []string{"{", `{"x":{"namespace":""}}`, `{"x":{"namespace":"a"}}`} {
		if _, err := Decode(bad); err == nil {
			t.Errorf("%s decoded", bad)
		}
	}
}

// TestForAndUntil: a reservation holds against other namespaces until it
// ends, and ends on a whole second at least the grace away.
func TestForAndUntil(t *testing.T) {
	now := time.Date(2026, 12, 5, 12, 0, 0, 500, time.UTC)
	until := Until(now, time.Hour)
	if want := time.Date(2026, 12, 5, 13, 0, 1, 0, time.UTC); !until.Equal(want) {
		t.Errorf("Until %s, want %s", until, want)
	}
	s := Set{"x": {Namespace: "a", Until: until}}
	if _, held := s.For("x", "b", now); !held {
		t.Error("not held against another namespace")
	}
	if _, held := s.For("x", "a", now); held {
		t.Error("held against its own namespace")
	}
	if _, held := s.For("x", "b", until); held {
		t.Error("held at its end")
	}
	if got := s.Active(until); len(got) != 0 {
		t.Errorf("active at its end: %v", got)
	}
}

// TestBound: past Max, the reservations ending first go; ties by app ID.
func TestBound(t *testing.T) {
	now := time.Date(2026, 12, 5, 12, 0, 0, 0, time.UTC)
	s := Set{}
	for i := range Max + 2 {
		s[fmt.Sprintf("id-%05d", i)] = Reservation{Namespace: "n", Until: now.Add(time.Duration(i/2) * time.Second)}
	}
	s.Bound()
	if len(s) != Max {
		t.Fatalf("%d kept, want %d", len(s), Max)
	}
	for _, gone := range []string{"id-00000", "id-00001"} {
		if _, ok := s[gone]; ok {
			t.Errorf("%s, among the first to end, kept", gone)
		}
	}
	// The longest encoding stays within a ConfigMap.
	long := Set{}
	id := func(i int) string { return fmt.Sprintf("%064d", i) }
	for i := range Max {
		long[id(i)] = Reservation{Namespace: fmt.Sprintf("%063d", i), Until: now.Add(time.Duration(i) * time.Nanosecond)}
	}
	data, err := Encode(long)
	if err != nil {
		t.Fatal(err)
	}
	if len(data) > 1000*1024 {
		t.Errorf("%d reservations of the longest IDs and namespaces encode in %d bytes, over a ConfigMap's", Max, len(data))
	}
}
