package cli

import (
	"context"
	"flag"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/appquota/appquota/pkg/quotaconfig"
)

// Explanation is explain's answer; -o json prints it.
type Explanation struct {
	AppID string `json:"appID"`
	// AppQuota is "namespace/name", empty when the app has none.
	AppQuota string `json:"appQuota,omitempty"`
	Profile  string `json:"profile"`
	// DefaultProfile is true when the app has no AppQuota and uses the default.
	DefaultProfile bool             `json:"defaultProfile"`
	Method         string           `json:"method"`
	Path           string           `json:"path"`
	Group          string           `json:"group,omitempty"`
	Fallback       bool             `json:"fallback"`
	Route          string           `json:"route,omitempty"`
	RestOnly       bool             `json:"restOnly"`
	Blocked        bool             `json:"blocked"`
	Limits         []EffectiveLimit `json:"limits"`
	MaxTargets     int32            `json:"maxTargets,omitempty"`
	// MaxTargetsFrom is "profile" or "override".
	MaxTargetsFrom string             `json:"maxTargetsFrom,omitempty"`
	User           string             `json:"user,omitempty"`
	UserParam      string             `json:"userParam,omitempty"`
	Override       *OverrideExplained `json:"override,omitempty"`
	Source         string             `json:"source"`
}

// EffectiveLimit is one limit and where it comes from: "override", "profile"
// (the group's) or "fallback".
type EffectiveLimit struct {
	quotaconfig.Limit
	From string `json:"from"`
}

// Where an EffectiveLimit, or Explanation.MaxTargets, comes from.
const (
	fromProfile  = "profile"
	fromOverride = "override"
	fromFallback = "fallback"
)

// OverrideExplained is the override that applied.
type OverrideExplained struct {
	Reason    string     `json:"reason,omitempty"`
	ExpiresAt *time.Time `json:"expiresAt,omitempty"`
}

// explainCall resolves one call in cfg and says why it gets its limits.
func explainCall(cfg *quotaconfig.Config, where, appID, method, path string) (*Explanation, error) {
	doc := cfg.Document()
	method = strings.ToUpper(method)
	r := cfg.Resolve(appID, method, path)
	e := &Explanation{AppID: appID, Method: method, Path: path, Source: where, Profile: r.Profile}
	app, ok := doc.Apps[appID]
	if ok {
		e.AppQuota = app.Source
	} else {
		e.DefaultProfile = true
	}
	if r.Profile == "" {
		name := doc.DefaultProfile
		if ok {
			name = app.Profile
		}
		return nil, fmt.Errorf("app %s uses profile %q, which is not in the configuration (%s)", appID, name, where)
	}
	e.Group, e.Fallback, e.Route, e.RestOnly, e.Blocked = r.Group, r.Fallback, r.Route, r.RestOnly, r.Blocked
	e.User, e.UserParam = r.User, r.UserParam
	for _, l := range r.Limits {
		from := fromProfile
		if r.Fallback {
			from = fromFallback
		}
		if r.Override != nil && hasLimit(r.Override.Limits, l) {
			from = fromOverride
		}
		e.Limits = append(e.Limits, EffectiveLimit{Limit: l, From: from})
	}
	if r.MaxTargets > 0 {
		e.MaxTargets, e.MaxTargetsFrom = r.MaxTargets, fromProfile
		if r.Override != nil && r.Override.MaxTargets > 0 {
			e.MaxTargetsFrom = fromOverride
		}
	}
	if r.Override != nil {
		e.Override = &OverrideExplained{Reason: r.Override.Reason, ExpiresAt: r.Override.ExpiresAt}
	}
	return e, nil
}

func hasLimit(ls []quotaconfig.Limit, l quotaconfig.Limit) bool {
	for _, o := range ls {
		if o == l {
			return true
		}
	}
	return false
}

// explain prints the limits that apply to one call, and where each comes from.
func explain(ctx context.Context, args []string, stdout io.Writer) error {
	var s source
	fs := flag.NewFlagSet("explain", flag.ContinueOnError)
	s.flags(fs)
	pos, err := parse(fs, args, 3)
	if err != nil {
		return fmt.Errorf("explain APP_ID METHOD PATH: %w", err)
	}
	cfg, where, err := s.load(ctx)
	if err != nil {
		return err
	}
	e, err := explainCall(cfg, where, pos[0], pos[1], pos[2])
	if err != nil {
		return err
	}
	if s.output == outputJSON {
		return writeJSON(stdout, e)
	}
	printExplanation(stdout, e)
	return nil
}

// printExplanation prints explain's answer as text.
func printExplanation(w io.Writer, e *Explanation) {
	who := "no AppQuota: the default profile applies"
	if !e.DefaultProfile {
		who = "AppQuota " + e.AppQuota
	}
	fmt.Fprintf(w, "App %s (%s), profile %q\n", e.AppID, who, e.Profile)
	fmt.Fprintf(w, "%s %s\n", e.Method, e.Path)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	if e.Fallback {
		fmt.Fprintf(tw, "  group:\t(none: no group claims this route; the profile's fallback applies, counted per method and path)\n")
	} else {
		budget := "REST and client-SDK calls share the budget"
		if e.RestOnly {
			budget = "REST calls only"
		}
		fmt.Fprintf(tw, "  group:\t%s (route %s; %s)\n", e.Group, e.Route, budget)
	}
	for i, l := range e.Limits {
		label := "limits:"
		if i > 0 {
			label = ""
		}
		fmt.Fprintf(tw, "  %s\t%s\t(%s)\n", label, describeLimit(l.Limit), l.From)
	}
	if e.MaxTargets > 0 {
		fmt.Fprintf(tw, "  per call:\tat most %d targets\t(%s)\n", e.MaxTargets, e.MaxTargetsFrom)
	}
	if e.User != "" {
		fmt.Fprintf(tw, "  user:\t%s (path parameter {%s})\n", e.User, e.UserParam)
	}
	if e.Override != nil {
		until := "no expiry"
		if e.Override.ExpiresAt != nil {
			until = "until " + e.Override.ExpiresAt.UTC().Format(time.RFC3339)
		}
		reason := e.Override.Reason
		if reason == "" {
			reason = "no reason given"
		}
		fmt.Fprintf(tw, "  override:\t%s, %s\n", reason, until)
	}
	if e.Blocked {
		fmt.Fprintf(tw, "  blocked:\tyes: a limit of 0 refuses every call\n")
	}
	_ = tw.Flush()
}
