package toc

import (
	"archive/tar"
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
	"unicode"
	"unicode/utf16"
	"unicode/utf8"
	"unsafe"

	"github.com/containerd/stargz-snapshotter/estargz"
	"github.com/klauspost/compress/gzip"
)

// decodeTOC reads one JSON value from r and decodes it into a JTOC exactly
// as json.NewDecoder(r).Decode(&j) of encoding/json fills it, but without
// reflection and without holding the whole JSON in memory: the input is
// read in small pieces, so that decoding overlaps a download.
//
// It keeps encoding/json's semantics: keys match field names exactly or
// else case-insensitively (with its Unicode folding), unknown keys are
// skipped, invalid UTF-8 and unpaired surrogate escapes in strings become
// U+FFFD, null leaves a string or number as it is and sets a slice, map or
// pointer to nil, a repeated key decodes again into what the earlier one
// filled (so entries and xattrs merge as encoding/json merges them), and
// nothing after the value is read or checked. Whatever makes encoding/json
// fail (bad syntax, nesting deeper than 10000, a value of the wrong type, a
// number out of range, bad base64) makes decodeTOC fail, though the error
// text differs and decodeTOC stops at the first problem.
func decodeTOC(r io.Reader) (*estargz.JTOC, error) {
	d := &tocDecoder{r: r, buf: make([]byte, 0, 32<<10)}
	var j estargz.JTOC
	if err := d.top(&j); err != nil {
		return nil, err
	}
	return &j, nil
}

// decompressTOC returns the TOC JSON in the TOC's gzip member r: the
// contents of the tar entry in it, as estargz's
// GzipDecompressor.DecompressTOC returns them, but decompressed with
// klauspost/compress, which is faster than compress/gzip.
func decompressTOC(r io.Reader) (io.ReadCloser, error) {
	zr, err := gzip.NewReader(r)
	if err != nil {
		return nil, fmt.Errorf("malformed TOC gzip header: %w", err)
	}
	zr.Multistream(false)
	tr := tar.NewReader(zr)
	h, err := tr.Next()
	if err != nil {
		return nil, fmt.Errorf("finding the tar header in the TOC gzip member: %w", err)
	}
	if h.Name != estargz.TOCTarName {
		return nil, fmt.Errorf("TOC tar entry is named %q, not %q", h.Name, estargz.TOCTarName)
	}
	return tocReader{tr, zr}, nil
}

// tocReader reads a TOC's tar entry and closes its gzip reader.
type tocReader struct {
	tr *tar.Reader
	zr *gzip.Reader
}

func (t tocReader) Read(p []byte) (int, error) { return t.tr.Read(p) }
func (t tocReader) Close() error               { return t.zr.Close() }

// maxDepth is how deeply encoding/json lets arrays and objects nest.
const maxDepth = 10000

// tocDecoder is the state of one decodeTOC.
type tocDecoder struct {
	r     io.Reader
	buf   []byte // input read so far and kept; buf[off:] is unread
	off   int
	base  int64 // input offset of buf[0]
	rerr  error // sticky error from r (io.EOF at the end)
	depth int   // arrays and objects open
	stack []byte
	str   []byte // scratch for unquoting

	slab   []estargz.TOCEntry // entries allocated ahead
	intern map[string]string  // short repeated values (type, modtime, owner)

	// extra, when set, collects the fields of containers/storage's TOC
	// entries that eStargz's lack (see decodeContainersTOC).
	extra *containersExtra
}

// Field numbers of JTOC and TOCEntry, 0 for an unknown key.
const (
	fUnknown = iota
	fVersion
	fEntries
	fName
	fType
	fSize
	fModTime
	fLinkName
	fMode
	fUID
	fGID
	fUname
	fGname
	fOffset
	fInnerOffset
	fDevMajor
	fDevMinor
	fXattrs
	fDigest
	fChunkOffset
	fChunkSize
	fChunkDigest
	fEndOffset // containers/storage only
	fChunkType // containers/storage only
)

