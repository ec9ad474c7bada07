package ratelimit

import (
	"bytes"
	"encoding/json"
	"errors"
	"strconv"
	"strings"

	rlsconfv3 "github.com/envoyproxy/go-control-plane/ratelimit/config/ratelimit/v3"
	"google.golang.org/protobuf/proto"
)

// YAML prints cfg as the file envoyproxy/ratelimit loads in file mode
// (CONFIG_TYPE=FILE, one file per domain under RUNTIME_ROOT): domain, then
// descriptors with key, value, rate_limit {unit, requests_per_unit, unlimited,
// name, replaces}, shadow_mode, detailed_metric and nested descriptors, the
// field names of ratelimit's loader (src/config/config_impl.go), which refuses
// any other. Lists keep cfg's order, so the same cfg gives the same bytes.
//
// It writes the file directly rather than through a YAML library: the tree of
// 100,000 apps prints in a fraction of the time, every string is quoted (an
// app ID such as 0012 must stay a string), and keys come in the order a reader
// expects, key first.
func YAML(cfg *rlsconfv3.RateLimitConfig) ([]byte, error) {
	if cfg.GetDomain() == "" {
		return nil, errors.New("print ratelimit configuration: empty domain")
	}
	var b bytes.Buffer
	// The YAML is about four times the protobuf: growing once saves copying
	// megabytes at 100,000 apps.
	b.Grow(5*proto.Size(cfg) + 256)
	b.WriteString("# envoyproxy/ratelimit configuration rendered by appquota from its limits document; do not edit.\n")
	b.WriteString("domain: ")
	b.WriteString(quote(cfg.Domain))
	b.WriteByte('\n')
	if len(cfg.Descriptors) > 0 {
		b.WriteString("descriptors:\n")
		if err := writeDescriptors(&b, cfg.Descriptors, ""); err != nil {
			return nil, err
		}
	}
	return b.Bytes(), nil
}

func writeDescriptors(b *bytes.Buffer, ds []*rlsconfv3.RateLimitDescriptor, indent string) error {
	for _, d := range ds {
		if d.Key == "" {
			return errors.New("print ratelimit configuration: a descriptor has an empty key")
		}
		b.WriteString(indent)
		b.WriteString("- key: ")
		b.WriteString(keyScalar(d.Key))
		b.WriteByte('\n')
		in := indent + "  "
		if d.Value != "" {
			b.WriteString(in)
			b.WriteString("value: ")
			b.WriteString(quote(d.Value))
			b.WriteByte('\n')
		}
		if rl := d.RateLimit; rl != nil {
			b.WriteString(in)
			b.WriteString("rate_limit: {")
			var fields []string
			if rl.Unlimited {
				// ratelimit refuses a unit beside unlimited.
				fields = append(fields, "unlimited: true")
			} else {
				fields = append(fields,
					"unit: "+strings.ToLower(rl.Unit.String()),
					"requests_per_unit: "+strconv.FormatUint(uint64(rl.RequestsPerUnit), 10))
			}
			if rl.Name != "" {
				fields = append(fields, "name: "+quote(rl.Name))
			}
			if len(rl.Replaces) > 0 {
				names := make([]string, len(rl.Replaces))
				for i, r := range rl.Replaces {
					names[i] = "{name: " + quote(r.Name) + "}"
				}
				fields = append(fields, "replaces: ["+strings.Join(names, ", ")+"]")
			}
			b.WriteString(strings.Join(fields, ", "))
			b.WriteString("}\n")
		}
		if d.ShadowMode {
			b.WriteString(in)
			b.WriteString("shadow_mode: true\n")
		}
		if d.DetailedMetric {
			b.WriteString(in)
			b.WriteString("detailed_metric: true\n")
		}
		if len(d.Descriptors) > 0 {
			b.WriteString(in)
			b.WriteString("descriptors:\n")
			if err := writeDescriptors(b, d.Descriptors, in); err != nil {
				return err
			}
		}
	}
	return nil
}

// keyScalar writes a descriptor key plain when YAML 1.1 (ratelimit's
// yaml.v2) reads it back as the same string, as it does appquota's keys.
func keyScalar(s string) string {
	switch s {
	case "", "y", "n", "yes", "no", "on", "off", "true", "false", "null":
		return quote(s)
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; (c < 'a' || c > 'z') && c != '_' {
			return quote(s)
		}
	}
	return s
}

// quote writes s as a double-quoted scalar. A JSON string is one in YAML
// too, and JSON escapes every character YAML would read otherwise.
func quote(s string) string {
	plain := true
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < ' ' || c > '~' || c == '"' || c == '\\' {
			plain = false
			break
		}
	}
	if plain {
		// Printable ASCII needs no escape: the common case, and 100,000 app
		// IDs are worth the shortcut.
		return `"` + s + `"`
	}
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(s) // a string always encodes
	return strings.TrimSuffix(b.String(), "\n")
}
