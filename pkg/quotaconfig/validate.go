package quotaconfig

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/bits"
	"sort"
	"strconv"
	"strings"
)

// Parse decodes and validates a document. Decoding is strict (unknown fields
// and trailing data are errors): a gateway that silently dropped a field it
// does not know would enforce something other than what the controller meant,
// so a document from a newer controller is refused rather than half-read.
func Parse(data []byte) (*Document, error) {
	var d Document
	if err := decodeStrict(data, &d, "document"); err != nil {
		return nil, err
	}
	if err := d.Validate(); err != nil {
		return nil, err
	}
	return &d, nil
}

// decodeStrict decodes one JSON value into v, refusing unknown fields and
// trailing data; what names the value in the error.
func decodeStrict(data []byte, v any, what string) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("invalid JSON: %w", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return errors.New("invalid JSON: data after the " + what)
	}
	return nil
}

// FieldError is one problem in a document. Field is the JSON path of the value
// (e.g. `apps["123"].overrides[0].group`), so a caller can tell which object
// (profile or app) to blame without parsing the message.
type FieldError struct {
	Field  string
	Detail string
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Detail }

// maxErrors bounds what Validate reports: a document with 100,000 broken apps
// would otherwise produce an error too large to log.
const maxErrors = 50

// Methods a route may use, as in the CRD's enum.
var methods = []string{"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"}

// Validate checks everything a gateway relies on when it compiles and
// resolves: it returns errors.Join of *FieldError (at most 50 of them,
// then one error counting the rest), in a stable order.
//
// The default profile may be missing from Profiles, and an app may name it: the
// cluster may not have that QuotaProfile yet, and refusing the whole document
// would leave every gateway on a stale one. Resolve reports such apps with an
// empty Profile. Overrides of such an app cannot be checked against groups and
// never apply.
func (d *Document) Validate() error {
	v := &validator{}
	if d.Version != FormatVersion {
		v.add("version", "%q is not %q", d.Version, FormatVersion)
	}
	if d.DefaultProfile == "" {
		v.add("defaultProfile", "must not be empty")
	}
	for _, name := range sortedKeys(d.Profiles) {
		p := d.Profiles[name]
		v.profile(fmt.Sprintf("profiles[%q]", name), &p)
	}
	for _, id := range sortedKeys(d.Apps) {
		a := d.Apps[id]
		v.app(d, fmt.Sprintf("apps[%q]", id), &a)
	}
	v.shards(d)
	return v.err()
}

type validator struct {
	errs []error
	n    int
}

func (v *validator) add(field, format string, args ...any) {
	v.n++
	if len(v.errs) < maxErrors {
		v.errs = append(v.errs, &FieldError{Field: field, Detail: fmt.Sprintf(format, args...)})
	}
}

func (v *validator) err() error {
	if v.n > maxErrors {
		v.errs = append(v.errs, fmt.Errorf("and %d more errors", v.n-maxErrors))
	}
	return errors.Join(v.errs...)
}

func (v *validator) profile(at string, p *Profile) {
	if at == `profiles[""]` {
		v.add(at, "a profile name must not be empty")
	}
	if len(p.Fallback) == 0 {
		v.add(at+".fallback", "must not be empty")
	}
	v.limits(at+".fallback", p.Fallback, 1)
	for i, l := range p.Fallback {
		if l.Scope == ScopeUser {
			v.add(at+".fallback["+strconv.Itoa(i)+"].scope", "must be App: a route no group claims has no user parameter")
		}
	}

	type claim struct {
		at     string
		method string
		path   string
	}
	groups := make(map[string]int, len(p.Groups))
	shapes := map[string]claim{}
	for gi := range p.Groups {
		g := &p.Groups[gi]
		gat := at + ".groups[" + strconv.Itoa(gi) + "]"
		switch prev, dup := groups[g.Name]; {
		case g.Name == "":
			v.add(gat+".name", "must not be empty")
		case dup:
			v.add(gat+".name", "%q duplicates groups[%d]", g.Name, prev)
		default:
			groups[g.Name] = gi
		}
		if len(g.Routes) == 0 {
			v.add(gat+".routes", "must not be empty")
		}
		if len(g.Limits) == 0 {
			v.add(gat+".limits", "must not be empty")
		}
		v.limits(gat+".limits", g.Limits, 1)
		if g.MaxTargets < 0 {
			v.add(gat+".maxTargets", "%d is below 0", g.MaxTargets)
		}
		userScoped := hasUserScope(g.Limits)
		for ri, r := range g.Routes {
			rat := gat + ".routes[" + strconv.Itoa(ri) + "]"
			if !validMethod(r.Method) {
				v.add(rat+".method", "%q is not one of %s", r.Method, strings.Join(methods, ", "))
			}
			if msg := checkTemplate(r.Path); msg != "" {
				v.add(rat+".path", "%q %s", r.Path, msg)
				continue
			}
			if r.UserParam != "" && paramIndex(r.Path, r.UserParam) < 0 {
				v.add(rat+".userParam", "%q is not a parameter of %q", r.UserParam, r.Path)
			}
			if userScoped && r.UserParam == "" {
				v.add(rat+".userParam", "must be set: the group has a limit with scope User")
			}
			shape := r.Method + " " + shapeOf(r.Path)
			if prev, ok := shapes[shape]; ok {
				v.add(rat, "%s %q cannot be told apart from %s (%s %q): same method and template once parameter names are ignored",
					r.Method, r.Path, strings.TrimPrefix(prev.at, at+"."), prev.method, prev.path)
				continue
			}
			shapes[shape] = claim{at: rat, method: r.Method, path: r.Path}
		}
	}
}

