package cli

import (
	"fmt"

	"github.com/spf13/cobra"
	"k8s.io/cli-runtime/pkg/genericiooptions"
)

// newCompletionCommand prints the shell completion script for root. cobra
// has a default completion command; this one says how to use the script with
// kubectl, which completes a plugin's arguments through an executable named
// kubectl_complete-appquota on PATH.
func newCompletionCommand(root *cobra.Command, streams genericiooptions.IOStreams) *cobra.Command {
	shells := []string{"bash", "zsh", "fish", "powershell"}
	return &cobra.Command{
		Use:   "completion bash|zsh|fish|powershell",
		Short: "Print the shell completion script",
		Long: `completion prints the completion script of kubectl-appquota for a shell.

Loaded into the shell, it completes "kubectl-appquota ...". For
"kubectl appquota ..." (kubectl 1.26 and later), kubectl runs an executable
named kubectl_complete-appquota on PATH that calls
"kubectl-appquota __complete "$@"": see the example.`,
		Example: `  source <(kubectl appquota completion bash)
  kubectl appquota completion zsh > "${fpath[1]}/_kubectl-appquota"
  kubectl appquota completion fish > ~/.config/fish/completions/kubectl-appquota.fish
  kubectl appquota completion powershell | Out-String | Invoke-Expression

  # completion through kubectl itself:
  printf '#!/bin/sh\nexec kubectl-appquota __complete "$@"\n' > ~/bin/kubectl_complete-appquota
  chmod +x ~/bin/kubectl_complete-appquota`,
		ValidArgs: shells,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) != 1 {
				return fmt.Errorf("completion: want one shell (bash, zsh, fish or powershell), got %d arguments", len(args))
			}
			return cobra.OnlyValidArgs(cmd, args)
		},
		RunE: func(_ *cobra.Command, args []string) error {
			w := streams.Out
			switch args[0] {
			case "bash":
				return root.GenBashCompletionV2(w, true)
			case "zsh":
				return root.GenZshCompletion(w)
			case "fish":
				return root.GenFishCompletion(w, true)
			default:
				return root.GenPowerShellCompletionWithDesc(w)
			}
		},
	}
}
