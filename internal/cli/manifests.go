package cli

import (
	"errors"
	"flag"
	"strings"

	"github.com/appquota/appquota/internal/manifest"
)

// manifestFlags are the flags of the commands that read manifests: -f, as
// often as needed, and -R, as kubectl's.
type manifestFlags struct {
	files     fileList
	recursive bool
}

func (m *manifestFlags) flags(fs *flag.FlagSet) {
	fs.Var(&m.files, "f", "")
	fs.Var(&m.files, "filename", "")
	fs.BoolVar(&m.recursive, "R", false, "")
	fs.BoolVar(&m.recursive, "recursive", false, "")
}

// read reads the QuotaProfiles and AppQuotas of the files and directories
// given, with the API's defaults.
func (m *manifestFlags) read(command string) (*manifest.Objects, error) {
	if len(m.files) == 0 {
		return nil, errors.New(command + ": -f DIR_OR_FILE is required")
	}
	return manifest.ReadPaths(m.recursive, m.files...)
}

// fileList is a flag that may be given more than once.
type fileList []string

func (f *fileList) String() string { return strings.Join(*f, ",") }

func (f *fileList) Set(v string) error {
	*f = append(*f, v)
	return nil
}
