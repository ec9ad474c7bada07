package manifests_test

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"os/exec"
	"path"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime/schema"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"
)

// TestRatelimitOverlay: `kubectl apply -k config/ratelimit` installs the
// operator and its rate-limit engine, wired as docs/engine-operations.md says:
// the API server accepts every object (cert-manager's kinds aside: this
// cluster has no cert-manager) with no Pod Security warning in the
// restricted namespace, and the engine has the settings the design depends
// on, the same on both sides of the xDS connection.
func TestRatelimitOverlay(t *testing.T) {
	o := loadOverlay(t)
	t.Run("the API server accepts it", o.accepted)
	t.Run("engine settings", o.engineSettings)
	t.Run("max message size equal on both sides", o.maxMessageSize)
	t.Run("xDS wiring and TLS", o.xdsWiring)
	t.Run("Redis and the Services", o.redisAndServices)
	t.Run("restricted Pod Security", o.podSecurity)
}

// overlay is the output of `kubectl kustomize config/ratelimit`.
type overlay struct {
	objs, certManager, rest []object // all; cert-manager's kinds; the others
	manager, engine, redis  *appsv1.Deployment
	mgr, rl                 *corev1.Container // the manager's and ratelimit's
	env                     map[string]string // ratelimit's literal environment
}

func loadOverlay(t *testing.T) *overlay {
	t.Helper()
	o := &overlay{objs: parseObjects(t, kubectl(t, "kustomize", "config/ratelimit"))}
	for _, obj := range o.objs {
		if strings.HasPrefix(obj.APIVersion, "cert-manager.io/") {
			o.certManager = append(o.certManager, obj)
		} else {
			o.rest = append(o.rest, obj)
		}
	}
	o.manager = deployment(t, o.objs, "appquota-controller-manager")
	o.engine = deployment(t, o.objs, "appquota-ratelimit")
	o.redis = deployment(t, o.objs, "appquota-redis")
	o.mgr = container(t, o.manager, "manager")
	o.rl = container(t, o.engine, "ratelimit")
	o.env = literalEnv(t, o.rl)
	return o
}

func (o *overlay) accepted(t *testing.T) {
	certManager, rest := o.certManager, o.rest
	// The namespace must exist, with its Pod Security label, for the
	// dry run of what goes in it to be admitted and checked.
	ns := find(t, rest, "Namespace", "")
	if got := ns.Labels["pod-security.kubernetes.io/enforce"]; got != "restricted" {
		t.Errorf("namespace %s enforces Pod Security %q, want restricted", ns.Name, got)
	}
	kubectlIn(t, ns.raw, "apply", "--server-side", "--field-manager=test-manifests", "-f", "-")

	var stream bytes.Buffer
	for _, obj := range rest {
		stream.WriteString("---\n")
		stream.Write(obj.raw)
	}
	// --force-conflicts: the CRDs are already there, installed by the
	// test harness under another field manager.
	out, stderr := kubectlIn(t, stream.Bytes(), "apply", "--server-side", "--dry-run=server", "--force-conflicts",
		"--field-manager=test-manifests", "-f", "-")
	for _, obj := range rest {
		// "deployment.apps/appquota-ratelimit serverside-applied (server dry run)"
		resource := strings.ToLower(obj.Kind)
		if gv, err := schema.ParseGroupVersion(obj.APIVersion); err == nil && gv.Group != "" {
			resource += "." + gv.Group
		}
		if want := resource + "/" + obj.Name + " serverside-applied (server dry run)"; !strings.Contains(out, want) {
			t.Errorf("kubectl apply output lacks %q:\n%s", want, out)
		}
	}
	// The PodSecurity admission plugin checks a Deployment's pod template
	// against the namespace's level and warns; the Pods would be refused.
	if strings.Contains(stderr, "PodSecurity") || strings.Contains(stderr, "Warning") {
		t.Errorf("the API server warned:\n%s", stderr)
	}
	if len(certManager) == 0 {
		t.Error("the overlay has no cert-manager objects: where does the xDS server's certificate come from?")
	}
	for _, obj := range certManager {
		if obj.Kind != "Certificate" && obj.Kind != "Issuer" {
			t.Errorf("cert-manager %s %s is not checked here", obj.Kind, obj.Name)
		}
	}
}

