// Package catalog_test checks the default catalog (config/samples'
// QuotaProfile "default") against an independent, hand-made transcription of the
// product's rate-limit table (testdata/rate-limit-table.yaml), and that
// transcription against the table itself (testdata/rest-api-rate-limits.md).
package catalog_test

import (
	"bufio"
	"fmt"
	"os"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	quotav1 "github.com/appquota/appquota/api/v1alpha1"
)

const (
	catalogPath = "../../config/catalog/default.yaml"
	fixturePath = "testdata/rate-limit-table.yaml"
	tablePath   = "testdata/rest-api-rate-limits.md"
)

type fixtureLimit struct {
	Unit   quotav1.LimitUnit   `json:"unit"`
	Window quotav1.LimitWindow `json:"window"`
	Scope  quotav1.LimitScope  `json:"scope"`
	Max    int64               `json:"max"`
}

type fixtureRow struct {
	Section      string         `json:"section"`
	API          string         `json:"api"`
	RestOnly     bool           `json:"restOnly"`
	Method       string         `json:"method"`
	Path         string         `json:"path"`
	Route        string         `json:"route"`
	Limits       []fixtureLimit `json:"limits"`
	MaxTargets   int32          `json:"maxTargets"`
	SharedBudget string         `json:"sharedBudget"`
	Note         string         `json:"note"`
}

func loadFixture(t *testing.T) []fixtureRow {
	t.Helper()
	data, err := os.ReadFile(fixturePath)
	if err != nil {
		t.Fatal(err)
	}
	var f struct {
		Rows []fixtureRow `json:"rows"`
	}
	if err := yaml.UnmarshalStrict(data, &f); err != nil {
		t.Fatalf("%s: %v", fixturePath, err)
	}
	return f.Rows
}

func loadCatalog(t *testing.T) *quotav1.QuotaProfile {
	t.Helper()
	data, err := os.ReadFile(catalogPath)
	if err != nil {
		t.Fatal(err)
	}
	var p quotav1.QuotaProfile
	if err := yaml.UnmarshalStrict(data, &p); err != nil {
		t.Fatalf("%s: %v", catalogPath, err)
	}
	if p.Name != "default" || p.Kind != "QuotaProfile" {
		t.Fatalf("%s holds %s %q, want QuotaProfile \"default\"", catalogPath, p.Kind, p.Name)
	}
	return &p
}

// tableRow is one data row of the markdown table: the facts that identify it.
type tableRow struct{ api, method, path string }

// readTable returns every data row of every table in the markdown, in order.
func readTable(t *testing.T) []tableRow {
	t.Helper()
	f, err := os.Open(tablePath)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var rows []tableRow
	header := false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if !strings.HasPrefix(line, "|") {
			header = false
			continue
		}
		cells := strings.Split(strings.Trim(line, "|"), "|")
		for i := range cells {
			cells[i] = strings.TrimSpace(cells[i])
		}
		switch {
		case strings.HasPrefix(cells[0], ":-"):
			continue // separator under a header
		case !header:
			header = true // first line of a table is its header
			continue
		}
		rows = append(rows, tableRow{
			api:    strings.TrimSpace(strings.TrimPrefix(cells[0], "*")),
			method: strings.ToUpper(cells[1]),
			path:   cells[2],
		})
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return rows
}

// TestFixtureCoversEveryTableRow: the transcription has exactly the table's rows,
// in the table's order, with the table's method and URL.
func TestFixtureCoversEveryTableRow(t *testing.T) {
	table, fixture := readTable(t), loadFixture(t)
	if len(table) < 170 {
		t.Fatalf("parsed only %d rows from %s; the table has about 175", len(table), tablePath)
	}
	if len(fixture) != len(table) {
		t.Errorf("fixture has %d rows, the table %d", len(fixture), len(table))
	}
	for i := range min(len(table), len(fixture)) {
		got := tableRow{fixture[i].API, fixture[i].Method, fixture[i].Path}
		if got != table[i] {
			t.Errorf("row %d: fixture %+v, table %+v", i+1, got, table[i])
		}
	}
}

var param = regexp.MustCompile(`\{[^/{}]*\}`)

// shape is what a gateway can tell about a route: its method and its template
// with parameter names erased.
func shape(method, path string) string {
	return method + " " + param.ReplaceAllString(path, "{}")
}

func limitSet(ls []fixtureLimit) []string {
	out := make([]string, 0, len(ls))
	for _, l := range ls {
		out = append(out, fmt.Sprintf("%s/%s/%s=%d", l.Unit, l.Window, l.Scope, l.Max))
	}
	sort.Strings(out)
	return out
}

