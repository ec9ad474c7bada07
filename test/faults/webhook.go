package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"time"

	admissionv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	quotav1 "github.com/appquota/appquota/api/v1alpha1"
)

// webhookMode is one way the validating webhook fails, under one
// failurePolicy.
type webhookMode struct {
	name    string
	hang    bool // a listener that accepts and never answers, else a closed port
	failure admissionv1.FailurePolicyType
}

var webhookModes = []webhookMode{
	{name: "refused, Fail", failure: admissionv1.Fail},
	{name: "hanging, Fail", hang: true, failure: admissionv1.Fail},
	{name: "refused, Ignore", failure: admissionv1.Ignore},
	{name: "hanging, Ignore", hang: true, failure: admissionv1.Ignore},
}

// webhookSpecial is how many apps at the start of the range each mode sets
// aside for its invalid and duplicate objects; the editor leaves them alone
// so that their entries can be checked against the document from before the
// fault.
const webhookSpecial = 2

// refusedUnderFail is how many edits must have been refused while the
// webhook fails under Fail before the fault ends: a few, so that the refusal
// is seen on more than one request and from more than one worker.
const refusedUnderFail = 8

// webhookFault is fault 7: the API server cannot reach the validating
// webhook, because nothing listens at its address (connection refused) or
// because what listens never answers (the API server's call times out), with
// failurePolicy Fail and with Ignore. Under Fail every write of an AppQuota
// is refused with the API server's error and nothing stored changes; under
// Ignore writes are admitted unchecked, and the render must then keep what
// the webhook would have kept out: an AppQuota made invalid keeps its last
// good entry, a second claim on an appID leaves the app to the first, and a
// new one with a missing profile gets no entry.
func webhookFault(ctx context.Context, cfg Config, bin string) result {
	names := make([]string, len(webhookModes))
	for i, m := range webhookModes {
		names[i] = m.name
	}
	res := result{Fault: "Webhook unreachable",
		Injection: fmt.Sprintf("on %d AppQuotas, with edits in flight, the webhook configuration pointed in turn at: %s; "+
			"under Ignore, an AppQuota made invalid, a duplicate appID, two new claims on one appID, a missing profile and "+
			"claims from a namespace granted no appID sent",
			cfg.Apps, strings.Join(names, "; "))}
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	h, err := newHarness(runCtx, cfg.Log, bin)
	if err != nil {
		res.Err = err
		return res
	}
	defer h.stop()
	if err := h.start(runCtx); err != nil {
		res.Err = err
		return res
	}
	// Not through CreateNamespaces, which grants every appID.
	if err := h.c.Create(runCtx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ungrantedNamespace}}); err != nil {
		res.Err = fmt.Errorf("create namespace %s: %w", ungrantedNamespace, err)
		return res
	}
	apps := max(cfg.Apps, webhookSpecial*len(webhookModes)+10)
	if err := h.createApps(runCtx, 0, apps, cfg.Workers); err != nil {
		res.Err = err
		return res
	}
	o := &oracle{h: h, editor: newEditor(h, webhookSpecial*len(webhookModes), apps)}
	if _, _, err := o.settle(runCtx, time.Now(), 5*time.Minute); err != nil {
		res.Err = fmt.Errorf("before the fault: %w", err)
		return res
	}
	restartsBefore, conflictsBefore := h.restarts(), h.conflicts()
	for i, m := range webhookModes {
		recovery, err := webhookOnce(runCtx, h, o, m, i)
		if err != nil {
			res.Err = fmt.Errorf("%s: %w", m.name, err)
			break
		}
		res.Recovery = append(res.Recovery, recovery)
	}
	res.Edits = o.editor.edits.Load()
	if res.Err == nil {
		_, res.Lost, res.Err = o.settle(runCtx, time.Now(), 2*time.Minute)
	}
	res.Restarts = h.restarts() - restartsBefore
	res.Stale = h.conflicts() - conflictsBefore
	return res
}