// tocFields and entryFields name the fields as their json tags do.
var (
	tocFields = map[string]int{
		"version": fVersion,
		"entries": fEntries,
	}
	entryFields = map[string]int{
		"name":        fName,
		"type":        fType,
		"size":        fSize,
		"modtime":     fModTime,
		"linkName":    fLinkName,
		"mode":        fMode,
		"uid":         fUID,
		"gid":         fGID,
		"userName":    fUname,
		"groupName":   fGname,
		"offset":      fOffset,
		"innerOffset": fInnerOffset,
		"devMajor":    fDevMajor,
		"devMinor":    fDevMinor,
		"xattrs":      fXattrs,
		"digest":      fDigest,
		"chunkOffset": fChunkOffset,
		"chunkSize":   fChunkSize,
		"chunkDigest": fChunkDigest,
	}
	// containersFields are the keys of containers/storage TOC entries
	// that eStargz's lack; decodeTOC skips them as unknown.
	containersFields = map[string]int{
		"endOffset": fEndOffset,
		"chunkType": fChunkType,
	}
)

// entryField returns the TOCEntry field that the unquoted key k names
// exactly (a switch, faster than a map), else by case folding.
func entryField(k []byte) int {
	switch string(k) {
	case "name":
		return fName
	case "type":
		return fType
	case "size":
		return fSize
	case "modtime":
		return fModTime
	case "linkName":
		return fLinkName
	case "mode":
		return fMode
	case "uid":
		return fUID
	case "gid":
		return fGID
	case "userName":
		return fUname
	case "groupName":
		return fGname
	case "offset":
		return fOffset
	case "innerOffset":
		return fInnerOffset
	case "devMajor":
		return fDevMajor
	case "devMinor":
		return fDevMinor
	case "xattrs":
		return fXattrs
	case "digest":
		return fDigest
	case "chunkOffset":
		return fChunkOffset
	case "chunkSize":
		return fChunkSize
	case "chunkDigest":
		return fChunkDigest
	case "endOffset":
		return fEndOffset
	case "chunkType":
		return fChunkType
	}
	if f := foldedField(k, entryFields); f != fUnknown {
		return f
	}
	return foldedField(k, containersFields)
}

// foldedField returns the field of fields whose name equals k under
// encoding/json's case folding, that of bytes.EqualFold: runes match if
// they are in one unicode.SimpleFold orbit, so "NAME", "Name" and "name"
// match, and so do "ſize" (long s) and "linKName" (Kelvin sign), but not
// "sıze" (dotless i).
func foldedField(k []byte, fields map[string]int) int {
	for name, f := range fields {
		if foldEqual(k, name) {
			return f
		}
	}
	return fUnknown
}

// foldEqual reports whether k equals the ASCII name under case folding.
func foldEqual(k []byte, name string) bool {
	i := 0
	for len(k) > 0 {
		r, n := rune(k[0]), 1
		if r >= utf8.RuneSelf {
			r, n = utf8.DecodeRune(k)
		}
		k = k[n:]
		if i >= len(name) || !sameFold(r, rune(name[i])) {
			return false
		}
		i++
	}
	return i == len(name)
}

// sameFold reports whether r and c are in one case-folding orbit.
func sameFold(r, c rune) bool {
	for f := r; ; {
		if f == c {
			return true
		}
		if f = unicode.SimpleFold(f); f == r {
			return false
		}
	}
}

// Errors.

func (d *tocDecoder) pos() int64 { return d.base + int64(d.off) }

func (d *tocDecoder) syntaxErr(c byte, where string) error {
	return fmt.Errorf("invalid character %q %s at offset %d", c, where, d.pos())
}

func (d *tocDecoder) typeErr(what, field string) error {
	return fmt.Errorf("cannot decode %s into %s at offset %d", what, field, d.pos())
}

// kindOf names the JSON kind of a value starting with c, for errors.
func kindOf(c byte) string {
	switch c {
	case '{':
		return "an object"
	case '[':
		return "an array"
	case '"':
		return "a string"
	case 't', 'f':
		return "a boolean"
	case 'n':
		return "null"
	}
	return "a number"
}

// Reading.

