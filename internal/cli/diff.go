package cli

import (
	"context"
	"fmt"
	"io"
	"reflect"
	"slices"
	"time"

	"github.com/spf13/cobra"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/genericiooptions"

	quotav1 "github.com/appquota/appquota/api/v1alpha1"
	"github.com/appquota/appquota/internal/manifest"
	"github.com/appquota/appquota/pkg/quotaconfig"
)

// withoutAppQuota stands for the apps that have no AppQuota (they get the
// default profile) among diff's changes. No app has this ID: an appID starts
// with a letter or a digit.
const withoutAppQuota = "_"

// LimitChange is one app's effective limits for one group, before and after
// applying the manifests: diff's output, one per change.
type LimitChange struct {
	// AppID is "_" for the apps without an AppQuota.
	AppID string `json:"appID"`
	// AppQuota is "namespace/name", empty for the apps without one.
	AppQuota string `json:"appQuota,omitempty"`
	Group    string `json:"group"`
	// Before and After are the limits in words (explain's), empty when the
	// group does not exist then.
	Before string `json:"before"`
	After  string `json:"after"`
}

// diffOptions are diff's flags.
type diffOptions struct {
	kube           *genericclioptions.ConfigFlags
	m              manifestFlags
	out            *outputFlags
	defaultProfile string
}

func newDiffCommand(kube *genericclioptions.ConfigFlags, streams genericiooptions.IOStreams) *cobra.Command {
	o := &diffOptions{kube: kube}
	cmd := &cobra.Command{
		Use:   "diff -f FILE_OR_DIR",
		Short: "The effective limits applying manifests would change",
		Long: `diff reads QuotaProfiles and AppQuotas from manifests (as render does), lays
them over the live objects as kubectl apply would (same name, same object; an
AppQuota without a namespace goes to -n or the context's), renders both sets
offline with the controller's merger, and prints each app and group whose
effective limits would change: before and after.

Apps without an AppQuota are shown once, as app "_", when the default profile
changes.

Exit status, as kubectl diff's: 0 when nothing changes, 1 when something does,
greater than 1 on an error (an invalid manifest included).`,
		Example: `  kubectl appquota diff -f quotas/ -R
  kubectl appquota diff -f acme.yaml -n tenants
  kubectl appquota diff -f quotas/ -o yaml   # the changes as LimitChange objects`,
		Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			changes, err := o.run(cmd.Context(), streams.ErrOut)
			if err != nil {
				return &exitError{code: 2, err: err}
			}
			if err := o.print(streams.Out, changes); err != nil {
				return &exitError{code: 2, err: err}
			}
			if len(changes) > 0 {
				return &exitError{code: 1}
			}
			return nil
		},
	}
	o.m.flags(cmd)
	cmd.Flags().StringVar(&o.defaultProfile, "default-profile", quotav1.DefaultProfileName,
		"profile of apps without an AppQuota (the manager's --default-profile)")
	o.out = newOutputFlags(cmd)
	return cmd
}

// run computes the changes.
func (o *diffOptions) run(ctx context.Context, warnings io.Writer) ([]LimitChange, error) {
	if err := o.out.validate(); err != nil {
		return nil, err
	}
	objs, err := o.m.read("diff")
	if err != nil {
		return nil, err
	}
	namespace, err := contextNamespace(o.kube)
	if err != nil {
		return nil, err
	}
	dyn, err := dynamicClient(o.kube, warnings)
	if err != nil {
		return nil, err
	}
	profiles, err := listProfiles(ctx, dyn)
	if err != nil {
		return nil, err
	}
	list, err := dyn.Resource(appQuotaResource).List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", resourceName(appQuotaResource), err)
	}
	apps := make([]*quotav1.AppQuota, 0, len(list.Items))
	for i := range list.Items {
		a, err := toAppQuota(&list.Items[i])
		if err != nil {
			return nil, err
		}
		apps = append(apps, a)
	}

	now := time.Now()
	before, _, err := renderConfig(o.defaultProfile, profiles, apps, now)
	if err != nil {
		return nil, err
	}
	afterProfiles, afterApps, fromFiles := overlay(profiles, apps, objs, namespace, now)
	after, res, err := renderConfig(o.defaultProfile, afterProfiles, afterApps, now)
	if err != nil {
		return nil, err
	}
	// The API server would refuse these (or the controller keep their last
	// good entries): what applying them changes is not what they say.
	if err := invalidObjects(res, fromFiles); err != nil {
		return nil, err
	}
	return limitChanges(before, after), nil
}

