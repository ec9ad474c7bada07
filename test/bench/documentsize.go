package main

import (
	"context"
	"fmt"
	"path/filepath"
	"strconv"
	"time"

	quotav1 "github.com/appquota/appquota/api/v1alpha1"
	"github.com/appquota/appquota/internal/layout"
	"github.com/appquota/appquota/internal/localcluster"
	"github.com/appquota/appquota/internal/manifest"
	"github.com/appquota/appquota/internal/render"
)

// The document size rows' notes.
const (
	noteDocument = "Document: rendered offline as the controller renders it, for that many apps with one override each: " +
		"plain, gzip-compressed, and as the controller stores it."
	noteStored = "As stored: what the controller writes within its budget per ConfigMap (--max-config-bytes): " +
		"in total, laid out as it is, and the largest object."
)

// documentSize renders documents offline, the way the controller does, for
// the run's app counts with one override each.
func (b *bench) documentSize(_ context.Context, rep *Report) error {
	root, _ := localcluster.RepoRoot()
	objs, err := manifest.ReadFiles(filepath.Join(root, "config", "catalog", "default.yaml"))
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
		gz, err := layout.Compress(res.Data)
		if err != nil {
			return err
		}
		budget := b.opts.MaxConfigBytes
		st, err := (&layout.Writer{ShardAbove: b.opts.ShardAboveBytes}).Write(res.Change, budget, func(i int) string { return fmt.Sprint(i) })
		if err != nil {
			return err
		}
		stored, largest := storedSizes(st), size(st.StoredBytes)
		if st.TooLarge {
			stored, largest = "too large even in "+strconv.Itoa(layout.MaxShards)+" shards", "-"
		}
		label := fmt.Sprintf("Document, %d apps: ", n)
		rep.add(
			Row{Name: label + "plain", Notes: []string{noteDocument}, Measured: size(len(res.Data))},
			Row{Name: label + "gzip", Notes: []string{noteDocument}, Measured: size(len(gz)),
				Ratio: fmt.Sprintf("%.1fx smaller", float64(len(res.Data))/float64(len(gz)))},
			Row{Name: label + "stored", Notes: []string{noteDocument, noteStored}, Measured: stored},
			Row{Name: label + "largest object", Notes: []string{noteDocument, noteStored}, Measured: largest,
				Baseline: fmt.Sprintf("budget %d KiB per ConfigMap", budget/1024), Target: "within budget", Met: met(!st.TooLarge && st.StoredBytes <= budget)},
		)
	}
	return nil
}

// storedSizes says what the controller writes for a document: the total, its
// layout, and the size of each object (the named ConfigMap, then the shards'
// range).
func storedSizes(st *layout.Stored) string {
	total := len(st.Data)
	if len(st.Shards) == 0 {
		return fmt.Sprintf("%s, %s in 1 object", size(total), st.Layout)
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
	return fmt.Sprintf("%s, %s in %d objects: an index of %s and %d shards of %s",
		size(total), st.Layout, 1+len(st.Shards), size(len(st.Data)), len(st.Shards), shards)
}

// size is a size in bytes in KB under 100 KB, else in MB.
func size(n int) string {
	if n < 100_000 {
		return fmt.Sprintf("%.1f KB", float64(n)/1e3)
	}
	return fmt.Sprintf("%.2f MB", float64(n)/1e6)
}
