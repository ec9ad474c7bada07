package render

// FastMerges is how many of m's merges updated the last result rather than
// merging everything.
func FastMerges(m *Merger) uint64 { return m.fastMerges }
