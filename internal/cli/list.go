package cli

import (
	"context"
	"flag"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"
)

// list prints the effective limits of every group of an app's profile.
func list(ctx context.Context, args []string, stdout io.Writer) error {
	var s source
	fs := flag.NewFlagSet("list", flag.ContinueOnError)
	s.flags(fs)
	pos, err := parse(fs, args, 1)
	if err != nil {
		return fmt.Errorf("list APP_ID: %w", err)
	}
	cfg, where, err := s.load(ctx)
	if err != nil {
		return err
	}
	appID := pos[0]
	doc := cfg.Document()
	name := doc.DefaultProfile
	if app, ok := doc.Apps[appID]; ok {
		name = app.Profile
	}
	profile, ok := doc.Profiles[name]
	if !ok {
		return fmt.Errorf("app %s uses profile %q, which is not in the configuration (%s)", appID, name, where)
	}
	var all []*Explanation
	for _, g := range profile.Groups {
		// A route template is itself a path that matches only its own route:
		// literal segments never contain '{', so "{param}" takes the parameter branch.
		r := g.Routes[0]
		e, err := explainCall(cfg, where, appID, r.Method, strings.ReplaceAll(r.Path, "{app_id}", appID))
		if err != nil {
			return err
		}
		all = append(all, e)
	}
	if s.output == outputJSON {
		return writeJSON(stdout, all)
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "GROUP\tLIMITS\tPER CALL\tFROM\n")
	for _, e := range all {
		var ls []string
		from := fromProfile
		for _, l := range e.Limits {
			ls = append(ls, describeLimit(l.Limit))
			if l.From == fromOverride {
				from = fromOverride
			}
		}
		per := "-"
		if e.MaxTargets > 0 {
			per = fmt.Sprintf("%d targets", e.MaxTargets)
			if e.MaxTargetsFrom == fromOverride {
				from = fromOverride
			}
		}
		if from == fromOverride && e.Override != nil && e.Override.ExpiresAt != nil {
			from += " until " + e.Override.ExpiresAt.UTC().Format(time.RFC3339)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", e.Group, strings.Join(ls, ", "), per, from)
	}
	return tw.Flush()
}
