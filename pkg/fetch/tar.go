package fetch

import (
	"archive/tar"
	"context"
	"fmt"
	"io"
	"sort"
	"strings"

	"github.com/stargz-get/stargz-get/pkg/toc"
	"github.com/stargz-get/stargz-get/pkg/wire"
)

// TarHeader is the tar header of entry e as its TOC records it: name,
// type, mode, owner, time, link target, device numbers, and xattrs as
// PAX "SCHILY.xattr." records. Directories' names end in "/". The name
// is e.Name, the cleaned name (never absolute, never climbing out with
// "..").
func TarHeader(e *toc.Entry) (*tar.Header, error) {
	h := &tar.Header{
		Name:     e.Name,
		Mode:     e.Mode & 0o7777,
		Uid:      e.UID,
		Gid:      e.GID,
		Uname:    e.Uname,
		Gname:    e.Gname,
		ModTime:  e.ModTime(),
		Devmajor: int64(e.DevMajor),
		Devminor: int64(e.DevMinor),
	}
	switch e.Type {
	case wire.TypeReg:
		h.Typeflag, h.Size = tar.TypeReg, e.Size
	case wire.TypeDir:
		h.Typeflag, h.Name = tar.TypeDir, e.Name+"/"
	case wire.TypeSymlink:
		h.Typeflag, h.Linkname = tar.TypeSymlink, e.LinkName
	case wire.TypeHardlink:
		h.Typeflag, h.Linkname = tar.TypeLink, toc.CleanName(e.LinkName)
	case wire.TypeChar:
		h.Typeflag = tar.TypeChar
	case wire.TypeBlock:
		h.Typeflag = tar.TypeBlock
	case wire.TypeFifo:
		h.Typeflag = tar.TypeFifo
	default:
		return nil, fmt.Errorf("%s: unknown entry type %q", e.Name, e.Type)
	}
	if h.Typeflag != tar.TypeChar && h.Typeflag != tar.TypeBlock {
		h.Devmajor, h.Devminor = 0, 0
	}
	if len(e.Xattrs) > 0 {
		h.PAXRecords = map[string]string{}
		keys := make([]string, 0, len(e.Xattrs))
		for k := range e.Xattrs {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			h.PAXRecords["SCHILY.xattr."+k] = string(e.Xattrs[k])
		}
		h.Format = tar.FormatPAX
	}
	return h, nil
}

// WriteTar writes wants as one tar stream to w, in the order given, with
// the headers TarHeader makes and regular files' contents from Contents
// (verified chunk by chunk and file by file, with its bounded window). A
// hardlink whose target was written before in the stream (the same entry
// of the same layer) stays a hardlink; any other hardlink is written as a
// regular file with its target's contents, so that the archive unpacks
// alone. The same wants give the same bytes. The tar is closed (its end
// blocks written) only when everything was written.
func WriteTar(ctx context.Context, w io.Writer, wants []*Want, opts Options) error {
	type plan struct {
		h    *tar.Header
		file int // index in files, or -1
	}
	plans := make([]plan, len(wants))
	var files []File
	written := map[layerPath]bool{}
	for i, wt := range wants {
		e := wt.Entry
		h, err := TarHeader(e)
		if err != nil {
			return err
		}
		if name := strings.TrimSuffix(h.Name, "/"); name == "" || name == "." {
			return fmt.Errorf("entry %q has no name to write in a tar", e.RawName)
		}
		plans[i] = plan{h: h, file: -1}
		src := e
		if e.Type == wire.TypeHardlink {
			if src, err = wt.Layer.TOC.Source(e); err != nil {
				return err
			}
			if src.Type != wire.TypeReg {
				return fmt.Errorf("hardlink %s: its target %s is a %s, not a regular file", e.Name, src.Name, src.Type)
			}
			if written[layerPath{wt.Layer, src.Name}] {
				written[layerPath{wt.Layer, e.Name}] = true
				continue
			}
			h.Typeflag, h.Linkname, h.Size = tar.TypeReg, "", src.Size
		}
		if h.Typeflag == tar.TypeReg {
			if wt.Layer.TOC.Full {
				return fmt.Errorf("%s is in layer %s, which is not eStargz: a tar stream can only be made from eStargz layers", e.Name, describeBlob(wt.Layer))
			}
			plans[i].file = len(files)
			files = append(files, File{Layer: wt.Layer, Entry: src})
			written[layerPath{wt.Layer, e.Name}] = true
		}
	}
	tw := tar.NewWriter(w)
	next := 0 // the next want whose header is not written
	header := func(upTo int) error {
		for ; next < upTo; next++ {
			h := plans[next].h
			if err := tw.WriteHeader(h); err != nil {
				return fmt.Errorf("writing tar header of %s: %w", h.Name, err)
			}
		}
		return nil
	}
	fileWant := make([]int, len(files))
	for i, p := range plans {
		if p.file >= 0 {
			fileWant[p.file] = i
		}
	}
	err := Contents(ctx, files, opts, func(i int) error { return header(fileWant[i] + 1) }, tw)
	if err != nil {
		return err
	}
	if err := header(len(plans)); err != nil {
		return err
	}
	return tw.Close()
}