// overlay lays the manifests' objects over the live ones, as applying them
// would: an object of the same name replaces the live one (keeping its
// identity, which decides which of two AppQuotas claiming an appID is
// older), others are added, created now. fromFiles names the objects that
// come from the manifests, as invalidObjects names them.
func overlay(profiles []quotav1.QuotaProfile, apps []*quotav1.AppQuota, objs *manifest.Objects, namespace string,
	now time.Time) ([]quotav1.QuotaProfile, []*quotav1.AppQuota, map[string]bool) {
	fromFiles := map[string]bool{}
	outProfiles := slices.Clone(profiles)
	for _, p := range objs.QuotaProfiles {
		fromFiles["QuotaProfile "+p.Name] = true
		i := slices.IndexFunc(outProfiles, func(l quotav1.QuotaProfile) bool { return l.Name == p.Name })
		if i < 0 {
			p.CreationTimestamp = metav1.NewTime(now)
			outProfiles = append(outProfiles, p)
			continue
		}
		p.ObjectMeta = *outProfiles[i].ObjectMeta.DeepCopy()
		outProfiles[i] = p
	}
	outApps := slices.Clone(apps)
	for i := range objs.AppQuotas {
		a := objs.AppQuotas[i].DeepCopy()
		if a.Namespace == "" {
			a.Namespace = namespace
		}
		fromFiles["AppQuota "+a.Key()] = true
		j := slices.IndexFunc(outApps, func(l *quotav1.AppQuota) bool { return l.Namespace == a.Namespace && l.Name == a.Name })
		if j < 0 {
			a.CreationTimestamp = metav1.NewTime(now)
			a.UID = types.UID("diff/" + a.Key())
			a.Generation = 1
			outApps = append(outApps, a)
			continue
		}
		a.ObjectMeta = *outApps[j].ObjectMeta.DeepCopy()
		a.Generation++
		outApps[j] = a
	}
	return outProfiles, outApps, fromFiles
}

// limitChanges compares every app's effective limits for every group of its
// profile in two configurations. An app is compared only when its entry or
// its profile differs: the others resolve alike.
func limitChanges(before, after *quotaconfig.Config) []LimitChange {
	b, a := before.Document(), after.Document()
	var ids []string
	for id := range b.Apps {
		ids = append(ids, id)
	}
	for id := range a.Apps {
		if _, ok := b.Apps[id]; !ok {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	ids = append([]string{withoutAppQuota}, ids...)
	var changes []LimitChange
	for _, id := range ids {
		bp, ap := profileOf(b, id), profileOf(a, id)
		if reflect.DeepEqual(b.Apps[id], a.Apps[id]) && bp == ap && reflect.DeepEqual(b.Profiles[bp], a.Profiles[ap]) {
			continue
		}
		source := a.Apps[id].Source
		if source == "" {
			source = b.Apps[id].Source
		}
		for _, g := range groupNames(b.Profiles[bp], a.Profiles[ap]) {
			was, is := groupEffect(before, b.Profiles[bp], id, g), groupEffect(after, a.Profiles[ap], id, g)
			if was != is {
				changes = append(changes, LimitChange{AppID: id, AppQuota: source, Group: g, Before: was, After: is})
			}
		}
	}
	return changes
}

// profileOf is the profile app id gets in doc.
func profileOf(doc *quotaconfig.Document, id string) string {
	if app, ok := doc.Apps[id]; ok {
		return app.Profile
	}
	return doc.DefaultProfile
}

// groupNames are the groups of both profiles: those of the first in order,
// then those only the second has.
func groupNames(p, q quotaconfig.Profile) []string {
	var names []string
	for _, g := range p.Groups {
		names = append(names, g.Name)
	}
	for _, g := range q.Groups {
		if !slices.Contains(names, g.Name) {
			names = append(names, g.Name)
		}
	}
	return names
}

// groupEffect is effect, empty when the app's profile has no such group.
func groupEffect(cfg *quotaconfig.Config, p quotaconfig.Profile, id, group string) string {
	if !slices.ContainsFunc(p.Groups, func(g quotaconfig.Group) bool { return g.Name == group }) {
		return ""
	}
	return effect(cfg, id, group)
}

// print prints the changes: in text, per app and group, "-" before and "+"
// after, as a diff; with -o, as a List of LimitChange objects.
func (o *diffOptions) print(w io.Writer, changes []LimitChange) error {
	if !o.out.text() {
		items := make([]unstructured.Unstructured, 0, len(changes))
		for _, c := range changes {
			u, err := view("LimitChange", c.AppID+"."+c.Group, c)
			if err != nil {
				return err
			}
			items = append(items, *u)
		}
		return o.out.printObj(viewList(items), w)
	}
	for _, c := range changes {
		who := "apps without an AppQuota (default profile)"
		if c.AppID != withoutAppQuota {
			who = "app " + c.AppID + " (AppQuota " + c.AppQuota + ")"
		}
		fmt.Fprintf(w, "%s, group %s:\n", who, c.Group)
		if c.Before != "" {
			fmt.Fprintf(w, "  - %s\n", c.Before)
		}
		if c.After != "" {
			fmt.Fprintf(w, "  + %s\n", c.After)
		}
	}
	return nil
}
