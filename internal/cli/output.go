package cli

import (
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/spf13/cobra"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/printers"

	"github.com/appquota/appquota/pkg/quotaconfig"
)

// The -o values every command has: text, the default, is the commands' own
// tables and sentences.
const (
	outputText = "text"
	outputJSON = "json"
)

// viewAPIVersion is the apiVersion of what explain, list and diff print with
// -o json|yaml|name|jsonpath|go-template. cli-runtime's printers need an
// apiVersion and a kind to tell objects apart (-o name prints
// "explanation.cli.appquota.io/GROUP"); no server serves this group: these
// are views the CLI computes.
const viewAPIVersion = "cli.appquota.io/v1alpha1"

// outputFlags is -o: "text" (the default) or one of cli-runtime's printers.
type outputFlags struct {
	print *genericclioptions.PrintFlags
}

func newOutputFlags(cmd *cobra.Command) *outputFlags {
	o := &outputFlags{print: genericclioptions.NewPrintFlags("").WithDefaultOutput(outputText)}
	o.print.AddFlags(cmd)
	// PrintFlags' own help lists only its formats.
	cmd.Flags().Lookup("output").Usage = "output format: " + strings.Join(o.formats(), ", ")
	_ = cmd.RegisterFlagCompletionFunc("output", func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
		return o.formats(), cobra.ShellCompDirectiveNoFileComp
	})
	return o
}

func (o *outputFlags) formats() []string {
	return append([]string{outputText}, o.print.AllowedFormats()...)
}

// text reports whether -o asks for the text output.
func (o *outputFlags) text() bool {
	f := *o.print.OutputFormat
	return f == outputText || f == ""
}

// printer is the printer of -o, when it is not text; the error names the
// flag and the formats allowed.
func (o *outputFlags) printer() (printers.ResourcePrinter, error) {
	p, err := o.print.ToPrinter()
	if genericclioptions.IsNoCompatiblePrinterError(err) {
		return nil, fmt.Errorf("--output %q: want one of %s", *o.print.OutputFormat, strings.Join(o.formats(), ", "))
	}
	return p, err
}

// validate checks -o before a command does any work.
func (o *outputFlags) validate() error {
	if o.text() {
		return nil
	}
	_, err := o.printer()
	return err
}

// print prints obj with the printer of -o (not text).
func (o *outputFlags) printObj(obj runtime.Object, w io.Writer) error {
	p, err := o.printer()
	if err != nil {
		return err
	}
	return p.PrintObj(obj, w)
}

// view makes v (a struct that marshals to a JSON object) an object the
// printers take: v's fields, with the apiVersion, kind and metadata.name
// given.
func view(kind, name string, v any) (*unstructured.Unstructured, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	u := &unstructured.Unstructured{}
	if err := json.Unmarshal(b, &u.Object); err != nil {
		return nil, err
	}
	u.SetAPIVersion(viewAPIVersion)
	u.SetKind(kind)
	u.SetName(name)
	return u, nil
}

// viewList is a List of items, as kubectl get prints several objects.
func viewList(items []unstructured.Unstructured) *unstructured.UnstructuredList {
	l := &unstructured.UnstructuredList{Items: slices.Clip(items)}
	l.SetAPIVersion("v1")
	l.SetKind("List")
	if l.Items == nil {
		l.Items = []unstructured.Unstructured{}
	}
	return l
}

// describeLimit says a limit in words: "100 Requests/Second per app".
func describeLimit(l quotaconfig.Limit) string {
	per := "per app"
	if l.Scope == quotaconfig.ScopeUser {
		per = "per user"
	}
	if l.Unlimited {
		return fmt.Sprintf("unlimited %s/%s %s", l.Unit, l.Window, per)
	}
	return fmt.Sprintf("%d %s/%s %s", l.Max, l.Unit, l.Window, per)
}
