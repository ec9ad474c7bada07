// Package cli implements kubectl-appquota. It lives apart from its main so tests
// can run it in-process.
//
// Each command has its file (explain, list, render, validate); config.go
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
	default:
		err = fmt.Errorf("unknown command %q; want explain, list, render or validate", args[0])
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
