package render_test

import (
	"bytes"
	"encoding/json"
	"flag"
	"maps"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	quotav1 "github.com/appquota/appquota/api/v1alpha1"
	"github.com/appquota/appquota/internal/render"
	"github.com/appquota/appquota/pkg/quotaconfig"
)

var update = flag.Bool("update", false, "rewrite the golden files from the current output")

// LoadObjects reads QuotaProfiles and AppQuotas from multi-document YAML files.
func loadObjects(t testing.TB, files ...string) ([]quotav1.QuotaProfile, []quotav1.AppQuota) {
	t.Helper()
	var profiles []quotav1.QuotaProfile
	var apps []quotav1.AppQuota
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, doc := range strings.Split(string(data), "\n---") {
			var meta struct{ Kind string }
			if err := yaml.Unmarshal([]byte(doc), &meta); err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			switch meta.Kind {
			case "QuotaProfile":
				var p quotav1.QuotaProfile
				if err := yaml.UnmarshalStrict([]byte(doc), &p); err != nil {
					t.Fatalf("%s: %v", f, err)
				}
				profiles = append(profiles, p)
			case "AppQuota":
				var a quotav1.AppQuota
				if err := yaml.UnmarshalStrict([]byte(doc), &a); err != nil {
					t.Fatalf("%s: %v", f, err)
				}
				apps = append(apps, a)
			}
		}
	}
	return profiles, apps
}

type caseFile struct {
	// Now is the render time.
	Now time.Time `json:"now"`
	// Samples adds config/samples' objects to the case's own.
	Samples bool `json:"samples"`
}

// TestGolden renders each testdata/<case>: objects.yaml (+ previous.json, the
// last document written, when present) and compares the document and the
// per-object outcomes with document.golden.json and outcomes.golden.json.
// Run `go test ./internal/render -update` to rewrite them, then review the diff.
func TestGolden(t *testing.T) {
	dirs, err := filepath.Glob("testdata/*")
	if err != nil || len(dirs) == 0 {
		t.Fatalf("no golden cases: %v", err)
	}
	samples, _ := globSamples()
	for _, dir := range dirs {
		t.Run(filepath.Base(dir), func(t *testing.T) {
			var c caseFile
			data, err := os.ReadFile(filepath.Join(dir, "case.yaml"))
			if err != nil {
				t.Fatal(err)
			}
			if err := yaml.UnmarshalStrict(data, &c); err != nil {
				t.Fatal(err)
			}
			files := []string{filepath.Join(dir, "objects.yaml")}
			if c.Samples {
				files = append(files, samples...)
			}
			profiles, apps := loadObjects(t, files...)
			in := render.Input{DefaultProfile: "default", Profiles: profiles, AppQuotas: render.Pointers(apps), Now: c.Now}
			if prev, err := os.ReadFile(filepath.Join(dir, "previous.json")); err == nil {
				if in.Previous, err = quotaconfig.Parse(prev); err != nil {
					t.Fatalf("previous.json: %v", err)
				}
			}
			res, err := render.Render(in)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := quotaconfig.Parse(res.Data); err != nil {
				t.Errorf("the rendered document does not parse: %v", err)
			}
			var doc bytes.Buffer
			if err := json.Indent(&doc, res.Data, "", "  "); err != nil {
				t.Fatal(err)
			}
			outcomes, err := json.MarshalIndent(map[string]any{"apps": res.Apps, "profiles": res.Profiles, "nextExpiry": res.NextExpiry}, "", "  ")
			if err != nil {
				t.Fatal(err)
			}
			golden(t, filepath.Join(dir, "document.golden.json"), doc.Bytes())
			golden(t, filepath.Join(dir, "outcomes.golden.json"), outcomes)

			if in.Previous == nil {
				return
			}
			// The controller's way: a Merger whose last result was published
			// takes it as the previous document (PreviousIsLast) and merges
			// the same again.
			var r render.Merger
			if _, err := r.Merge(in); err != nil {
				t.Fatal(err)
			}
			in.Previous, in.PreviousIsLast = nil, true
			again, err := r.Merge(in)
			if err != nil {
				t.Fatal(err)
			}
			data, err = json.Marshal(again.Document)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(data, res.Data) {
				t.Errorf("with the previous document remembered by the Renderer the document differs:\n%s", firstDiff(res.Data, data))
			}
			if !reflect.DeepEqual(again.Apps, res.Apps) || !reflect.DeepEqual(again.Profiles, res.Profiles) {
				t.Errorf("with the previous document remembered by the Renderer the outcomes differ:\n got %v %v\nwant %v %v", again.Apps, again.Profiles, res.Apps, res.Profiles)
			}
		})
	}
}

