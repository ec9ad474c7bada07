package cli

import (
	"fmt"
	"strings"
	"time"

	quotav1 "github.com/appquota/appquota/api/v1alpha1"
	"github.com/appquota/appquota/internal/render"
	"github.com/appquota/appquota/pkg/quotaconfig"
)

// renderConfig merges profiles and AppQuotas into the configuration the
// controller would write for them, with the pure merger the controller uses,
// and compiles it for explainCall: raise and diff compute their before and
// after this way, offline, from objects.
func renderConfig(defaultProfile string, profiles []quotav1.QuotaProfile, apps []*quotav1.AppQuota,
	now time.Time) (*quotaconfig.Config, *render.Result, error) {
	res, err := new(render.Merger).Merge(render.Input{DefaultProfile: defaultProfile, Profiles: profiles, AppQuotas: apps, Now: now})
	if err != nil {
		return nil, nil, err
	}
	cfg, err := quotaconfig.Compile(res.Document)
	if err != nil {
		return nil, nil, err
	}
	return cfg, res, nil
}

// effect says in one line what an app gets for one group in cfg: its limits,
// where each comes from, its per-call bound and the override's expiry. Two
// effects are equal exactly when a call of the group is treated alike.
func effect(cfg *quotaconfig.Config, appID, group string) string {
	doc := cfg.Document()
	name := profileOf(doc, appID)
	profile, ok := doc.Profiles[name]
	if !ok {
		return fmt.Sprintf("(profile %q is not in the configuration)", name)
	}
	for _, g := range profile.Groups {
		if g.Name != group {
			continue
		}
		e, err := explainGroup(cfg, "", appID, g)
		if err != nil {
			return "(" + err.Error() + ")"
		}
		return e.summary()
	}
	return fmt.Sprintf("(profile %q has no group %s)", name, group)
}

// summary is e's limits in one line: "500 Requests/Second per app (override),
// 6000 Messages/Minute per app (profile); at most 1000 targets (override);
// until 2027-01-31T00:00:00Z".
func (e *Explanation) summary() string {
	parts := make([]string, 0, len(e.Limits))
	for _, l := range e.Limits {
		parts = append(parts, fmt.Sprintf("%s (%s)", describeLimit(l.Limit), l.From))
	}
	s := strings.Join(parts, ", ")
	if e.MaxTargets > 0 {
		s += fmt.Sprintf("; at most %d targets (%s)", e.MaxTargets, e.MaxTargetsFrom)
	}
	if e.Override != nil && e.Override.ExpiresAt != nil {
		s += "; until " + e.Override.ExpiresAt.UTC().Format(time.RFC3339)
	}
	if e.Blocked {
		s += "; blocked"
	}
	return s
}