// fill reads more input into buf, keeping buf[off:] (moved to the front).
func (d *tocDecoder) fill() error {
	if d.rerr != nil {
		if d.rerr == io.EOF {
			return fmt.Errorf("at offset %d: %w", d.pos(), io.ErrUnexpectedEOF)
		}
		return d.rerr
	}
	if d.off > 0 {
		n := copy(d.buf, d.buf[d.off:])
		d.base += int64(d.off)
		d.buf, d.off = d.buf[:n], 0
	}
	if len(d.buf) == cap(d.buf) {
		nb := make([]byte, len(d.buf), 2*cap(d.buf))
		copy(nb, d.buf)
		d.buf = nb
	}
	for range 100 {
		n, err := d.r.Read(d.buf[len(d.buf):cap(d.buf)])
		d.buf = d.buf[:len(d.buf)+n]
		if err != nil {
			d.rerr = err
			if n > 0 {
				return nil
			}
			return d.fill()
		}
		if n > 0 {
			return nil
		}
	}
	d.rerr = io.ErrNoProgress
	return d.rerr
}

// next skips whitespace and returns the next byte, not consuming it.
func (d *tocDecoder) next() (byte, error) {
	for {
		for d.off < len(d.buf) {
			c := d.buf[d.off]
			if c > ' ' || (c != ' ' && c != '\t' && c != '\n' && c != '\r') {
				return c, nil
			}
			d.off++
		}
		if err := d.fill(); err != nil {
			return 0, err
		}
	}
}

// ensure makes n bytes available at buf[off:], if the input has them.
func (d *tocDecoder) ensure(n int) error {
	for len(d.buf)-d.off < n {
		if err := d.fill(); err != nil {
			return err
		}
	}
	return nil
}

// open enters an array or object at buf[off].
func (d *tocDecoder) open() error {
	d.depth++
	if d.depth > maxDepth {
		return fmt.Errorf("JSON nested deeper than %d at offset %d", maxDepth, d.pos())
	}
	d.off++
	return nil
}

// literal consumes null, true or false, whichever starts at buf[off].
func (d *tocDecoder) literal() error {
	var lit string
	switch d.buf[d.off] {
	case 'n':
		lit = "null"
	case 't':
		lit = "true"
	case 'f':
		lit = "false"
	default:
		return d.syntaxErr(d.buf[d.off], "looking for a value")
	}
	if err := d.ensure(len(lit)); err != nil {
		// Report a mismatch before a short input.
		for i := 0; d.off+i < len(d.buf); i++ {
			if d.buf[d.off+i] != lit[i] {
				d.off += i
				return d.syntaxErr(d.buf[d.off], "in literal "+lit)
			}
		}
		return err
	}
	for i := 0; i < len(lit); i++ {
		if d.buf[d.off+i] != lit[i] {
			d.off += i
			return d.syntaxErr(d.buf[d.off], "in literal "+lit)
		}
	}
	d.off += len(lit)
	return nil
}

// null consumes null at buf[off], or fails if it is another literal.
func (d *tocDecoder) null(field string) error {
	c := d.buf[d.off]
	if err := d.literal(); err != nil {
		return err
	}
	if c != 'n' {
		return d.typeErr("a boolean", field)
	}
	return nil
}