func groupLimitSet(g quotav1.EndpointGroup) []string {
	ls := make([]fixtureLimit, 0, len(g.Limits))
	for _, l := range g.Limits {
		scope := l.Scope
		if scope == "" {
			scope = quotav1.ScopeApp // the API server's default
		}
		ls = append(ls, fixtureLimit{l.Unit, l.Window, scope, l.Max})
	}
	return limitSet(ls)
}

// TestCatalogEncodesEveryRow: every row's method and route is claimed by exactly
// one group of the catalog, whose limits, per-call cap and REST-only marker match
// the row; rows share a group only when the table says they share a budget or a
// gateway cannot tell them apart; and the catalog claims nothing the table lacks.
func TestCatalogEncodesEveryRow(t *testing.T) {
	rows, catalog := loadFixture(t), loadCatalog(t)

	claims := map[string][]string{} // route shape -> groups claiming it
	groups := map[string]quotav1.EndpointGroup{}
	for _, g := range catalog.Spec.EndpointGroups {
		groups[g.Name] = g
		for _, r := range g.Routes {
			s := shape(string(r.Method), r.Path)
			claims[s] = append(claims[s], g.Name)
		}
	}

	rowsOfGroup := map[string][]fixtureRow{}
	shapesUsed := map[string]bool{}
	for _, row := range rows {
		s := shape(row.Method, row.Route)
		shapesUsed[s] = true
		owners := claims[s]
		if len(owners) != 1 {
			t.Errorf("%s (%s %s): claimed by %d groups %v, want exactly 1", row.API, row.Method, row.Route, len(owners), owners)
			continue
		}
		g := groups[owners[0]]
		rowsOfGroup[g.Name] = append(rowsOfGroup[g.Name], row)
		if got, want := groupLimitSet(g), limitSet(row.Limits); !slices.Equal(got, want) {
			t.Errorf("%s: group %s has limits %v, the table says %v", row.API, g.Name, got, want)
		}
		var maxTargets int32
		if g.PerCall != nil {
			maxTargets = g.PerCall.MaxTargets
		}
		if maxTargets != row.MaxTargets {
			t.Errorf("%s: group %s has perCall.maxTargets %d, the table says %d", row.API, g.Name, maxTargets, row.MaxTargets)
		}
	}

	for name, rs := range rowsOfGroup {
		g := groups[name]
		// A budget merged from rows is REST-only only if every row is; otherwise the
		// client SDK's calls count too.
		wantRestOnly := true
		for _, r := range rs {
			wantRestOnly = wantRestOnly && r.RestOnly
		}
		if g.RestOnly != wantRestOnly {
			t.Errorf("group %s: restOnly %v, want %v from rows %v", name, g.RestOnly, wantRestOnly, apis(rs))
		}
		for _, r := range rs[1:] {
			sameBudget := r.SharedBudget != "" && r.SharedBudget == rs[0].SharedBudget
			sameShape := shape(r.Method, r.Route) == shape(rs[0].Method, rs[0].Route)
			if !sameBudget && !sameShape {
				t.Errorf("group %s merges %s and %s, which neither share a budget nor look alike to a gateway", name, rs[0].API, r.API)
			}
		}
	}

	// Rows the table says share a budget must land in one group.
	budgetGroup := map[string]string{}
	for name, rs := range rowsOfGroup {
		for _, r := range rs {
			if r.SharedBudget == "" {
				continue
			}
			if other, ok := budgetGroup[r.SharedBudget]; ok && other != name {
				t.Errorf("shared budget %s is split across groups %s and %s", r.SharedBudget, other, name)
			}
			budgetGroup[r.SharedBudget] = name
		}
	}

	for s, owners := range claims {
		if !shapesUsed[s] {
			t.Errorf("groups %v claim %s, which no row of the table lists", owners, s)
		}
	}
	for name := range groups {
		if len(rowsOfGroup[name]) == 0 {
			t.Errorf("group %s encodes no row of the table", name)
		}
	}

	// The catalog's fallback is the table's "100 次/秒 unless stated".
	fb := catalog.Spec.Fallback.Limits
	if len(fb) != 1 || fb[0].Unit != quotav1.UnitRequests || fb[0].Window != quotav1.WindowSecond || fb[0].Max != 100 {
		t.Errorf("fallback limits %+v, want one limit of 100 Requests per Second", fb)
	}
}

func apis(rs []fixtureRow) []string {
	out := make([]string, len(rs))
	for i, r := range rs {
		out[i] = r.API
	}
	return out
}
