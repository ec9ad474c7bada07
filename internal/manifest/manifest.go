// Package manifest reads Kubernetes manifests as kubectl -f does: files or
// directories of multi-document YAML or JSON, and the Lists that `kubectl get
// -o yaml|json` writes. Read and ReadFiles return appquota's objects with the
// defaults the API server would give them; Each walks every object of a stream
// for readers of other kinds (the CLI's ConfigMaps).
package manifest

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	sigsjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"

	quotav1 "github.com/appquota/appquota/api/v1alpha1"
)

// Objects are the QuotaProfiles and AppQuotas of some manifests, in the order
// they appear, defaulted as the API server defaults them.
type Objects struct {
	QuotaProfiles []quotav1.QuotaProfile
	AppQuotas     []quotav1.AppQuota
}

// Object is one object of a manifest stream. The items of a List are objects
// of their own.
type Object struct {
	metav1.TypeMeta
	// Raw is the object as JSON.
	Raw []byte
	// Where names the object in errors: "FILE, document N", and ", item M"
	// for an item of a List.
	Where string
}

// Read reads the QuotaProfiles and AppQuotas in r (see Each), skipping
// objects of other kinds.
func Read(r io.Reader) (*Objects, error) {
	var objs Objects
	if err := Each(r, "", objs.add); err != nil {
		return nil, err
	}
	return &objs, nil
}

// ReadFiles reads the QuotaProfiles and AppQuotas in the files named, and in
// the manifest files of the directories named (Files), skipping objects of
// other kinds.
func ReadFiles(paths ...string) (*Objects, error) {
	return ReadPaths(false, paths...)
}

// ReadPaths is ReadFiles that walks directories recursively when recursive is
// set, as kubectl -R does.
func ReadPaths(recursive bool, paths ...string) (*Objects, error) {
	files, err := Files(recursive, paths...)
	if err != nil {
		return nil, err
	}
	var objs Objects
	for _, name := range files {
		if err := eachInFile(name, objs.add); err != nil {
			return nil, err
		}
	}
	return &objs, nil
}

func eachInFile(name string, fn func(Object) error) error {
	f, err := os.Open(name)
	if err != nil {
		return err
	}
	defer f.Close()
	return Each(f, name, fn)
}

