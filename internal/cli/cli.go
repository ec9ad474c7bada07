// Package cli implements kubectl-appquota. It lives apart from its main so tests
// can run it in-process.
package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/yaml"

	quotav1 "github.com/appquota/appquota/api/v1alpha1"
	"github.com/appquota/appquota/internal/render"
	"github.com/appquota/appquota/internal/validation"
	"github.com/appquota/appquota/pkg/quotaconfig"
)

const usage = `kubectl-appquota: inspect appquota's rate limits.

Usage:
  kubectl appquota explain APP_ID METHOD PATH [flags]   effective limits for one call, and why
  kubectl appquota list APP_ID [flags]                  effective limits of every group for an app
  kubectl appquota render -f DIR_OR_FILE [flags]        render the gateway document from manifests, offline
  kubectl appquota validate -f DIR_OR_FILE              check manifests as the webhook would, offline (for CI)

explain and list read the live ConfigMap (and its shards, when the configuration
is sharded) through the kubeconfig, or --config: a limits.json or limits.json.gz
file, a mounted ConfigMap directory, or a file of ConfigMap manifests (one, or
the index and its shards: kubectl get configmap -o yaml NAME NAME-shard-0 ...).
Flags of explain and list:
  --config PATH        read the configuration from PATH instead of the cluster
  --kubeconfig PATH    kubeconfig (default: $KUBECONFIG or ~/.kube/config)
  --context NAME       kubeconfig context
  -n, --namespace NS   namespace of the ConfigMap (default appquota-system)
  --configmap NAME     name of the ConfigMap, or of the index when sharded (default appquota-limits)
  -o, --output FORMAT  text (default) or json
validate checks each QuotaProfile and AppQuota in the files against the others
in the files (as if creating them), prints the webhook's errors and warnings, and
exits 1 if any object is invalid.
Flags of render:
  -f, --filename PATH      a manifest file or a directory of them (QuotaProfiles, AppQuotas; other kinds are skipped)
  --default-profile NAME   profile of apps without an AppQuota (default "default", as the manager's flag)
  --now RFC3339            evaluate expiresAt at this instant (default: now)
`

// Run runs the CLI and returns the exit code.
func Run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(stdout, usage)
		return 0
	}
	var err error
	switch args[0] {
	case "explain":
		err = explain(ctx, args[1:], stdout)
	case "list":
		err = list(ctx, args[1:], stdout)
	case "render":
		err = renderCmd(args[1:], stdout, stderr)
	case "validate":
		err = validateCmd(args[1:], stdout)
	default:
		err = fmt.Errorf("unknown command %q; want explain, list, render or validate", args[0])
	}
	if err != nil {
		fmt.Fprintln(stderr, "error:", err)
		return 1
	}
	return 0
}

// source says where the configuration comes from.
type source struct {
	config, kubeconfig, context, namespace, configMap, output string
}

func (s *source) flags(fs *flag.FlagSet) {
	fs.StringVar(&s.config, "config", "", "")
	fs.StringVar(&s.kubeconfig, "kubeconfig", "", "")
	fs.StringVar(&s.context, "context", "", "")
	fs.StringVar(&s.namespace, "namespace", "appquota-system", "")
	fs.StringVar(&s.namespace, "n", "appquota-system", "")
	fs.StringVar(&s.configMap, "configmap", "appquota-limits", "")
	fs.StringVar(&s.output, "output", "text", "")
	fs.StringVar(&s.output, "o", "text", "")
}

