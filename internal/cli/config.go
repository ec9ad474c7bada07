package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/cli-runtime/pkg/genericclioptions"

	"github.com/appquota/appquota/internal/manifest"
	"github.com/appquota/appquota/pkg/quotaconfig"
)

// source says where explain, list and check read the configuration: a file
// (--config), or the ConfigMap in the cluster of kubectl's connection flags.
type source struct {
	kube              *genericclioptions.ConfigFlags
	config, configMap string
}

func (s *source) flags(cmd *cobra.Command) {
	cmd.Flags().StringVar(&s.config, "config", "",
		"read the configuration from this file or directory instead of the cluster: limits.json, limits.json.gz, "+
			"a mounted ConfigMap directory, or ConfigMap manifests (kubectl get configmap -o yaml NAME NAME-shard-0 ...)")
	cmd.Flags().StringVar(&s.configMap, "configmap", "appquota-limits", "name of the ConfigMap, or of the index when sharded")
	_ = cmd.MarkFlagFilename("config", "json", "gz", "yaml", "yml")
}

// namespace is the ConfigMap's: -n when given, else the manager's namespace,
// not the context's: the ConfigMap lives with the manager wherever the user
// works.
func (s *source) namespace() string {
	if s.kube.Namespace != nil && *s.kube.Namespace != "" {
		return *s.kube.Namespace
	}
	return defaultNamespace
}

func (s *source) load(ctx context.Context, warnings io.Writer) (*quotaconfig.Config, string, error) {
	if s.config != "" {
		cfg, err := loadFile(s.config, s.configMap)
		if err != nil {
			return nil, "", err
		}
		return cfg, s.config, nil
	}
	cs, err := kubeClient(s.kube, warnings)
	if err != nil {
		return nil, "", err
	}
	ns := s.namespace()
	where := fmt.Sprintf("ConfigMap %s/%s", ns, s.configMap)
	reads := 0
	doc, err := quotaconfig.LoadConfigMaps(s.configMap, func(name string) (map[string]string, map[string][]byte, error) {
		reads++
		cm, err := cs.CoreV1().ConfigMaps(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return nil, nil, fmt.Errorf("read ConfigMap %s/%s: %w", ns, name, err)
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
