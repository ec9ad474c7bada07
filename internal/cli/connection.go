package cli

import (
	"fmt"
	"io"

	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	quotav1 "github.com/appquota/appquota/api/v1alpha1"
)

// The resources raise and diff read and write.
var (
	appQuotaResource     = quotav1.GroupVersion.WithResource("appquotas")
	quotaProfileResource = quotav1.GroupVersion.WithResource("quotaprofiles")
)

// defaultNamespace is where the manager and its ConfigMap live (its
// --namespace), what explain, list and check read without -n.
const defaultNamespace = "appquota-system"

// restConfig is the REST configuration kubectl would use with the same
// flags. The server's warnings (the webhook's "lowers ...", "blocks ...") go
// to warnings, as kubectl prints them.
func restConfig(kube *genericclioptions.ConfigFlags, warnings io.Writer) (*rest.Config, error) {
	cfg, err := kube.ToRESTConfig()
	if err != nil {
		return nil, fmt.Errorf("kubeconfig: %w", err)
	}
	cfg = rest.CopyConfig(cfg)
	cfg.WarningHandlerWithContext = nil
	cfg.WarningHandler = rest.NewWarningWriter(warnings, rest.WarningWriterOptions{Deduplicate: true})
	return cfg, nil
}

// kubeClient is a typed client for the ConfigMaps.
func kubeClient(kube *genericclioptions.ConfigFlags, warnings io.Writer) (kubernetes.Interface, error) {
	cfg, err := restConfig(kube, warnings)
	if err != nil {
		return nil, err
	}
	return kubernetes.NewForConfig(cfg)
}

// dynamicClient reads and applies AppQuotas and QuotaProfiles as
// unstructured objects: server-side apply sends only the fields given, which
// a typed object (with its zero values) cannot say.
func dynamicClient(kube *genericclioptions.ConfigFlags, warnings io.Writer) (dynamic.Interface, error) {
	cfg, err := restConfig(kube, warnings)
	if err != nil {
		return nil, err
	}
	return dynamic.NewForConfig(cfg)
}

// contextNamespace is the namespace of -n, else of the kubeconfig context,
// else "default": where kubectl would put an object.
func contextNamespace(kube *genericclioptions.ConfigFlags) (string, error) {
	ns, _, err := kube.ToRawKubeConfigLoader().Namespace()
	if err != nil {
		return "", fmt.Errorf("kubeconfig: %w", err)
	}
	return ns, nil
}

// resourceName is "appquotas.quota.appquota.io", for messages.
func resourceName(r schema.GroupVersionResource) string {
	return r.GroupResource().String()
}