// strSafe marks the bytes that a string can hold as they are: printable
// ASCII other than the quote and the backslash.
var strSafe = func() (t [256]bool) {
	for c := 0x20; c < 0x80; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

// scanString consumes the string at buf[off] (a '"') and returns what is
// between its quotes, valid until the next read, and whether it is plain:
// printable ASCII without escapes, so that it is its own value.
func (d *tocDecoder) scanString() (raw []byte, plain bool, err error) {
	i := d.off + 1
	plain = true
	for {
		// Eight bytes at a time while none is special, then one at a time.
		for i+8 <= len(d.buf) && !special8(binary.LittleEndian.Uint64(d.buf[i:])) {
			i += 8
		}
		for i < len(d.buf) && strSafe[d.buf[i]] {
			i++
		}
		if i < len(d.buf) {
			switch c := d.buf[i]; {
			case c == '"':
				raw = d.buf[d.off+1 : i]
				d.off = i + 1
				return raw, plain, nil
			case c == '\\':
				plain = false
				if i+1 >= len(d.buf) {
					break // read more
				}
				switch d.buf[i+1] {
				case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
					i += 2
					continue
				case 'u':
					if i+6 > len(d.buf) {
						// Check what there is, then read more.
						for k := i + 2; k < len(d.buf); k++ {
							if !isHex(d.buf[k]) {
								d.off = k
								return nil, false, d.syntaxErr(d.buf[k], "in \\u escape")
							}
						}
						break
					}
					for k := i + 2; k < i+6; k++ {
						if !isHex(d.buf[k]) {
							d.off = k
							return nil, false, d.syntaxErr(d.buf[k], "in \\u escape")
						}
					}
					i += 6
					continue
				default:
					d.off = i + 1
					return nil, false, d.syntaxErr(d.buf[i+1], "in string escape code")
				}
			case c < 0x20:
				d.off = i
				return nil, false, d.syntaxErr(c, "in string literal")
			default: // not ASCII
				plain = false
				i++
				continue
			}
		}
		rel := i - d.off
		if err := d.fill(); err != nil {
			return nil, false, err
		}
		i = d.off + rel
	}
}

// special8 reports whether any of the eight bytes in x is not strSafe:
// below 0x20, at or above 0x80, '"' or '\\'. (x-lo)&^x has a byte's high
// bit set where the byte is below lo's, if no lower byte borrowed, which
// only a byte already found special does.
func special8(x uint64) bool {
	const ones = 0x0101010101010101
	const high = 0x8080808080808080
	quote := x ^ (ones * '"')
	backslash := x ^ (ones * '\\')
	return ((x-ones*0x20)&^x|(quote-ones)&^quote|(backslash-ones)&^backslash|x)&high != 0
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

// unquote returns the value of a string with the contents raw (as
// scanString checked them), valid until the next unquote.
func (d *tocDecoder) unquote(raw []byte, plain bool) []byte {
	if plain || bytes.IndexByte(raw, '\\') < 0 && utf8.Valid(raw) {
		return raw
	}
	d.str = appendUnquoted(d.str[:0], raw)
	return d.str
}

// appendUnquoted appends the value of a string whose contents, escapes
// checked, are raw, as encoding/json decodes it: an escaped surrogate
// pair is one rune, any other escaped surrogate becomes U+FFFD, and so
// does each byte that is not part of valid UTF-8.
func appendUnquoted(dst, raw []byte) []byte {
	for i := 0; i < len(raw); {
		c := raw[i]
		switch {
		case c == '\\':
			switch e := raw[i+1]; e {
			case 'u':
				r := hex4(raw[i+2:])
				i += 6
				if utf16.IsSurrogate(r) {
					r2 := utf8.RuneError
					if len(raw) >= i+6 && raw[i] == '\\' && raw[i+1] == 'u' {
						r2 = utf16.DecodeRune(r, hex4(raw[i+2:]))
					}
					if r2 != utf8.RuneError {
						i += 6
					}
					r = r2
				}
				dst = utf8.AppendRune(dst, r)
				continue
			case 'b':
				c = '\b'
			case 'f':
				c = '\f'
			case 'n':
				c = '\n'
			case 'r':
				c = '\r'
			case 't':
				c = '\t'
			default: // '"', '\\', '/'
				c = e
			}
			dst = append(dst, c)
			i += 2
		case c < utf8.RuneSelf:
			dst = append(dst, c)
			i++
		default:
			r, n := utf8.DecodeRune(raw[i:])
			if r == utf8.RuneError && n == 1 {
				dst = utf8.AppendRune(dst, utf8.RuneError)
			} else {
				dst = append(dst, raw[i:i+n]...)
			}
			i += n
		}
	}
	return dst
}

// hex4 returns the value of four hex digits.
func hex4(b []byte) rune {
	var r rune
	for _, c := range b[:4] {
		switch {
		case c <= '9':
			c -= '0'
		case c >= 'a':
			c -= 'a' - 10
		default:
			c -= 'A' - 10
		}
		r = r<<4 | rune(c)
	}
	return r
}

// stringValue consumes the string at buf[off] and returns its value, interned
// if intern (for values repeated across entries).
func (d *tocDecoder) stringValue(intern bool) (string, error) {
	raw, plain, err := d.scanString()
	if err != nil {
		return "", err
	}
	raw = d.unquote(raw, plain)
	if intern && len(raw) <= 64 {
		if s, ok := d.intern[string(raw)]; ok {
			return s, nil
		}
		s := string(raw)
		if d.intern == nil {
			d.intern = make(map[string]string)
		}
		if len(d.intern) < 1024 {
			d.intern[s] = s
		}
		return s, nil
	}
	return string(raw), nil
}

// scanNumber consumes the number at buf[off] and returns its text, valid
// until the next read.
func (d *tocDecoder) scanNumber() ([]byte, error) {
	i := d.off // the number is buf[off:i] so far
	// at returns the byte at i, reading more if need be; a number cannot
	// end the input here, as the value it is in must still be closed.
	at := func() (byte, error) {
		for i >= len(d.buf) {
			rel := i - d.off
			if err := d.fill(); err != nil {
				return 0, err
			}
			i = d.off + rel
		}
		return d.buf[i], nil
	}
	digits := func() error {
		for {
			c, err := at()
			if err != nil {
				return err
			}
			if c < '0' || c > '9' {
				return nil
			}
			i++
		}
	}
	c, err := at()
	if err != nil {
		return nil, err
	}
	if c == '-' {
		i++
		if c, err = at(); err != nil {
			return nil, err
		}
	}
	switch {
	case c == '0':
		i++
	case '1' <= c && c <= '9':
		i++
		if err := digits(); err != nil {
			return nil, err
		}
	default:
		d.off = i
		return nil, d.syntaxErr(c, "in numeric literal")
	}
	if c, err = at(); err != nil {
		return nil, err
	}
	if c == '.' {
		i++
		if c, err = at(); err != nil {
			return nil, err
		}
		if c < '0' || c > '9' {
			d.off = i
			return nil, d.syntaxErr(c, "after decimal point in numeric literal")
		}
		if err := digits(); err != nil {
			return nil, err
		}
		if c, err = at(); err != nil {
			return nil, err
		}
	}
	if c == 'e' || c == 'E' {
		i++
		if c, err = at(); err != nil {
			return nil, err
		}
		if c == '+' || c == '-' {
			i++
			if c, err = at(); err != nil {
				return nil, err
			}
		}
		if c < '0' || c > '9' {
			d.off = i
			return nil, d.syntaxErr(c, "in exponent of numeric literal")
		}
		if err := digits(); err != nil {
			return nil, err
		}
	}
	num := d.buf[d.off:i]
	d.off = i
	return num, nil
}

// integer consumes the value at buf[off] into *p, which holds bits-bit
// integers: a number that strconv.ParseInt takes and that fits, or null
// (which leaves *p as it is).
func (d *tocDecoder) integer(p *int64, bits int, field string) error {
	c, err := d.next()
	if err != nil {
		return err
	}
	if c == 'n' || c == 't' || c == 'f' {
		return d.null(field)
	}
	if c != '-' && (c < '0' || c > '9') {
		return d.typeErr(kindOf(c), field)
	}
	num, err := d.scanNumber()
	if err != nil {
		return err
	}
	n, ok := parseInt(num)
	if !ok || bits < 64 && (n < -1<<(bits-1) || n > 1<<(bits-1)-1) {
		return d.typeErr("number "+string(num), field)
	}
	*p = n
	return nil
}

// parseInt parses a JSON number as strconv.ParseInt(s, 10, 64) does: it
// fails for a fraction, an exponent or a value out of range.
func parseInt(s []byte) (int64, bool) {
	const limit = 1 << 63 // the magnitude of math.MinInt64
	neg := len(s) > 0 && s[0] == '-'
	if neg {
		s = s[1:]
	}
	if len(s) == 0 {
		return 0, false
	}
	var u uint64
	for _, c := range s {
		if c < '0' || c > '9' || u > limit/10 {
			return 0, false
		}
		if u = u*10 + uint64(c-'0'); u > limit {
			return 0, false
		}
	}
	switch {
	case neg:
		return -int64(u), true // -(1<<63) wraps to itself, math.MinInt64
	case u > math.MaxInt64:
		return 0, false
	}
	return int64(u), true
}

// int64Field consumes an int64 field's value into *p.
func (d *tocDecoder) int64Field(p *int64, field string) error {
	return d.integer(p, 64, field)
}

// intField consumes an int field's value into *p.
func (d *tocDecoder) intField(p *int, field string) error {
	n := int64(*p)
	if err := d.integer(&n, strconv.IntSize, field); err != nil {
		return err
	}
	*p = int(n)
	return nil
}

// stringField consumes a string or null into *p.
func (d *tocDecoder) stringField(p *string, field string, intern bool) error {
	c, err := d.next()
	if err != nil {
		return err
	}
	switch c {
	case '"':
		s, err := d.stringValue(intern)
		if err != nil {
			return err
		}
		*p = s
		return nil
	case 'n', 't', 'f':
		return d.null(field)
	}
	return d.typeErr(kindOf(c), field)
}

// key consumes an object's key at buf[off] (a '"') and the colon after it,
// and returns the field it names in fields, found by exact.
func (d *tocDecoder) key(exact func([]byte) int) (int, error) {
	raw, plain, err := d.scanString()
	if err != nil {
		return 0, err
	}
	f := exact(d.unquote(raw, plain))
	c, err := d.next()
	if err != nil {
		return 0, err
	}
	if c != ':' {
		return 0, d.syntaxErr(c, "after object key")
	}
	d.off++
	return f, nil
}

// object runs member for each member of the object at buf[off] (a '{'),
// after its key and colon are consumed.
func (d *tocDecoder) object(exact func([]byte) int, member func(f int) error) error {
	if err := d.open(); err != nil {
		return err
	}
	c, err := d.next()
	if err != nil {
		return err
	}
	if c == '}' {
		d.off++
		d.depth--
		return nil
	}
	for {
		if c != '"' {
			return d.syntaxErr(c, "looking for beginning of object key string")
		}
		f, err := d.key(exact)
		if err != nil {
			return err
		}
		if err := member(f); err != nil {
			return err
		}
		if c, err = d.next(); err != nil {
			return err
		}
		switch c {
		case ',':
			d.off++
			if c, err = d.next(); err != nil {
				return err
			}
			continue
		case '}':
			d.off++
			d.depth--
			return nil
		}
		return d.syntaxErr(c, "after object key:value pair")
	}
}

// array runs elem for each element of the array at buf[off] (a '['), with
// buf[off] at the element's first byte.
func (d *tocDecoder) array(elem func() error) error {
	if err := d.open(); err != nil {
		return err
	}
	c, err := d.next()
	if err != nil {
		return err
	}
	if c == ']' {
		d.off++
		d.depth--
		return nil
	}
	for {
		if err := elem(); err != nil {
			return err
		}
		if c, err = d.next(); err != nil {
			return err
		}
		switch c {
		case ',':
			d.off++
			if _, err := d.next(); err != nil {
				return err
			}
			continue
		case ']':
			d.off++
			d.depth--
			return nil
		}
		return d.syntaxErr(c, "after array element")
	}
}

// skip consumes one value of any kind, checking its syntax.
func (d *tocDecoder) skip() error {
	stack := d.stack[:0]
	defer func() { d.stack = stack[:0] }()
	for {
		// A value.
		c, err := d.next()
		if err != nil {
			return err
		}
		switch {
		case c == '"':
			if _, _, err := d.scanString(); err != nil {
				return err
			}
		case c == '-' || '0' <= c && c <= '9':
			if _, err := d.scanNumber(); err != nil {
				return err
			}
		case c == '{' || c == '[':
			if err := d.open(); err != nil {
				return err
			}
			end := byte('}')
			if c == '[' {
				end = ']'
			}
			c2, err := d.next()
			if err != nil {
				return err
			}
			if c2 == end {
				d.off++
				d.depth--
				break
			}
			stack = append(stack, c)
			if c == '{' {
				if err := d.skipKey(c2); err != nil {
					return err
				}
			}
			continue
		default:
			if err := d.literal(); err != nil {
				return err
			}
		}
		// After a value: close what ends here, or go on to the next.
		for {
			if len(stack) == 0 {
				return nil
			}
			c, err := d.next()
			if err != nil {
				return err
			}
			open := stack[len(stack)-1]
			if c == ',' {
				d.off++
				if open == '{' {
					c, err := d.next()
					if err != nil {
						return err
					}
					if err := d.skipKey(c); err != nil {
						return err
					}
				}
				break
			}
			if open == '{' && c == '}' || open == '[' && c == ']' {
				d.off++
				d.depth--
				stack = stack[:len(stack)-1]
				continue
			}
			if open == '{' {
				return d.syntaxErr(c, "after object key:value pair")
			}
			return d.syntaxErr(c, "after array element")
		}
	}
}

// skipKey consumes an object key, starting with c, and its colon.
func (d *tocDecoder) skipKey(c byte) error {
	if c != '"' {
		return d.syntaxErr(c, "looking for beginning of object key string")
	}
	_, err := d.key(func([]byte) int { return fUnknown })
	return err
}

// top decodes the JSON value into j.
func (d *tocDecoder) top(j *estargz.JTOC) error {
	c, err := d.next()
	if err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) {
			return io.EOF // no value at all, as encoding/json says
		}
		return err
	}
	switch c {
	case '{':
	case 'n', 't', 'f':
		return d.null("JTOC")
	default:
		return d.typeErr(kindOf(c), "JTOC")
	}
	return d.object(tocField, func(f int) error {
		switch f {
		case fVersion:
			return d.intField(&j.Version, "JTOC.version")
		case fEntries:
			return d.entries(&j.Entries)
		}
		return d.skip()
	})
}

