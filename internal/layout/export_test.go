package layout

// MembersCompressed is how many gzip members Write has compressed so far, in
// all Writers.
func MembersCompressed() int64 { return membersCompressed.Load() }
