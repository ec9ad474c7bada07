package quotaconfig_test

import (
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
	"testing"

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
	index, shards, err := qc.Split(d, n, name)
	if err != nil {
		t.Fatal(err)
	}
	cms := map[string]map[string][]byte{"limits": {qc.DataKey: index, qc.HashKey: []byte(qc.Hash(index))}}
	for i, gz := range shards {
		cms[name(i)] = map[string][]byte{qc.ShardKey(i, n): gz}
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
	err := bad.Validate()
	for _, want := range []string{
		`shards[1].key: "limits-0-of-2.json.gz" duplicates shards[0]`,
		`shards[0].hash: "sha256:nothex" is not sha256:<64 lowercase hex digits>`,
		"shards[0].configMap: must be a ConfigMap name",
		"apps: must be empty in a sharded document (1 entries)",
	} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("want %q in %v", want, err)
		}
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