// webhookOnce runs one mode: the fault, what must hold during it, the
// restore, and the oracle after it. It returns the recovery, from the
// restore to the oracle holding.
func webhookOnce(ctx context.Context, h *harness, o *oracle, m webhookMode, i int) (time.Duration, error) {
	var err error
	if o.previous, _, _, err = h.stored(ctx); err != nil {
		return 0, err
	}
	// Edits before and during the fault: those acknowledged must survive it.
	stopEdits := o.editor.run(ctx, 4)
	defer stopEdits()
	acked := o.editor.edits.Load()
	if err := poll(ctx, "edits before the fault", time.Minute, func(context.Context) (bool, error) {
		return o.editor.edits.Load() >= acked+4, nil
	}); err != nil {
		return 0, err
	}
	var addr string
	if m.hang {
		l, err := hangingListener()
		if err != nil {
			return 0, err
		}
		defer l.Close()
		addr = l.Addr().String()
	} else {
		port, err := freePort()
		if err != nil {
			return 0, err
		}
		addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	}
	restore, err := h.breakWebhook(ctx, addr, m.failure)
	if err != nil {
		return 0, err
	}
	defer func() { _ = restore(context.WithoutCancel(ctx)) }()

	if m.failure == admissionv1.Fail {
		if err := failHolds(ctx, h, o); err != nil {
			return 0, err
		}
	} else if err := h.sendPastWebhook(ctx, i); err != nil {
		return 0, err
	}
	stopEdits()
	restored := time.Now()
	if err := restore(ctx); err != nil {
		return 0, err
	}
	recovery, lost, err := o.settle(ctx, restored, 5*time.Minute)
	if err != nil {
		return 0, fmt.Errorf("after the webhook came back: %w", err)
	}
	if lost > 0 {
		return 0, fmt.Errorf("%d acknowledged edits lost", lost)
	}
	if m.failure == admissionv1.Ignore {
		if err := h.checkPastWebhook(ctx, o, i); err != nil {
			return 0, err
		}
	}
	return recovery, nil
}

// failHolds checks what a failing webhook under Fail must do: refuse every
// write with the API server's error, so that no AppQuota and nothing stored
// changes, until refusedUnderFail edits have been refused.
func failHolds(ctx context.Context, h *harness, o *oracle) error {
	// The editor's workers may be in the middle of a write admitted before
	// the fault took effect: once each worker could have been refused once,
	// those are done.
	failed := o.editor.failed.Load()
	if err := poll(ctx, "the editor's writes to be refused", 2*time.Minute, func(context.Context) (bool, error) {
		return o.editor.failed.Load() >= failed+4, nil
	}); err != nil {
		return err
	}
	edits := o.editor.edits.Load()
	// What was acknowledged before is rendered before the comparison starts:
	// the oracle holding says so.
	if _, _, err := o.settle(ctx, time.Now(), 2*time.Minute); err != nil {
		return fmt.Errorf("while the webhook fails: %w", err)
	}
	var before quotav1.AppQuotaList
	if err := h.c.List(ctx, &before, client.InNamespace(appNamespace)); err != nil {
		return err
	}
	docBefore, _, _, err := h.stored(ctx)
	if err != nil {
		return err
	}
	// A write the editor does not make: a new AppQuota.
	create := h.appQuota(1_000_000)
	if err := h.c.Create(ctx, create); err == nil || !strings.Contains(err.Error(), "failed calling webhook") {
		return fmt.Errorf("a create under a failing webhook with failurePolicy Fail: got %v, want the API server's \"failed calling webhook\" error", err)
	}
	failed = o.editor.failed.Load()
	if err := poll(ctx, fmt.Sprintf("%d edits to be refused", refusedUnderFail), 5*time.Minute, func(context.Context) (bool, error) {
		return o.editor.failed.Load() >= failed+refusedUnderFail, nil
	}); err != nil {
		return err
	}
	if n := o.editor.edits.Load(); n != edits {
		return fmt.Errorf("%d edits were acknowledged while the webhook failed under Fail", n-edits)
	}
	var after quotav1.AppQuotaList
	if err := h.c.List(ctx, &after, client.InNamespace(appNamespace)); err != nil {
		return err
	}
	if changed := changedSpecs(before.Items, after.Items); changed != "" {
		return fmt.Errorf("AppQuotas changed while the webhook failed under Fail: %s", changed)
	}
	// The document, not the index's bytes: a sharded set may fold the index
	// into its shards meanwhile, which changes how, not what, is stored.
	docAfter, _, _, err := h.stored(ctx)
	if err != nil {
		return err
	}
	if !reflect.DeepEqual(docBefore, docAfter) {
		return fmt.Errorf("the stored configuration changed while no AppQuota could: %s", diffApps(docAfter.Apps, docBefore.Apps))
	}
	return nil
}

