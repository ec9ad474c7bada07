package cli

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	"k8s.io/client-go/dynamic"

	quotav1 "github.com/appquota/appquota/api/v1alpha1"
)

// The values of raise's --dry-run, as kubectl's.
const (
	dryRunNone   = "none"
	dryRunClient = "client"
	dryRunServer = "server"
)

// raiseOptions are raise's flags.
type raiseOptions struct {
	kube                               *genericclioptions.ConfigFlags
	out                                *outputFlags
	max                                int64
	unit, window, scope, until, reason string
	dryRun, defaultProfile             string
	wait, forceConflicts               bool
	timeout                            time.Duration
}

func newRaiseCommand(kube *genericclioptions.ConfigFlags, streams genericiooptions.IOStreams) *cobra.Command {
	o := &raiseOptions{kube: kube}
	cmd := &cobra.Command{
		Use:   "raise APP_ID GROUP",
		Short: "Set one app's limit for one endpoint group, and wait until it is in force",
		Long: `raise sets the limit of one endpoint group for one app: the override of GROUP in
the app's AppQuota (the AppQuota in the namespace whose spec.appID is APP_ID;
when there is none, a new one named after the app ID) gets the limit of
--unit, --window and --scope, with --reason and, with --until, an expiry.
--max may lower the limit too, and 0 blocks the group.

It writes with server-side apply as field manager kubectl-appquota, and owns
only what it set: other overrides, and the group's limits of other windows,
stay as they are, whoever set them. A field another manager set (a kubectl
apply of the same limit) is a conflict, refused unless --force-conflicts.

It prints the app's effective limits for the group before and after, then
waits (--wait, up to --timeout) until the AppQuota is Ready at the new
generation and, when a rate-limit engine instance is connected, Enforced. A
refusal by the admission webhook is printed as the server's message.`,
		Example: `  # 500 calls a second for one app, until the end of January
  kubectl appquota raise 1122334455 messages-send-users --max 500 --window second \
      --until 2027-01-31 --reason "SALES-1234 enterprise upgrade" -n tenants

  # per user: 20 a minute for each of the app's users
  kubectl appquota raise 1122334455 conversations-delete --max 20 --window minute --scope user --reason "SALES-77"

  # what would change, checked by the API server and its webhook, without writing
  kubectl appquota raise 1122334455 messages-send-users --max 800 --window second --reason "trial" --dry-run=server -o yaml`,
		Args: exactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			r, err := o.validate(cmd, args[1])
			if err != nil {
				return err
			}
			return o.run(cmd.Context(), args[0], r, streams)
		},
	}
	f := cmd.Flags()
	f.Int64Var(&o.max, "max", 0, "the most the window allows for the app (required; 0 blocks the group)")
	f.StringVar(&o.window, "window", "", "the window the limit counts over: second, minute, hour or day (required)")
	f.StringVar(&o.unit, "unit", "requests", "what a call consumes: requests (each call once) or messages (each target once)")
	f.StringVar(&o.scope, "scope", "app", "what the counter is keyed on: app, or user (each of the app's users)")
	f.StringVar(&o.until, "until", "", "when the raise ends: an RFC 3339 instant or a date (2027-01-31, midnight UTC); default: no end")
	f.StringVar(&o.reason, "reason", "", "why (a ticket, a contract), recorded in the override (required)")
	f.StringVar(&o.dryRun, "dry-run", dryRunNone, "none, client (compute locally, write nothing) "+
		"or server (the API server and its webhook check, nothing is stored)")
	f.BoolVar(&o.wait, "wait", true, "wait until the AppQuota is Ready (and Enforced, when an engine instance is connected) at the new generation")
	f.DurationVar(&o.timeout, "timeout", 2*time.Minute, "how long --wait waits")
	f.BoolVar(&o.forceConflicts, "force-conflicts", false, "take over fields another field manager owns instead of failing on the conflict")
	f.StringVar(&o.defaultProfile, "default-profile", quotav1.DefaultProfileName,
		"profile of apps without an AppQuota (the manager's --default-profile), for the limits before")
	_ = cmd.MarkFlagRequired("max")
	_ = cmd.MarkFlagRequired("window")
	_ = cmd.MarkFlagRequired("reason")
	completions := map[string][]string{
		"window":  {"second", "minute", "hour", "day"},
		"unit":    {"requests", "messages"},
		"scope":   {"app", "user"},
		"dry-run": {dryRunNone, dryRunClient, dryRunServer},
	}
	for name, values := range completions {
		_ = cmd.RegisterFlagCompletionFunc(name, cobra.FixedCompletions(values, cobra.ShellCompDirectiveNoFileComp))
	}
	o.out = newOutputFlags(cmd)
	o.out.print.NamePrintFlags.Operation = "serverside-applied"
	return cmd
}