// Files returns the files paths name: each file named, and the manifest files
// (.yaml, .yml, .json) of each directory named, in lexical order, as kubectl
// -f reads a directory. Kustomization files are not manifests and are left
// out. Subdirectories are walked only when recursive is set.
func Files(recursive bool, paths ...string) ([]string, error) {
	var files []string
	for _, path := range paths {
		fi, err := os.Stat(path)
		if err != nil {
			return nil, err
		}
		if !fi.IsDir() {
			files = append(files, path)
			continue
		}
		err = filepath.WalkDir(path, func(name string, d fs.DirEntry, err error) error {
			switch {
			case err != nil:
				return err
			case d.IsDir():
				if name != path && !recursive {
					return filepath.SkipDir
				}
				return nil
			case isManifestFile(d.Name()):
				files = append(files, name)
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	return files, nil
}

func isManifestFile(name string) bool {
	switch filepath.Ext(name) {
	case ".yaml", ".yml", ".json":
		return !strings.HasPrefix(name, "kustomization.")
	}
	return false
}

// Each calls fn with each object in r, in order: the documents of a YAML
// stream ("---" between them), or of a stream of JSON objects, with each List
// (kind List, or a kind's own list such as AppQuotaList) replaced by its
// items. Empty documents are skipped. source names r in errors ("" for none).
// Items of a kind's own list that omit their kind (the API server's lists of
// built-in kinds do) get the list's.
func Each(r io.Reader, source string, fn func(Object) error) error {
	where := func(doc int) string {
		if source == "" {
			return fmt.Sprintf("document %d", doc)
		}
		return fmt.Sprintf("%s, document %d", source, doc)
	}
	stream, _, isJSON := utilyaml.GuessJSONStream(r, 4096)
	next := nextYAML(bufio.NewReader(stream))
	if isJSON {
		next = nextJSON(utilyaml.NewYAMLOrJSONDecoder(stream, 4096))
	}
	for doc := 1; ; doc++ {
		raw, err := next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("%s: %w", where(doc), err)
		}
		if len(raw) == 0 || bytes.Equal(raw, []byte("null")) {
			continue
		}
		if err := each(raw, where(doc), metav1.TypeMeta{}, fn); err != nil {
			return err
		}
	}
}

// nextYAML returns the documents of a YAML stream as JSON. Keys repeated in a
// mapping are an error, as kubectl's strict decoding makes them.
func nextYAML(r *bufio.Reader) func() ([]byte, error) {
	docs := utilyaml.NewYAMLReader(r)
	return func() ([]byte, error) {
		doc, err := docs.Read()
		if err != nil {
			return nil, err
		}
		return yaml.YAMLToJSONStrict(doc)
	}
}

// nextJSON returns the objects of a JSON stream.
func nextJSON(d *utilyaml.YAMLOrJSONDecoder) func() ([]byte, error) {
	return func() ([]byte, error) {
		var raw json.RawMessage
		err := d.Decode(&raw)
		return raw, err
	}
}

// each calls fn with the object in raw, or with each item when it is a List.
// list is the TypeMeta of the List raw is an item of.
func each(raw []byte, where string, list metav1.TypeMeta, fn func(Object) error) error {
	var head struct {
		metav1.TypeMeta
		Items []json.RawMessage `json:"items"`
	}
	if err := json.Unmarshal(raw, &head); err != nil {
		// A scalar or an array where an object should be.
		return fmt.Errorf("%s: not an object: %w", where, err)
	}
	if head.Kind == "" && list.Kind != "List" && strings.HasSuffix(list.Kind, "List") {
		head.APIVersion, head.Kind = list.APIVersion, strings.TrimSuffix(list.Kind, "List")
	}
	if !strings.HasSuffix(head.Kind, "List") {
		return fn(Object{TypeMeta: head.TypeMeta, Raw: raw, Where: where})
	}
	for i, item := range head.Items {
		if err := each(item, fmt.Sprintf("%s, item %d", where, i+1), head.TypeMeta, fn); err != nil {
			return err
		}
	}
	return nil
}

// add keeps o when it is a QuotaProfile or an AppQuota.
func (objs *Objects) add(o Object) error {
	if o.APIVersion != quotav1.GroupVersion.String() {
		return nil
	}
	switch o.Kind {
	case "QuotaProfile":
		var p quotav1.QuotaProfile
		if err := decode(o, &p); err != nil {
			return err
		}
		objs.QuotaProfiles = append(objs.QuotaProfiles, p)
	case "AppQuota":
		var a quotav1.AppQuota
		if err := decode(o, &a); err != nil {
			return err
		}
		objs.AppQuotas = append(objs.AppQuotas, a)
	}
	return nil
}

// decode applies the API's defaults to o and decodes it into into, refusing
// fields into does not have.
func decode(o Object, into any) error {
	var u map[string]any
	if err := json.Unmarshal(o.Raw, &u); err != nil {
		return fmt.Errorf("%s: %w", o.Where, err)
	}
	applyDefaults(o.Kind, u)
	raw, err := json.Marshal(u)
	if err != nil {
		return fmt.Errorf("%s: %w", o.Where, err)
	}
	// As the API server decodes: field names match exactly, and a field the
	// type does not have is an error (kubectl's --validate=strict, its default).
	strict, err := sigsjson.UnmarshalStrict(raw, into)
	if err != nil {
		return fmt.Errorf("%s: %s: %w", o.Where, o.Kind, err)
	}
	if err := errors.Join(strict...); err != nil {
		return fmt.Errorf("%s: %s: %w", o.Where, o.Kind, err)
	}
	return nil
}

// ProfileNames returns the names of the QuotaProfiles, sorted.
func (objs *Objects) ProfileNames() []string {
	names := make([]string, 0, len(objs.QuotaProfiles))
	for _, p := range objs.QuotaProfiles {
		names = append(names, p.Name)
	}
	slices.Sort(names)
	return slices.Compact(names)
}

// QuotaProfile returns the QuotaProfile named name, the last one when there
// are several (as applying them in order would leave it), or nil.
func (objs *Objects) QuotaProfile(name string) *quotav1.QuotaProfile {
	for i := len(objs.QuotaProfiles) - 1; i >= 0; i-- {
		if objs.QuotaProfiles[i].Name == name {
			return &objs.QuotaProfiles[i]
		}
	}
	return nil
}
