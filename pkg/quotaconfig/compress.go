package quotaconfig

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
)

// GzipDataKey is the ConfigMap binaryData key (and file name in a mounted
// ConfigMap directory) that holds the document gzip-compressed. The controller
// writes it instead of DataKey when the plain document nears the ConfigMap size
// budget; HashKey is always the hash of the uncompressed document.
const GzipDataKey = "limits.json.gz"

// maxDocumentBytes bounds decompression, so a corrupt or hostile file cannot
// exhaust a gateway's memory. 100,000 apps render to about 25 MB.
const maxDocumentBytes = 256 << 20

// Decompress returns the content of a gzip file of one or more members, as
// the controller writes it, refusing more than maxDocumentBytes.
func Decompress(gz []byte) ([]byte, error) {
	zr, err := gzip.NewReader(bytes.NewReader(gz))
	if err != nil {
		return nil, fmt.Errorf("quotaconfig: %s: %w", GzipDataKey, err)
	}
	data, err := io.ReadAll(io.LimitReader(zr, maxDocumentBytes+1))
	if err != nil {
		return nil, fmt.Errorf("quotaconfig: %s: %w", GzipDataKey, err)
	}
	if len(data) > maxDocumentBytes {
		return nil, fmt.Errorf("quotaconfig: %s: decompresses to more than %d bytes", GzipDataKey, maxDocumentBytes)
	}
	return data, nil
}

// FromConfigMap returns the document held by a ConfigMap's data and binaryData
// (plain under DataKey, or compressed under GzipDataKey), checked against
// HashKey when present.
func FromConfigMap(data map[string]string, binaryData map[string][]byte) ([]byte, error) {
	var doc []byte
	if plain, ok := data[DataKey]; ok {
		doc = []byte(plain)
	} else if gz, ok := binaryData[GzipDataKey]; ok {
		var err error
		if doc, err = Decompress(gz); err != nil {
			return nil, err
		}
	} else {
		return nil, fmt.Errorf("quotaconfig: the ConfigMap has neither data %q nor binaryData %q", DataKey, GzipDataKey)
	}
	if want, ok := data[HashKey]; ok {
		if got := Hash(doc); got != want {
			return nil, fmt.Errorf("quotaconfig: %s is %q but the document hashes to %q", HashKey, want, got)
		}
	}
	return doc, nil
}
