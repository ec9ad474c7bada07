package manifests_test

import (
	"bufio"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/labels"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"
)

// TestFailoverSettings: the default install can lose a replica, or roll out,
// without losing the webhook or waiting out the Lease. Two replicas, spread
// over nodes; a PodDisruptionBudget that keeps one; a graceful shutdown that
// ends (and releases the Lease) inside the Pod's termination grace; readiness
// on /readyz.
func TestFailoverSettings(t *testing.T) {
	out := kubectl(t, "kustomize", "config/default")
	var dep *appsv1.Deployment
	var pdb *policyv1.PodDisruptionBudget
	for _, doc := range splitYAML(t, out) {
		var kind struct{ Kind string }
		if err := yaml.Unmarshal(doc, &kind); err != nil {
			t.Fatal(err)
		}
		switch kind.Kind {
		case "Deployment":
			dep = &appsv1.Deployment{}
			if err := yaml.Unmarshal(doc, dep); err != nil {
				t.Fatal(err)
			}
		case "PodDisruptionBudget":
			pdb = &policyv1.PodDisruptionBudget{}
			if err := yaml.Unmarshal(doc, pdb); err != nil {
				t.Fatal(err)
			}
		}
	}
	if dep == nil || pdb == nil {
		t.Fatalf("config/default lacks the Deployment (%v) or the PodDisruptionBudget (%v)", dep != nil, pdb != nil)
	}
	if dep.Spec.Replicas == nil || *dep.Spec.Replicas < 2 {
		t.Errorf("replicas = %v, want at least 2", dep.Spec.Replicas)
	}
	podLabels := labels.Set(dep.Spec.Template.Labels)

	// The budget selects the manager's Pods and keeps one of them.
	sel, err := labels.Set(pdb.Spec.Selector.MatchLabels).AsValidatedSelector()
	if err != nil || !sel.Matches(podLabels) {
		t.Errorf("the PodDisruptionBudget's selector %v does not select the manager's Pods %v", pdb.Spec.Selector.MatchLabels, podLabels)
	}
	if pdb.Spec.MinAvailable == nil || pdb.Spec.MinAvailable.IntValue() != 1 {
		t.Errorf("PodDisruptionBudget minAvailable = %v, want 1", pdb.Spec.MinAvailable)
	}

	checkManagerPod(t, dep.Spec.Template.Spec, podLabels)
}

// checkManagerPod checks the manager's Pod template: spread over nodes,
// ready on /readyz, electing a leader, and stopping within its grace.
func checkManagerPod(t *testing.T, spec corev1.PodSpec, podLabels labels.Set) {
	t.Helper()
	spread := false
	for _, c := range spec.TopologySpreadConstraints {
		if s, err := labels.Set(c.LabelSelector.MatchLabels).AsValidatedSelector(); c.TopologyKey == "kubernetes.io/hostname" && err == nil && s.Matches(podLabels) {
			spread = true
		}
	}
	if !spread {
		t.Error("the manager's Pods are not spread over nodes (topologySpreadConstraints on kubernetes.io/hostname)")
	}
	if spec.Affinity == nil || spec.Affinity.PodAntiAffinity == nil {
		t.Error("the manager's Pods have no anti-affinity")
	}

	var args []string
	var readiness string
	found := false
	for _, c := range spec.Containers {
		if c.Name != "manager" {
			continue
		}
		found, args = true, c.Args
		if c.ReadinessProbe != nil && c.ReadinessProbe.HTTPGet != nil {
			readiness = c.ReadinessProbe.HTTPGet.Path
		}
	}
	if !found {
		t.Fatal("no manager container")
	}
	if readiness != "/readyz" {
		t.Errorf("readiness probe path = %q, want /readyz", readiness)
	}
	if !hasArg(args, "--leader-elect") {
		t.Error("the manager runs without --leader-elect")
	}
	shutdown := 20 * time.Second // the flag's default
	for _, a := range args {
		if v, ok := strings.CutPrefix(a, "--graceful-shutdown-timeout="); ok {
			var err error
			if shutdown, err = time.ParseDuration(v); err != nil {
				t.Fatalf("%s: %v", a, err)
			}
		}
	}
	grace := 30 * time.Second // Kubernetes' default
	if spec.TerminationGracePeriodSeconds != nil {
		grace = time.Duration(*spec.TerminationGracePeriodSeconds) * time.Second
	}
	// The Lease is released once the runnables stopped: that must come before
	// the kubelet's SIGKILL, with a few seconds to spare for the release itself.
	if shutdown+5*time.Second > grace {
		t.Errorf("graceful shutdown %s + 5s does not fit the termination grace %s: the kubelet kills the manager before it releases the Lease",
			shutdown, grace)
	}
}

func hasArg(args []string, want string) bool {
	for _, a := range args {
		if a == want || a == want+"=true" {
			return true
		}
	}
	return false
}

// splitYAML returns the documents of a multi-document YAML stream.
func splitYAML(t *testing.T, stream string) [][]byte {
	t.Helper()
	var docs [][]byte
	r := utilyaml.NewYAMLReader(bufio.NewReader(strings.NewReader(stream)))
	for {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			return docs
		}
		if err != nil {
			t.Fatal(err)
		}
		docs = append(docs, doc)
	}
}
