package cli

import (
	"context"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

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

// check asks the rate-limit engine about one call, as a gateway with the
// rendered Envoy actions would: it resolves the call in the live
// configuration, builds the descriptors those actions send, and calls
// ShouldRateLimit --hits times, printing each answer.
func check(ctx context.Context, args []string, stdout io.Writer) error {
	var s source
	fs := flag.NewFlagSet("check", flag.ContinueOnError)
	s.flags(fs)
	var user, address, domain string
	var cost, hits uint64
	fs.StringVar(&user, "user", "", "")
	fs.Uint64Var(&cost, "cost", 1, "")
	fs.Uint64Var(&hits, "hits", 1, "")
	fs.StringVar(&address, "ratelimit-address", DefaultRatelimitAddress, "")
	fs.StringVar(&domain, "domain", ratelimit.DefaultDomain, "")
	pos, err := parse(fs, args, 3)
	if err != nil {
		return fmt.Errorf("check APP_ID METHOD PATH: %w", err)
	}
	if hits < 1 || hits > 100000 {
		return fmt.Errorf("--hits %d: want 1 to 100000 calls", hits)
	}
	if cost < 1 {
		return fmt.Errorf("--cost %d: want at least 1 (the call's number of targets)", cost)
	}
	cfg, where, err := s.load(ctx)
	if err != nil {
		return err
	}
	appID, method, path := pos[0], strings.ToUpper(pos[1]), pos[2]
	res := cfg.Resolve(appID, method, path)
	if user != "" {
		if res.UserParam == "" {
			return fmt.Errorf("--user %q: the route %s %s has no user parameter, so no limit is counted per user", user, method, path)
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
	if s.output == "text" {
		fmt.Fprintf(stdout, "App %s, %s %s: group %s, %d descriptors to %s (domain %s)\n", appID, method, path, groupName(&res), len(ds), address, domain)
	}
	for i := uint64(1); i <= hits; i++ {
		callCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
		resp, err := rls.ShouldRateLimit(callCtx, req)
		cancel()
		if err != nil {
			return fmt.Errorf("call %d: ShouldRateLimit at %s: %w", i, address, err)
		}
		if s.output == "json" {
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
