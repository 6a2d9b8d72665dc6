package cli

import (
	"flag"

	"github.com/stargz-get/stargz-get/pkg/toc"
	"github.com/stargz-get/stargz-get/pkg/wire"
)

// LimitFlags bound what the tools read from the network and from stdin,
// so that a hostile or broken layer or input fails clearly instead of
// exhausting memory.
type LimitFlags struct {
	MaxTOCBytes     int64
	MaxTOCJSONBytes int64
	MaxTOCEntries   int64
	MaxLineBytes    int
}

// LimitUsage documents LimitFlags for the help texts.
const LimitUsage = `Limits (a layer or input line over a limit fails, naming the limit):
  --max-toc-bytes N         compressed TOC size (default 50 MiB, as
                            containers/storage)           SG_MAX_TOC_BYTES
  --max-toc-json-bytes N    decompressed TOC size (default 512 MiB)
                                                     SG_MAX_TOC_JSON_BYTES
  --max-toc-entries N       TOC entries, files and chunks (default 1048576)
                                                        SG_MAX_TOC_ENTRIES
  --max-line-bytes N        length of one input record line (default 1 MiB)
                                                         SG_MAX_LINE_BYTES
`

// Register adds the flags to fs.
func (f *LimitFlags) Register(fs *flag.FlagSet) {
	fs.Int64Var(&f.MaxTOCBytes, "max-toc-bytes", toc.DefaultMaxTOCBytes, "compressed TOC limit")
	fs.Int64Var(&f.MaxTOCJSONBytes, "max-toc-json-bytes", toc.DefaultMaxTOCJSONBytes, "decompressed TOC limit")
	fs.Int64Var(&f.MaxTOCEntries, "max-toc-entries", toc.DefaultMaxEntries, "TOC entries limit")
	fs.IntVar(&f.MaxLineBytes, "max-line-bytes", wire.DefaultMaxLineBytes, "input line limit")
}

// Check reports a limit that is not positive.
func (f *LimitFlags) Check() error {
	if f.MaxTOCBytes <= 0 || f.MaxTOCJSONBytes <= 0 || f.MaxTOCEntries <= 0 || f.MaxLineBytes <= 0 {
		return Usagef("limits must be positive")
	}
	return nil
}

// TOC returns the TOC reading options.
func (f *LimitFlags) TOC() toc.Options {
	return toc.Options{MaxTOCBytes: f.MaxTOCBytes, MaxTOCJSONBytes: f.MaxTOCJSONBytes, MaxEntries: f.MaxTOCEntries}
}

// Decoder returns a stdin decoder with the line limit applied.
func (f *LimitFlags) Decoder(d *wire.Decoder) *wire.Decoder {
	d.SetMaxLineBytes(f.MaxLineBytes)
	return d
}
