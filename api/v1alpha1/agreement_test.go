package v1alpha1_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	quotav1 "github.com/appquota/appquota/api/v1alpha1"
	"github.com/appquota/appquota/internal/validation"
)

// TestCELAgreesWithGo sends the validators' fuzz corpus
// (internal/validation/testdata/fuzz, plus the samples) to the API server as
// dry-run creates, and checks each object with Go's validation of one object
// on its own (internal/validation's QuotaProfile and AppQuotaSpec, which apply
// pkg/quotaconfig's rules). Where both state a rule they must agree: what one
// refuses for such a rule the other refuses, and what one accepts the other
// does not refuse for such a rule.
//
// Rules only one side states (celOnly, goOnly) are left out: bounds, name
// syntax and "an override changes something" are the API's hygiene, which
// gateways do not need (perCall.maxTargets 0 among them: the document reads 0
// as "no cap"); two routes of one shape and a parameter named twice need the
// whole list, which Go checks and CEL does not.
func TestCELAgreesWithGo(t *testing.T) {
	ctx := context.Background()
	var tally struct{ accepted, refused, celOnly, goOnly, unchecked int }
	check := func(t *testing.T, obj client.Object, goErrs field.ErrorList) {
		t.Helper()
		celOK, celShared, skipped, dupRoutes := apiServerVerdict(ctx, t, obj)
		var goShared field.ErrorList
		for _, e := range goErrs {
			if !goOnly(e) || dupRoutes[e.Field] && strings.Contains(e.Detail, "cannot be told apart") {
				goShared = append(goShared, e)
			}
		}
		switch {
		case celOK && len(goShared) > 0:
			t.Errorf("the API server accepts it; Go refuses it: %v", goShared.ToAggregate())
		case len(celShared) > 0 && len(goShared) == 0:
			t.Errorf("the API server refuses it: %s; Go accepts it", causes(celShared))
		case !celOK && len(celShared) == 0 && len(goShared) > 0 && !skipped:
			t.Errorf("the API server checked every rule and refuses it only for its own: Go refuses it for a rule the CRD lacks: %v", goShared.ToAggregate())
		case !celOK && len(celShared) == 0 && len(goShared) > 0:
			tally.unchecked++
			t.Logf("not compared: schema errors kept the API server from its CEL rules; Go: %v", goShared.ToAggregate())
		case celOK && len(goErrs) == 0:
			tally.accepted++
		case len(celShared) > 0 && len(goShared) > 0:
			tally.refused++
		case !celOK:
			tally.celOnly++
		default:
			tally.goOnly++
		}
	}

	for _, c := range corpus(t, "FuzzQuotaProfile") {
		t.Run("QuotaProfile/"+c.name, func(t *testing.T) {
			var spec quotav1.QuotaProfileSpec
			if err := json.Unmarshal(c.data, &spec); err != nil {
				t.Skipf("not a spec: %v", err)
			}
			p := &quotav1.QuotaProfile{ObjectMeta: metav1.ObjectMeta{Name: "agreement"}, Spec: spec}
			check(t, p.DeepCopy(), validation.QuotaProfile(p))
		})
	}
	for _, c := range corpus(t, "FuzzAppQuota") {
		t.Run("AppQuota/"+c.name, func(t *testing.T) {
			var spec quotav1.AppQuotaSpec
			if err := json.Unmarshal(c.data, &spec); err != nil {
				t.Skipf("not a spec: %v", err)
			}
			a := &quotav1.AppQuota{ObjectMeta: metav1.ObjectMeta{Name: "agreement", Namespace: "default"}, Spec: spec}
			check(t, a.DeepCopy(), validation.AppQuotaSpec(&a.Spec))
		})
	}
	t.Logf("both accept %d, both refuse %d, only the API server's rules refuse %d, only Go's %d, not compared %d",
		tally.accepted, tally.refused, tally.celOnly, tally.goOnly, tally.unchecked)
	if tally.accepted == 0 || tally.refused == 0 {
		t.Error("the corpus should hold objects both sides accept and objects both refuse")
	}
}

