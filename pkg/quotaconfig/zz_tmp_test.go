package quotaconfig_test

import (
	"testing"

	qc "github.com/appquota/appquota/pkg/quotaconfig"
)

func BenchmarkTmpHot(b *testing.B) {
	d := benchDoc(b)
	calls := benchCalls(d, 1<<12)
	for i := range calls {
		calls[i].app = appID(i % 16)
	}
	cfg, _ := qc.Compile(d)
	b.ReportAllocs()
	var sink qc.Result
	for i := 0; b.Loop(); i++ {
		c := &calls[i&(len(calls)-1)]
		sink = cfg.Resolve(c.app, c.method, c.path)
	}
	_ = sink
}

func BenchmarkTmpMapOnly(b *testing.B) {
	m := map[string]int{}
	for i := range benchApps {
		m[appID(i)] = i
	}
	d := benchDoc(b)
	calls := benchCalls(d, 1<<12)
	var sink int
	for i := 0; b.Loop(); i++ {
		c := &calls[i&(len(calls)-1)]
		sink += m[c.app]
	}
	_ = sink
}