// tocField is entryField for JTOC's fields.
func tocField(k []byte) int {
	switch string(k) {
	case "version":
		return fVersion
	case "entries":
		return fEntries
	}
	return foldedField(k, tocFields)
}

// entries decodes an array of entries, or null, into *p. Like
// encoding/json, it decodes element i into the entry already at index i
// (also past the slice's length, within its capacity), if there is one.
func (d *tocDecoder) entries(p *[]*estargz.TOCEntry) error {
	c, err := d.next()
	if err != nil {
		return err
	}
	switch c {
	case '[':
	case 'n', 't', 'f':
		if err := d.null("JTOC.entries"); err != nil {
			return err
		}
		*p = nil
		return nil
	default:
		return d.typeErr(kindOf(c), "JTOC.entries")
	}
	s := *p
	i := 0
	err = d.array(func() error {
		switch {
		case i < len(s):
		case i < cap(s):
			s = s[:i+1]
		default:
			s = append(s, nil)
		}
		c := d.buf[d.off]
		if d.extra != nil {
			d.extra.at(i)
		}
		switch c {
		case '{':
			if s[i] == nil {
				s[i] = d.newEntry()
			}
			if err := d.entry(s[i]); err != nil {
				return err
			}
		case 'n', 't', 'f':
			if err := d.null("TOCEntry"); err != nil {
				return err
			}
			s[i] = nil
		default:
			return d.typeErr(kindOf(c), "TOCEntry")
		}
		i++
		return nil
	})
	if err != nil {
		return err
	}
	if i == 0 {
		s = []*estargz.TOCEntry{}
	}
	*p = s[:i]
	return nil
}

