package cli

import (
	"flag"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	quotav1 "github.com/appquota/appquota/api/v1alpha1"
	"github.com/appquota/appquota/internal/ratelimit"
	"github.com/appquota/appquota/internal/render"
)

// renderCmd renders the document the controller would write for the
// manifests given, as one document (the controller may write it compressed
// or sharded).
func renderCmd(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("render", flag.ContinueOnError)
	var m manifestFlags
	var defaultProfile, nowFlag, domain string
	var rateLimitYAML, envoy bool
	m.flags(fs)
	fs.BoolVar(&rateLimitYAML, "ratelimit", false, "")
	fs.BoolVar(&envoy, "envoy", false, "")
	fs.StringVar(&domain, "domain", ratelimit.DefaultDomain, "")
	fs.StringVar(&defaultProfile, "default-profile", quotav1.DefaultProfileName, "")
	fs.StringVar(&nowFlag, "now", "", "")
	if _, err := parse(fs, args, 0); err != nil {
		return fmt.Errorf("render -f DIR_OR_FILE: %w", err)
	}
	if rateLimitYAML && envoy {
		return fmt.Errorf("render: --ratelimit and --envoy print different files: choose one")
	}
	now := time.Now()
	if nowFlag != "" {
		var err error
		if now, err = time.Parse(time.RFC3339, nowFlag); err != nil {
			return fmt.Errorf("--now: %w", err)
		}
	}
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
	var invalid []string
	for name, o := range res.Profiles {
		if !o.Valid {
			invalid = append(invalid, fmt.Sprintf("QuotaProfile %s: %s", name, o.Message))
		}
	}
	for key, o := range res.Apps {
		if !o.Valid {
			invalid = append(invalid, fmt.Sprintf("AppQuota %s: %s", key, o.Message))
		}
	}
	if len(invalid) > 0 {
		// The controller would keep these objects' last good entries; offline there
		// is nothing to keep, so the output would differ: refuse.
		slices.Sort(invalid)
		return fmt.Errorf("invalid objects:\n  %s", strings.Join(invalid, "\n  "))
	}
	switch {
	case rateLimitYAML:
		return printRateLimitConfig(stdout, res, domain, now)
	case envoy:
		return printEnvoyActions(stdout, res, domain, now)
	}
	fmt.Fprintln(stderr, "hash:", res.Hash)
	_, err = stdout.Write(res.Data)
	return err
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
