package cli_test

import (
	"strings"
	"testing"

	"github.com/spf13/cobra"
	"k8s.io/cli-runtime/pkg/genericiooptions"

	"github.com/appquota/appquota/internal/cli"
)

// TestEveryCommandHasExamples: each command's --help shows examples, written
// as users type them.
func TestEveryCommandHasExamples(t *testing.T) {
	root := cli.NewCommand(genericiooptions.NewTestIOStreamsDiscard())
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		if c.Name() != "help" && !strings.Contains(c.Example, "kubectl appquota") {
			t.Errorf("command %q has no example of kubectl appquota", c.CommandPath())
		}
		for _, sub := range c.Commands() {
			walk(sub)
		}
	}
	walk(root)
}

// TestCompletion: a script for each shell, and an error naming them for
// another.
func TestCompletion(t *testing.T) {
	for shell, want := range map[string]string{
		"bash": "# bash completion V2 for kubectl-appquota", "zsh": "#compdef kubectl-appquota",
		"fish": "# fish completion for kubectl-appquota", "powershell": "# powershell completion for kubectl-appquota",
	} {
		out, stderr, code := run("completion", shell)
		if code != 0 || !strings.HasPrefix(out, want) {
			t.Errorf("completion %s: exit %d, %s, starts %.60q; want %q", shell, code, stderr, out, want)
		}
	}
	if _, stderr, code := run("completion", "tcsh"); code != 1 || !strings.Contains(stderr, `invalid argument "tcsh"`) {
		t.Errorf("completion tcsh: exit %d, %s", code, stderr)
	}
	// Flag values complete too (cobra's __complete is what the scripts call).
	out, _, code := run("__complete", "raise", "1", "g", "--window", "")
	if code != 0 || !strings.Contains(out, "minute\n") {
		t.Errorf("completing --window: exit %d, %s", code, out)
	}
}
