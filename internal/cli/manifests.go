package cli

import (
	"errors"

	"github.com/spf13/cobra"

	"github.com/appquota/appquota/internal/manifest"
)

// manifestFlags are the flags of the commands that read manifests: -f, as
// often as needed, and -R, as kubectl's.
type manifestFlags struct {
	files     []string
	recursive bool
}

func (m *manifestFlags) flags(cmd *cobra.Command) {
	cmd.Flags().StringArrayVarP(&m.files, "filename", "f", nil, "a manifest file or a directory of them (.yaml, .yml, .json); may be repeated")
	cmd.Flags().BoolVarP(&m.recursive, "recursive", "R", false, "read the directories' subdirectories too")
	_ = cmd.MarkFlagFilename("filename", "yaml", "yml", "json")
}

// read reads the QuotaProfiles and AppQuotas of the files and directories
// given, with the API's defaults.
func (m *manifestFlags) read(command string) (*manifest.Objects, error) {
	if len(m.files) == 0 {
		return nil, errors.New(command + ": -f DIR_OR_FILE is required")
	}
	return manifest.ReadPaths(m.recursive, m.files...)
}
