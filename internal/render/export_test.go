package render

// FastMerges is how many of r's merges updated the last result rather than
// merging everything.
func FastMerges(r *Renderer) uint64 { return r.fastMerges }

// MembersCompressed is how many gzip members Store has compressed so far, in
// all Renderers.
func MembersCompressed() int64 { return membersCompressed.Load() }