// changedSpecs names the AppQuotas whose generation differs between before
// and after, or that are in only one of them; "" when none.
func changedSpecs(before, after []quotav1.AppQuota) string {
	gen := map[string]int64{}
	for _, a := range before {
		gen[a.Name] = a.Generation
	}
	var changed []string
	for _, a := range after {
		g, ok := gen[a.Name]
		if !ok || g != a.Generation {
			changed = append(changed, a.Name)
		}
		delete(gen, a.Name)
	}
	for name := range gen {
		changed = append(changed, name+" (gone)")
	}
	return strings.Join(changed, ", ")
}

// The objects a mode sends past an ignored webhook, by mode index.
func invalidApp(i int) int { return webhookSpecial * i }       // made invalid: a group its profile lacks
func claimedApp(i int) int { return webhookSpecial*i + 1 }     // claimed again by a new AppQuota
func dupName(i int) string { return fmt.Sprintf("dup-%d", i) } // that second claim
func pairName(i int, s string) string {
	return fmt.Sprintf("pair-%d-%s", i, s) // two new claims on one new appID
}
func pairAppID(i int) string         { return fmt.Sprintf("pair-%d", i) }
func noProfileName(i int) string     { return fmt.Sprintf("no-profile-%d", i) }
func noProfileAppID(i int) string    { return fmt.Sprintf("no-profile-%d", i) }
func ungrantedNewAppID(i int) string { return fmt.Sprintf("ungranted-%d", i) }

// ungrantedNamespace has no quota.appquota.io/app-ids annotation: it may
// claim no appID, which the webhook checks and, past it, the render.
const ungrantedNamespace = "faults-ungranted"

// Override maxima of the two claims of a pair, so the entry tells which won.
const pairFirstMax, pairSecondMax = 111, 222

// sendPastWebhook sends, under an ignored webhook, what only the webhook
// refuses: an existing AppQuota made invalid, a second claim on an existing
// app's appID, two claims on one new appID (the first created first), a
// new AppQuota naming a profile that does not exist, and claims from a
// namespace granted no appID. The CRD's CEL rules
// still apply, so each is valid on its own.
func (h *harness) sendPastWebhook(ctx context.Context, i int) error {
	if err := h.update(ctx, client.ObjectKey{Namespace: appNamespace, Name: appName(invalidApp(i))}, func(a *quotav1.AppQuota) {
		a.Spec.Overrides[0].Group = "no-such-group"
	}); err != nil {
		return fmt.Errorf("make %s invalid past the webhook: %w", appName(invalidApp(i)), err)
	}
	dup := h.appQuota(claimedApp(i))
	dup.Name = dupName(i)
	dup.Spec.Overrides[0].Limits[0].Max = 7
	first, second := h.appQuota(0), h.appQuota(0)
	first.Name, second.Name = pairName(i, "a"), pairName(i, "b")
	first.Spec.AppID, second.Spec.AppID = pairAppID(i), pairAppID(i)
	first.Spec.Overrides[0].Limits[0].Max, second.Spec.Overrides[0].Limits[0].Max = pairFirstMax, pairSecondMax
	noProfile := h.appQuota(0)
	noProfile.Name, noProfile.Spec.AppID, noProfile.Spec.Profile = noProfileName(i), noProfileAppID(i), "no-such-profile"
	// Two claims from a namespace granted nothing: one on a new appID, one
	// on an existing app's. Neither is a claim: no entry, and the app stays
	// with its AppQuota.
	ungrantedNew, ungrantedTaken := h.appQuota(0), h.appQuota(claimedApp(i))
	ungrantedNew.Namespace, ungrantedNew.Name, ungrantedNew.Spec.AppID = ungrantedNamespace, fmt.Sprintf("new-%d", i), ungrantedNewAppID(i)
	ungrantedTaken.Namespace, ungrantedTaken.Name = ungrantedNamespace, fmt.Sprintf("taken-%d", i)
	for _, a := range []*quotav1.AppQuota{dup, first, second, noProfile, ungrantedNew, ungrantedTaken} {
		if err := h.c.Create(ctx, a); err != nil {
			return fmt.Errorf("create %s past the webhook: %w", a.Name, err)
		}
		if a == first {
			// The first claim is rendered before the second exists, so that
			// the render keeps the app where it was, not merely where the
			// tie-break would put it.
			if err := h.waitReady(ctx, client.ObjectKeyFromObject(a), metav1.ConditionTrue); err != nil {
				return err
			}
		}
	}
	return nil
}

