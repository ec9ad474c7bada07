package main

import (
	"context"
	"fmt"
	"path/filepath"
	"strconv"
	"time"

	quotav1 "github.com/appquota/appquota/api/v1alpha1"
	"github.com/appquota/appquota/internal/localcluster"
	"github.com/appquota/appquota/internal/manifest"
	"github.com/appquota/appquota/internal/render"
	"github.com/appquota/appquota/pkg/quotaconfig"
)

// documentSize renders documents offline, the way the controller does, for
// the run's app counts with one override each.
func (b *bench) documentSize(_ context.Context, rep *Report) error {
	root, _ := localcluster.RepoRoot()
	objs, err := manifest.ReadFiles(filepath.Join(root, "config", "samples", "quota_v1alpha1_quotaprofile.yaml"))
	if err != nil {
		return err
	}
	profiles := objs.QuotaProfiles
	for _, n := range []int{b.cfg.Apps, b.cfg.BigApps} {
		if n == 0 {
			continue
		}
		apps := make([]quotav1.AppQuota, n)
		for i := range n {
			apps[i] = *b.appQuota(i)
		}
		res, err := render.Render(render.Input{DefaultProfile: "default", Profiles: profiles, AppQuotas: render.Pointers(apps), Now: time.Now()})
		if err != nil {
			return err
		}
		gz, err := quotaconfig.Compress(res.Data)
		if err != nil {
			return err
		}
		budget := b.opts.MaxConfigBytes
		st, err := (&render.Renderer{ShardAbove: b.opts.ShardAboveBytes}).Store(res.Document, budget, func(i int) string { return fmt.Sprint(i) })
		if err != nil {
			return err
		}
		stored := storedSizes(st)
		if st.TooLarge {
			stored = "too large even in " + strconv.Itoa(render.MaxShards) + " shards"
		}
		rep.add(Row{fmt.Sprintf("Document size, %d apps with one override: plain / gzip / as the controller stores it", n),
			fmt.Sprintf("%.2f MB / %.2f MB / %s", float64(len(res.Data))/1e6, float64(len(gz))/1e6, stored),
			fmt.Sprintf("budget %d KiB per ConfigMap", budget/1024), fmt.Sprintf("gzip %.1fx smaller", float64(len(res.Data))/float64(len(gz))),
			"every object within budget", met(!st.TooLarge && st.StoredBytes <= budget)})
	}
	return nil
}

// storedSizes says what the controller writes for a document: its layout, the
// size of each object (the named ConfigMap, then the shards' range) and the
// total.
func storedSizes(st *render.Stored) string {
	size := func(n int) string {
		if n < 100_000 {
			return fmt.Sprintf("%.1f KB", float64(n)/1e3)
		}
		return fmt.Sprintf("%.2f MB", float64(n)/1e6)
	}
	total := len(st.Data)
	if len(st.Shards) == 0 {
		return fmt.Sprintf("%s, 1 object(s), %s", st.Layout, size(total))
	}
	lo, hi := len(st.Shards[0].Data), 0
	for _, sh := range st.Shards {
		lo, hi = min(lo, len(sh.Data)), max(hi, len(sh.Data))
		total += len(sh.Data)
	}
	shards := size(lo) + " to " + size(hi)
	if size(lo) == size(hi) {
		shards = size(hi)
	}
	return fmt.Sprintf("%s, %d object(s): index %s, %d shards of %s each; %s in total, largest %s",
		st.Layout, 1+len(st.Shards), size(len(st.Data)), len(st.Shards), shards, size(total), size(st.StoredBytes))
}
