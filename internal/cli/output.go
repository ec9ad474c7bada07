package cli

import (
	"encoding/json"
	"fmt"
	"io"

	"github.com/appquota/appquota/pkg/quotaconfig"
)

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

// writeJSON prints v as indented JSON (-o json).
func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
