package controllers_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/appquota/appquota/internal/operatortest"

	"github.com/prometheus/client_golang/prometheus/testutil"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	quotav1 "github.com/appquota/appquota/api/v1alpha1"
	"github.com/appquota/appquota/controllers"
	"github.com/appquota/appquota/internal/layout"
	"github.com/appquota/appquota/internal/localcluster"
	"github.com/appquota/appquota/internal/wiring"
	"github.com/appquota/appquota/pkg/quotaconfig"
)

// These tests run the real operator (wiring.Setup, as the manager binary does)
// against a real kube-apiserver and assert what users and gateways see: the
// ConfigMap's content, statuses and events.

var (
	k8s     client.Client
	cluster *localcluster.Cluster
	// No webhook: these tests create objects it would refuse, as happens when it
	// is down or was installed after them, to prove the controller copes.
	opts = func() wiring.Options {
		o := wiring.DefaultOptions()
		o.DisableWebhook, o.RequireAppIDGrants = true, true
		return o
	}()
	// stopOperator stops the operator TestMain started (tests may swap it).
	stopOperator func()
)

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	ctrl.SetLogger(zap.New(zap.WriteTo(os.Stderr), zap.Level(zap.Options{}.Level)))
	var err error
	cluster, err = operatortest.StartCluster(localcluster.Options{SkipWebhooks: true})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer func() { _ = cluster.Stop() }()
	k8s, err = cluster.Client()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stopOperator, err = operatortest.Run(ctx, cluster, opts)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer func() { stopOperator() }()
	if err := k8s.Create(ctx, testProfile("default")); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return m.Run()
}

// sendGroup is the group of testProfile whose limits the tests' AppQuotas
// override.
const sendGroup = "messages-send-users"

func testProfile(name string) *quotav1.QuotaProfile {
	return &quotav1.QuotaProfile{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: quotav1.QuotaProfileSpec{
			Fallback: quotav1.Fallback{Limits: []quotav1.Limit{{Unit: quotav1.UnitRequests, Window: quotav1.WindowSecond, Max: 100}}},
			EndpointGroups: []quotav1.EndpointGroup{{
				Name:   sendGroup,
				Routes: []quotav1.Route{{Method: "POST", Path: "/app-id/{app_id}/messages/users"}},
				Limits: []quotav1.Limit{
					{Unit: quotav1.UnitRequests, Window: quotav1.WindowSecond, Max: 100},
					{Unit: quotav1.UnitMessages, Window: quotav1.WindowMinute, Max: 6000},
				},
				PerCall: &quotav1.PerCall{MaxTargets: 600},
			}, {
				Name:   "messages-broadcast-users",
				Routes: []quotav1.Route{{Method: "POST", Path: "/app-id/{app_id}/messages/users/broadcast"}},
				Limits: []quotav1.Limit{
					{Unit: quotav1.UnitRequests, Window: quotav1.WindowMinute, Max: 1},
					{Unit: quotav1.UnitRequests, Window: quotav1.WindowDay, Max: 50},
				},
			}},
		},
	}
}

func namespace(t *testing.T) string {
	t.Helper()
	name := strings.ToLower(strings.NewReplacer("/", "-", "_", "-").Replace(t.Name()))
	if len(name) > 50 {
		name = name[:50]
	}
	// Granted every app ID: the grants have tests of their own.
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Annotations: map[string]string{quotav1.AppIDsAnnotation: "*"}}}
	if err := k8s.Create(context.Background(), ns); err != nil {
		t.Fatal(err)
	}
	return name
}

func appQuota(ns, name, appID string, overrides ...quotav1.Override) *quotav1.AppQuota {
	return &quotav1.AppQuota{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec:       quotav1.AppQuotaSpec{AppID: appID, Overrides: overrides},
	}
}

func raise(group string, max int64) quotav1.Override {
	return quotav1.Override{Group: group, Reason: "TICKET-1", Limits: []quotav1.OverrideLimit{{Unit: quotav1.UnitRequests, Window: quotav1.WindowSecond, Max: max}}}
}

