// Command kubectl-appquota answers "what limits apply to this call, and why?"
// from the configuration gateways read, and renders that configuration offline
// from manifests. On PATH it works as `kubectl appquota`.
package main

import (
	"context"
	"os"

	"github.com/appquota/appquota/internal/cli"
)

func main() {
	os.Exit(cli.Run(context.Background(), os.Args[1:], os.Stdout, os.Stderr))
}