func (v *validator) app(d *Document, at string, a *App) {
	if at == `apps[""]` {
		v.add(at, "an app ID must not be empty")
	}
	var prof *Profile
	if p, ok := d.Profiles[a.Profile]; ok {
		prof = &p
	} else if a.Profile == "" {
		v.add(at+".profile", "must not be empty")
	} else if a.Profile != d.DefaultProfile {
		v.add(at+".profile", "%q does not exist", a.Profile)
	}
	seen := make(map[string]int, len(a.Overrides))
	for oi := range a.Overrides {
		o := &a.Overrides[oi]
		oat := at + ".overrides[" + strconv.Itoa(oi) + "]"
		v.limits(oat+".limits", o.Limits, 0)
		if o.MaxTargets < 0 {
			v.add(oat+".maxTargets", "%d is below 0", o.MaxTargets)
		}
		if o.Group == "" {
			v.add(oat+".group", "must not be empty")
			continue
		}
		if prev, dup := seen[o.Group]; dup {
			v.add(oat+".group", "%q duplicates overrides[%d]", o.Group, prev)
			continue
		}
		seen[o.Group] = oi
		if prof == nil {
			continue
		}
		g := findGroup(prof, o.Group)
		if g == nil {
			v.add(oat+".group", "%q is not a group of profile %q", o.Group, a.Profile)
			continue
		}
		// A User-scoped limit on a route without a user parameter could only be
		// counted per app, which is not what the override says.
		for li, l := range o.Limits {
			if l.Scope != ScopeUser {
				continue
			}
			for _, r := range g.Routes {
				if r.UserParam == "" {
					v.add(oat+".limits["+strconv.Itoa(li)+"].scope", "User needs a user parameter, and route %s %q of group %q has none",
						r.Method, r.Path, g.Name)
					break
				}
			}
		}
	}
}

// limits checks one list of limits; minMax is 1 in profiles (a profile cannot
// block) and 0 in overrides (max 0 blocks the group for one app).
func (v *validator) limits(at string, ls []Limit, minMax int64) {
	for i, l := range ls {
		lat := at + "[" + strconv.Itoa(i) + "]"
		ok := true
		if l.Unit != UnitRequests && l.Unit != UnitMessages {
			v.add(lat+".unit", "%q is not one of %s, %s", l.Unit, UnitRequests, UnitMessages)
			ok = false
		}
		if l.Window != WindowSecond && l.Window != WindowMinute && l.Window != WindowHour && l.Window != WindowDay {
			v.add(lat+".window", "%q is not one of %s, %s, %s, %s", l.Window, WindowSecond, WindowMinute, WindowHour, WindowDay)
			ok = false
		}
		if l.Scope != ScopeApp && l.Scope != ScopeUser {
			v.add(lat+".scope", "%q is not one of %s, %s", l.Scope, ScopeApp, ScopeUser)
			ok = false
		}
		if l.Max < minMax {
			v.add(lat+".max", "%d is below %d", l.Max, minMax)
		}
		if !ok {
			continue
		}
		for j := range i {
			if sameKey(ls[j], l) {
				list := at[strings.LastIndexByte(at, '.')+1:]
				v.add(lat, "duplicates %s[%d] (%s/%s/%s): one limit per unit, window and scope", list, j, l.Unit, l.Window, l.Scope)
				break
			}
		}
	}
}