// eventually polls cond until it returns nil or the deadline passes.
func eventually(t *testing.T, timeout time.Duration, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("not within %s: %v", timeout, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// runWith replaces the running operator with one run with o (stopOperator
// stops it), until the returned restore is called or the test ends; then
// one run with the default options replaces it again.
func runWith(t *testing.T, o wiring.Options) (restore func()) {
	t.Helper()
	ctx := context.Background()
	stopOperator()
	var err error
	if stopOperator, err = operatortest.Run(ctx, cluster, o); err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	restore = func() {
		once.Do(func() {
			stopOperator()
			var err error
			if stopOperator, err = operatortest.Run(ctx, cluster, opts); err != nil {
				t.Fatal(err)
			}
		})
	}
	t.Cleanup(restore)
	return restore
}

// document reads the ConfigMap gateways read (and its shards, if any) and
// parses it as a gateway would.
func document() (*quotaconfig.Document, *corev1.ConfigMap, error) {
	var cm corev1.ConfigMap
	if err := k8s.Get(context.Background(), client.ObjectKey{Namespace: opts.Namespace, Name: opts.ConfigMapName}, &cm); err != nil {
		return nil, nil, err
	}
	doc, err := quotaconfig.LoadConfigMaps(cm.Name, func(name string) (map[string]string, map[string][]byte, error) {
		if name == cm.Name {
			return cm.Data, cm.BinaryData, nil
		}
		var shard corev1.ConfigMap
		err := k8s.Get(context.Background(), client.ObjectKey{Namespace: opts.Namespace, Name: name}, &shard)
		return shard.Data, shard.BinaryData, err
	})
	return doc, &cm, err
}

// appLimit returns the Requests/Second override max of sendGroup for appID, or an error.
func appLimit(appID string) (int64, error) {
	doc, _, err := document()
	if err != nil {
		return 0, err
	}
	app, ok := doc.Apps[appID]
	if !ok {
		return 0, fmt.Errorf("app %s not in the document", appID)
	}
	for _, o := range app.Overrides {
		if o.Group == sendGroup {
			for _, l := range o.Limits {
				if l.Unit == quotaconfig.UnitRequests && l.Window == quotaconfig.WindowSecond {
					return l.Max, nil
				}
			}
		}
	}
	return 0, fmt.Errorf("app %s has no Requests/Second override for %s: %+v", appID, sendGroup, app.Overrides)
}

// wantLimit waits for appID's Requests/Second override of sendGroup to be
// want.
func wantLimit(appID string, want int64) func() error {
	return func() error {
		got, err := appLimit(appID)
		if err != nil {
			return err
		}
		if got != want {
			return fmt.Errorf("app %s group %s: max %d, want %d", appID, sendGroup, got, want)
		}
		return nil
	}
}

func ready(key client.ObjectKey, status metav1.ConditionStatus, reason string) func() error {
	return func() error {
		var a quotav1.AppQuota
		if err := k8s.Get(context.Background(), key, &a); err != nil {
			return err
		}
		c := meta.FindStatusCondition(a.Status.Conditions, quotav1.ConditionReady)
		if c == nil || c.Status != status || c.Reason != reason || c.ObservedGeneration != a.Generation || a.Status.ObservedGeneration != a.Generation {
			return fmt.Errorf("AppQuota %s generation %d: status %+v, want Ready=%s/%s", key, a.Generation, a.Status, status, reason)
		}
		return nil
	}
}

const wait = 20 * time.Second

// applied waits for appID's Requests/Second override of sendGroup to be max
// in the configuration and for a to report it applied (Ready=True, Applied).
func applied(t *testing.T, a *quotav1.AppQuota, appID string, max int64) {
	t.Helper()
	eventually(t, wait, wantLimit(appID, max))
	eventually(t, wait, ready(client.ObjectKeyFromObject(a), metav1.ConditionTrue, quotav1.ReasonApplied))
}

func TestCreateUpdateDeleteAppQuota(t *testing.T) {
	ctx := context.Background()
	ns := namespace(t)
	a := appQuota(ns, "acme", "crud-1", raise(sendGroup, 500))
	if err := k8s.Create(ctx, a); err != nil {
		t.Fatal(err)
	}
	applied(t, a, "crud-1", 500)

	// The status names the document the generation went into.
	if err := k8s.Get(ctx, client.ObjectKeyFromObject(a), a); err != nil {
		t.Fatal(err)
	}
	_, cm, err := document()
	if err != nil {
		t.Fatal(err)
	}
	if a.Status.ConfigHash != cm.Data[quotaconfig.HashKey] || a.Status.ActiveOverrides != 1 {
		t.Errorf("status %+v; want configHash %s and 1 active override", a.Status, cm.Data[quotaconfig.HashKey])
	}

	a.Spec.Overrides[0].Limits[0].Max = 800
	if err := k8s.Update(ctx, a); err != nil {
		t.Fatal(err)
	}
	applied(t, a, "crud-1", 800)

	if err := k8s.Delete(ctx, a); err != nil {
		t.Fatal(err)
	}
	eventually(t, wait, func() error {
		doc, _, err := document()
		if err != nil {
			return err
		}
		if _, ok := doc.Apps["crud-1"]; ok {
			return errors.New("deleted app still in the document")
		}
		return nil
	})

	// Created again under the same name, for another app: a new object, which
	// the controller must not take for the deleted one.
	again := appQuota(ns, "acme", "crud-2", raise(sendGroup, 900))
	if err := k8s.Create(ctx, again); err != nil {
		t.Fatal(err)
	}
	applied(t, again, "crud-2", 900)
	// And again at once, so that the deletion and the creation likely reach
	// one render.
	if err := k8s.Delete(ctx, again); err != nil {
		t.Fatal(err)
	}
	third := appQuota(ns, "acme", "crud-3", raise(sendGroup, 700))
	if err := k8s.Create(ctx, third); err != nil {
		t.Fatal(err)
	}
	applied(t, third, "crud-3", 700)
	doc, _, err := document()
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"crud-1", "crud-2"} {
		if e, ok := doc.Apps[id]; ok {
			t.Errorf("%s, whose AppQuota was deleted and its name reused, is in the document: %+v", id, e)
		}
	}
}

func TestManualEditAndDeletionAreRepaired(t *testing.T) {
	ctx := context.Background()
	ns := namespace(t)
	if err := k8s.Create(ctx, appQuota(ns, "acme", "repair-1", raise(sendGroup, 300))); err != nil {
		t.Fatal(err)
	}
	eventually(t, wait, wantLimit("repair-1", 300))

	_, cm, err := document()
	if err != nil {
		t.Fatal(err)
	}
	cm.Data[quotaconfig.DataKey] = strings.Replace(cm.Data[quotaconfig.DataKey], `"max":300`, `"max":99999`, 1)
	if err := k8s.Update(ctx, cm); err != nil {
		t.Fatal(err)
	}
	eventually(t, wait, wantLimit("repair-1", 300))

	if err := k8s.Delete(ctx, cm); err != nil {
		t.Fatal(err)
	}
	eventually(t, wait, wantLimit("repair-1", 300))
}

func TestOverrideExpiresOnTime(t *testing.T) {
	ctx := context.Background()
	ns := namespace(t)
	// Far enough ahead that a busy machine (CI runs every package at once)
	// renders the override before it expires: the test must see it go.
	expires := metav1.NewTime(time.Now().Add(8 * time.Second).Truncate(time.Second))
	o := raise("messages-broadcast-users", 10)
	o.Limits[0].Window = quotav1.WindowMinute
	o.ExpiresAt = &expires
	a := appQuota(ns, "campaign", "expiry-1", o, raise(sendGroup, 200))
	if err := k8s.Create(ctx, a); err != nil {
		t.Fatal(err)
	}
	eventually(t, wait, func() error {
		doc, _, err := document()
		if err != nil {
			return err
		}
		if n := len(doc.Apps["expiry-1"].Overrides); n != 2 {
			return fmt.Errorf("app has %d overrides, want 2", n)
		}
		return nil
	})
	eventually(t, wait, func() error {
		var got quotav1.AppQuota
		if err := k8s.Get(ctx, client.ObjectKeyFromObject(a), &got); err != nil {
			return err
		}
		if got.Status.NextExpiry == nil || !got.Status.NextExpiry.Equal(&expires) {
			return fmt.Errorf("status.nextExpiry %v, want %v", got.Status.NextExpiry, expires)
		}
		return nil
	})

	eventually(t, 15*time.Second, func() error {
		doc, _, err := document()
		if err != nil {
			return err
		}
		if n := len(doc.Apps["expiry-1"].Overrides); n != 1 {
			return fmt.Errorf("app has %d overrides, want 1 after expiry", n)
		}
		return nil
	})
	// Nothing but the requeue at expiresAt renders this configuration again
	// (it is too small for the index's fold); 5 s leaves a busy machine room.
	if late := time.Since(expires.Time); late > 5*time.Second {
		t.Errorf("override left the document %s after expiresAt", late)
	}
	eventually(t, wait, func() error {
		var got quotav1.AppQuota
		if err := k8s.Get(ctx, client.ObjectKeyFromObject(a), &got); err != nil {
			return err
		}
		if got.Status.ActiveOverrides != 1 || got.Status.NextExpiry != nil {
			return fmt.Errorf("status %+v, want 1 active override and no next expiry", got.Status)
		}
		return nil
	})
	eventually(t, wait, hasEvent(ns, "campaign", "OverrideExpired"))
}

func hasEvent(ns, name, reason string) func() error {
	return func() error {
		var list eventsv1.EventList
		if err := k8s.List(context.Background(), &list, client.InNamespace(ns)); err != nil {
			return err
		}
		for _, e := range list.Items {
			if e.Regarding.Name == name && e.Reason == reason {
				return nil
			}
		}
		return fmt.Errorf("no %s event for %s/%s among %d events", reason, ns, name, len(list.Items))
	}
}

// TestInvalidAppQuotaKeepsLastGood: an edit that got past admission (no webhook
// runs here) and names a group the profile lacks keeps the app's last good
// limits, and says why in the status.
func TestInvalidAppQuotaKeepsLastGood(t *testing.T) {
	ctx := context.Background()
	ns := namespace(t)
	a := appQuota(ns, "acme", "lastgood-1", raise(sendGroup, 400))
	if err := k8s.Create(ctx, a); err != nil {
		t.Fatal(err)
	}
	applied(t, a, "lastgood-1", 400)

	if err := k8s.Get(ctx, client.ObjectKeyFromObject(a), a); err != nil {
		t.Fatal(err)
	}
	a.Spec.Overrides[0] = raise("messages-send-userz", 900)
	if err := k8s.Update(ctx, a); err != nil {
		t.Fatal(err)
	}
	eventually(t, wait, ready(client.ObjectKeyFromObject(a), metav1.ConditionFalse, quotav1.ReasonInvalidSpec))
	var got quotav1.AppQuota
	if err := k8s.Get(ctx, client.ObjectKeyFromObject(a), &got); err != nil {
		t.Fatal(err)
	}
	msg := meta.FindStatusCondition(got.Status.Conditions, quotav1.ConditionReady).Message
	want := `spec.overrides[0].group: Invalid value: "messages-send-userz": not a group of QuotaProfile "default"; did you mean "messages-send-users"?; gateways keep the app's last good limits`
	if msg != want {
		t.Errorf("Ready message:\n got  %s\n want %s", msg, want)
	}
	if err := wantLimit("lastgood-1", 400)(); err != nil {
		t.Errorf("last good limits lost: %v", err)
	}
	eventually(t, wait, hasEvent(ns, "acme", "Rejected"))
}

func TestDuplicateAppIDReportedOnNewer(t *testing.T) {
	ctx := context.Background()
	ns := namespace(t)
	older := appQuota(ns, "older", "dup-1", raise(sendGroup, 250))
	if err := k8s.Create(ctx, older); err != nil {
		t.Fatal(err)
	}
	eventually(t, wait, ready(client.ObjectKeyFromObject(older), metav1.ConditionTrue, quotav1.ReasonApplied))
	// creationTimestamp has one-second resolution: make sure the newer is newer.
	time.Sleep(time.Until(older.CreationTimestamp.Add(1100 * time.Millisecond)))
	newer := appQuota(ns, "newer", "dup-1", raise(sendGroup, 1))
	if err := k8s.Create(ctx, newer); err != nil {
		t.Fatal(err)
	}
	eventually(t, wait, ready(client.ObjectKeyFromObject(newer), metav1.ConditionFalse, quotav1.ReasonDuplicateAppID))
	var got quotav1.AppQuota
	if err := k8s.Get(ctx, client.ObjectKeyFromObject(newer), &got); err != nil {
		t.Fatal(err)
	}
	msg := meta.FindStatusCondition(got.Status.Conditions, quotav1.ConditionReady).Message
	if want := `spec.appID: Invalid value: "dup-1": already claimed by AppQuota older in this namespace; an app may have only one AppQuota`; msg != want {
		t.Errorf("Ready message:\n got  %s\n want %s", msg, want)
	}
	if err := wantLimit("dup-1", 250)(); err != nil {
		t.Errorf("the older AppQuota's limits: %v", err)
	}
	if err := ready(client.ObjectKeyFromObject(older), metav1.ConditionTrue, quotav1.ReasonApplied)(); err != nil {
		t.Error(err)
	}
}

func TestMissingProfileAndDeletedProfile(t *testing.T) {
	ctx := context.Background()
	ns := namespace(t)
	a := appQuota(ns, "bigco", "profile-1")
	a.Spec.Profile = "enterprise"
	if err := k8s.Create(ctx, a); err != nil {
		t.Fatal(err)
	}
	eventually(t, wait, ready(client.ObjectKeyFromObject(a), metav1.ConditionFalse, quotav1.ReasonProfileNotFound))

	p := testProfile("enterprise")
	p.Spec.Fallback.Limits[0].Max = 1000
	if err := k8s.Create(ctx, p); err != nil {
		t.Fatal(err)
	}
	eventually(t, wait, ready(client.ObjectKeyFromObject(a), metav1.ConditionTrue, quotav1.ReasonApplied))

	// Deleting a profile in use keeps its last version in the document.
	if err := k8s.Delete(ctx, p); err != nil {
		t.Fatal(err)
	}
	eventually(t, wait, func() error {
		if err := k8s.Get(ctx, client.ObjectKeyFromObject(p), &quotav1.QuotaProfile{}); !apierrors.IsNotFound(err) {
			return fmt.Errorf("profile not deleted yet: %v", err)
		}
		return nil
	})
	// Trigger a render after the deletion was seen, then check the document.
	if err := k8s.Create(ctx, appQuota(ns, "trigger", "profile-2", raise(sendGroup, 120))); err != nil {
		t.Fatal(err)
	}
	eventually(t, wait, wantLimit("profile-2", 120))
	doc, _, err := document()
	if err != nil {
		t.Fatal(err)
	}
	if fb := doc.Profiles["enterprise"].Fallback; len(fb) != 1 || fb[0].Max != 1000 {
		t.Errorf("deleted profile in use: fallback %+v, want its last version (1000/s)", fb)
	}
	if doc.Apps["profile-1"].Profile != "enterprise" {
		t.Errorf("app profile-1 lost its entry: %+v", doc.Apps["profile-1"])
	}
}

// TestOverBudgetKeepsLastGoodDocument runs the operator with a size budget no
// layout fits in (below even the compressed profiles, which sharding does not
// split): the ConfigMap keeps its last good content, and a new AppQuota says why.
func TestOverBudgetKeepsLastGoodDocument(t *testing.T) {
	ctx := context.Background()
	ns := namespace(t)
	_, before, err := document()
	if err != nil {
		t.Fatal(err)
	}
	small := opts
	small.MaxConfigBytes = 100
	runWith(t, small)

	o := raise(sendGroup, 700)
	o.Reason = strings.Repeat("a long contract reference ", 9)
	a := appQuota(ns, "big", "budget-1", o)
	if err := k8s.Create(ctx, a); err != nil {
		t.Fatal(err)
	}
	eventually(t, wait, ready(client.ObjectKeyFromObject(a), metav1.ConditionFalse, quotav1.ReasonConfigTooLarge))
	eventually(t, wait, hasEvent(ns, "big", "ConfigTooLarge"))
	_, after, err := document()
	if err != nil {
		t.Fatal(err)
	}
	if after.Data[quotaconfig.HashKey] != before.Data[quotaconfig.HashKey] {
		t.Errorf("the ConfigMap changed although the render was over budget")
	}
	if err := k8s.Delete(ctx, a); err != nil {
		t.Fatal(err)
	}
}

// TestCompressedOverBudget: a document over the size budget goes out gzipped in
// binaryData, which gateways (pkg/quotaconfig) read like the plain one; back
// under the budget, it is plain again and the compressed copy is gone.
func TestCompressedOverBudget(t *testing.T) {
	ctx := context.Background()
	ns := namespace(t)
	// Start from the plain document the normal budget gives (an earlier test's
	// small budget may have left it compressed until the operator rewrites it).
	var plain int
	eventually(t, wait, func() error {
		_, before, err := document()
		if err != nil {
			return err
		}
		if plain = len(before.Data[quotaconfig.DataKey]); plain == 0 {
			return fmt.Errorf("the document is not plain yet: data keys %v", keys(before.Data))
		}
		return nil
	})
	small := opts
	small.MaxConfigBytes = plain + 50 // the next app tips the plain document over
	restore := runWith(t, small)

	a := appQuota(ns, "gz", "gzip-1", raise(sendGroup, 321))
	if err := k8s.Create(ctx, a); err != nil {
		t.Fatal(err)
	}
	eventually(t, wait, wantLimit("gzip-1", 321))
	_, cm, err := document()
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := cm.Data[quotaconfig.DataKey]; ok || len(cm.BinaryData[quotaconfig.GzipDataKey]) == 0 {
		t.Fatalf("want only the compressed document; data keys %v, binaryData keys %v", keys(cm.Data), len(cm.BinaryData))
	}
	eventually(t, wait, ready(client.ObjectKeyFromObject(a), metav1.ConditionTrue, quotav1.ReasonApplied))

	// With the normal budget the plain document returns and the gzip goes.
	restore()
	eventually(t, wait, func() error {
		_, cm, err := document()
		if err != nil {
			return err
		}
		if _, ok := cm.Data[quotaconfig.DataKey]; !ok || len(cm.BinaryData) != 0 {
			return fmt.Errorf("data keys %v, binaryData %d keys", keys(cm.Data), len(cm.BinaryData))
		}
		return nil
	})
	if err := k8s.Delete(ctx, a); err != nil {
		t.Fatal(err)
	}
}

func keys(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}

// shardConfigMaps lists the shard ConfigMaps in the operator's namespace.
func shardConfigMaps(t *testing.T) map[string]corev1.ConfigMap {
	t.Helper()
	var list corev1.ConfigMapList
	if err := k8s.List(context.Background(), &list, client.InNamespace(opts.Namespace)); err != nil {
		t.Fatal(err)
	}
	out := map[string]corev1.ConfigMap{}
	for _, cm := range list.Items {
		if strings.HasPrefix(cm.Name, opts.ConfigMapName+"-shard-") {
			out[cm.Name] = cm
		}
	}
	return out
}

// TestShardedOverBudget: a configuration that does not fit one ConfigMap even
// compressed is split into shards that each fit; a change to one app rewrites
// only the index, which carries it until CompactAfter folds it into its shard;
// a deleted shard is put back; back under the budget, the shards are deleted
// after the index no longer names them.
func TestShardedOverBudget(t *testing.T) {
	ctx := context.Background()
	ns := namespace(t)
	createIncompressible(t, ns, "shard", 60)
	eventually(t, wait, wantLimit("shard-59", 259))
	doc, _, err := document()
	if err != nil {
		t.Fatal(err)
	}
	whole, _ := json.Marshal(doc)
	gz, _ := layout.Compress(whole)
	small := opts
	small.MaxConfigBytes = len(gz) / 3
	small.CompactAfter = 3 * time.Second
	restore := runWith(t, small)

	var index quotaconfig.Document
	eventually(t, wait, wantShardedIndex(&index))
	// A reader between the writes of a shard and of the index sees a mismatch
	// and reads again, as a gateway does.
	eventually(t, wait, wantShardedApps(doc.Apps))
	shards := checkShards(t, &index, small.MaxConfigBytes)

	// One app changes: only the index is rewritten, carrying the app.
	var a quotav1.AppQuota
	if err := k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: "shard7"}, &a); err != nil {
		t.Fatal(err)
	}
	a.Spec.Overrides[0].Limits[0].Max = 777
	if err := k8s.Update(ctx, &a); err != nil {
		t.Fatal(err)
	}
	eventually(t, wait, wantLimit("shard-7", 777))
	if carried, err := indexApps(); err != nil || len(carried) != 1 || carried[0] != "shard-7" {
		t.Errorf("the index carries %v (%v), want [shard-7]", carried, err)
	}
	for name, cm := range shardConfigMaps(t) {
		if cm.ResourceVersion != shards[name].ResourceVersion {
			t.Errorf("shard %s rewritten for a change the index carries", name)
		}
	}
	// Quiet for CompactAfter: the app is folded into its shard, which is
	// written to the other ConfigMap of its position (the index names the
	// old one until it is switched); the old one is deleted after, every
	// other shard is untouched, and the index carries nothing again.
	home := index.Shards[quotaconfig.ShardOf("shard-7", len(index.Shards))].ConfigMap
	eventually(t, wait, wantIndexCarriesNone)
	eventually(t, wait, wantLimit("shard-7", 777))
	eventually(t, wait, wantShardedIndex(&index))
	after := checkShards(t, &index, small.MaxConfigBytes)
	for name, cm := range after {
		if old, ok := shards[name]; ok && old.ResourceVersion != cm.ResourceVersion {
			t.Errorf("shard %s rewritten in place", name)
		}
		if _, ok := shards[name]; !ok && len(after) == len(shards) {
			if _, stillThere := after[home]; stillThere {
				t.Errorf("shard %s written, but %s, which held the app, is still there", name, home)
			}
		}
	}
	if _, ok := after[home]; ok {
		t.Errorf("shard %s, which held the app, was not moved to its other slot", home)
	}
	shards = after

	// A deleted shard comes back.
	victim := shards[index.Shards[0].ConfigMap]
	if err := k8s.Delete(ctx, &victim); err != nil {
		t.Fatal(err)
	}
	eventually(t, wait, wantRecreated(&victim))

	// Under the normal budget: plain again, and no shard left.
	restore()
	eventually(t, wait, wantPlainUnsharded(t))
	if err := k8s.DeleteAllOf(ctx, &quotav1.AppQuota{}, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
}