// enumFlag matches value to one of allowed, ignoring case, and returns the
// API's spelling; the error names the flag and the values allowed.
func enumFlag[T ~string](flag, value string, allowed ...T) (T, error) {
	names := make([]string, 0, len(allowed))
	for _, a := range allowed {
		if strings.EqualFold(value, string(a)) {
			return a, nil
		}
		names = append(names, strings.ToLower(string(a)))
	}
	return "", fmt.Errorf("--%s %q: want one of %s", flag, value, strings.Join(names, ", "))
}

// validate checks the flags and returns the change they ask for.
func (o *raiseOptions) validate(cmd *cobra.Command, group string) (raiseSpec, error) {
	r := raiseSpec{group: group, reason: strings.TrimSpace(o.reason)}
	var err error
	windows := []quotav1.LimitWindow{quotav1.WindowSecond, quotav1.WindowMinute, quotav1.WindowHour, quotav1.WindowDay}
	if r.limit.Window, err = enumFlag("window", o.window, windows...); err != nil {
		return r, err
	}
	if r.limit.Unit, err = enumFlag("unit", o.unit, quotav1.UnitRequests, quotav1.UnitMessages); err != nil {
		return r, err
	}
	if r.limit.Scope, err = enumFlag("scope", o.scope, quotav1.ScopeApp, quotav1.ScopeUser); err != nil {
		return r, err
	}
	if _, err = enumFlag("dry-run", o.dryRun, dryRunNone, dryRunClient, dryRunServer); err != nil {
		return r, err
	}
	o.dryRun = strings.ToLower(o.dryRun)
	if o.max < 0 || o.max > 1_000_000_000 {
		return r, fmt.Errorf("--max %d: want 0 (blocks the group) to 1000000000", o.max)
	}
	r.limit.Max = o.max
	if r.reason == "" {
		return r, fmt.Errorf("--reason: must not be empty: say why (a ticket, a contract)")
	}
	if len(r.reason) > 256 {
		return r, fmt.Errorf("--reason: %d characters, want at most 256", len(r.reason))
	}
	if o.until != "" {
		t, err := parseUntil(o.until)
		if err != nil {
			return r, err
		}
		r.until = &t
	}
	if o.timeout <= 0 && cmd.Flags().Changed("timeout") {
		return r, fmt.Errorf("--timeout %s: want a positive duration such as 2m", o.timeout)
	}
	return r, o.out.validate()
}

// parseUntil reads --until: an RFC 3339 instant, or a date meaning its
// midnight UTC.
func parseUntil(s string) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t, nil
	}
	if t, err := time.Parse(time.DateOnly, s); err == nil {
		return t, nil
	}
	return time.Time{}, fmt.Errorf("--until %q: want a date (2027-01-31, midnight UTC) or an RFC 3339 instant (2027-01-31T12:00:00Z)", s)
}

// run finds the app's AppQuota, applies the change, prints the limits before
// and after, and waits.
func (o *raiseOptions) run(ctx context.Context, appID string, r raiseSpec, streams genericiooptions.IOStreams) error {
	namespace, err := contextNamespace(o.kube)
	if err != nil {
		return err
	}
	dyn, err := dynamicClient(o.kube, streams.ErrOut)
	if err != nil {
		return err
	}
	live, err := findAppQuota(ctx, dyn, namespace, appID)
	if err != nil {
		return err
	}
	name := appQuotaName(appID)
	if live != nil {
		name = live.Name
	} else if errs := validation.IsDNS1123Subdomain(name); len(errs) > 0 {
		return fmt.Errorf("app %s has no AppQuota in namespace %s, and %q cannot name a new one (%s): create it first",
			appID, namespace, name, strings.Join(errs, "; "))
	}
	profiles, err := listProfiles(ctx, dyn)
	if err != nil {
		return err
	}

	var after *quotav1.AppQuota
	switch o.dryRun {
	case dryRunClient:
		if after, err = applyLocally(live, namespace, name, appID, r); err != nil {
			return err
		}
	default:
		obj, err := applyObject(live, namespace, name, appID, r)
		if err != nil {
			return err
		}
		opts := metav1.ApplyOptions{FieldManager: fieldManager, Force: o.forceConflicts}
		if o.dryRun == dryRunServer {
			opts.DryRun = []string{metav1.DryRunAll}
		}
		applied, err := dyn.Resource(appQuotaResource).Namespace(namespace).Apply(ctx, name, &unstructured.Unstructured{Object: obj}, opts)
		if apierrors.IsConflict(err) {
			return fmt.Errorf("%w\nanother field manager set these fields: --force-conflicts takes them over", err)
		}
		if err != nil {
			// The server's message: the webhook's or the schema's refusal names the field.
			return err
		}
		if after, err = toAppQuota(applied); err != nil {
			return err
		}
	}

	now := time.Now()
	before := o.effect(profiles, live, appID, r.group, now)
	afterEffect := o.effect(profiles, after, appID, r.group, now)
	w := streams.Out
	if !o.out.text() {
		// stdout is the object's; the summary goes with the messages.
		w = streams.ErrOut
	}
	fmt.Fprintf(w, "AppQuota %s/%s (app %s), group %s:\n  before: %s\n  after:  %s\n", namespace, name, appID, r.group, before, afterEffect)
	if o.out.text() {
		fmt.Fprintf(w, "appquota.%s/%s serverside-applied%s\n", quotav1.GroupVersion.Group, name, dryRunNote(o.dryRun))
	} else {
		after.SetGroupVersionKind(quotav1.GroupVersion.WithKind("AppQuota"))
		if err := o.out.printObj(after, streams.Out); err != nil {
			return err
		}
	}
	if o.dryRun != dryRunNone || !o.wait {
		return nil
	}
	fmt.Fprintf(w, "waiting up to %s for generation %d to be Ready and Enforced\n", o.timeout, after.Generation)
	res, err := waitInForce(ctx, dyn, namespace, name, after.Generation, o.timeout)
	if err != nil {
		return err
	}
	printWait(w, res)
	return nil
}