func sameKey(a, b Limit) bool {
	return a.Unit == b.Unit && a.Window == b.Window && a.Scope == b.Scope
}

func hasUserScope(ls []Limit) bool {
	for _, l := range ls {
		if l.Scope == ScopeUser {
			return true
		}
	}
	return false
}

func validMethod(m string) bool {
	for _, x := range methods {
		if m == x {
			return true
		}
	}
	return false
}

func findGroup(p *Profile, name string) *Group {
	for i := range p.Groups {
		if p.Groups[i].Name == name {
			return &p.Groups[i]
		}
	}
	return nil
}

// checkTemplate returns why path is not a route template, or "". The rules are
// the CRD's, repeated because the resolver's trie relies on them.
func checkTemplate(path string) string {
	if !strings.HasPrefix(path, "/") {
		return "must start with '/'"
	}
	if strings.Contains(path, "?") {
		return "must not contain a query string ('?'): gateways match the path only"
	}
	for i := 0; i < len(path); {
		seg, next := segment(path, i)
		switch {
		case seg == "":
			return "has an empty segment"
		case isParam(seg):
		case strings.ContainsAny(seg, "{}#"):
			return fmt.Sprintf("has segment %q, which is neither a literal (no '{', '}', '#') nor exactly one parameter {name}", seg)
		}
		i = next
	}
	return ""
}

// segment returns the segment after the '/' at path[i] and the index of the
// next '/' (or len(path)).
func segment(path string, i int) (seg string, next int) {
	next = i + 1 + slashIndex(path[i+1:])
	return path[i+1 : next], next
}

// slashIndex returns the index of the first '/' in s, or len(s). It reads
// eight bytes at a time, in a register: segments are short, so a call to the
// vectorized strings.IndexByte costs more than it saves, and a loop over
// single bytes takes a branch per byte (Resolve's largest cost).
func slashIndex(s string) int {
	j := 0
	for ; j+8 <= len(s); j += 8 {
		w := s[j : j+8]
		x := uint64(w[0]) | uint64(w[1])<<8 | uint64(w[2])<<16 | uint64(w[3])<<24 |
			uint64(w[4])<<32 | uint64(w[5])<<40 | uint64(w[6])<<48 | uint64(w[7])<<56
		// The bytes equal to '/' become zero; the lowest set bit of the
		// classic "has a zero byte" expression marks the first of them (bits
		// above it may be borrows, which is why only the lowest counts).
		x ^= 0x0101010101010101 * '/'
		if z := (x - 0x0101010101010101) &^ x & 0x8080808080808080; z != 0 {
			return j + bits.TrailingZeros64(z)/8
		}
	}
	for ; j < len(s); j++ {
		if s[j] == '/' {
			return j
		}
	}
	return len(s)
}

// isParam reports whether seg is one parameter, {name}: a letter or '_', then
// letters, digits or '_'.
func isParam(seg string) bool {
	if len(seg) < 3 || seg[0] != '{' || seg[len(seg)-1] != '}' {
		return false
	}
	for i := 1; i < len(seg)-1; i++ {
		c := seg[i]
		letter := c == '_' || ('a' <= c && c <= 'z') || ('A' <= c && c <= 'Z')
		if !letter && (i == 1 || c < '0' || c > '9') {
			return false
		}
	}
	return true
}

// paramIndex returns the index among path's segments of the first {name}, or
// -1. path must be a valid template.
func paramIndex(path, name string) int {
	n := 0
	for i := 0; i < len(path); n++ {
		seg, next := segment(path, i)
		if len(seg) == len(name)+2 && seg[0] == '{' && seg[1:len(seg)-1] == name {
			return n
		}
		i = next
	}
	return -1
}

// shapeOf erases parameter names: two templates with one shape match the same
// requests. path must be a valid template.
func shapeOf(path string) string {
	var b strings.Builder
	for i := 0; i < len(path); {
		seg, next := segment(path, i)
		b.WriteByte('/')
		if isParam(seg) {
			b.WriteString("{}")
		} else {
			b.WriteString(seg)
		}
		i = next
	}
	return b.String()
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
