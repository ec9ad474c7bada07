package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/appquota/appquota/internal/manifest"
	"github.com/appquota/appquota/pkg/quotaconfig"
)

// The values of --output (-o).
const (
	outputText = "text"
	outputJSON = "json"
)

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
	fs.StringVar(&s.output, "output", outputText, "")
	fs.StringVar(&s.output, "o", outputText, "")
}

func (s *source) load(ctx context.Context) (*quotaconfig.Config, string, error) {
	if s.output != outputText && s.output != outputJSON {
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
	} else if cms, err := readConfigMaps(data); err != nil {
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

// readConfigMaps returns the ConfigMaps in data by name: one or several
// manifests, or a List (kubectl get -o yaml|json), in YAML or JSON. It returns
// nil when data is not a manifest (a bare document).
func readConfigMaps(data []byte) (map[string][]*corev1.ConfigMap, error) {
	cms := map[string][]*corev1.ConfigMap{}
	objects := 0
	err := manifest.Each(bytes.NewReader(data), "", func(o manifest.Object) error {
		if o.Kind == "" {
			return nil
		}
		objects++
		if o.Kind != "ConfigMap" {
			return nil
		}
		var cm corev1.ConfigMap
		if err := json.Unmarshal(o.Raw, &cm); err != nil {
			return fmt.Errorf("%s: %w", o.Where, err)
		}
		cms[cm.Name] = append(cms[cm.Name], &cm)
		return nil
	})
	if objects == 0 && (err == nil || utilyaml.IsJSONBuffer(data)) {
		// Not a manifest: a bare document, whose own parser says what is wrong.
		return nil, nil
	}
	return cms, err
}

// loadManifests loads the configuration whose index is ConfigMap configMap, or
// the only ConfigMap holding a document when none has that name.
func loadManifests(cms map[string][]*corev1.ConfigMap, configMap string) (*quotaconfig.Config, error) {
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