// slabLen is how many entries newEntry allocates at once: as many as fit
// in 32 KiB, the largest size Go allocates from its size classes.
const slabLen = 32 << 10 / unsafe.Sizeof(estargz.TOCEntry{})

// newEntry returns a new zero entry, allocated with others.
func (d *tocDecoder) newEntry() *estargz.TOCEntry {
	if len(d.slab) == 0 {
		d.slab = make([]estargz.TOCEntry, slabLen)
	}
	e := &d.slab[0]
	d.slab = d.slab[1:]
	return e
}

// entry decodes the object at buf[off] into e.
func (d *tocDecoder) entry(e *estargz.TOCEntry) error {
	return d.object(entryField, func(f int) error {
		switch f {
		case fName:
			return d.stringField(&e.Name, "TOCEntry.name", false)
		case fType:
			return d.stringField(&e.Type, "TOCEntry.type", true)
		case fSize:
			return d.int64Field(&e.Size, "TOCEntry.size")
		case fModTime:
			return d.stringField(&e.ModTime3339, "TOCEntry.modtime", true)
		case fLinkName:
			return d.stringField(&e.LinkName, "TOCEntry.linkName", false)
		case fMode:
			return d.int64Field(&e.Mode, "TOCEntry.mode")
		case fUID:
			return d.intField(&e.UID, "TOCEntry.uid")
		case fGID:
			return d.intField(&e.GID, "TOCEntry.gid")
		case fUname:
			return d.stringField(&e.Uname, "TOCEntry.userName", true)
		case fGname:
			return d.stringField(&e.Gname, "TOCEntry.groupName", true)
		case fOffset:
			return d.int64Field(&e.Offset, "TOCEntry.offset")
		case fInnerOffset:
			return d.int64Field(&e.InnerOffset, "TOCEntry.innerOffset")
		case fDevMajor:
			return d.intField(&e.DevMajor, "TOCEntry.devMajor")
		case fDevMinor:
			return d.intField(&e.DevMinor, "TOCEntry.devMinor")
		case fXattrs:
			return d.xattrs(&e.Xattrs)
		case fDigest:
			return d.digestField(&e.Digest, e.ChunkDigest, "TOCEntry.digest")
		case fChunkOffset:
			return d.int64Field(&e.ChunkOffset, "TOCEntry.chunkOffset")
		case fChunkSize:
			return d.int64Field(&e.ChunkSize, "TOCEntry.chunkSize")
		case fChunkDigest:
			return d.digestField(&e.ChunkDigest, e.Digest, "TOCEntry.chunkDigest")
		case fEndOffset:
			if x := d.extra; x != nil {
				return d.int64Field(&x.endOffset[x.cur], "entry.endOffset")
			}
		case fChunkType:
			if x := d.extra; x != nil {
				return d.stringField(&x.chunkType[x.cur], "entry.chunkType", true)
			}
		}
		return d.skip()
	})
}

