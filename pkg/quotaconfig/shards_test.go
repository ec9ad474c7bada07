package quotaconfig_test

import (
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
	"testing"

	"github.com/appquota/appquota/internal/layout"

	qc "github.com/appquota/appquota/pkg/quotaconfig"
)

// shardedDoc is resolveDoc with n extra apps, each with one override.
func shardedDoc(n int) *qc.Document {
	d := resolveDoc()
	for i := range n {
		d.Apps[fmt.Sprintf("app-%05d", i)] = qc.App{Profile: "default", Source: fmt.Sprintf("tenants/app-%d", i),
			Overrides: []qc.Override{{Group: "messages-send-users", Limits: []qc.Limit{lim("Requests", "Second", "App", int64(100+i))}}}}
	}
	return d
}

// configMaps stores a split document as the controller would: index under
// "limits", shard i under "limits-shard-<i>".
func configMaps(t *testing.T, d *qc.Document, n int) map[string]map[string][]byte {
	t.Helper()
	name := func(i int) string { return fmt.Sprintf("limits-shard-%d", i) }
	index, shards, err := layout.Split(d, n, name)
	if err != nil {
		t.Fatal(err)
	}
	cms := map[string]map[string][]byte{"limits": {qc.DataKey: index, qc.HashKey: []byte(qc.Hash(index))}}
	for i, gz := range shards {
		cms[name(i)] = map[string][]byte{layout.ShardKey(i, n): gz}
	}
	return cms
}

// reader serves configMaps: keys ending in .gz as binaryData, others as data.
func reader(cms map[string]map[string][]byte) qc.ConfigMapReader {
	return func(name string) (map[string]string, map[string][]byte, error) {
		cm, ok := cms[name]
		if !ok {
			return nil, nil, fmt.Errorf("configmaps %q not found", name)
		}
		data, binary := map[string]string{}, map[string][]byte{}
		for k, v := range cm {
			if strings.HasSuffix(k, ".gz") {
				binary[k] = v
			} else {
				data[k] = string(v)
			}
		}
		return data, binary, nil
	}
}

func TestSplitAndLoadConfigMapsRoundTrip(t *testing.T) {
	want := shardedDoc(500)
	for _, n := range []int{1, 2, 8, qc.MaxShards} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			cms := configMaps(t, want, n)
			got, err := qc.LoadConfigMaps("limits", reader(cms))
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, want) {
				t.Fatal("assembled document differs from the one split")
			}
			cfg, err := qc.Compile(got)
			if err != nil {
				t.Fatal(err)
			}
			if r := cfg.Resolve("app-00042", "POST", "/app-id/x/messages/users"); r.Override == nil || r.Limits[0].Max != 142 {
				t.Errorf("resolve through shards: %+v", r)
			}
			var index qc.Document
			if err := json.Unmarshal(cms["limits"][qc.DataKey], &index); err != nil {
				t.Fatal(err)
			}
			total := 0
			for _, s := range index.Shards {
				total += s.Apps
			}
			if len(index.Shards) != n || total != len(want.Apps) || len(index.Apps) != 0 {
				t.Errorf("index: %d shards, %d apps in them, %d inline", len(index.Shards), total, len(index.Apps))
			}
		})
	}
}

func TestShardOfIsStableWhenDoubling(t *testing.T) {
	for i := range 2000 {
		id := fmt.Sprint(1_000_000_000 + i*7919)
		for n := 1; n < qc.MaxShards; n *= 2 {
			if a, b := qc.ShardOf(id, n), qc.ShardOf(id, 2*n); b != a && b != a+n {
				t.Fatalf("app %s: shard %d of %d became %d of %d", id, a, n, b, 2*n)
			}
		}
	}
}

func TestAssembleRefusesInconsistentShards(t *testing.T) {
	d := shardedDoc(50)
	other := shardedDoc(50)
	other.Apps["app-00001"] = qc.App{Profile: "enterprise"}
	cases := []struct {
		name   string
		mutate func(cms, newer map[string]map[string][]byte)
		err    string
	}{
		{"a shard newer than the index", func(cms, newer map[string]map[string][]byte) {
			changed := fmt.Sprintf("limits-shard-%d", qc.ShardOf("app-00001", 4))
			for k, v := range newer[changed] {
				cms[changed][k] = v
			}
		}, "not the index's"},
		{"a missing shard ConfigMap", func(cms, _ map[string]map[string][]byte) { delete(cms, "limits-shard-3") }, `configmaps "limits-shard-3" not found`},
		{"a missing key", func(cms, _ map[string]map[string][]byte) { cms["limits-shard-0"] = map[string][]byte{} }, `no binaryData key "limits-0-of-4.json.gz"`},
		{"shards swapped", func(cms, _ map[string]map[string][]byte) {
			cms["limits-shard-0"], cms["limits-shard-1"] = cms["limits-shard-1"], cms["limits-shard-0"]
		}, "no binaryData key"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cms := configMaps(t, d, 4)
			tc.mutate(cms, configMaps(t, other, 4))
			_, err := qc.LoadConfigMaps("limits", reader(cms))
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Fatalf("got %v, want an error containing %q", err, tc.err)
			}
		})
	}
}