func (o *overlay) engineSettings(t *testing.T) {
	engine, rl, env := o.engine, o.rl, o.env
	for name, want := range map[string]string{
		// A cached over-limit answer would outlive a raise or an unblock
		// for the rest of its window (up to a day).
		"LOCAL_CACHE_SIZE_IN_BYTES":               "0",
		"CONFIG_TYPE":                             "GRPC_XDS_SOTW",
		"CONFIG_GRPC_XDS_SERVER_USE_TLS":          "true",
		"BACKEND_TYPE":                            "redis",
		"REDIS_SOCKET_TYPE":                       "tcp",
		"USE_STATSD":                              "false",
		"STOP_CACHE_KEY_INCREMENT_WHEN_OVERLIMIT": "true",
	} {
		if got, ok := env[name]; !ok || got != want {
			t.Errorf("ratelimit's %s = %q (set: %t), want %q", name, got, ok, want)
		}
	}
	if env["LOG_LEVEL"] == "" {
		t.Error("ratelimit's LOG_LEVEL is not set")
	}
	if e := envVar(rl, "CONFIG_GRPC_XDS_NODE_ID"); e == nil || e.ValueFrom == nil || e.ValueFrom.FieldRef == nil || e.ValueFrom.FieldRef.FieldPath != "metadata.name" {
		t.Errorf("ratelimit's CONFIG_GRPC_XDS_NODE_ID is %+v, want the pod's name (fieldRef metadata.name)", e)
	}
	if *engine.Spec.Replicas < 2 {
		t.Errorf("ratelimit has %d replicas, want at least 2", *engine.Spec.Replicas)
	}
	if len(engine.Spec.Template.Spec.TopologySpreadConstraints) == 0 && engine.Spec.Template.Spec.Affinity == nil {
		t.Error("ratelimit's replicas are not spread over nodes (no topology spread, no anti-affinity)")
	}
	// Failover to a new leader waits at most the backoff's maximum.
	for name, most := range map[string]time.Duration{"XDS_CLIENT_BACKOFF_INITIAL_INTERVAL": 2 * time.Second, "XDS_CLIENT_BACKOFF_MAX_INTERVAL": 15 * time.Second} {
		if d, err := time.ParseDuration(env[name]); err != nil || d > most {
			t.Errorf("ratelimit's %s = %q, want a duration of at most %s", name, env[name], most)
		}
	}
	// The image is the commit the tests run (hack/versions.env), tagged
	// as envoyproxy/ratelimit tags its images: the commit's first 8 hex digits.
	if want := "docker.io/envoyproxy/ratelimit:" + pinnedRatelimitCommit(t)[:8]; rl.Image != want {
		t.Errorf("ratelimit's image is %q, want %q (hack/versions.env's RATELIMIT_VERSION)", rl.Image, want)
	}
	for _, p := range []*corev1.Probe{rl.ReadinessProbe, rl.LivenessProbe} {
		if p == nil || p.HTTPGet == nil || p.HTTPGet.Path != "/healthcheck" || portNumber(t, rl, p.HTTPGet.Port.String()) != mustAtoi(t, env["PORT"]) {
			t.Errorf("ratelimit's readiness and liveness probes must GET /healthcheck on PORT (%s): %+v", env["PORT"], p)
		}
	}
}

func (o *overlay) maxMessageSize(t *testing.T) {
	mgr, env := o.mgr, o.env
	managerMax := mustAtoi(t, flagValue(t, mgr, "--xds-max-message-bytes"))
	engineMax := mustAtoi(t, env["XDS_CLIENT_MAX_MSG_SIZE_IN_BYTES"])
	if managerMax != engineMax {
		t.Errorf("the manager sends up to %d bytes and ratelimit accepts %d: set both to the same value", managerMax, engineMax)
	}
	// 100,000 apps with 3 overridden limits each: 8.3 MB (docs/enforcement.md).
	if engineMax < 9_000_000 {
		t.Errorf("ratelimit accepts %d bytes: less than the 8.3 MB of 100,000 apps with 3 overridden limits each", engineMax)
	}
}