// digestField is stringField for a digest, sharing the string with the
// entry's other digest when they are equal (as they are for a file of one
// chunk).
func (d *tocDecoder) digestField(p *string, other string, field string) error {
	c, err := d.next()
	if err != nil {
		return err
	}
	if c != '"' || other == "" {
		return d.stringField(p, field, false)
	}
	raw, plain, err := d.scanString()
	if err != nil {
		return err
	}
	if v := d.unquote(raw, plain); string(v) == other {
		*p = other
	} else {
		*p = string(v)
	}
	return nil
}

// xattrs decodes an object of base64 strings, or null, into *m, adding
// to a map already there.
func (d *tocDecoder) xattrs(m *map[string][]byte) error {
	const field = "TOCEntry.xattrs"
	c, err := d.next()
	if err != nil {
		return err
	}
	switch c {
	case '{':
	case 'n', 't', 'f':
		if err := d.null(field); err != nil {
			return err
		}
		*m = nil
		return nil
	default:
		return d.typeErr(kindOf(c), field)
	}
	if *m == nil {
		*m = make(map[string][]byte)
	}
	var k string
	return d.object(func(raw []byte) int {
		k = string(raw)
		return fUnknown
	}, func(int) error {
		v, err := d.byteSlice()
		if err != nil {
			return fmt.Errorf("xattr %q: %w", k, err)
		}
		(*m)[k] = v
		return nil
	})
}