func golden(t *testing.T, path string, got []byte) {
	t.Helper()
	got = append(bytes.TrimSpace(got), '\n')
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs from the output (run with -update and review the diff):\n%s", path, firstDiff(want, got))
	}
}

func firstDiff(want, got []byte) string {
	wl, gl := strings.Split(string(want), "\n"), strings.Split(string(got), "\n")
	for i := range max(len(wl), len(gl)) {
		var w, g string
		if i < len(wl) {
			w = wl[i]
		}
		if i < len(gl) {
			g = gl[i]
		}
		if w != g {
			return "line " + itoa(i+1) + ":\n  want: " + w + "\n  got:  " + g
		}
	}
	return ""
}

func itoa(i int) string { b, _ := json.Marshal(i); return string(b) }

// TestDeterministic: the same objects in any order give byte-identical output.
func TestDeterministic(t *testing.T) {
	samples, _ := globSamples()
	profiles, apps := loadObjects(t, samples...)
	now := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	first, err := render.Render(render.Input{DefaultProfile: "default", Profiles: profiles, AppQuotas: render.Pointers(apps), Now: now})
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for range 20 {
		rng.Shuffle(len(apps), func(i, j int) { apps[i], apps[j] = apps[j], apps[i] })
		for i := range profiles {
			g := profiles[i].Spec.EndpointGroups
			rng.Shuffle(len(g), func(i, j int) { g[i], g[j] = g[j], g[i] })
		}
		again, err := render.Render(render.Input{DefaultProfile: "default", Profiles: profiles, AppQuotas: render.Pointers(apps), Now: now})
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(first.Data, again.Data) || first.Hash != again.Hash {
			t.Fatal("rendering the same objects in another order changed the output")
		}
	}
}

// TestOutcomesShared: a long-lived Merger hands out the same *Outcome for an
// unchanged AppQuota, so successive results cost a pointer per app, and a new
// one when the outcome changes.
func TestOutcomesShared(t *testing.T) {
	profiles, apps := benchObjects(t, 3)
	in := render.Input{DefaultProfile: "default", Profiles: profiles, AppQuotas: render.Pointers(apps), Now: time.Now()}
	var r render.Merger
	res, err := r.Merge(in)
	if err != nil {
		t.Fatal(err)
	}
	// A result's outcomes are good until the next Merge: keep a copy.
	first := &render.Result{Apps: maps.Clone(res.Apps)}
	apps[1].Generation++
	apps[1].Spec.Overrides[0].Group = "no-such-group"
	second, err := r.Merge(in)
	if err != nil {
		t.Fatal(err)
	}
	k0, k1 := apps[0].Key(), apps[1].Key()
	if first.Apps[k0] != second.Apps[k0] {
		t.Errorf("unchanged %s got a new outcome", k0)
	}
	if first.Apps[k1] == second.Apps[k1] || second.Apps[k1].Valid || !first.Apps[k1].Valid {
		t.Errorf("changed %s: outcomes %+v then %+v, want a new, invalid one (and the first untouched)", k1, first.Apps[k1], second.Apps[k1])
	}
}

// globSamples lists the manifests of config/samples and the catalog they
// include (config/catalog).
func globSamples() ([]string, error) {
	samples, err := filepath.Glob("../../config/samples/quota_v1alpha1_*.yaml")
	if err != nil {
		return nil, err
	}
	return append([]string{"../../config/catalog/default.yaml"}, samples...), nil
}
