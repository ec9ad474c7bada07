// Package audit words what a change to an app's entry in the configuration
// did to its effective limits, for the controller's events: "alice raised
// app acme group messages-send-users Requests/Second from 100 to 500 until
// 2027-01-31T00:00:00Z: SALES-42", and for the record of the last change in
// the AppQuota's status (Summary). It is pure: entries in, lines out.
package audit

import (
	"cmp"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/appquota/appquota/pkg/quotaconfig"
)

// Change is one limit of one group whose effective value changed.
type Change struct {
	Group               string
	Unit, Window, Scope string
	From, To            Value
	// Until is the new override's expiry, nil when it has none or none applies.
	Until *time.Time
	// Reason is the new override's reason ("" when the change removed it).
	Reason string
}

// Value is one effective limit: a max, unlimited, or absent (the group has
// no such limit).
type Value struct {
	Max       int64
	Unlimited bool
	Absent    bool
}

func (v Value) String() string {
	switch {
	case v.Absent:
		return "none"
	case v.Unlimited:
		return "unlimited"
	case v.Max == 0:
		return "0 (blocked)"
	}
	return strconv.FormatInt(v.Max, 10)
}

// rank orders values for the verb: absent (no limit) counts as unlimited.
func (v Value) rank() (bool, int64) { return v.Unlimited || v.Absent, v.Max }

// Verb is what the change did: raised, lowered, blocked, unblocked.
func (c Change) Verb() string {
	fu, fm := c.From.rank()
	tu, tm := c.To.rank()
	switch {
	case !tu && tm == 0:
		return "blocked"
	case !fu && fm == 0:
		return "unblocked"
	case tu && !fu, !tu && !fu && tm > fm:
		return "raised"
	}
	return "lowered"
}

// Line is the event's text for the change by user (or "an unrecorded user"
// when the requester is unknown) to app appID.
func (c Change) Line(user, appID string) string {
	if user == "" {
		user = "an unrecorded user"
	}
	return fmt.Sprintf("%s %s app %s group %s", user, c.Verb(), appID, c.what())
}

// Clause is the change without who made it or to which app, for a record
// kept on the app's own object: "raised group messages-send-users
// Requests/Second from 100 to 500: SALES-42".
func (c Change) Clause() string {
	return fmt.Sprintf("%s group %s", c.Verb(), c.what())
}

// what is the change from the group's name on.
func (c Change) what() string {
	s := fmt.Sprintf("%s %s/%s", c.Group, c.Unit, c.Window)
	if c.Scope != "" && c.Scope != "App" {
		s += " per " + c.Scope
	}
	s += fmt.Sprintf(" from %s to %s", c.From, c.To)
	if c.Until != nil {
		s += " until " + c.Until.UTC().Format(time.RFC3339)
	}
	if c.Reason != "" {
		s += ": " + c.Reason
	}
	return s
}

// Summary joins the changes' clauses with "; " in at most maxLen bytes: the
// clauses that do not fit are counted ("; and 2 more") rather than cut in
// the middle, and a first clause longer than maxLen alone is cut short with
// "...". Empty when there are no changes.
func Summary(changes []Change, maxLen int) string {
	var b strings.Builder
	for i, c := range changes {
		clause := c.Clause()
		if i > 0 {
			clause = "; " + clause
		}
		rest := len(changes) - i - 1
		more := ""
		if rest > 0 {
			more = fmt.Sprintf("; and %d more", rest)
		}
		if b.Len()+len(clause)+len(more) <= maxLen {
			b.WriteString(clause)
			continue
		}
		if i == 0 {
			// Even one clause is too long (a long reason): cut it, keeping
			// room for the count of the others.
			tail := "..."
			if rest > 0 {
				tail += more
			}
			return truncate(clause, maxLen-len(tail)) + tail
		}
		fmt.Fprintf(&b, "; and %d more", len(changes)-i)
		break
	}
	return b.String()
}

// truncate cuts s to at most n bytes without splitting a UTF-8 sequence.
func truncate(s string, n int) string {
	if n <= 0 {
		return ""
	}
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

type key struct{ group, unit, window, scope string }

// Changes lists the limits whose effective value differs between an app's
// entry before and after (nil: no entry, so defaultProfile applies), in the
// groups an override of either names, each entry under its own profile in
// profiles. The other groups cannot differ unless the app moved to another
// profile or a profile changed: the platform team's changes, not a raise.
// Sorted by group, then unit, window and scope.
func Changes(profiles map[string]quotaconfig.Profile, defaultProfile string, before, after *quotaconfig.App) []Change {
	if before == nil {
		before = &quotaconfig.App{Profile: defaultProfile}
	}
	if after == nil {
		after = &quotaconfig.App{Profile: defaultProfile}
	}
	groups := map[string]struct{}{}
	for _, a := range []*quotaconfig.App{before, after} {
		for _, o := range a.Overrides {
			groups[o.Group] = struct{}{}
		}
	}
	from, _ := effective(profiles, before, groups)
	to, overrides := effective(profiles, after, groups)
	keys := map[key]struct{}{}
	for k := range from {
		keys[k] = struct{}{}
	}
	for k := range to {
		keys[k] = struct{}{}
	}
	var out []Change
	for k := range keys {
		f, ok := from[k]
		if !ok {
			f = Value{Absent: true}
		}
		t, ok := to[k]
		if !ok {
			t = Value{Absent: true}
		}
		if f == t {
			continue
		}
		c := Change{Group: k.group, Unit: k.unit, Window: k.window, Scope: k.scope, From: f, To: t}
		if o, ok := overrides[k.group]; ok {
			c.Until, c.Reason = o.ExpiresAt, o.Reason
		}
		out = append(out, c)
	}
	slices.SortFunc(out, func(x, y Change) int {
		return cmp.Or(cmp.Compare(x.Group, y.Group), cmp.Compare(x.Unit, y.Unit), cmp.Compare(x.Window, y.Window), cmp.Compare(x.Scope, y.Scope))
	})
	return out
}

// effective returns the limits of groups as they apply to app, and app's
// overrides by group.
func effective(profiles map[string]quotaconfig.Profile, app *quotaconfig.App,
	groups map[string]struct{}) (map[key]Value, map[string]quotaconfig.Override) {
	out := map[key]Value{}
	overrides := map[string]quotaconfig.Override{}
	for _, g := range profiles[app.Profile].Groups {
		if _, ok := groups[g.Name]; ok {
			for _, l := range g.Limits {
				out[key{g.Name, l.Unit, l.Window, l.Scope}] = Value{Max: l.Max}
			}
		}
	}
	for _, o := range app.Overrides {
		overrides[o.Group] = o
		for _, l := range o.Limits {
			out[key{o.Group, l.Unit, l.Window, l.Scope}] = Value{Max: l.Max, Unlimited: l.Unlimited}
		}
	}
	return out, overrides
}
