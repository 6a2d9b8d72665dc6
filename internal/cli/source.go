package cli

import (
	"io"

	"github.com/stargz-get/stargz-get/internal/source"
	"github.com/stargz-get/stargz-get/pkg/toc"
)

// NewSource builds what every tool resolves images and layers with from
// its flags: the --verbose logger, the registry client and the Source.
// The caller closes the Source.
func NewSource(tool string, stderr io.Writer, rf *RegistryFlags, opts toc.Options) (*source.Source, *Logger, error) {
	platform, err := rf.PlatformValue()
	if err != nil {
		return nil, nil, err
	}
	log := NewLogger(tool, stderr, rf.Verbose)
	client, err := rf.Client(log)
	if err != nil {
		return nil, nil, err
	}
	return &source.Source{Client: client, Platform: platform, Logf: log.Func(), TOC: opts}, log, nil
}