// parse parses flags wherever they appear among the positional arguments, as
// kubectl does.
func parse(fs *flag.FlagSet, args []string, positional int) ([]string, error) {
	fs.SetOutput(io.Discard)
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		args = fs.Args()
		if len(args) == 0 {
			break
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
	if len(pos) != positional {
		return nil, fmt.Errorf("want %d arguments, got %d (%s); see --help", positional, len(pos), strings.Join(pos, " "))
	}
	return pos, nil
}

func (s *source) load(ctx context.Context) (*quotaconfig.Config, string, error) {
	if s.output != "text" && s.output != "json" {
		return nil, "", fmt.Errorf("--output %q: want text or json", s.output)
	}
	if s.config != "" {
		cfg, err := loadFile(s.config, s.configMap)
		if err != nil {
			return nil, "", err
		}
		return cfg, s.config, nil
	}
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	rules.ExplicitPath = s.kubeconfig
	rest, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{CurrentContext: s.context}).ClientConfig()
	if err != nil {
		return nil, "", fmt.Errorf("kubeconfig: %w", err)
	}
	cs, err := kubernetes.NewForConfig(rest)
	if err != nil {
		return nil, "", err
	}
	where := fmt.Sprintf("ConfigMap %s/%s", s.namespace, s.configMap)
	reads := 0
	doc, err := quotaconfig.LoadConfigMaps(s.configMap, func(name string) (map[string]string, map[string][]byte, error) {
		reads++
		cm, err := cs.CoreV1().ConfigMaps(s.namespace).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return nil, nil, fmt.Errorf("read ConfigMap %s/%s: %w", s.namespace, name, err)
		}
		return cm.Data, cm.BinaryData, nil
	})
	if err == nil {
		var cfg *quotaconfig.Config
		if cfg, err = quotaconfig.Compile(doc); err == nil {
			return cfg, where, nil
		}
	}
	if reads == 1 {
		// Reading or parsing the index: the error names it already.
		return nil, "", err
	}
	return nil, "", fmt.Errorf("%s: %w", where, err)
}

