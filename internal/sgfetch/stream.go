package sgfetch

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/stargz-get/stargz-get/internal/cli"
	"github.com/stargz-get/stargz-get/pkg/fetch"
	"github.com/stargz-get/stargz-get/pkg/wire"
)

// streamJob is -o - (one file's contents to stdout) or --tar (a tar
// stream of the selected entries, to stdout or a file).
type streamJob struct {
	out             string // "-" or the tar file
	tar             bool
	requireVerified bool
	opts            fetch.Options
	stdout, stderr  io.Writer
	written         int64 // bytes written to stdout
}

// Write counts what goes to stdout, so that a failure after the first
// byte can say that the output is to be discarded.
func (j *streamJob) Write(p []byte) (int, error) {
	n, err := j.stdout.Write(p)
	j.written += int64(n)
	return n, err
}

// run writes items as the job says.
func (j *streamJob) run(ctx context.Context, items []*item) error {
	var wants []*fetch.Want
	warned := map[*fetch.Layer]bool{}
	skipped := 0
	for _, it := range items {
		if it.skip != "" {
			fmt.Fprintf(j.stderr, "%s: skipped %s: %s\n", tool, quoteName(it.in.Name), it.skip)
			skipped++
			continue
		}
		if it.err != nil {
			return it.err
		}
		if !it.layer.Pinned {
			if j.requireVerified {
				return fmt.Errorf("layer %s has no TOC digest annotation, so its TOC is not pinned to the manifest; --require-verified refuses it", it.in.Layer)
			}
			if !warned[it.layer] {
				warned[it.layer] = true
				fmt.Fprintf(j.stderr, "%s: warning: layer %s of %s has no TOC digest annotation: contents are checked against its TOC, which nothing pins to the manifest (--require-verified refuses such layers)\n", tool, it.in.Layer, it.in.Ref)
			}
		}
		wants = append(wants, &fetch.Want{Layer: it.layer, Entry: it.tocEntry, Tag: it})
	}
	if j.tar {
		return j.writeTar(ctx, wants)
	}
	if len(wants) == 0 && skipped > 0 {
		return nil
	}
	return j.writeFile(ctx, wants)
}

// writeFile writes one regular file's contents to stdout.
func (j *streamJob) writeFile(ctx context.Context, wants []*fetch.Want) error {
	hint := "-o - writes one regular file's contents; use --tar -o - for a tar stream of several entries"
	switch {
	case len(wants) == 0:
		return cli.WithHint(errors.New("no file selected for -o -"), hint)
	case len(wants) > 1 && wants[0].Entry.Type == wire.TypeDir:
		return cli.WithHint(fmt.Errorf("%s is a directory (%d entries), not a regular file", quoteName(wants[0].Entry.Name), len(wants)), hint)
	case len(wants) > 1:
		return cli.WithHint(fmt.Errorf("%d entries selected for -o -, which writes one file", len(wants)), hint)
	}
	w := wants[0]
	e := w.Entry
	switch e.Type {
	case wire.TypeReg:
	case wire.TypeHardlink: // the same file under another name
		src, err := w.Layer.TOC.Source(e)
		if err != nil {
			return err
		}
		if src.Type != wire.TypeReg {
			return fmt.Errorf("%s is a hardlink to %s %s, not a regular file", quoteName(e.Name), src.Type, quoteName(src.Name))
		}
		e = src
	case wire.TypeSymlink:
		return cli.WithHint(fmt.Errorf("%s is a symlink to %q, not a regular file", quoteName(e.Name), e.LinkName), "ask for the file it points to; -o - does not follow links")
	case wire.TypeDir:
		return cli.WithHint(fmt.Errorf("%s is a directory, not a regular file", quoteName(e.Name)), hint)
	default:
		return cli.WithHint(fmt.Errorf("%s is a %s entry, not a regular file: it has no contents to write", quoteName(e.Name), e.Type), hint)
	}
	if w.Layer.TOC.Full {
		return fmt.Errorf("%s is in layer %s, which is neither eStargz nor zstd:chunked: -o - and --tar read only those", quoteName(e.Name), w.Tag.(*item).in.Layer)
	}
	start := time.Now()
	err := fetch.Contents(ctx, []fetch.File{{Layer: w.Layer, Entry: e}}, j.opts, func(int) error { return nil }, j)
	if err != nil {
		return j.streamErr(err)
	}
	it := w.Tag.(*item)
	r := it.result("", wire.StatusFetched, nil)
	r.Path, r.Size, r.Digest, r.Verified = "-", e.Size, e.Digest, verified(w.Layer)
	r.DurationMs = time.Since(start).Milliseconds()
	return wire.NewEncoder(j.stderr).Encode(r)
}

// writeTar writes the wants as a tar stream to stdout, or to a temp file
// renamed to the tar file once complete.
func (j *streamJob) writeTar(ctx context.Context, wants []*fetch.Want) error {
	if j.out == "-" {
		return j.streamErr(fetch.WriteTar(ctx, j, wants, j.opts))
	}
	dir := filepath.Dir(j.out)
	if fi, err := os.Stat(j.out); err == nil && fi.IsDir() {
		return cli.Usagef("--tar -o %s: that is a directory; give the tar file's name, or - for stdout", j.out)
	}
	f, err := os.CreateTemp(dir, "."+filepath.Base(j.out)+".sg-tmp-*")
	if err != nil {
		return fmt.Errorf("creating the tar file: %w", err)
	}
	defer os.Remove(f.Name()) // gone once renamed
	if err := fetch.WriteTar(ctx, f, wants, j.opts); err != nil {
		f.Close()
		return j.streamErr(err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("writing %s: %w", j.out, err)
	}
	if err := os.Chmod(f.Name(), 0o644); err != nil {
		return err
	}
	return os.Rename(f.Name(), j.out)
}

// streamErr makes a failure after the first byte on stdout loud: what
// went out cannot be taken back.
func (j *streamJob) streamErr(err error) error {
	switch {
	case err == nil || j.out != "-" || j.written == 0 || cli.IsEPIPE(err):
		return err
	case errors.Is(err, fetch.ErrDigest):
		return cli.WithHint(err, fmt.Sprintf("the %d bytes written to stdout before this error are NOT verified: discard them (the registry served corrupt data, or the layer was tampered with)", j.written))
	}
	return cli.WithHint(err, fmt.Sprintf("the %d bytes written to stdout before this error are NOT verified: discard them (an incomplete file, or corrupt data from the registry)", j.written))
}

func verified(l *fetch.Layer) string {
	if l.Pinned {
		return "toc"
	}
	return "toc-unpinned"
}