// wantShardedIndex waits for the ConfigMap to hold an index of at least 4
// shards, and keeps it in index.
func wantShardedIndex(index *quotaconfig.Document) func() error {
	return func() error {
		_, cm, err := document()
		if err != nil {
			return err
		}
		raw, err := quotaconfig.FromConfigMap(cm.Data, cm.BinaryData)
		if err != nil {
			return err
		}
		*index = quotaconfig.Document{}
		if err := json.Unmarshal(raw, index); err != nil {
			return fmt.Errorf("index: %w", err)
		}
		if len(index.Shards) < 4 {
			return fmt.Errorf("%d shards, want at least 4 for a budget of a third of the compressed document", len(index.Shards))
		}
		return nil
	}
}

// wantShardedApps waits for the sharded configuration, read whole, to hold
// apps, those of the plain one.
func wantShardedApps(apps map[string]quotaconfig.App) func() error {
	return func() error {
		got, _, err := document()
		if err != nil {
			return err
		}
		if !reflect.DeepEqual(got.Apps, apps) {
			return fmt.Errorf("the sharded configuration holds %d apps, the plain one held %d", len(got.Apps), len(apps))
		}
		return nil
	}
}

// checkShards checks that the shard ConfigMaps are those the index names,
// each within budget and labelled as the operator's, and returns them.
func checkShards(t *testing.T, index *quotaconfig.Document, budget int) map[string]corev1.ConfigMap {
	t.Helper()
	shards := shardConfigMaps(t)
	if len(shards) != len(index.Shards) {
		t.Fatalf("%d shard ConfigMaps for an index naming %d", len(shards), len(index.Shards))
	}
	for _, ref := range index.Shards {
		cm, ok := shards[ref.ConfigMap]
		if !ok {
			t.Fatalf("shard ConfigMap %s is missing", ref.ConfigMap)
		}
		if size := len(cm.BinaryData[ref.Key]); size == 0 || size > budget {
			t.Errorf("shard %s: %d bytes under %s, budget %d", ref.ConfigMap, size, ref.Key, budget)
		}
		if cm.Labels[controllers.ManagedByLabel] != controllers.ManagedByValue {
			t.Errorf("shard %s: labels %v", ref.ConfigMap, cm.Labels)
		}
	}
	return shards
}