// loadFile loads the configuration from a mounted ConfigMap directory (sharded
// or not), ConfigMap manifests, or a bare limits.json or limits.json.gz.
func loadFile(path, configMap string) (*quotaconfig.Config, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if fi.IsDir() {
		// As a gateway's Watcher would read it.
		return quotaconfig.LoadDir(path)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	if strings.HasSuffix(path, ".gz") {
		if data, err = quotaconfig.Decompress(data); err != nil {
			return nil, err
		}
	} else if cms, err := readManifests(data); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	} else if cms != nil {
		cfg, err := loadManifests(cms, configMap)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		return cfg, nil
	}
	doc, err := quotaconfig.Parse(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	// A bare index: its shard files are expected next to it, as when mounted.
	if doc, err = quotaconfig.Assemble(doc, func(ref quotaconfig.ShardRef) ([]byte, error) {
		return os.ReadFile(filepath.Join(filepath.Dir(path), ref.Key))
	}); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	cfg, err := quotaconfig.Compile(doc)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return cfg, nil
}

// configMapManifest is the part of a ConfigMap, or of a List of them, that
// loadFile reads.
type configMapManifest struct {
	Kind     string `json:"kind"`
	Metadata struct {
		Name      string `json:"name"`
		Namespace string `json:"namespace"`
	} `json:"metadata"`
	Data       map[string]string   `json:"data"`
	BinaryData map[string][]byte   `json:"binaryData"`
	Items      []configMapManifest `json:"items"`
}

// readManifests returns the ConfigMaps in data by name: one or several
// manifests separated by "---", or a List (kubectl get -o yaml|json), in YAML
// or JSON. It returns nil when data is not a manifest (a bare document).
func readManifests(data []byte) (map[string][]*configMapManifest, error) {
	var objects []configMapManifest
	if trimmed := bytes.TrimSpace(data); len(trimmed) > 0 && trimmed[0] == '{' {
		// JSON: one object, possibly a whole document, which YAML would parse slowly.
		var m configMapManifest
		if err := json.Unmarshal(data, &m); err != nil || m.Kind == "" {
			return nil, nil
		}
		objects = append(objects, m)
	} else {
		for i, doc := range splitYAML(string(data)) {
			var m configMapManifest
			if err := yaml.Unmarshal([]byte(doc), &m); err != nil {
				return nil, fmt.Errorf("document %d: %w", i+1, err)
			}
			if m.Kind != "" {
				objects = append(objects, m)
			}
		}
		if len(objects) == 0 {
			return nil, nil
		}
	}
	cms := map[string][]*configMapManifest{}
	var add func(m *configMapManifest, list string)
	add = func(m *configMapManifest, list string) {
		switch {
		case strings.HasSuffix(m.Kind, "List"):
			for i := range m.Items {
				add(&m.Items[i], m.Kind)
			}
		// The API server's typed lists omit their items' kind.
		case m.Kind == "ConfigMap" || m.Kind == "" && list == "ConfigMapList":
			cms[m.Metadata.Name] = append(cms[m.Metadata.Name], m)
		}
	}
	for i := range objects {
		add(&objects[i], "")
	}
	return cms, nil
}

// loadManifests loads the configuration whose index is ConfigMap configMap, or
// the only ConfigMap holding a document when none has that name.
func loadManifests(cms map[string][]*configMapManifest, configMap string) (*quotaconfig.Config, error) {
	index := configMap
	if _, ok := cms[index]; !ok {
		var holders []string
		for name, ms := range cms {
			_, plain := ms[0].Data[quotaconfig.DataKey]
			_, gz := ms[0].BinaryData[quotaconfig.GzipDataKey]
			if plain || gz {
				holders = append(holders, name)
			}
		}
		sort.Strings(holders)
		switch len(holders) {
		case 0:
			return nil, fmt.Errorf("no ConfigMap %s, nor any ConfigMap with data %q or binaryData %q", configMap, quotaconfig.DataKey, quotaconfig.GzipDataKey)
		case 1:
			index = holders[0]
		default:
			return nil, fmt.Errorf("no ConfigMap %s, and several hold a document (%s): choose with --configmap", configMap, strings.Join(holders, ", "))
		}
	}
	doc, err := quotaconfig.LoadConfigMaps(index, func(name string) (map[string]string, map[string][]byte, error) {
		switch ms := cms[name]; len(ms) {
		case 0:
			return nil, nil, fmt.Errorf("ConfigMap %s is not in the file", name)
		case 1:
			return ms[0].Data, ms[0].BinaryData, nil
		default:
			return nil, nil, fmt.Errorf("ConfigMap %s is in the file %d times (from several namespaces?): keep one", name, len(ms))
		}
	})
	if err != nil {
		return nil, err
	}
	return quotaconfig.Compile(doc)
}

// Explanation is explain's answer; -o json prints it.
type Explanation struct {
	AppID string `json:"appID"`
	// AppQuota is "namespace/name", empty when the app has none.
	AppQuota string `json:"appQuota,omitempty"`
	Profile  string `json:"profile"`
	// DefaultProfile is true when the app has no AppQuota and uses the default.
	DefaultProfile bool             `json:"defaultProfile"`
	Method         string           `json:"method"`
	Path           string           `json:"path"`
	Group          string           `json:"group,omitempty"`
	Fallback       bool             `json:"fallback"`
	Route          string           `json:"route,omitempty"`
	RestOnly       bool             `json:"restOnly"`
	Blocked        bool             `json:"blocked"`
	Limits         []EffectiveLimit `json:"limits"`
	MaxTargets     int32            `json:"maxTargets,omitempty"`
	// MaxTargetsFrom is "profile" or "override".
	MaxTargetsFrom string             `json:"maxTargetsFrom,omitempty"`
	User           string             `json:"user,omitempty"`
	UserParam      string             `json:"userParam,omitempty"`
	Override       *OverrideExplained `json:"override,omitempty"`
	Source         string             `json:"source"`
}

// EffectiveLimit is one limit and where it comes from: "override", "profile"
// (the group's) or "fallback".
type EffectiveLimit struct {
	quotaconfig.Limit
	From string `json:"from"`
}

// OverrideExplained is the override that applied.
type OverrideExplained struct {
	Reason    string     `json:"reason,omitempty"`
	ExpiresAt *time.Time `json:"expiresAt,omitempty"`
}

func explainCall(cfg *quotaconfig.Config, where, appID, method, path string) (*Explanation, error) {
	doc := cfg.Document()
	method = strings.ToUpper(method)
	r := cfg.Resolve(appID, method, path)
	e := &Explanation{AppID: appID, Method: method, Path: path, Source: where, Profile: r.Profile}
	app, ok := doc.Apps[appID]
	if ok {
		e.AppQuota = app.Source
	} else {
		e.DefaultProfile = true
	}
	if r.Profile == "" {
		name := doc.DefaultProfile
		if ok {
			name = app.Profile
		}
		return nil, fmt.Errorf("app %s uses profile %q, which is not in the configuration (%s)", appID, name, where)
	}
	e.Group, e.Fallback, e.Route, e.RestOnly, e.Blocked = r.Group, r.Fallback, r.Route, r.RestOnly, r.Blocked
	e.User, e.UserParam = r.User, r.UserParam
	for _, l := range r.Limits {
		from := "profile"
		if r.Fallback {
			from = "fallback"
		}
		if r.Override != nil && hasLimit(r.Override.Limits, l) {
			from = "override"
		}
		e.Limits = append(e.Limits, EffectiveLimit{Limit: l, From: from})
	}
	if r.MaxTargets > 0 {
		e.MaxTargets, e.MaxTargetsFrom = r.MaxTargets, "profile"
		if r.Override != nil && r.Override.MaxTargets > 0 {
			e.MaxTargetsFrom = "override"
		}
	}
	if r.Override != nil {
		e.Override = &OverrideExplained{Reason: r.Override.Reason, ExpiresAt: r.Override.ExpiresAt}
	}
	return e, nil
}

func hasLimit(ls []quotaconfig.Limit, l quotaconfig.Limit) bool {
	for _, o := range ls {
		if o == l {
			return true
		}
	}
	return false
}

func explain(ctx context.Context, args []string, stdout io.Writer) error {
	var s source
	fs := flag.NewFlagSet("explain", flag.ContinueOnError)
	s.flags(fs)
	pos, err := parse(fs, args, 3)
	if err != nil {
		return fmt.Errorf("explain APP_ID METHOD PATH: %w", err)
	}
	cfg, where, err := s.load(ctx)
	if err != nil {
		return err
	}
	e, err := explainCall(cfg, where, pos[0], pos[1], pos[2])
	if err != nil {
		return err
	}
	if s.output == "json" {
		return writeJSON(stdout, e)
	}
	printExplanation(stdout, e)
	return nil
}

func describeLimit(l quotaconfig.Limit) string {
	per := "per app"
	if l.Scope == quotaconfig.ScopeUser {
		per = "per user"
	}
	return fmt.Sprintf("%d %s/%s %s", l.Max, l.Unit, l.Window, per)
}

func printExplanation(w io.Writer, e *Explanation) {
	who := "no AppQuota: the default profile applies"
	if !e.DefaultProfile {
		who = "AppQuota " + e.AppQuota
	}
	fmt.Fprintf(w, "App %s (%s), profile %q\n", e.AppID, who, e.Profile)
	fmt.Fprintf(w, "%s %s\n", e.Method, e.Path)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	if e.Fallback {
		fmt.Fprintf(tw, "  group:\t(none: no group claims this route; the profile's fallback applies, counted per method and path)\n")
	} else {
		budget := "REST and client-SDK calls share the budget"
		if e.RestOnly {
			budget = "REST calls only"
		}
		fmt.Fprintf(tw, "  group:\t%s (route %s; %s)\n", e.Group, e.Route, budget)
	}
	for i, l := range e.Limits {
		label := "limits:"
		if i > 0 {
			label = ""
		}
		fmt.Fprintf(tw, "  %s\t%s\t(%s)\n", label, describeLimit(l.Limit), l.From)
	}
	if e.MaxTargets > 0 {
		fmt.Fprintf(tw, "  per call:\tat most %d targets\t(%s)\n", e.MaxTargets, e.MaxTargetsFrom)
	}
	if e.User != "" {
		fmt.Fprintf(tw, "  user:\t%s (path parameter {%s})\n", e.User, e.UserParam)
	}
	if e.Override != nil {
		until := "no expiry"
		if e.Override.ExpiresAt != nil {
			until = "until " + e.Override.ExpiresAt.UTC().Format(time.RFC3339)
		}
		reason := e.Override.Reason
		if reason == "" {
			reason = "no reason given"
		}
		fmt.Fprintf(tw, "  override:\t%s, %s\n", reason, until)
	}
	if e.Blocked {
		fmt.Fprintf(tw, "  blocked:\tyes: a limit of 0 refuses every call\n")
	}
	_ = tw.Flush()
}

func list(ctx context.Context, args []string, stdout io.Writer) error {
	var s source
	fs := flag.NewFlagSet("list", flag.ContinueOnError)
	s.flags(fs)
	pos, err := parse(fs, args, 1)
	if err != nil {
		return fmt.Errorf("list APP_ID: %w", err)
	}
	cfg, where, err := s.load(ctx)
	if err != nil {
		return err
	}
	appID := pos[0]
	doc := cfg.Document()
	name := doc.DefaultProfile
	if app, ok := doc.Apps[appID]; ok {
		name = app.Profile
	}
	profile, ok := doc.Profiles[name]
	if !ok {
		return fmt.Errorf("app %s uses profile %q, which is not in the configuration (%s)", appID, name, where)
	}
	var all []*Explanation
	for _, g := range profile.Groups {
		// A route template is itself a path that matches only its own route:
		// literal segments never contain '{', so "{param}" takes the parameter branch.
		r := g.Routes[0]
		e, err := explainCall(cfg, where, appID, r.Method, strings.ReplaceAll(r.Path, "{app_id}", appID))
		if err != nil {
			return err
		}
		all = append(all, e)
	}
	if s.output == "json" {
		return writeJSON(stdout, all)
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "GROUP\tLIMITS\tPER CALL\tFROM\n")
	for _, e := range all {
		var ls []string
		from := "profile"
		for _, l := range e.Limits {
			ls = append(ls, describeLimit(l.Limit))
			if l.From == "override" {
				from = "override"
			}
		}
		per := "-"
		if e.MaxTargets > 0 {
			per = fmt.Sprintf("%d targets", e.MaxTargets)
			if e.MaxTargetsFrom == "override" {
				from = "override"
			}
		}
		if from == "override" && e.Override != nil && e.Override.ExpiresAt != nil {
			from += " until " + e.Override.ExpiresAt.UTC().Format(time.RFC3339)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", e.Group, strings.Join(ls, ", "), per, from)
	}
	return tw.Flush()
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func renderCmd(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("render", flag.ContinueOnError)
	var file, defaultProfile, nowFlag string
	fs.StringVar(&file, "f", "", "")
	fs.StringVar(&file, "filename", "", "")
	fs.StringVar(&defaultProfile, "default-profile", quotav1.DefaultProfileName, "")
	fs.StringVar(&nowFlag, "now", "", "")
	if _, err := parse(fs, args, 0); err != nil {
		return fmt.Errorf("render -f DIR_OR_FILE: %w", err)
	}
	if file == "" {
		return errors.New("render: -f DIR_OR_FILE is required")
	}
	now := time.Now()
	if nowFlag != "" {
		var err error
		if now, err = time.Parse(time.RFC3339, nowFlag); err != nil {
			return fmt.Errorf("--now: %w", err)
		}
	}
	profiles, apps, err := ReadManifests(file)
	if err != nil {
		return err
	}
	res, err := render.Render(render.Input{DefaultProfile: defaultProfile, Profiles: profiles, AppQuotas: render.Pointers(apps), Now: now})
	if err != nil {
		return err
	}
	var invalid []string
	for name, o := range res.Profiles {
		if !o.Valid {
			invalid = append(invalid, fmt.Sprintf("QuotaProfile %s: %s", name, o.Message))
		}
	}
	for key, o := range res.Apps {
		if !o.Valid {
			invalid = append(invalid, fmt.Sprintf("AppQuota %s: %s", key, o.Message))
		}
	}
	if len(invalid) > 0 {
		// The controller would keep these objects' last good entries; offline there
		// is nothing to keep, so the output would differ: refuse.
		return fmt.Errorf("invalid objects:\n  %s", strings.Join(invalid, "\n  "))
	}
	fmt.Fprintln(stderr, "hash:", res.Hash)
	_, err = stdout.Write(res.Data)
	return err
}

// ReadManifests reads QuotaProfiles and AppQuotas from a YAML/JSON file or the
// files of a directory (not recursive; kustomization files and other kinds are
// skipped), applying the API server's defaults.
func ReadManifests(path string) ([]quotav1.QuotaProfile, []quotav1.AppQuota, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, nil, err
	}
	files := []string{path}
	if fi.IsDir() {
		files = nil
		entries, err := os.ReadDir(path)
		if err != nil {
			return nil, nil, err
		}
		for _, e := range entries {
			ext := filepath.Ext(e.Name())
			if e.IsDir() || (ext != ".yaml" && ext != ".yml" && ext != ".json") || strings.HasPrefix(e.Name(), "kustomization.") {
				continue
			}
			files = append(files, filepath.Join(path, e.Name()))
		}
	}
	var profiles []quotav1.QuotaProfile
	var apps []quotav1.AppQuota
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			return nil, nil, err
		}
		for i, doc := range splitYAML(string(data)) {
			var meta metav1.TypeMeta
			if err := yaml.Unmarshal([]byte(doc), &meta); err != nil {
				return nil, nil, fmt.Errorf("%s, document %d: %w", f, i+1, err)
			}
			if meta.APIVersion != quotav1.GroupVersion.String() {
				continue
			}
			switch meta.Kind {
			case "QuotaProfile":
				var p quotav1.QuotaProfile
				if err := yaml.UnmarshalStrict([]byte(doc), &p); err != nil {
					return nil, nil, fmt.Errorf("%s, document %d: %w", f, i+1, err)
				}
				profiles = append(profiles, p)
			case "AppQuota":
				var a quotav1.AppQuota
				if err := yaml.UnmarshalStrict([]byte(doc), &a); err != nil {
					return nil, nil, fmt.Errorf("%s, document %d: %w", f, i+1, err)
				}
				apps = append(apps, a)
			}
		}
	}
	return profiles, apps, nil
}

