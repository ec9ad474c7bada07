package render

import "github.com/appquota/appquota/pkg/quotaconfig"

// FastMerges is how many of m's merges updated the last result rather than
// merging everything.
func FastMerges(m *Merger) uint64 { return m.fastMerges }

// Last is m's last document, what the controller stores (nil before the
// first merge).
func (m *Merger) Last() *quotaconfig.Document { return m.doc }
