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

func newListCommand(kube *genericclioptions.ConfigFlags, streams genericiooptions.IOStreams) *cobra.Command {
	s := source{kube: kube}
	var out *outputFlags
	cmd := &cobra.Command{
		Use:   "list APP_ID",
		Short: "Effective limits of every group for an app",
		Long: `list prints the effective limits of every endpoint group of the app's profile,
and whether each comes from the profile or from the app's override. It reads
the configuration as explain does.`,
		Example: `  kubectl appquota list 1122334455
  kubectl appquota list 1122334455 -o name          # every group, as explanation.cli.appquota.io/GROUP
  kubectl appquota list 1122334455 -o jsonpath='{range .items[*]}{.group}{"\t"}{.limits[0].max}{"\n"}{end}'
  kubectl appquota list 1122334455 --config /etc/appquota`,
		Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := out.validate(); err != nil {
				return err
			}
			cfg, where, err := s.load(cmd.Context(), streams.ErrOut)
			if err != nil {
				return err
			}
			all, err := groupExplanations(cfg, where, args[0])
			if err != nil {
				return err
			}
			if out.text() {
				return printList(streams.Out, all)
			}
			items := make([]unstructured.Unstructured, 0, len(all))
			for _, e := range all {
				u, err := e.view()
				if err != nil {
					return err
				}
				items = append(items, *u)
			}
			return out.printObj(viewList(items), streams.Out)
		},
	}
	s.flags(cmd)
	out = newOutputFlags(cmd)
	return cmd
}

// groupExplanations explains every group of the app's profile, in the
// profile's order.
func groupExplanations(cfg *quotaconfig.Config, where, appID string) ([]*Explanation, error) {
	doc := cfg.Document()
	name := profileOf(doc, appID)
	profile, ok := doc.Profiles[name]
	if !ok {
		return nil, fmt.Errorf("app %s uses profile %q, which is not in the configuration (%s)", appID, name, where)
	}
	all := make([]*Explanation, 0, len(profile.Groups))
	for _, g := range profile.Groups {
		e, err := explainGroup(cfg, where, appID, g)
		if err != nil {
			return nil, err
		}
		all = append(all, e)
	}
	return all, nil
}

// explainGroup explains the first route of group g for the app.
func explainGroup(cfg *quotaconfig.Config, where, appID string, g quotaconfig.Group) (*Explanation, error) {
	// A route template is itself a path that matches only its own route:
	// literal segments never contain '{', so "{param}" takes the parameter branch.
	r := g.Routes[0]
	return explainCall(cfg, where, appID, r.Method, strings.ReplaceAll(r.Path, "{app_id}", appID))
}

// printList prints list's table.
func printList(w io.Writer, all []*Explanation) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "GROUP\tLIMITS\tPER CALL\tFROM\n")
	for _, e := range all {
		ls := make([]string, 0, len(e.Limits))
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