// apiServerVerdict creates obj with dry run and returns whether the API
// server accepts it, the causes of a refusal that Go shares (not celOnly),
// whether it skipped CEL rules for schema errors, and the route paths it
// found listed twice in one group (one rule on both sides: the CRD's keyed
// list, and Go's rule about shapes).
func apiServerVerdict(ctx context.Context, t *testing.T, obj client.Object) (ok bool, shared []metav1.StatusCause, skipped bool, dupRoutes map[string]bool) {
	t.Helper()
	dupRoutes = map[string]bool{}
	err := k8s.Create(ctx, obj, client.DryRunAll)
	if err == nil {
		return true, nil, false, dupRoutes
	}
	var st apierrors.APIStatus
	if !apierrors.IsInvalid(err) || !errors.As(err, &st) || st.Status().Details == nil {
		t.Fatalf("dry-run create: %v", err)
	}
	for _, c := range st.Status().Details.Causes {
		switch {
		case strings.Contains(c.Message, "some validation rules were not checked"):
			skipped = true
		case !celOnly(c):
			shared = append(shared, c)
		}
		if c.Type == metav1.CauseType(field.ErrorTypeDuplicate) && strings.Contains(c.Field, ".routes[") {
			dupRoutes[c.Field+".path"] = true
		}
	}
	return false, shared, skipped, dupRoutes
}

// celOnly reports whether an API server error is for a rule only the CRD
// states.
func celOnly(c metav1.StatusCause) bool {
	switch {
	case c.Type == metav1.CauseType(field.ErrorTypeTooLong), c.Type == metav1.CauseType(field.ErrorTypeTooMany),
		strings.Contains(c.Message, "should be less than or equal to"):
		return true // bounds
	case c.Field == "spec.appID":
		return !strings.Contains(c.Message, `Invalid value: "":`) // Go: not empty
	case c.Field == "spec.profile",
		strings.Contains(c.Message, "must be a DNS label"),
		strings.Contains(c.Message, "an override must set limits, perCall or both"):
		return true
	case strings.HasSuffix(c.Field, "perCall.maxTargets"):
		return strings.Contains(c.Message, "Invalid value: 0:") // Go: not negative
	}
	return false
}

// goOnly reports whether a Go error is for a rule only Go states (but see
// dupRoutes).
func goOnly(e *field.Error) bool {
	return strings.Contains(e.Detail, "cannot be told apart by a gateway") || strings.Contains(e.Detail, "appears twice")
}

func causes(cs []metav1.StatusCause) string {
	var b strings.Builder
	for i, c := range cs {
		if i > 0 {
			b.WriteString("; ")
		}
		fmt.Fprintf(&b, "%s: %s", c.Field, c.Message)
	}
	return b.String()
}

type corpusEntry struct {
	name string
	data []byte
}

// corpus returns a fuzz target's seed corpus (go's "go test fuzz v1" files,
// one []byte each) and, as JSON, the samples of its kind.
func corpus(t *testing.T, target string) []corpusEntry {
	t.Helper()
	files, err := filepath.Glob(filepath.Join("../../internal/validation/testdata/fuzz", target, "*"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no corpus for %s: %v", target, err)
	}
	var out []corpusEntry
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		v, err := corpusValue(data)
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		out = append(out, corpusEntry{filepath.Base(f), v})
	}
	kind := map[string]string{"FuzzQuotaProfile": "QuotaProfile", "FuzzAppQuota": "AppQuota"}[target]
	samples, _ := globSamples()
	for _, f := range samples {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var obj struct {
			Kind string          `json:"kind"`
			Spec json.RawMessage `json:"spec"`
		}
		if err := yaml.Unmarshal(data, &obj); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		if obj.Kind == kind {
			out = append(out, corpusEntry{"sample-" + filepath.Base(f), obj.Spec})
		}
	}
	return out
}

// corpusValue decodes a corpus file of one []byte value, as go test does.
func corpusValue(data []byte) ([]byte, error) {
	header, line, _ := strings.Cut(string(data), "\n")
	if header != "go test fuzz v1" {
		return nil, fmt.Errorf("not a fuzz corpus file: %q", header)
	}
	expr, err := parser.ParseExpr(strings.TrimSpace(line))
	if err != nil {
		return nil, err
	}
	call, ok := expr.(*ast.CallExpr)
	if !ok || len(call.Args) != 1 {
		return nil, errors.New("want []byte(...)")
	}
	lit, ok := call.Args[0].(*ast.BasicLit)
	if !ok || lit.Kind != token.STRING {
		return nil, errors.New("want a string literal")
	}
	s, err := strconv.Unquote(lit.Value)
	return []byte(s), err
}

// globSamples lists the manifests of config/samples and the catalog they
// include (config/catalog).
func globSamples() ([]string, error) {
	samples, err := filepath.Glob("../../config/samples/quota_v1alpha1_*.yaml")
	if err != nil {
		return nil, err
	}
	return append([]string{"../../config/catalog/default.yaml"}, samples...), nil
}
