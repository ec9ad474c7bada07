// Package delta describes what one merge changed in the merged document, so
// that every output built from that document (the ConfigMap layout, the
// rate-limit engine's configuration) updates only what changed: one merge,
// several outputs, none reaching into another's state.
package delta

import "github.com/appquota/appquota/pkg/quotaconfig"

// Change is one merge's document and what differs from the document of the
// merge before it.
//
// The document belongs to the merger that made it, which updates it in the
// next merge: an output reads it while it handles the Change and keeps what
// it needs in its own form. Seq and Base tell an output whether it can apply
// the Change to what it holds: it can when Base is the Seq of the last
// Change it applied; otherwise it rebuilds from Document alone.
type Change struct {
	// Document is the merged document.
	Document *quotaconfig.Document
	// Seq numbers the merge, from 1; Base is the Seq of the merge whose
	// document this one changes, 0 when there was none.
	Seq, Base uint64
	// Apps are the app IDs whose entry was added, changed or removed since
	// Base, sorted, each once. An ID may be listed whose entry ended up as
	// it was.
	Apps []string
	// Profiles is true when the profiles or the default profile may differ
	// from Base's.
	Profiles bool
}

// Follows reports whether c applies to the output of the Change with Seq
// last: false for a first Change or one after a gap, which the output
// rebuilds from c.Document.
func (c *Change) Follows(last uint64) bool {
	return c.Base != 0 && c.Base == last
}

// Whole returns a Change that holds doc as a new document: for an output
// fed from a file or a test rather than a merger.
func Whole(doc *quotaconfig.Document) Change {
	return Change{Document: doc, Profiles: true}
}
