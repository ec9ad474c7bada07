package cli

import (
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/cli-runtime/pkg/genericiooptions"

	quotav1 "github.com/appquota/appquota/api/v1alpha1"
	"github.com/appquota/appquota/internal/ratelimit"
	"github.com/appquota/appquota/internal/render"
)

func newRenderCommand(streams genericiooptions.IOStreams) *cobra.Command {
	var r renderOptions
	cmd := &cobra.Command{
		Use:   "render -f DIR_OR_FILE",
		Short: "Render the gateway document from manifests, offline",
		Long: `render prints the document the controller would write for the QuotaProfiles and
AppQuotas of the manifests given, as one document (the controller may store it
compressed or sharded), and its hash on stderr; or envoyproxy/ratelimit's
configuration file (--ratelimit), or the Envoy route rate_limits for every
route of the catalog (--envoy).

Manifests are read as kubectl -f reads them: YAML or JSON, several documents to
a file, Lists (kubectl get quotaprofiles,appquotas -A -o yaml), and the .yaml,
.yml and .json files of a directory; QuotaProfiles and AppQuotas get the API's
defaults, and other kinds are skipped.`,
		Example: `  kubectl appquota render -f config/catalog -f config/samples > limits.json
  kubectl appquota render -f quotas/ -R --now 2027-01-01T00:00:00Z
  kubectl appquota render -f config/catalog -f config/samples --ratelimit
  kubectl appquota render -f config/catalog -f config/samples --envoy`,
		Args: exactArgs(0),
		RunE: func(*cobra.Command, []string) error {
			return r.run(streams.Out, streams.ErrOut)
		},
	}
	r.m.flags(cmd)
	f := cmd.Flags()
	f.BoolVar(&r.rateLimitYAML, "ratelimit", false, "print envoyproxy/ratelimit's configuration file (YAML) instead")
	f.BoolVar(&r.envoy, "envoy", false, "print the Envoy route rate_limits for every route of the catalog instead")
	f.StringVar(&r.domain, "domain", ratelimit.DefaultDomain, "the rate-limit domain of --ratelimit and --envoy (the manager's --rate-limit-domain)")
	f.StringVar(&r.defaultProfile, "default-profile", quotav1.DefaultProfileName,
		"profile of apps without an AppQuota (the manager's --default-profile); the manifests must hold it")
	f.StringVar(&r.now, "now", "", "evaluate expiresAt at this RFC 3339 instant (default: now)")
	return cmd
}

// renderOptions are render's flags.
type renderOptions struct {
	m                    manifestFlags
	defaultProfile, now  string
	domain               string
	rateLimitYAML, envoy bool
}

// run renders the document the controller would write for the manifests
// given, as one document (the controller may write it compressed or
// sharded).
func (r *renderOptions) run(stdout, stderr io.Writer) error {
	if r.rateLimitYAML && r.envoy {
		return fmt.Errorf("render: --ratelimit and --envoy print different files: choose one")
	}
	now := time.Now()
	if r.now != "" {
		var err error
		if now, err = time.Parse(time.RFC3339, r.now); err != nil {
			return fmt.Errorf("--now %q: want an RFC 3339 instant such as 2027-01-31T00:00:00Z", r.now)
		}
	}
	m, defaultProfile, domain := r.m, r.defaultProfile, r.domain
	objs, err := m.read("render")
	if err != nil {
		return err
	}
	// Without it every app without an AppQuota would have no limits, and a
	// document with no profile is never what was meant (a file of other kinds,
	// or the wrong one).
	if objs.QuotaProfile(defaultProfile) == nil {
		has := "no QuotaProfile"
		if names := objs.ProfileNames(); len(names) > 0 {
			has = "QuotaProfiles " + strings.Join(names, ", ")
		}
		return fmt.Errorf("no QuotaProfile %q in %s (it has %s and %d AppQuotas): apps without an AppQuota use it; --default-profile names another",
			defaultProfile, strings.Join(m.files, ", "), has, len(objs.AppQuotas))
	}
	res, err := render.Render(render.Input{
		DefaultProfile: defaultProfile,
		Profiles:       objs.QuotaProfiles,
		AppQuotas:      render.Pointers(objs.AppQuotas),
		Now:            now,
	})
	if err != nil {
		return err
	}
	if err := invalidObjects(res, nil); err != nil {
		// The controller would keep these objects' last good entries; offline there
		// is nothing to keep, so the output would differ: refuse.
		return err
	}
	switch {
	case r.rateLimitYAML:
		return printRateLimitConfig(stdout, res, domain, now)
	case r.envoy:
		return printEnvoyActions(stdout, res, domain, now)
	}
	fmt.Fprintln(stderr, "hash:", res.Hash)
	_, err = stdout.Write(res.Data)
	return err
}

// invalidObjects is an error naming the objects the render found invalid,
// nil when there are none. only, when not nil, limits it to those objects
// ("QuotaProfile NAME", "AppQuota NAMESPACE/NAME").
func invalidObjects(res *render.Result, only map[string]bool) error {
	var invalid []string
	for name, o := range res.Profiles {
		if id := "QuotaProfile " + name; !o.Valid && (only == nil || only[id]) {
			invalid = append(invalid, fmt.Sprintf("%s: %s", id, o.Message))
		}
	}
	for key, o := range res.Apps {
		if id := "AppQuota " + key; !o.Valid && (only == nil || only[id]) {
			invalid = append(invalid, fmt.Sprintf("%s: %s", id, o.Message))
		}
	}
	if len(invalid) == 0 {
		return nil
	}
	slices.Sort(invalid)
	return fmt.Errorf("invalid objects:\n  %s", strings.Join(invalid, "\n  "))
}

// printRateLimitConfig prints the document as envoyproxy/ratelimit's
// configuration file, what the manager serves it over xDS.
func printRateLimitConfig(w io.Writer, res *render.Result, domain string, now time.Time) error {
	cfg, err := ratelimit.Translate(res.Document, ratelimit.Options{Domain: domain, Now: now})
	if err != nil {
		return fmt.Errorf("render --ratelimit: %w", err)
	}
	b, err := ratelimit.YAML(cfg)
	if err != nil {
		return fmt.Errorf("render --ratelimit: %w", err)
	}
	_, err = w.Write(b)
	return err
}

// printEnvoyActions prints the Envoy routes with their rate_limits, for the
// gateway's route configuration.
func printEnvoyActions(w io.Writer, res *render.Result, domain string, now time.Time) error {
	opts := ratelimit.Options{Domain: domain, Now: now}
	routes, err := ratelimit.EnvoyActions(res.Document, opts)
	if err != nil {
		return fmt.Errorf("render --envoy: %w", err)
	}
	b, err := ratelimit.EnvoyYAML(routes, opts)
	if err != nil {
		return fmt.Errorf("render --envoy: %w", err)
	}
	_, err = w.Write(b)
	return err
}
