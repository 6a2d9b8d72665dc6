package toc

import (
	"fmt"
	"path"
	"strings"
)

// Unsafe says why an entry must not be written below an output directory,
// or returns "" when it may. A TOC is data from the network: a name may try
// to climb out with "..", be absolute, or be a link pointing out. Such
// entries are refused one by one; os.Root then guards every filesystem
// operation of the rest (no write can follow a symlink out either).
//
// Absolute symlink targets are kept: inside an image they name paths of
// the image's own root filesystem (e.g. /etc/localtime ->
// /usr/share/zoneinfo/UTC), and nothing written by sg-fetch follows them.
func (e *Entry) Unsafe() string {
	if why := unsafeName(e.RawName); why != "" {
		return "name " + why
	}
	switch e.Type {
	case "symlink":
		if e.LinkName == "" {
			return "symlink with an empty target"
		}
		if !path.IsAbs(e.LinkName) {
			if t := path.Join(path.Dir(e.Name), e.LinkName); t == ".." || strings.HasPrefix(t, "../") {
				return fmt.Sprintf("symlink target %q points outside the output directory", e.LinkName)
			}
		}
	case "hardlink":
		if why := unsafeName(e.LinkName); why != "" {
			return "hardlink target " + why
		}
	}
	return ""
}

// unsafeName says what is wrong with a name written in a TOC or tar
// header, or returns "".
func unsafeName(raw string) string {
	switch {
	case raw == "":
		return "is empty"
	case strings.ContainsRune(raw, 0):
		return fmt.Sprintf("%q contains a NUL byte", raw)
	case strings.HasPrefix(raw, "/"):
		return fmt.Sprintf("%q is absolute", raw)
	}
	if !strings.Contains(raw, "..") {
		return ""
	}
	for rest := raw; rest != ""; {
		var part string
		part, rest, _ = strings.Cut(rest, "/")
		if part == ".." {
			return fmt.Sprintf("%q climbs out of the output directory with \"..\"", raw)
		}
	}
	return ""
}

// SymlinkParent returns the nearest parent directory of name that the
// layer itself makes a symlink, if any. Writing an entry whose parent is a
// symlink would write through the link, so such entries are refused.
func (t *TOC) SymlinkParent(name string) (string, bool) {
	// It is asked for every entry fetched: most layers have no symlinks
	// or a few, which are cheaper to compare than name's parents to look
	// up.
	if len(t.links) <= fewLinks {
		var nearest string
		for link := range t.links {
			if len(link) > len(nearest) && len(name) > len(link) && name[len(link)] == '/' && strings.HasPrefix(name, link) {
				nearest = link
			}
		}
		return nearest, nearest != ""
	}
	// Names are clean (see CleanName): parents are the prefixes up to
	// each "/".
	for i := strings.LastIndexByte(name, '/'); i > 0; i = strings.LastIndexByte(name[:i], '/') {
		if _, ok := t.links[name[:i]]; ok {
			return name[:i], true
		}
	}
	return "", false
}

// fewLinks is up to how many symlinks SymlinkParent compares each one.
const fewLinks = 16

// Under reports whether name is prefix or lies below it; every name is
// under "" (the root).
func Under(name, prefix string) bool {
	return prefix == "" || name == prefix || strings.HasPrefix(name, prefix+"/")
}
