// Package cli implements kubectl-appquota. It lives apart from its main so tests
// can run it in-process.
//
// The commands are cobra commands; the connection flags (--kubeconfig,
// --context, -n, --as, --server, ...) are cli-runtime's ConfigFlags and -o is
// its PrintFlags, so the plugin takes the flags kubectl takes. Each command has
// its file (explain, list, render, validate, check, raise, diff, completion);
// config.go loads the configuration explain, list and check read,
// manifests.go the manifests render, validate and diff read, connection.go
// the clients, effective.go the limits one app gets for one group (raise's and
// diff's before and after), and output.go what several commands print.
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/genericiooptions"
)

// exitError ends the command with an exit code other than 1: diff's 1 for
// "there are changes" (with no message) and 2 for its errors, as kubectl
// diff's.
type exitError struct {
	code int
	err  error // nil: nothing to print
}

func (e *exitError) Error() string {
	if e.err == nil {
		return fmt.Sprintf("exit status %d", e.code)
	}
	return e.err.Error()
}

func (e *exitError) Unwrap() error { return e.err }

// Run runs the CLI and returns the exit code.
func Run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	root := NewCommand(genericiooptions.IOStreams{In: os.Stdin, Out: stdout, ErrOut: stderr})
	root.SetArgs(args)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return 0
	}
	var ex *exitError
	if errors.As(err, &ex) {
		if ex.err != nil {
			fmt.Fprintln(stderr, "error:", ex.err)
		}
		return ex.code
	}
	fmt.Fprintln(stderr, "error:", err)
	return 1
}

// NewCommand returns the root command, kubectl-appquota, and its commands.
func NewCommand(streams genericiooptions.IOStreams) *cobra.Command {
	// kubectl's connection flags, on every command. usePersistentConfig
	// false: a plugin runs once, so a discovery cache on disk buys nothing.
	kube := genericclioptions.NewConfigFlags(false)
	root := &cobra.Command{
		Use:   "kubectl-appquota",
		Short: "Inspect and change appquota's rate limits",
		Long: `kubectl-appquota inspects appquota's rate limits: what limits apply to a call
and why (explain, list), what a set of manifests renders to (render), whether
they would be admitted (validate), what applying them would change (diff), and
what the rate-limit engine answers (check). raise changes one app's limits for
one group with server-side apply and waits until they are in force.

On PATH it works as "kubectl appquota", with kubectl's connection flags.`,
		Example: `  kubectl appquota explain 1122334455 POST /app-id/1122334455/messages/users
  kubectl appquota raise 1122334455 messages-send-users --max 500 --window second --reason "SALES-1234"
  kubectl appquota diff -f quotas/`,
		Annotations: map[string]string{
			// Help and errors say "kubectl appquota", as users type it.
			cobra.CommandDisplayNameAnnotation: "kubectl appquota",
		},
		SilenceUsage:  true,
		SilenceErrors: true,
		// Our own completion command carries examples; cobra's default does not.
		CompletionOptions: cobra.CompletionOptions{DisableDefaultCmd: true},
	}
	root.SetOut(streams.Out)
	root.SetErr(streams.ErrOut)
	root.SetIn(streams.In)
	kube.AddFlags(root.PersistentFlags())
	root.AddCommand(
		newExplainCommand(kube, streams),
		newListCommand(kube, streams),
		newRenderCommand(streams),
		newValidateCommand(streams),
		newCheckCommand(kube, streams),
		newRaiseCommand(kube, streams),
		newDiffCommand(kube, streams),
		newCompletionCommand(root, streams),
	)
	return root
}

// exactArgs checks the number of positional arguments and names them in the
// error, as "explain APP_ID METHOD PATH: want 3 arguments, got 2 (1 GET)".
func exactArgs(n int) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) != n {
			return fmt.Errorf("%s: want %d arguments, got %d (%s); see --help", cmd.Use, n, len(args), strings.Join(args, " "))
		}
		return nil
	}
}
