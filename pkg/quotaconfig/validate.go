package quotaconfig

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
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

// ValidateApps checks the entries of the apps ids (those d has; the others
// are skipped) as Validate checks them, against d's profiles, which it takes
// as valid: for a document that passed Validate before only those apps
// changed, it answers as Validate would, at the cost of those apps.
func (d *Document) ValidateApps(ids []string) error {
	v := &validator{}
	for _, id := range ids {
		if a, ok := d.Apps[id]; ok {
			v.app(d, fmt.Sprintf("apps[%q]", id), &a)
		}
	}
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
	v.limits(at+".fallback", p.Fallback, MinProfileMax)
	for i, l := range p.Fallback {
		if msg := CheckFallbackScope(l.Scope); msg != "" {
			v.add(at+".fallback["+strconv.Itoa(i)+"].scope", "%s", msg)
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
		v.limits(gat+".limits", g.Limits, MinProfileMax)
		if msg := CheckMaxTargets(g.MaxTargets); msg != "" {
			v.add(gat+".maxTargets", "%d %s", g.MaxTargets, msg)
		}
		userScoped := UserScoped(g.Limits)
		for ri, r := range g.Routes {
			rat := gat + ".routes[" + strconv.Itoa(ri) + "]"
			if msg := CheckMethod(r.Method); msg != "" {
				v.add(rat+".method", "%q %s", r.Method, msg)
			}
			if msg := CheckTemplate(r.Path); msg != "" {
				v.add(rat+".path", "%q %s", r.Path, msg)
				continue
			}
			if msg := CheckUserParam(r.Path, r.UserParam); msg != "" {
				v.add(rat+".userParam", "%q %s", r.UserParam, msg)
			}
			if userScoped && r.UserParam == "" {
				v.add(rat+".userParam", "must be set: the group has a limit with scope User")
			}
			shape := RouteShape(r.Method, r.Path)
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
		v.limits(oat+".limits", o.Limits, MinOverrideMax)
		if msg := CheckMaxTargets(o.MaxTargets); msg != "" {
			v.add(oat+".maxTargets", "%d %s", o.MaxTargets, msg)
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
		ri := RouteWithoutUser(g.Routes)
		if ri < 0 {
			continue
		}
		for li, l := range o.Limits {
			if l.Scope == ScopeUser {
				r := g.Routes[ri]
				v.add(oat+".limits["+strconv.Itoa(li)+"].scope", "User needs a user parameter, and route %s %q of group %q has none",
					r.Method, r.Path, g.Name)
			}
		}
	}
}

// limits checks one list of limits (CheckLimits).
func (v *validator) limits(at string, ls []Limit, minMax int64) {
	list := at[strings.LastIndexByte(at, '.')+1:]
	CheckLimits(list, ls, minMax, func(i int, field string, value any, detail string) {
		lat := at + "[" + strconv.Itoa(i) + "]"
		switch value := value.(type) {
		case nil:
			v.add(lat, "%s", detail)
		case string:
			v.add(lat+"."+field, "%q %s", value, detail)
		default:
			v.add(lat+"."+field, "%v %s", value, detail)
		}
	})
}

func findGroup(p *Profile, name string) *Group {
	for i := range p.Groups {
		if p.Groups[i].Name == name {
			return &p.Groups[i]
		}
	}
	return nil
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
