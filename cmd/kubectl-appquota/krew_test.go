package main

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"sigs.k8s.io/yaml"
)

// krewPlugin is the part of krew's Plugin manifest (v1alpha2) that
// hack/build-plugin.sh fills and relies on.
type krewPlugin struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Metadata   struct {
		Name string `json:"name"`
	} `json:"metadata"`
	Spec struct {
		Version   string `json:"version"`
		Platforms []struct {
			Selector struct {
				MatchLabels map[string]string `json:"matchLabels"`
			} `json:"selector"`
			URI    string `json:"uri"`
			SHA256 string `json:"sha256"`
			Bin    string `json:"bin"`
			Files  []struct {
				From string `json:"from"`
				To   string `json:"to"`
			} `json:"files"`
		} `json:"platforms"`
	} `json:"spec"`
}

// TestKrewManifest checks hack/krew/appquota.yaml against what
// hack/build-plugin.sh makes of it, without building: the four platforms
// with the placeholders it fills, each archive installing the binary and the
// LICENSE krew requires, every file it names present in the repository (the
// script puts exactly those in the archives), so `make plugin` need not run
// in `make test`.
func TestKrewManifest(t *testing.T) {
	root := filepath.Join("..", "..")
	data, err := os.ReadFile(filepath.Join(root, "hack", "krew", "appquota.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var p krewPlugin
	if err := yaml.Unmarshal(data, &p); err != nil {
		t.Fatal(err)
	}
	if p.APIVersion != "krew.googlecontainertools.github.com/v1alpha2" || p.Kind != "Plugin" || p.Metadata.Name != "appquota" {
		t.Errorf("%s %s %q: want a krew Plugin named appquota (the name kubectl appquota runs)", p.APIVersion, p.Kind, p.Metadata.Name)
	}
	if p.Spec.Version != "VERSION" {
		t.Errorf("spec.version %q: want the VERSION placeholder the script fills", p.Spec.Version)
	}
	platforms := make([]string, 0, len(p.Spec.Platforms))
	for _, pl := range p.Spec.Platforms {
		goos, arch := pl.Selector.MatchLabels["os"], pl.Selector.MatchLabels["arch"]
		platform := goos + "/" + arch
		platforms = append(platforms, platform)
		if want := fmt.Sprintf("URL_BASE/kubectl-appquota_%s_%s.tar.gz", goos, arch); pl.URI != want {
			t.Errorf("%s: uri %q, want %q", platform, pl.URI, want)
		}
		if want := fmt.Sprintf("SHA256_%s_%s", goos, arch); pl.SHA256 != want {
			t.Errorf("%s: sha256 %q, want the placeholder %q", platform, pl.SHA256, want)
		}
		if pl.Bin != "kubectl-appquota" {
			t.Errorf("%s: bin %q, want kubectl-appquota", platform, pl.Bin)
		}
		var from []string
		for _, f := range pl.Files {
			from = append(from, f.From)
			if f.To != "." {
				t.Errorf("%s: %s installed to %q, want .", platform, f.From, f.To)
			}
			if f.From == "kubectl-appquota" {
				continue
			}
			if _, err := os.Stat(filepath.Join(root, f.From)); err != nil {
				t.Errorf("%s: installs %s, which the repository lacks: %v", platform, f.From, err)
			}
		}
		for _, want := range []string{"kubectl-appquota", "LICENSE"} {
			if !slices.Contains(from, want) {
				t.Errorf("%s: files %v lack %s", platform, from, want)
			}
		}
	}
	slices.Sort(platforms)
	if want := []string{"darwin/amd64", "darwin/arm64", "linux/amd64", "linux/arm64"}; !slices.Equal(platforms, want) {
		t.Errorf("platforms %v, want %v (build-plugin.sh's default)", platforms, want)
	}
}