func (o *overlay) xdsWiring(t *testing.T) {
	objs, certManager, manager, engine, mgr, rl, env := o.objs, o.certManager, o.manager, o.engine, o.mgr, o.rl, o.env
	// ratelimit dials the xds Service, which sends it to the manager's
	// xds port, where the manager listens.
	host, port := splitHostPort(t, env["CONFIG_GRPC_XDS_SERVER_URL"])
	svc := serviceByDNS(t, objs, host)
	if !selects(svc, manager) {
		t.Errorf("Service %s does not select the manager's pods", svc.Name)
	}
	target := portNumber(t, mgr, targetPort(t, svc, port))
	_, listen := splitHostPort(t, flagValue(t, mgr, "--xds-bind-address"))
	if target != listen {
		t.Errorf("Service %s sends port %d to the manager's %d, where it does not listen (--xds-bind-address %d)", svc.Name, port, target, listen)
	}

	// The manager serves the certificate the webhook uses, which names
	// the Service ratelimit verifies.
	certDir := flagValue(t, mgr, "--xds-cert-dir")
	mgrSecret := secretMountedAt(t, manager, mgr, certDir)
	cert := find(t, certManager, "Certificate", "appquota-serving-cert")
	if got, _, _ := unstructured.NestedString(cert.Object, "spec", "secretName"); got != mgrSecret {
		t.Errorf("the manager's --xds-cert-dir %s holds Secret %s, not the Certificate's %s", certDir, mgrSecret, got)
	}
	dnsNames, _, _ := unstructured.NestedStringSlice(cert.Object, "spec", "dnsNames")
	if san := env["CONFIG_GRPC_XDS_SERVER_TLS_SAN"]; !slices.Contains(dnsNames, san) || !slices.Contains(dnsNames, host) {
		t.Errorf("the serving certificate names %v: it lacks ratelimit's CONFIG_GRPC_XDS_SERVER_TLS_SAN %q or the host it dials, %q", dnsNames, san, host)
	}

	// ratelimit trusts that Secret's ca.crt, mounted without the key.
	caFile := env["CONFIG_GRPC_XDS_SERVER_TLS_CACERT"]
	vol := volumeMountedAt(t, engine, rl, path.Dir(caFile))
	if vol.Secret == nil || vol.Secret.SecretName != mgrSecret {
		t.Fatalf("ratelimit's CONFIG_GRPC_XDS_SERVER_TLS_CACERT %s is not from Secret %s: %+v", caFile, mgrSecret, vol)
	}
	if items := vol.Secret.Items; len(items) != 1 || items[0].Key != "ca.crt" || items[0].Path != path.Base(caFile) {
		t.Errorf("ratelimit mounts %+v of Secret %s; want its ca.crt alone, as %s", items, mgrSecret, path.Base(caFile))
	}
	// And that ca.crt is a CA's, which outlives the serving
	// certificate's renewals (ratelimit reads it once).
	issuerName, _, _ := unstructured.NestedString(cert.Object, "spec", "issuerRef", "name")
	issuer := find(t, certManager, "Issuer", issuerName)
	caSecret, _, _ := unstructured.NestedString(issuer.Object, "spec", "ca", "secretName")
	var ca *object
	for i, o := range certManager {
		if s, _, _ := unstructured.NestedString(o.Object, "spec", "secretName"); o.Kind == "Certificate" && s == caSecret {
			ca = &certManager[i]
		}
	}
	if ca == nil {
		t.Fatalf("the serving certificate's Issuer %s is not a CA Issuer backed by a Certificate of the overlay (spec.ca.secretName %q)", issuerName, caSecret)
	}
	if isCA, _, _ := unstructured.NestedBool(ca.Object, "spec", "isCA"); !isCA {
		t.Errorf("Certificate %s, behind Issuer %s, is not a CA", ca.Name, issuerName)
	}
	caIssuer, _, _ := unstructured.NestedString(ca.Object, "spec", "issuerRef", "name")
	find(t, certManager, "Issuer", caIssuer)
}