// byteSlice decodes an xattr's value, a []byte: a base64 string, an
// array of numbers 0-255, or null.
func (d *tocDecoder) byteSlice() ([]byte, error) {
	const field = "TOCEntry.xattrs value"
	c, err := d.next()
	if err != nil {
		return nil, err
	}
	switch c {
	case '"':
		raw, plain, err := d.scanString()
		if err != nil {
			return nil, err
		}
		s := d.unquote(raw, plain)
		b := make([]byte, base64.StdEncoding.DecodedLen(len(s)))
		n, err := base64.StdEncoding.Decode(b, s)
		if err != nil {
			return nil, fmt.Errorf("decoding base64 at offset %d: %w", d.pos(), err)
		}
		return b[:n], nil
	case 'n', 't', 'f':
		return nil, d.null(field)
	case '[':
	default:
		return nil, d.typeErr(kindOf(c), field)
	}
	b := []byte{}
	err = d.array(func() error {
		var n int64
		c := d.buf[d.off]
		if c == '-' {
			return d.typeErr("a negative number", field+" element")
		}
		if err := d.integer(&n, 64, field+" element"); err != nil {
			return err
		}
		if n < 0 || n > math.MaxUint8 {
			return d.typeErr("number "+strconv.FormatInt(n, 10), field+" element")
		}
		b = append(b, byte(n))
		return nil
	})
	return b, err
}