// wantIndexCarriesNone waits for the index to carry no app: every one is in
// its shard.
func wantIndexCarriesNone() error {
	carried, err := indexApps()
	if err == nil && len(carried) != 0 {
		err = fmt.Errorf("the index still carries %v", carried)
	}
	return err
}

// wantRecreated waits for the deleted ConfigMap victim to be there again, a
// new object, and the configuration to read whole.
func wantRecreated(victim *corev1.ConfigMap) func() error {
	return func() error {
		var cm corev1.ConfigMap
		if err := k8s.Get(context.Background(), client.ObjectKeyFromObject(victim), &cm); err != nil {
			return err
		}
		if cm.UID == victim.UID {
			return errors.New("not deleted yet")
		}
		_, _, err := document()
		return err
	}
}

// wantPlainUnsharded waits for the configuration to be plain and whole, and
// for no shard ConfigMap to be left.
func wantPlainUnsharded(t *testing.T) func() error {
	return func() error {
		_, cm, err := document()
		if err != nil {
			return err
		}
		if _, ok := cm.Data[quotaconfig.DataKey]; !ok || len(cm.BinaryData) != 0 || strings.Contains(cm.Data[quotaconfig.DataKey], `"shards"`) {
			return fmt.Errorf("not plain and whole yet: data keys %v, binaryData %d keys", keys(cm.Data), len(cm.BinaryData))
		}
		if left := shardConfigMaps(t); len(left) != 0 {
			return fmt.Errorf("%d shard ConfigMaps left", len(left))
		}
		return nil
	}
}