// checkPastWebhook checks, once the oracle holds, the entries of what
// sendPastWebhook sent: the oracle compares with a render, and this says
// what that render must be.
func (h *harness) checkPastWebhook(ctx context.Context, o *oracle, i int) error {
	doc, _, _, err := h.stored(ctx)
	if err != nil {
		return err
	}
	var errs []error
	for _, n := range []int{invalidApp(i), claimedApp(i)} {
		id := appName(n)
		if !reflect.DeepEqual(doc.Apps[id], o.previous.Apps[id]) {
			errs = append(errs, fmt.Errorf("app %s: entry %+v, want its last good one %+v", id, doc.Apps[id], o.previous.Apps[id]))
		}
	}
	if got := doc.Apps[pairAppID(i)]; got.Source != appNamespace+"/"+pairName(i, "a") ||
		len(got.Overrides) == 0 || got.Overrides[0].Limits[0].Max != pairFirstMax {
		errs = append(errs, fmt.Errorf("app %s: entry %+v, want the first claim's (%s, max %d)", pairAppID(i), got, pairName(i, "a"), pairFirstMax))
	}
	if got, ok := doc.Apps[noProfileAppID(i)]; ok {
		errs = append(errs, fmt.Errorf("app %s, whose profile does not exist, has an entry: %+v", noProfileAppID(i), got))
	}
	if got, ok := doc.Apps[ungrantedNewAppID(i)]; ok {
		errs = append(errs, fmt.Errorf("app %s, claimed only from a namespace granted nothing, has an entry: %+v", ungrantedNewAppID(i), got))
	}
	for _, key := range []client.ObjectKey{
		{Namespace: appNamespace, Name: appName(invalidApp(i))}, {Namespace: appNamespace, Name: dupName(i)},
		{Namespace: appNamespace, Name: pairName(i, "b")}, {Namespace: appNamespace, Name: noProfileName(i)},
		{Namespace: ungrantedNamespace, Name: fmt.Sprintf("new-%d", i)}, {Namespace: ungrantedNamespace, Name: fmt.Sprintf("taken-%d", i)},
	} {
		if err := h.waitReady(ctx, key, metav1.ConditionFalse); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// waitReady waits until an AppQuota reports Ready=status for its
// generation.
func (h *harness) waitReady(ctx context.Context, key client.ObjectKey, status metav1.ConditionStatus) error {
	return poll(ctx, fmt.Sprintf("%s to report Ready=%s", key, status), 2*time.Minute, func(ctx context.Context) (bool, error) {
		var a quotav1.AppQuota
		if err := h.c.Get(ctx, key, &a); err != nil {
			return false, err
		}
		for _, c := range a.Status.Conditions {
			if c.Type == quotav1.ConditionReady && c.ObservedGeneration == a.Generation && c.Status == status {
				return true, nil
			}
		}
		return false, nil
	})
}

// hangingListener accepts connections and never reads or answers: the API
// server's call waits for its timeoutSeconds. Close ends it and the
// connections it holds.
func hangingListener() (net.Listener, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("listen for the hanging webhook: %w", err)
	}
	hl := &holdingListener{Listener: l}
	go hl.hold()
	return hl, nil
}

type holdingListener struct {
	net.Listener
	mu    sync.Mutex
	conns []net.Conn
}

func (l *holdingListener) hold() {
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		l.mu.Lock()
		l.conns = append(l.conns, c)
		l.mu.Unlock()
	}
}

