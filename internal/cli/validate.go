package cli

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/cli-runtime/pkg/genericiooptions"

	quotav1 "github.com/appquota/appquota/api/v1alpha1"
	"github.com/appquota/appquota/internal/manifest"
	"github.com/appquota/appquota/internal/reservation"
	"github.com/appquota/appquota/internal/validation"
	"github.com/appquota/appquota/webhook"
)

func newValidateCommand(streams genericiooptions.IOStreams) *cobra.Command {
	var m manifestFlags
	cmd := &cobra.Command{
		Use:   "validate -f DIR_OR_FILE",
		Short: "Check manifests as the webhook would, offline (for CI)",
		Long: `validate checks each QuotaProfile and AppQuota in the files against the others in
the files (as if creating them in the order read), prints the webhook's errors
and warnings, and exits 1 if any object is invalid. It reads manifests as
render does.`,
		Example: `  kubectl appquota validate -f config/catalog -f config/samples
  kubectl appquota validate -f quotas/ -R`,
		Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return validateManifests(cmd.Context(), &m, streams.Out)
		},
	}
	m.flags(cmd)
	return cmd
}

// validateManifests runs the webhook's admission checks on the manifests
// given, as if each object were created in the order read, into a cluster
// holding the others read before it (and every QuotaProfile).
func validateManifests(ctx context.Context, m *manifestFlags, stdout io.Writer) error {
	objs, err := m.read("validate")
	if err != nil {
		return err
	}
	invalid := 0
	for i := range objs.QuotaProfiles {
		p := &objs.QuotaProfiles[i]
		if errs := webhook.AdmitQuotaProfile(p); len(errs) > 0 {
			invalid++
			fmt.Fprintf(stdout, "QuotaProfile %s is invalid: %s\n", p.Name, errs.ToAggregate())
		}
	}
	lookup := &filesLookup{objs: objs, owners: map[string]string{}}
	now := time.Now()
	for i := range objs.AppQuotas {
		a := &objs.AppQuotas[i]
		key := a.Key()
		warnings, errs, err := webhook.AdmitAppQuota(ctx, lookup, nil, a, now)
		if err != nil {
			return err
		}
		// The first AppQuota read claims its appID, as the first created would.
		if _, claimed := lookup.owners[a.Spec.AppID]; !claimed {
			lookup.owners[a.Spec.AppID] = key
		}
		for _, w := range warnings {
			fmt.Fprintf(stdout, "Warning: AppQuota %s: %s\n", key, w)
		}
		if len(errs) > 0 {
			invalid++
			fmt.Fprintf(stdout, "AppQuota %s is invalid: %s\n", key, errs.ToAggregate())
		}
	}
	if invalid > 0 {
		return fmt.Errorf("%d of %d objects are invalid", invalid, len(objs.QuotaProfiles)+len(objs.AppQuotas))
	}
	fmt.Fprintf(stdout, "%d QuotaProfiles and %d AppQuotas are valid\n", len(objs.QuotaProfiles), len(objs.AppQuotas))
	return nil
}

// filesLookup answers the webhook's lookups from the manifests read: every
// QuotaProfile (the last of a name, as applying them in order leaves it),
// and the AppQuota that first claimed each appID.
type filesLookup struct {
	objs   *manifest.Objects
	owners map[string]string // appID to "namespace/name"
}

func (l *filesLookup) QuotaProfile(_ context.Context, name string) (*quotav1.QuotaProfile, error) {
	return l.objs.QuotaProfile(name), nil
}

// Grant is nil: files do not say what a namespace may claim.
func (l *filesLookup) Grant(context.Context, string) (*validation.Grant, error) { return nil, nil }

// Reservation is nil: files hold no reservations (the manager's ConfigMap does).
func (l *filesLookup) Reservation(context.Context, string) (*reservation.Reservation, error) {
	return nil, nil
}

func (l *filesLookup) AppIDOwner(_ context.Context, a *quotav1.AppQuota) (string, error) {
	if owner := l.owners[a.Spec.AppID]; owner != a.Namespace+"/"+a.Name {
		return owner, nil
	}
	return "", nil
}
