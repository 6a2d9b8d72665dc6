package wire

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/segmentio/encoding/json"
)

// DefaultMaxLineBytes is the longest input line a [Decoder] accepts by
// default. A file entry with large xattrs stays well under it; a longer line
// is more likely a wrong input than a record.
const DefaultMaxLineBytes = 1 << 20

// Encoder writes records as newline-delimited JSON, one object per line.
type Encoder struct {
	w   io.Writer
	buf bytes.Buffer
	enc *json.Encoder
}

// NewEncoder returns an Encoder writing to w. Each Encode is one Write call,
// so records from concurrent encoders sharing w never interleave within a
// line when w is an *os.File.
func NewEncoder(w io.Writer) *Encoder {
	e := &Encoder{w: w}
	e.enc = json.NewEncoder(&e.buf)
	e.enc.SetEscapeHTML(false)
	return e
}

// Encode writes v as one JSON line.
func (e *Encoder) Encode(v any) error {
	e.buf.Reset()
	if err := e.enc.Encode(v); err != nil {
		return fmt.Errorf("encoding record: %w", err)
	}
	_, err := e.w.Write(e.buf.Bytes())
	return err
}

// Validator is implemented by records that can check their required fields.
type Validator interface {
	Validate() error
}

// Decoder reads newline-delimited JSON records. Blank lines are skipped;
// everything else must be one JSON object per line.
type Decoder struct {
	r       *bufio.Reader
	name    string
	line    int
	maxLine int
}

// NewDecoder returns a Decoder reading from r. name says where the input
// comes from ("stdin", a file name) and starts every error message.
func NewDecoder(r io.Reader, name string) *Decoder {
	return &Decoder{r: bufio.NewReaderSize(r, 64<<10), name: name, maxLine: DefaultMaxLineBytes}
}

// SetMaxLineBytes sets the longest line accepted.
func (d *Decoder) SetMaxLineBytes(n int) { d.maxLine = n }

// Line returns the number of the line read last (1-based).
func (d *Decoder) Line() int { return d.line }

// LineError is a decoding error on one input line.
type LineError struct {
	Source string // where the input came from, e.g. "stdin"
	Line   int    // 1-based line number
	Err    error
}

func (e *LineError) Error() string {
	return fmt.Sprintf("%s line %d: %v", e.Source, e.Line, e.Err)
}

func (e *LineError) Unwrap() error { return e.Err }

// Decode reads the next record into v. It returns io.EOF at the end of the
// input, and a *LineError for a line that is too long, not a JSON object,
// or (when v is a Validator) lacks a required field. Unknown fields are
// ignored.
func (d *Decoder) Decode(v any) error {
	line, n, err := d.Next()
	if err != nil {
		return err
	}
	return d.DecodeLine(line, n, v)
}

// Next returns the next line that is not blank, and its number, for
// callers that decode lines elsewhere (several at once) with DecodeLine.
// The line is valid until the next call; io.EOF at the end of the input.
func (d *Decoder) Next() ([]byte, int, error) {
	for {
		line, err := d.readLine()
		if err != nil {
			return nil, d.line, err
		}
		if line = bytes.TrimSpace(line); len(line) > 0 {
			return line, d.line, nil
		}
	}
}

// DecodeLine decodes line number n (from Next) into v, as Decode does.
// It is safe to call from several goroutines at once.
func (d *Decoder) DecodeLine(line []byte, n int, v any) error {
	if line[0] != '{' {
		return d.lineErrorf(n, "not a JSON object: %q", abbreviate(line))
	}
	if err := json.Unmarshal(line, v); err != nil {
		var syn *json.SyntaxError
		var typ *json.UnmarshalTypeError
		switch {
		case errors.As(err, &syn):
			return d.lineErrorf(n, "invalid JSON at byte %d: %v", syn.Offset, err)
		case errors.As(err, &typ):
			return d.lineErrorf(n, "field %q: cannot use JSON %s as %s", typ.Field, jsonKind(typ.Value), typ.Type)
		}
		return d.lineErrorf(n, "%v", err)
	}
	if val, ok := v.(Validator); ok {
		if err := val.Validate(); err != nil {
			return d.lineErrorf(n, "%v", err)
		}
	}
	return nil
}

// jsonKind names the JSON value an UnmarshalTypeError is about as
// encoding/json does ("string", "number 420.5", "object"). The decoder
// used here puts the quoted raw input from that value on in the error
// instead, which may run to the end of a long line.
func jsonKind(value string) string {
	raw, err := strconv.Unquote(value)
	if err != nil {
		return value // already a kind: encoding/json's own error
	}
	raw = strings.TrimSpace(raw)
	if raw == "" {
		return "value"
	}
	switch c := raw[0]; {
	case c == '"':
		return "string"
	case c == '{':
		return "object"
	case c == '[':
		return "array"
	case c == 't' || c == 'f':
		return "bool"
	case c == 'n':
		return "null"
	case c == '-' || c >= '0' && c <= '9':
		end := strings.IndexAny(raw, ",}] \t\r\n")
		if end < 0 {
			end = len(raw)
		}
		return "number " + abbreviate([]byte(raw[:end]))
	}
	return "value"
}

func (d *Decoder) readLine() ([]byte, error) {
	var long []byte
	for {
		frag, err := d.r.ReadSlice('\n')
		if long == nil && err == nil && len(frag) <= d.maxLine+1 {
			d.line++
			return frag, nil
		}
		if n := len(long) + len(bytes.TrimRight(frag, "\r\n")); n > d.maxLine {
			d.line++
			// Skip the rest of the line so the error names the right line.
			for err == bufio.ErrBufferFull {
				_, err = d.r.ReadSlice('\n')
			}
			return nil, d.errorf("line longer than %d bytes", d.maxLine)
		}
		long = append(long, frag...)
		switch {
		case err == bufio.ErrBufferFull:
			continue
		case err == io.EOF:
			if len(long) == 0 {
				return nil, io.EOF
			}
			d.line++
			return long, nil
		case err != nil:
			return nil, fmt.Errorf("reading %s: %w", d.name, err)
		}
		d.line++
		return long, nil
	}
}

func (d *Decoder) errorf(format string, args ...any) error {
	return d.lineErrorf(d.line, format, args...)
}

func (d *Decoder) lineErrorf(n int, format string, args ...any) error {
	return &LineError{Source: d.name, Line: n, Err: fmt.Errorf(format, args...)}
}

func abbreviate(b []byte) string {
	const max = 40
	if len(b) > max {
		return string(b[:max]) + "..."
	}
	return string(b)
}