func TestIndexValidation(t *testing.T) {
	cms := configMaps(t, shardedDoc(3), 2)
	var index qc.Document
	if err := json.Unmarshal(cms["limits"][qc.DataKey], &index); err != nil {
		t.Fatal(err)
	}
	if _, err := qc.Compile(&index); err == nil || !strings.Contains(err.Error(), "sharded index") {
		t.Errorf("compiling an index alone: %v", err)
	}
	bad := index
	bad.Shards = append([]qc.ShardRef(nil), index.Shards...)
	bad.Shards[1].Key = bad.Shards[0].Key
	bad.Shards[0].Hash = "sha256:nothex"
	bad.Shards[0].ConfigMap = ""
	bad.Apps = map[string]qc.App{"x": {Profile: "default"}}
	bad.RemovedApps = []string{"b", "a", "a", "x", ""}
	err := bad.Validate()
	for _, want := range []string{
		`shards[1].key: "limits-0-of-2.json.gz" duplicates shards[0]`,
		`shards[0].hash: "sha256:nothex" is not sha256:<64 lowercase hex digits>`,
		"shards[0].configMap: must be a ConfigMap name",
		`removedApps[1]: "a" is not after "b": the list is sorted and has no duplicates`,
		`removedApps[2]: "a" is not after "a"`,
		`removedApps[3]: "x" is also in apps: an app is either changed or removed`,
		"removedApps[4]: an app ID must not be empty",
	} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("want %q in %v", want, err)
		}
	}
	plain := shardedDoc(1)
	plain.RemovedApps = []string{"app-00000"}
	if err := plain.Validate(); err == nil || !strings.Contains(err.Error(), "removedApps: must be empty in a document without shards (1 entries)") {
		t.Errorf("removedApps without shards: %v", err)
	}
}

// TestAssembleAppliesIndexChanges: an index carrying the changes since its
// shards were written (apps changed or added, apps removed) assembles to the
// document with those changes, wherever the apps' shards are.
func TestAssembleAppliesIndexChanges(t *testing.T) {
	base := shardedDoc(200)
	cms := configMaps(t, base, 4)
	var index qc.Document
	if err := json.Unmarshal(cms["limits"][qc.DataKey], &index); err != nil {
		t.Fatal(err)
	}
	want := shardedDoc(200)
	changed := qc.App{Profile: "default", Source: "tenants/changed", Overrides: []qc.Override{{Group: "messages-send-users", Limits: []qc.Limit{lim("Requests", "Second", "App", 7)}}}}
	index.Apps = map[string]qc.App{"app-00010": changed, "new-app": {Profile: "default", Source: "tenants/new"}}
	index.RemovedApps = []string{"app-00020", "app-00199"}
	want.Apps["app-00010"], want.Apps["new-app"] = changed, index.Apps["new-app"]
	delete(want.Apps, "app-00020")
	delete(want.Apps, "app-00199")
	data, err := json.Marshal(&index)
	if err != nil {
		t.Fatal(err)
	}
	cms["limits"] = map[string][]byte{qc.DataKey: data, qc.HashKey: []byte(qc.Hash(data))}
	got, err := qc.LoadConfigMaps("limits", reader(cms))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("assembled %d apps, want %d; app-00010 %+v", len(got.Apps), len(want.Apps), got.Apps["app-00010"])
	}
	// An app the index changes must still name a profile the index has.
	index.Apps["new-app"] = qc.App{Profile: "nowhere"}
	if _, err := qc.Assemble(&index, func(ref qc.ShardRef) ([]byte, error) {
		return qc.ShardBytes(ref.Key, nil, map[string][]byte{ref.Key: cms[ref.ConfigMap][ref.Key]})
	}); err == nil || !strings.Contains(err.Error(), `apps["new-app"].profile: "nowhere" does not exist`) {
		t.Errorf("index app with an unknown profile: %v", err)
	}
}

// The worked example in docs/config-format.md, for implementers in other languages.
func TestShardOfDocumentedExample(t *testing.T) {
	if got := qc.ShardOf("1122334455", 8); got != 7 {
		t.Errorf("ShardOf(1122334455, 8) = %d, docs say 7", got)
	}
	if got := qc.ShardOf("1122334455", 64); got != 23 {
		t.Errorf("ShardOf(1122334455, 64) = %d, docs say 23", got)
	}
}