func (o *overlay) redisAndServices(t *testing.T) {
	objs, engine, redis, rl, env := o.objs, o.engine, o.redis, o.rl, o.env
	host, port := splitHostPort(t, env["REDIS_URL"])
	svc := serviceByDNS(t, objs, host)
	if !selects(svc, redis) {
		t.Errorf("Service %s does not select Redis's pods", svc.Name)
	}
	rc := container(t, redis, "redis")
	portNumber(t, rc, targetPort(t, svc, port))
	if *redis.Spec.Replicas != 1 {
		t.Errorf("Redis has %d replicas; the overlay's is a single instance", *redis.Spec.Replicas)
	}
	args := strings.Join(append(slices.Clone(rc.Command), rc.Args...), " ")
	if !strings.Contains(args, `--save `) || !slices.Contains(rc.Args, "") || !strings.Contains(args, "--appendonly no") {
		t.Errorf("Redis persists its data (want --save \"\" and --appendonly no): %s", args)
	}
	if vol := volumeMountedAt(t, redis, rc, "/data"); vol.EmptyDir == nil {
		t.Errorf("Redis's /data is not an emptyDir: %+v", vol)
	}

	// Gateways call ratelimit's gRPC port, 8081; its HTTP port answers
	// /healthcheck.
	gw := service(t, objs, "appquota-ratelimit")
	if !selects(gw, engine) {
		t.Errorf("Service %s does not select ratelimit's pods", gw.Name)
	}
	if n := portNumber(t, rl, targetPort(t, gw, 8081)); n != mustAtoi(t, env["GRPC_PORT"]) {
		t.Errorf("Service %s sends 8081 to ratelimit's %d, not its GRPC_PORT %s", gw.Name, n, env["GRPC_PORT"])
	}
	if n := portNumber(t, rl, targetPort(t, gw, 8080)); n != mustAtoi(t, env["PORT"]) {
		t.Errorf("Service %s sends 8080 to ratelimit's %d, not its PORT %s", gw.Name, n, env["PORT"])
	}
}

func (o *overlay) podSecurity(t *testing.T) {
	manager, engine, redis := o.manager, o.engine, o.redis
	for _, d := range []*appsv1.Deployment{manager, engine, redis} {
		pod := d.Spec.Template.Spec
		sc := pod.SecurityContext
		if sc == nil || sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot {
			t.Errorf("%s: the pod does not set runAsNonRoot", d.Name)
		}
		if sc == nil || sc.SeccompProfile == nil || sc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
			t.Errorf("%s: the pod's seccomp profile is not RuntimeDefault", d.Name)
		}
		// An image's USER may be a name, which the kubelet cannot check
		// against runAsNonRoot: the engine's pods say which number.
		if d != manager && (sc == nil || sc.RunAsUser == nil || *sc.RunAsUser == 0) {
			t.Errorf("%s: the pod sets no non-zero runAsUser", d.Name)
		}
		for _, c := range pod.Containers {
			csc := c.SecurityContext
			if csc == nil || csc.AllowPrivilegeEscalation == nil || *csc.AllowPrivilegeEscalation {
				t.Errorf("%s/%s: allowPrivilegeEscalation is not false", d.Name, c.Name)
			}
			if csc == nil || csc.Capabilities == nil || !slices.Equal(csc.Capabilities.Drop, []corev1.Capability{"ALL"}) || len(csc.Capabilities.Add) > 0 {
				t.Errorf("%s/%s: capabilities are not drop [ALL]: %+v", d.Name, c.Name, csc)
			}
			if csc == nil || csc.ReadOnlyRootFilesystem == nil || !*csc.ReadOnlyRootFilesystem {
				t.Errorf("%s/%s: the root filesystem is not read-only", d.Name, c.Name)
			}
			if c.Resources.Requests.Cpu().IsZero() || c.Resources.Requests.Memory().IsZero() || c.Resources.Limits.Memory().IsZero() {
				t.Errorf("%s/%s: resources lack a CPU or memory request or a memory limit: %+v", d.Name, c.Name, c.Resources)
			}
		}
	}
}

