package cli

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/genericiooptions"

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
		return nil, fmt.Errorf("app %s uses profile %q, which is not in the configuration (%s)", appID, profileOf(doc, appID), where)
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

func newExplainCommand(kube *genericclioptions.ConfigFlags, streams genericiooptions.IOStreams) *cobra.Command {
	s := source{kube: kube}
	var out *outputFlags
	cmd := &cobra.Command{
		Use:   "explain APP_ID METHOD PATH",
		Short: "Effective limits for one call, and why",
		Long: `explain resolves one call as a gateway would and prints the limits that apply,
each with where it comes from: the app's override, its profile's group, or the
profile's fallback.

It reads the live ConfigMap (and its shards, when the configuration is
sharded) in -n (default appquota-system), or --config: a limits.json or
limits.json.gz file, a mounted ConfigMap directory, or a file of ConfigMap
manifests.`,
		Example: `  kubectl appquota explain 1122334455 POST /app-id/1122334455/messages/users
  kubectl appquota explain 1122334455 POST /app-id/1122334455/messages/users -o yaml
  kubectl appquota explain 1 GET /app-id/1/users --config limits.json
  kubectl appquota explain 1 GET /app-id/1/users -o jsonpath='{.limits[*].max}'`,
		Args: exactArgs(3),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := out.validate(); err != nil {
				return err
			}
			cfg, where, err := s.load(cmd.Context(), streams.ErrOut)
			if err != nil {
				return err
			}
			e, err := explainCall(cfg, where, args[0], args[1], args[2])
			if err != nil {
				return err
			}
			if out.text() {
				printExplanation(streams.Out, e)
				return nil
			}
			obj, err := e.view()
			if err != nil {
				return err
			}
			return out.printObj(obj, streams.Out)
		},
	}
	s.flags(cmd)
	out = newOutputFlags(cmd)
	return cmd
}

// view is e as an object for -o: named after its group ("fallback" when no
// group claims the call).
func (e *Explanation) view() (*unstructured.Unstructured, error) {
	name := e.Group
	if e.Fallback {
		name = fromFallback
	}
	return view("Explanation", name, e)
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
