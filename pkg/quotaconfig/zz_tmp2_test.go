package quotaconfig_test

import (
	"testing"
)

type v40 struct {
	a, b, c, d, e uint64
}

func BenchmarkTmpMap40(b *testing.B) {
	m := map[string]v40{}
	for i := range benchApps {
		m[appID(i)] = v40{a: uint64(i)}
	}
	d := benchDoc(b)
	calls := benchCalls(d, 1<<12)
	var sink uint64
	for i := 0; b.Loop(); i++ {
		c := &calls[i&(len(calls)-1)]
		sink += m[c.app].a
	}
	_ = sink
}

func BenchmarkTmpMapPtr(b *testing.B) {
	m := map[string]*v40{}
	for i := range benchApps {
		m[appID(i)] = &v40{a: uint64(i)}
	}
	d := benchDoc(b)
	calls := benchCalls(d, 1<<12)
	var sink uint64
	for i := 0; b.Loop(); i++ {
		c := &calls[i&(len(calls)-1)]
		if p := m[c.app]; p != nil {
			sink += p.a
		}
	}
	_ = sink
}