// TestBurstIsWrittenOncePerInterval: a burst of creates is written at most
// once per MinWriteInterval (plus the first write, which goes out at once),
// however many renders it causes.
func TestBurstIsWrittenOncePerInterval(t *testing.T) {
	ctx := context.Background()
	ns := namespace(t)
	var cm corev1.ConfigMap
	if err := k8s.Get(ctx, client.ObjectKey{Namespace: opts.Namespace, Name: opts.ConfigMapName}, &cm); err != nil {
		t.Fatal(err)
	}
	cs, err := kubernetes.NewForConfig(cluster.Config)
	if err != nil {
		t.Fatal(err)
	}
	w, err := cs.CoreV1().ConfigMaps(opts.Namespace).Watch(ctx, metav1.ListOptions{
		FieldSelector: "metadata.name=" + opts.ConfigMapName, ResourceVersion: cm.ResourceVersion,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	start := time.Now()
	const n = 60
	for i := range n {
		if err := k8s.Create(ctx, appQuota(ns, fmt.Sprintf("b%d", i), fmt.Sprintf("burst-%d", i), raise(sendGroup, int64(300+i)))); err != nil {
			t.Fatal(err)
		}
	}
	writes := 0
	for ev := range w.ResultChan() {
		writes++
		got, ok := ev.Object.(*corev1.ConfigMap)
		if !ok {
			t.Fatalf("watch: %v", ev.Object)
		}
		if strings.Contains(got.Data[quotaconfig.DataKey], `"burst-`+fmt.Sprint(n-1)+`"`) {
			break
		}
	}
	elapsed := time.Since(start)
	if most := int(elapsed/opts.MinWriteInterval) + 1; writes > most {
		t.Errorf("%d creates over %s were written %d times, more than once per %s (%d)", n, elapsed.Round(time.Millisecond), writes, opts.MinWriteInterval, most)
	}
	t.Logf("%d creates over %s: %d writes", n, elapsed.Round(time.Millisecond), writes)
	if err := k8s.DeleteAllOf(ctx, &quotav1.AppQuota{}, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
}

// indexApps lists the apps the index ConfigMap carries itself (changed since
// their shards were written). Between the writes of a shard and of the index
// the configuration does not assemble, and it returns that error.
func indexApps() ([]string, error) {
	_, cm, err := document()
	if err != nil {
		return nil, err
	}
	raw, err := quotaconfig.FromConfigMap(cm.Data, cm.BinaryData)
	if err != nil {
		return nil, err
	}
	var index quotaconfig.Document
	if err := json.Unmarshal(raw, &index); err != nil {
		return nil, err
	}
	ids := slices.Sorted(maps.Keys(index.Apps))
	return append(ids, index.RemovedApps...), nil
}

// TestNoRenderWhenNothingChanged: an event on the ConfigMap that leaves its
// content as written (here an annotation someone adds) is answered without a
// render; a change to its content is repaired (TestManualEditAndDeletionAreRepaired).
func TestNoRenderWhenNothingChanged(t *testing.T) {
	ctx := context.Background()
	ns := namespace(t)
	a := appQuota(ns, "quiet", "quiet-1", raise(sendGroup, 321))
	if err := k8s.Create(ctx, a); err != nil {
		t.Fatal(err)
	}
	eventually(t, wait, wantLimit("quiet-1", 321))
	rendered, skipped := controllers.Renders.WithLabelValues("rendered"), controllers.Renders.WithLabelValues("skipped")
	// Another test's expiry or a fold may render meanwhile: a probe counts
	// only if no render happened while it ran, and one such probe is enough.
	for probe := range 5 {
		r0, s0 := testutil.ToFloat64(rendered), testutil.ToFloat64(skipped)
		patch := fmt.Sprintf(`{"metadata":{"annotations":{"example.com/touched":"%d"}}}`, probe)
		cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: opts.Namespace, Name: opts.ConfigMapName}}
		if err := k8s.Patch(ctx, cm, client.RawPatch(types.MergePatchType, []byte(patch)), client.FieldOwner("someone")); err != nil {
			t.Fatal(err)
		}
		eventually(t, wait, func() error {
			if testutil.ToFloat64(skipped) == s0 && testutil.ToFloat64(rendered) == r0 {
				return errors.New("the ConfigMap event was not handled yet")
			}
			return nil
		})
		if testutil.ToFloat64(rendered) == r0 {
			if err := k8s.DeleteAllOf(ctx, &quotav1.AppQuota{}, client.InNamespace(ns)); err != nil {
				t.Fatal(err)
			}
			return
		}
	}
	t.Fatal("every event on an unchanged ConfigMap caused a render")
}
