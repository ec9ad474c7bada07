package ratelimit

import (
	ratelimitv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/appquota/appquota/pkg/quotaconfig"
)

// Request is the ShouldRateLimit request an Envoy gateway with the rendered
// route actions sends for a call whose descriptors are ds
// (quotaconfig.Descriptors): the same entries, in order, each descriptor with
// its own hits_addend.
func Request(domain string, ds []quotaconfig.Descriptor) *rlsv3.RateLimitRequest {
	req := &rlsv3.RateLimitRequest{Domain: domain}
	for _, d := range ds {
		pd := &ratelimitv3.RateLimitDescriptor{HitsAddend: wrapperspb.UInt64(d.HitsAddend)}
		for _, e := range d.Entries {
			pd.Entries = append(pd.Entries, &ratelimitv3.RateLimitDescriptor_Entry{Key: e.Key, Value: e.Value})
		}
		req.Descriptors = append(req.Descriptors, pd)
	}
	return req
}