// splitYAML splits a multi-document YAML stream at "---" lines.
func splitYAML(s string) []string {
	var docs []string
	var cur strings.Builder
	for _, line := range strings.SplitAfter(s, "\n") {
		if strings.TrimRight(line, " \r\n") == "---" {
			docs = append(docs, cur.String())
			cur.Reset()
			continue
		}
		cur.WriteString(line)
	}
	docs = append(docs, cur.String())
	return docs
}

func validateCmd(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("validate", flag.ContinueOnError)
	var file string
	fs.StringVar(&file, "f", "", "")
	fs.StringVar(&file, "filename", "", "")
	if _, err := parse(fs, args, 0); err != nil {
		return fmt.Errorf("validate -f DIR_OR_FILE: %w", err)
	}
	if file == "" {
		return errors.New("validate: -f DIR_OR_FILE is required")
	}
	profiles, apps, err := ReadManifests(file)
	if err != nil {
		return err
	}
	byName := map[string]*quotav1.QuotaProfile{}
	invalid := 0
	for i := range profiles {
		p := &profiles[i]
		byName[p.Name] = p
		if errs := validation.QuotaProfile(p); len(errs) > 0 {
			invalid++
			fmt.Fprintf(stdout, "QuotaProfile %s is invalid: %s\n", p.Name, errs.ToAggregate())
		}
	}
	owner := map[string]string{}
	now := time.Now()
	for i := range apps {
		a := &apps[i]
		key := a.Namespace + "/" + a.Name
		name := a.Spec.Profile
		if name == "" {
			name = quotav1.DefaultProfileName
		}
		ref := validation.Reference{Profile: byName[name], AppIDOwner: owner[a.Spec.AppID]}
		if ref.AppIDOwner == "" {
			owner[a.Spec.AppID] = key
		}
		warnings, errs := validation.AppQuotaAdmission(nil, a, ref, now)
		for _, w := range warnings {
			fmt.Fprintf(stdout, "Warning: AppQuota %s: %s\n", key, w)
		}
		if len(errs) > 0 {
			invalid++
			fmt.Fprintf(stdout, "AppQuota %s is invalid: %s\n", key, errs.ToAggregate())
		}
	}
	if invalid > 0 {
		return fmt.Errorf("%d of %d objects are invalid", invalid, len(profiles)+len(apps))
	}
	fmt.Fprintf(stdout, "%d QuotaProfiles and %d AppQuotas are valid\n", len(profiles), len(apps))
	return nil
}
