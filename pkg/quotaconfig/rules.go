package quotaconfig

import (
	"fmt"
	"math/bits"
	"regexp"
	"strconv"
	"strings"
)

// The rules of a document's parts, one function each. Document.Validate
// applies them to a document; appquota's admission and controller apply them
// to the API objects, with the API's field paths (internal/validation), so Go
// states each rule once. The CRDs' schema and CEL rules state them again for
// the API server; a test (api/v1alpha1/agreement_test.go) runs the
// validators' corpus through both and checks that they agree.
//
// A check returns what is wrong ("" when nothing is), worded to follow the
// offending value: `"TRACE" is not one of GET, ...`.

// methods a route may use, as in the CRD's enum, in methodIndex's order.
var methods = []string{"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"}

// ValidMethod reports whether m is a method a route may use.
func ValidMethod(m string) bool { return methodIndex(m) >= 0 }

// CheckMethod checks a route's method.
func CheckMethod(m string) string {
	if ValidMethod(m) {
		return ""
	}
	return "is not one of " + strings.Join(methods, ", ")
}

// WindowSeconds is the length of a window in seconds, 0 for a string that is
// not a window.
func WindowSeconds(w string) int64 {
	switch w {
	case WindowSecond:
		return 1
	case WindowMinute:
		return 60
	case WindowHour:
		return 3600
	case WindowDay:
		return 86400
	}
	return 0
}

// The least max of a limit.
const (
	// MinProfileMax is the least max in a profile: a profile cannot block a
	// group for every app.
	MinProfileMax int64 = 1
	// MinOverrideMax is the least max in an override: 0 blocks the group for
	// the app.
	MinOverrideMax int64 = 0
)

// CheckLimits checks one list of limits, named list in messages ("limits",
// "fallback"): each limit's unit, window and scope are known values, its max
// is at least minMax (MinProfileMax or MinOverrideMax), and no two limits
// have one key (unit, window and scope). bad is called for each problem with
// the limit's index, the field ("unit", "window", "scope", "max"; "" for the
// limit as a whole, value then nil), its value and what is wrong.
func CheckLimits(list string, ls []Limit, minMax int64, bad func(i int, field string, value any, detail string)) {
	for i, l := range ls {
		ok := true
		if l.Unit != UnitRequests && l.Unit != UnitMessages {
			bad(i, "unit", l.Unit, fmt.Sprintf("is not one of %s, %s", UnitRequests, UnitMessages))
			ok = false
		}
		if WindowSeconds(l.Window) == 0 {
			bad(i, "window", l.Window, fmt.Sprintf("is not one of %s, %s, %s, %s", WindowSecond, WindowMinute, WindowHour, WindowDay))
			ok = false
		}
		if l.Scope != ScopeApp && l.Scope != ScopeUser {
			bad(i, "scope", l.Scope, fmt.Sprintf("is not one of %s, %s", ScopeApp, ScopeUser))
			ok = false
		}
		if l.Max < minMax {
			bad(i, "max", l.Max, fmt.Sprintf("is below %d", minMax))
		}
		switch {
		case l.Unlimited && minMax > MinOverrideMax:
			bad(i, "unlimited", l.Unlimited, "is only for an app's override: a profile's limit cannot be lifted")
		case l.Unlimited && l.Max != 0:
			bad(i, "max", l.Max, "must be 0 when unlimited is true")
		}
		if !ok {
			continue
		}
		for j := range i {
			if SameKey(ls[j], l) {
				bad(i, "", nil, fmt.Sprintf("duplicates %s[%d] (%s/%s/%s): one limit per unit, window and scope", list, j, l.Unit, l.Window, l.Scope))
				break
			}
		}
	}
}

// SameKey reports whether two limits count the same thing: one unit, window
// and scope. An override's limit replaces the profile's with its key.
func SameKey(a, b Limit) bool {
	return a.Unit == b.Unit && a.Window == b.Window && a.Scope == b.Scope
}

// CheckFallbackScope checks the scope of a fallback limit: a route that no
// group claims has no known user parameter, so it counts per app.
func CheckFallbackScope(scope string) string {
	if scope == ScopeUser {
		return "must be App: a route no group claims has no user parameter"
	}
	return ""
}

// CheckMaxTargets checks a per-call cap on targets; 0 means none.
func CheckMaxTargets(n int32) string {
	if n < 0 {
		return "is below 0"
	}
	return ""
}

// UserScoped reports whether any of ls counts per user, which needs a user
// parameter in every route of its group (RouteWithoutUser).
func UserScoped(ls []Limit) bool {
	for _, l := range ls {
		if l.Scope == ScopeUser {
			return true
		}
	}
	return false
}

// RouteWithoutUser returns the index of the first route without a user
// parameter, -1 when every route has one. A group with a User-scoped limit,
// its own or an override's, needs one in every route.
func RouteWithoutUser(routes []Route) int {
	for i, r := range routes {
		if r.UserParam == "" {
			return i
		}
	}
	return -1
}

// CheckTemplate checks a route's path template: it starts with '/', has no
// query string, and each segment between '/' is a non-empty literal without
// '{', '}' or '#', or exactly one parameter {name} (a letter or '_', then
// letters, digits or '_'). The resolver's trie relies on it.
func CheckTemplate(path string) string {
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

// CheckUserParam checks a route's userParam, which must name a parameter of
// its path. path must be a template (CheckTemplate).
func CheckUserParam(path, userParam string) string {
	if userParam == "" || paramIndex(path, userParam) >= 0 {
		return ""
	}
	return "is not a parameter of " + strconv.Quote(path)
}

// RouteShape is what a gateway can tell of a route: its method and its
// template with parameter names erased. Two routes of one shape match the
// same requests, so a profile may hold only one of them. path must be a
// template (CheckTemplate).
func RouteShape(method, path string) string {
	var b strings.Builder
	b.Grow(len(method) + 1 + len(path))
	b.WriteString(method)
	b.WriteByte(' ')
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

// paramRE matches a parameter's braces anywhere in a path, whether or not the
// path is a template (as the CRD's CEL rule on user parameters does).
var paramRE = regexp.MustCompile(`\{[^/{}]*\}`)

// RepeatedParam returns the name of a parameter that appears twice in path,
// "" when none does. The API refuses such a template (a gateway would take
// the user from the first); documents are not checked for it, so that a
// gateway never refuses one an older controller wrote.
func RepeatedParam(path string) string {
	seen := map[string]bool{}
	for _, m := range paramRE.FindAllString(path, -1) {
		if seen[m] {
			return strings.Trim(m, "{}")
		}
		seen[m] = true
	}
	return ""
}

// userNameRE is the naming convention of a user parameter, as in the CRD:
// username, userName, user_name, userId, user_id, uid or owner_username, in
// any case.
var userNameRE = regexp.MustCompile(`(?i)^(user_?name|user_?id|uid|owner_?username)$`)

// ConventionalUserParam returns the first parameter of path named like a user
// (username, userName, user_name, userId, user_id, uid or owner_username, any
// case), "" when none is: a route's user parameter when it names none.
func ConventionalUserParam(path string) string {
	for _, m := range paramRE.FindAllString(path, -1) {
		if name := m[1 : len(m)-1]; userNameRE.MatchString(name) {
			return name
		}
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
