package render

// MembersCompressed is how many gzip members Store has compressed so far, in
// all Renderers.
func MembersCompressed() int64 { return membersCompressed.Load() }