// object is one document of a kustomize build.
type object struct {
	unstructured.Unstructured
	Kind, APIVersion, Name string
	Labels                 map[string]string
	raw                    []byte
}

func parseObjects(t *testing.T, stream string) []object {
	t.Helper()
	r := utilyaml.NewYAMLReader(bufio.NewReader(strings.NewReader(stream)))
	var objs []object
	for {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			return objs
		}
		if err != nil {
			t.Fatalf("read the kustomize output: %v", err)
		}
		if len(bytes.TrimSpace(doc)) == 0 {
			continue
		}
		var u unstructured.Unstructured
		if err := yaml.Unmarshal(doc, &u.Object); err != nil {
			t.Fatalf("parse a document of the kustomize output: %v\n%s", err, doc)
		}
		objs = append(objs, object{Unstructured: u, Kind: u.GetKind(), APIVersion: u.GetAPIVersion(), Name: u.GetName(), Labels: u.GetLabels(), raw: doc})
	}
}

// find returns the object of that kind and name; an empty name matches any.
func find(t *testing.T, objs []object, kind, name string) object {
	t.Helper()
	for _, o := range objs {
		if o.Kind == kind && (name == "" || o.Name == name) {
			return o
		}
	}
	t.Fatalf("the overlay has no %s %q", kind, name)
	return object{}
}

func deployment(t *testing.T, objs []object, name string) *appsv1.Deployment {
	t.Helper()
	var d appsv1.Deployment
	if err := yaml.Unmarshal(find(t, objs, "Deployment", name).raw, &d); err != nil {
		t.Fatalf("Deployment %s: %v", name, err)
	}
	return &d
}

func service(t *testing.T, objs []object, name string) *corev1.Service {
	t.Helper()
	var s corev1.Service
	if err := yaml.Unmarshal(find(t, objs, "Service", name).raw, &s); err != nil {
		t.Fatalf("Service %s: %v", name, err)
	}
	return &s
}

// serviceByDNS is the Service a host name in the cluster's DNS resolves to:
// name.namespace.svc, optionally followed by the cluster domain.
func serviceByDNS(t *testing.T, objs []object, host string) *corev1.Service {
	t.Helper()
	m := regexp.MustCompile(`^([a-z0-9-]+)\.([a-z0-9-]+)\.svc(\.cluster\.local)?$`).FindStringSubmatch(host)
	if m == nil {
		t.Fatalf("%q is not a Service's DNS name (name.namespace.svc)", host)
	}
	s := service(t, objs, m[1])
	if s.Namespace != m[2] {
		t.Fatalf("%q names namespace %s, but Service %s is in %s", host, m[2], s.Name, s.Namespace)
	}
	return s
}

// targetPort is the container port, a name or a number, that a Service's
// port sends to.
func targetPort(t *testing.T, s *corev1.Service, port int) string {
	t.Helper()
	for _, p := range s.Spec.Ports {
		if int(p.Port) == port {
			return p.TargetPort.String()
		}
	}
	t.Fatalf("Service %s has no port %d", s.Name, port)
	return ""
}

func selects(s *corev1.Service, d *appsv1.Deployment) bool {
	return len(s.Spec.Selector) > 0 && labels.SelectorFromSet(s.Spec.Selector).Matches(labels.Set(d.Spec.Template.Labels))
}

func container(t *testing.T, d *appsv1.Deployment, name string) *corev1.Container {
	t.Helper()
	for i, c := range d.Spec.Template.Spec.Containers {
		if c.Name == name {
			return &d.Spec.Template.Spec.Containers[i]
		}
	}
	t.Fatalf("Deployment %s has no container %s", d.Name, name)
	return nil
}

// portNumber resolves a port a Service or a probe names, by name or number,
// to one the container declares.
func portNumber(t *testing.T, c *corev1.Container, port string) int {
	t.Helper()
	for _, p := range c.Ports {
		if p.Name == port || strconv.Itoa(int(p.ContainerPort)) == port {
			return int(p.ContainerPort)
		}
	}
	t.Fatalf("container %s declares no port %q", c.Name, port)
	return 0
}

