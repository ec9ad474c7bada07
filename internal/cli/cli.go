// Package cli implements kubectl-appquota. It lives apart from its main so tests
// can run it in-process.
//
// Each command has its file (explain, list, render, validate, check); config.go
// loads the configuration explain and list read, manifests.go the manifests
// render and validate read, and output.go holds what several commands print.
package cli

import (
	"context"
	"flag"
	"fmt"
	"io"
	"strings"
)

const usage = `kubectl-appquota: inspect appquota's rate limits.

Usage:
  kubectl appquota explain APP_ID METHOD PATH [flags]   effective limits for one call, and why
  kubectl appquota list APP_ID [flags]                  effective limits of every group for an app
  kubectl appquota render -f DIR_OR_FILE [flags]        render the gateway document from manifests, offline
  kubectl appquota validate -f DIR_OR_FILE              check manifests as the webhook would, offline (for CI)
  kubectl appquota check APP_ID METHOD PATH [flags]     ask the rate-limit engine about a call, as a gateway would

explain and list read the live ConfigMap (and its shards, when the configuration
is sharded) through the kubeconfig, or --config: a limits.json or limits.json.gz
file, a mounted ConfigMap directory, or a file of ConfigMap manifests (one, or
the index and its shards: kubectl get configmap -o yaml NAME NAME-shard-0 ...).
Flags of explain and list:
  --config PATH        read the configuration from PATH instead of the cluster
  --kubeconfig PATH    kubeconfig (default: $KUBECONFIG or ~/.kube/config)
  --context NAME       kubeconfig context
  -n, --namespace NS   namespace of the ConfigMap (default appquota-system)
  --configmap NAME     name of the ConfigMap, or of the index when sharded (default appquota-limits)
  -o, --output FORMAT  text (default) or json
check resolves the call in the configuration (read as explain reads it), builds
the descriptors the rendered Envoy actions send for it, makes --hits calls to
envoyproxy/ratelimit's ShouldRateLimit and prints each answer (-o json: each
RateLimitResponse as protobuf JSON, one per line). Flags of check, besides
explain's:
  --user ID                  the user of User-scoped limits (default: the path's)
  --cost N                   the call's number of targets, what Messages limits count (default 1)
  --hits K                   how many calls to make (default 1)
  --ratelimit-address ADDR   envoyproxy/ratelimit's gRPC address (default localhost:8081)
  --domain NAME              the rate-limit domain (default appquota, as the manager's flag)
render and validate read manifests as kubectl -f does: YAML or JSON, several
documents to a file, Lists (kubectl get quotaprofiles,appquotas -A -o yaml), and
the .yaml, .yml and .json files of a directory; QuotaProfiles and AppQuotas get
the API's defaults, and other kinds are skipped.
validate checks each QuotaProfile and AppQuota in the files against the others
in the files (as if creating them), prints the webhook's errors and warnings, and
exits 1 if any object is invalid.
Flags of render and validate:
  -f, --filename PATH      a manifest file or a directory of them; may be repeated
  -R, --recursive          read the directories' subdirectories too
Flags of render:
  --default-profile NAME   profile of apps without an AppQuota (default "default", as the manager's flag);
                           the manifests must hold it
  --now RFC3339            evaluate expiresAt at this instant (default: now)
  --ratelimit              print envoyproxy/ratelimit's configuration file (YAML) instead
  --envoy                  print the Envoy route rate_limits for every route of the catalog instead
  --domain NAME            the rate-limit domain of --ratelimit and --envoy (default appquota)
`

// Run runs the CLI and returns the exit code.
func Run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(stdout, usage)
		return 0
	}
	var err error
	switch args[0] {
	case "explain":
		err = explain(ctx, args[1:], stdout)
	case "list":
		err = list(ctx, args[1:], stdout)
	case "render":
		err = renderCmd(args[1:], stdout, stderr)
	case "validate":
		err = validateCmd(ctx, args[1:], stdout)
	case "check":
		err = check(ctx, args[1:], stdout)
	default:
		err = fmt.Errorf("unknown command %q; want explain, list, render, validate or check", args[0])
	}
	if err != nil {
		fmt.Fprintln(stderr, "error:", err)
		return 1
	}
	return 0
}

// parse parses flags wherever they appear among the positional arguments, as
// kubectl does.
func parse(fs *flag.FlagSet, args []string, positional int) ([]string, error) {
	fs.SetOutput(io.Discard)
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		args = fs.Args()
		if len(args) == 0 {
			break
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
	if len(pos) != positional {
		return nil, fmt.Errorf("want %d arguments, got %d (%s); see --help", positional, len(pos), strings.Join(pos, " "))
	}
	return pos, nil
}