func (l *holdingListener) Close() error {
	err := l.Listener.Close()
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, c := range l.conns {
		_ = c.Close()
	}
	return err
}

// breakWebhook points every webhook of the validating webhook configurations
// at addr with the failure policy given, and returns once a write shows the
// change in force; restore puts the configurations back as they were and
// returns once the webhook refuses a duplicate appID again.
func (h *harness) breakWebhook(
	ctx context.Context, addr string, policy admissionv1.FailurePolicyType,
) (restore func(context.Context) error, err error) {
	var list admissionv1.ValidatingWebhookConfigurationList
	if err := h.c.List(ctx, &list); err != nil {
		return nil, fmt.Errorf("list the webhook configurations: %w", err)
	}
	if len(list.Items) == 0 {
		return nil, errors.New("no validating webhook configuration to break")
	}
	saved := map[string][]admissionv1.ValidatingWebhook{}
	for _, vwc := range list.Items {
		saved[vwc.Name] = vwc.DeepCopy().Webhooks
		if err := h.editWebhooks(ctx, vwc.Name, func(w *admissionv1.ValidatingWebhook) error {
			if w.ClientConfig.URL == nil {
				return fmt.Errorf("webhook %s has no URL (envtest installs them with one)", w.Name)
			}
			u, err := url.Parse(*w.ClientConfig.URL)
			if err != nil {
				return fmt.Errorf("webhook %s: %w", w.Name, err)
			}
			u.Host = addr
			s := u.String()
			w.ClientConfig.URL, w.FailurePolicy = &s, &policy
			return nil
		}); err != nil {
			return nil, err
		}
	}
	// A duplicate appID: the webhook refuses it, a failing one under Fail
	// refuses it with the API server's error, an ignored one admits it.
	probe := h.appQuota(0)
	probe.Name = "webhook-probe"
	inForce := func(err error) bool {
		if policy == admissionv1.Ignore {
			return err == nil
		}
		return err != nil && strings.Contains(err.Error(), "failed calling webhook")
	}
	if err := poll(ctx, "the broken webhook to be in force", 2*time.Minute, func(ctx context.Context) (bool, error) {
		err := h.c.Create(ctx, probe.DeepCopy(), client.DryRunAll)
		return inForce(err), err
	}); err != nil {
		return nil, err
	}
	done := false
	restore = func(ctx context.Context) error {
		if done {
			return nil
		}
		done = true
		for name, webhooks := range saved {
			var vwc admissionv1.ValidatingWebhookConfiguration
			if err := h.c.Get(ctx, client.ObjectKey{Name: name}, &vwc); err != nil {
				return fmt.Errorf("read webhook configuration %s: %w", name, err)
			}
			vwc.Webhooks = webhooks
			if err := h.c.Update(ctx, &vwc); err != nil {
				return fmt.Errorf("restore webhook configuration %s: %w", name, err)
			}
		}
		return poll(ctx, "the webhook to answer again", 2*time.Minute, func(ctx context.Context) (bool, error) {
			err := h.c.Create(ctx, probe.DeepCopy(), client.DryRunAll)
			return err != nil && strings.Contains(err.Error(), "already claimed"), err
		})
	}
	return restore, nil
}

// editWebhooks applies edit to every webhook of a configuration.
func (h *harness) editWebhooks(ctx context.Context, name string, edit func(*admissionv1.ValidatingWebhook) error) error {
	var vwc admissionv1.ValidatingWebhookConfiguration
	if err := h.c.Get(ctx, client.ObjectKey{Name: name}, &vwc); err != nil {
		return fmt.Errorf("read webhook configuration %s: %w", name, err)
	}
	for i := range vwc.Webhooks {
		if err := edit(&vwc.Webhooks[i]); err != nil {
			return err
		}
	}
	if err := h.c.Update(ctx, &vwc); err != nil {
		return fmt.Errorf("update webhook configuration %s: %w", name, err)
	}
	return nil
}