func envVar(c *corev1.Container, name string) *corev1.EnvVar {
	for i, e := range c.Env {
		if e.Name == name {
			return &c.Env[i]
		}
	}
	return nil
}

// literalEnv is a container's environment with literal values; a variable
// set twice is an error (the last would win, silently).
func literalEnv(t *testing.T, c *corev1.Container) map[string]string {
	t.Helper()
	env := map[string]string{}
	seen := map[string]bool{}
	for _, e := range c.Env {
		if seen[e.Name] {
			t.Errorf("container %s sets %s twice", c.Name, e.Name)
		}
		seen[e.Name] = true
		if e.ValueFrom == nil {
			env[e.Name] = e.Value
		}
	}
	return env
}

// flagValue is the value of a --name=value argument.
func flagValue(t *testing.T, c *corev1.Container, name string) string {
	t.Helper()
	var v string
	n := 0
	for _, a := range c.Args {
		if after, ok := strings.CutPrefix(a, name+"="); ok {
			v, n = after, n+1
		}
	}
	if n != 1 {
		t.Fatalf("container %s has %d %s=... arguments, want 1: %v", c.Name, n, name, c.Args)
	}
	return v
}

func volumeMountedAt(t *testing.T, d *appsv1.Deployment, c *corev1.Container, dir string) corev1.Volume {
	t.Helper()
	for _, m := range c.VolumeMounts {
		if path.Clean(m.MountPath) != path.Clean(dir) {
			continue
		}
		for _, v := range d.Spec.Template.Spec.Volumes {
			if v.Name == m.Name {
				return v
			}
		}
		t.Fatalf("%s/%s mounts volume %s, which the pod does not have", d.Name, c.Name, m.Name)
	}
	t.Fatalf("%s/%s mounts nothing at %s", d.Name, c.Name, dir)
	return corev1.Volume{}
}

func secretMountedAt(t *testing.T, d *appsv1.Deployment, c *corev1.Container, dir string) string {
	t.Helper()
	v := volumeMountedAt(t, d, c, dir)
	if v.Secret == nil {
		t.Fatalf("%s/%s: %s is not a Secret volume", d.Name, c.Name, dir)
	}
	return v.Secret.SecretName
}

func splitHostPort(t *testing.T, hostPort string) (string, int) {
	t.Helper()
	host, port, err := net.SplitHostPort(hostPort)
	if err != nil {
		t.Fatalf("%q: %v", hostPort, err)
	}
	return host, mustAtoi(t, port)
}

func mustAtoi(t *testing.T, s string) int {
	t.Helper()
	n, err := strconv.Atoi(s)
	if err != nil {
		t.Fatalf("%q is not a number: %v", s, err)
	}
	return n
}

// pinnedRatelimitCommit is the commit of hack/versions.env's
// RATELIMIT_VERSION, a pseudo-version (v1.4.1-0.20260122083618-3fb702589d36).
func pinnedRatelimitCommit(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile("../../hack/versions.env")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^RATELIMIT_VERSION=v[0-9.]+-(?:0\.)?[0-9]{14}-([0-9a-f]{12})$`).FindSubmatch(b)
	if m == nil {
		t.Fatal("hack/versions.env has no RATELIMIT_VERSION pseudo-version")
	}
	return string(m[1])
}

// kubectlIn runs kubectl with stdin and returns its stdout and stderr.
func kubectlIn(t *testing.T, stdin []byte, args ...string) (string, string) {
	t.Helper()
	cmd := exec.Command(cluster.Kubectl(), append([]string{"--kubeconfig", cluster.KubeconfigPath}, args...)...)
	cmd.Dir = "../.."
	cmd.Stdin = bytes.NewReader(stdin)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("kubectl %s: %v\n%s%s", strings.Join(args, " "), err, stdout.String(), stderr.String())
	}
	return stdout.String(), stderr.String()
}
