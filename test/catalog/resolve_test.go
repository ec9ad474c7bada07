package catalog_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/appquota/appquota/internal/cli"
)

// TestEveryRowResolvesThroughTheCLI asks `kubectl appquota explain -o json`, on
// the document rendered from config/samples, about one concrete call per row of
// the hand transcription, and compares the answer with the row: the resolver
// (route matching, literal-beats-parameter, query strings) is checked against
// the table independently of how the catalog was written.
func TestEveryRowResolvesThroughTheCLI(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	var doc, stderr bytes.Buffer
	if code := cli.Run(ctx, []string{"render", "-f", "../../config/catalog", "-f", "../../config/samples"}, &doc, &stderr); code != 0 {
		t.Fatalf("render: %s", stderr.String())
	}
	config := filepath.Join(dir, "limits.json")
	if err := os.WriteFile(config, doc.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}

	// The group whose route has the row's shape: the resolver must pick exactly
	// it, not a look-alike (literal vs parameter), whatever their limits.
	owner := map[string]string{}
	for _, g := range loadCatalog(t).Spec.EndpointGroups {
		for _, r := range g.Routes {
			owner[shape(string(r.Method), r.Path)] = g.Name
		}
	}
	rows := loadFixture(t)
	// An app with no AppQuota gets the catalog's defaults.
	const appID = "4242424242"
	for i, row := range rows {
		path := concrete(row.Route, appID)
		// Keep the table's own query string, which the gateway must ignore.
		if q := strings.IndexByte(row.Path, '?'); q >= 0 && !strings.Contains(row.Note, "slip") {
			path += row.Path[q:]
		}
		var out bytes.Buffer
		stderr.Reset()
		if code := cli.Run(ctx, []string{"explain", appID, row.Method, path, "--config", config, "-o", "json"}, &out, &stderr); code != 0 {
			t.Errorf("row %d %s: explain %s %s: %s", i+1, row.API, row.Method, path, stderr.String())
			continue
		}
		var e cli.Explanation
		if err := json.Unmarshal(out.Bytes(), &e); err != nil {
			t.Fatalf("row %d: %v\n%s", i+1, err, out.String())
		}
		if e.Fallback || e.Group == "" {
			t.Errorf("row %d %s: %s %s fell through to the fallback", i+1, row.API, row.Method, path)
			continue
		}
		if want := owner[shape(row.Method, row.Route)]; e.Group != want {
			t.Errorf("row %d %s: %s %s resolves to group %s, want %s", i+1, row.API, row.Method, path, e.Group, want)
		}
		got := make([]string, 0, len(e.Limits))
		for _, l := range e.Limits {
			got = append(got, fmt.Sprintf("%s/%s/%s=%d", l.Unit, l.Window, l.Scope, l.Max))
		}
		slices.Sort(got)
		if want := limitSet(row.Limits); !slices.Equal(got, want) {
			t.Errorf("row %d %s: %s %s resolves to group %s with %v, the table says %v", i+1, row.API, row.Method, path, e.Group, got, want)
		}
		if e.MaxTargets != row.MaxTargets {
			t.Errorf("row %d %s: maxTargets %d, the table says %d", i+1, row.API, e.MaxTargets, row.MaxTargets)
		}
		if e.DefaultProfile != true || e.Profile != "default" || e.Override != nil {
			t.Errorf("row %d: app without AppQuota got %+v", i+1, e)
		}
		for _, l := range row.Limits {
			if l.Scope == "User" && e.User == "" {
				t.Errorf("row %d %s: a per-user limit but no user taken from %s", i+1, row.API, path)
			}
		}
	}
}

// concrete fills a route template's parameters with values a client would send.
func concrete(route, appID string) string {
	segs := strings.Split(route, "/")
	for i, s := range segs {
		switch {
		case s == "{app_id}":
			segs[i] = appID
		case strings.HasPrefix(s, "{"):
			segs[i] = "v" + strings.Trim(s, "{}")
		}
	}
	return strings.Join(segs, "/")
}