func dryRunNote(mode string) string {
	switch mode {
	case dryRunClient:
		return " (dry run)"
	case dryRunServer:
		return " (server dry run)"
	}
	return ""
}

// effect is the app's effective limits for the group with the AppQuota a
// (nil: none), rendered as the controller would.
func (o *raiseOptions) effect(profiles []quotav1.QuotaProfile, a *quotav1.AppQuota, appID, group string, now time.Time) string {
	var apps []*quotav1.AppQuota
	if a != nil {
		apps = append(apps, a)
	}
	cfg, res, err := renderConfig(o.defaultProfile, profiles, apps, now)
	if err != nil {
		return "(" + err.Error() + ")"
	}
	if a != nil {
		if out := res.Apps[a.Key()]; out != nil && !out.Valid {
			return fmt.Sprintf("(AppQuota %s is invalid: %s)", a.Key(), out.Message)
		}
	}
	return effect(cfg, appID, group)
}

// appQuotaName is the name of a new AppQuota for the app: its ID, in the
// letters an object name allows.
func appQuotaName(appID string) string {
	return strings.ToLower(strings.ReplaceAll(appID, "_", "-"))
}

// findAppQuota is the AppQuota in namespace whose spec.appID is appID, nil
// when there is none.
func findAppQuota(ctx context.Context, dyn dynamic.Interface, namespace, appID string) (*quotav1.AppQuota, error) {
	list, err := dyn.Resource(appQuotaResource).Namespace(namespace).List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("list %s in namespace %s: %w", resourceName(appQuotaResource), namespace, err)
	}
	var found []*quotav1.AppQuota
	for i := range list.Items {
		a, err := toAppQuota(&list.Items[i])
		if err != nil {
			return nil, err
		}
		if a.Spec.AppID == appID {
			found = append(found, a)
		}
	}
	switch len(found) {
	case 0:
		return nil, nil
	case 1:
		return found[0], nil
	}
	names := make([]string, 0, len(found))
	for _, a := range found {
		names = append(names, a.Name)
	}
	return nil, fmt.Errorf("app %s has %d AppQuotas in namespace %s (%s); the webhook allows one: delete the others first",
		appID, len(found), namespace, strings.Join(names, ", "))
}

// listProfiles is every QuotaProfile.
func listProfiles(ctx context.Context, dyn dynamic.Interface) ([]quotav1.QuotaProfile, error) {
	list, err := dyn.Resource(quotaProfileResource).List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", resourceName(quotaProfileResource), err)
	}
	profiles := make([]quotav1.QuotaProfile, len(list.Items))
	for i := range list.Items {
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(list.Items[i].Object, &profiles[i]); err != nil {
			return nil, fmt.Errorf("QuotaProfile %s: %w", list.Items[i].GetName(), err)
		}
	}
	return profiles, nil
}

func toAppQuota(u *unstructured.Unstructured) (*quotav1.AppQuota, error) {
	var a quotav1.AppQuota
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &a); err != nil {
		return nil, fmt.Errorf("AppQuota %s/%s: %w", u.GetNamespace(), u.GetName(), err)
	}
	return &a, nil
}
