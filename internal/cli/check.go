package cli

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/genericiooptions"

	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/appquota/appquota/internal/ratelimit"
	"github.com/appquota/appquota/pkg/quotaconfig"
)

// DefaultRatelimitAddress is envoyproxy/ratelimit's own default gRPC port on
// this machine.
const DefaultRatelimitAddress = "localhost:8081"

func newCheckCommand(kube *genericclioptions.ConfigFlags, streams genericiooptions.IOStreams) *cobra.Command {
	c := checkOptions{source: source{kube: kube}}
	cmd := &cobra.Command{
		Use:   "check APP_ID METHOD PATH",
		Short: "Ask the rate-limit engine about a call, as a gateway would",
		Long: `check resolves the call in the configuration (read as explain reads it), builds
the descriptors the rendered Envoy actions send for it, makes --hits calls to
envoyproxy/ratelimit's ShouldRateLimit and prints each answer.

-o json prints each RateLimitResponse as protobuf JSON, one per line, as the
answers arrive: a stream, not an object, so the object formats of the other
commands (yaml, name, jsonpath) do not apply.`,
		Example: `  kubectl appquota check 1122334455 POST /app-id/1122334455/messages/users --hits 3
  kubectl appquota check 1122334455 DELETE /app-id/1122334455/users/alice/user_channel --app-user bob
  kubectl appquota check 1122334455 POST /app-id/1122334455/messages/users --cost 600 -o json`,
		Args: exactArgs(3),
		RunE: func(cmd *cobra.Command, args []string) error {
			return c.run(cmd.Context(), args, streams)
		},
	}
	c.flags(cmd)
	f := cmd.Flags()
	// Not --user: that is kubectl's, the kubeconfig user.
	f.StringVar(&c.user, "app-user", "", "the app's end user that User-scoped limits count (default: the path's user parameter)")
	f.Uint64Var(&c.cost, "cost", 1, "the call's number of targets, what Messages limits count")
	f.Uint64Var(&c.hits, "hits", 1, "how many calls to make (1 to 100000)")
	f.StringVar(&c.address, "ratelimit-address", DefaultRatelimitAddress, "envoyproxy/ratelimit's gRPC address")
	f.StringVar(&c.domain, "domain", ratelimit.DefaultDomain, "the rate-limit domain (the manager's --rate-limit-domain)")
	f.StringVarP(&c.output, "output", "o", outputText, "output format: text, or json (one RateLimitResponse per line)")
	_ = cmd.RegisterFlagCompletionFunc("output", cobra.FixedCompletions([]string{outputText, outputJSON}, cobra.ShellCompDirectiveNoFileComp))
	return cmd
}

// checkOptions are check's flags.
type checkOptions struct {
	source
	user, address, domain, output string
	cost, hits                    uint64
}

// run asks the rate-limit engine about one call, as a gateway with the
// rendered Envoy actions would: it resolves the call in the live
// configuration, builds the descriptors those actions send, and calls
// ShouldRateLimit --hits times, printing each answer.
func (c *checkOptions) run(ctx context.Context, args []string, streams genericiooptions.IOStreams) error {
	stdout := streams.Out
	user, address, domain, cost, hits := c.user, c.address, c.domain, c.cost, c.hits
	if c.output != outputText && c.output != outputJSON {
		return fmt.Errorf("--output %q: want text or json", c.output)
	}
	if hits < 1 || hits > 100000 {
		return fmt.Errorf("--hits %d: want 1 to 100000 calls", hits)
	}
	if cost < 1 {
		return fmt.Errorf("--cost %d: want at least 1 (the call's number of targets)", cost)
	}
	cfg, where, err := c.load(ctx, streams.ErrOut)
	if err != nil {
		return err
	}
	appID, method, path := args[0], strings.ToUpper(args[1]), args[2]
	res := cfg.Resolve(appID, method, path)
	if user != "" {
		if res.UserParam == "" {
			return fmt.Errorf("--app-user %q: the route %s %s has no user parameter, so no limit is counted per user", user, method, path)
		}
		res.User = user
	}
	ds := quotaconfig.Descriptors(&res, appID, method, cost)
	if len(ds) == 0 {
		return fmt.Errorf("app %s: its profile is not in the configuration (%s), so a gateway sends no descriptors", appID, where)
	}
	req := ratelimit.Request(domain, ds)

	conn, err := grpc.NewClient(address, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return fmt.Errorf("connect to the rate-limit service at %s: %w", address, err)
	}
	defer conn.Close()
	rls := rlsv3.NewRateLimitServiceClient(conn)
	if c.output == outputText {
		fmt.Fprintf(stdout, "App %s, %s %s: group %s, %d descriptors to %s (domain %s)\n", appID, method, path, groupName(&res), len(ds), address, domain)
	}
	for i := uint64(1); i <= hits; i++ {
		callCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
		resp, err := rls.ShouldRateLimit(callCtx, req)
		cancel()
		if err != nil {
			return fmt.Errorf("call %d: ShouldRateLimit at %s: %w", i, address, err)
		}
		if c.output == outputJSON {
			b, err := protojson.Marshal(resp)
			if err != nil {
				return fmt.Errorf("encode the answer to call %d: %w", i, err)
			}
			fmt.Fprintf(stdout, "%s\n", b)
			continue
		}
		printAnswer(stdout, i, ds, resp)
	}
	return nil
}

func groupName(r *quotaconfig.Result) string {
	if r.Fallback {
		return "(fallback)"
	}
	return r.Group
}

// printAnswer prints one ShouldRateLimit answer: the overall code, then each
// descriptor's limit and what is left of it.
func printAnswer(w io.Writer, i uint64, ds []quotaconfig.Descriptor, resp *rlsv3.RateLimitResponse) {
	fmt.Fprintf(w, "call %d: %s\n", i, resp.GetOverallCode())
	for j, st := range resp.GetStatuses() {
		limit := "no limit"
		if l := st.GetCurrentLimit(); l != nil {
			limit = fmt.Sprintf("%d/%s, %d left", l.GetRequestsPerUnit(), strings.ToLower(l.GetUnit().String()), st.GetLimitRemaining())
		}
		name := ""
		if j < len(ds) {
			for _, e := range ds[j].Entries {
				if e.Key == quotaconfig.DescriptorLimit {
					name = e.Value
				}
			}
		}
		fmt.Fprintf(w, "  %-22s %-10s %s\n", name, st.GetCode(), limit)
	}
}
