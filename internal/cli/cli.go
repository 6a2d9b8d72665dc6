// Package cli holds what the three stargz-get tools share: the Main wrapper
// (signals, exit codes, error and hint printing), flag parsing with SG_*
// environment variables, and the registry flags.
package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"sync"
	"syscall"

	"github.com/peterbourgon/ff/v3"

	"github.com/stargz-get/stargz-get/internal/heapfloor"
)

// Exit codes shared by the tools.
const (
	ExitOK      = 0
	ExitFailed  = 1 // a record or the run failed
	ExitUsage   = 2 // bad flags or arguments
	EnvPrefix   = "SG"
	versionFlag = "version"
)

// RunFunc is a tool's body: everything but the process.
type RunFunc func(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error

// Main runs a tool as a process and returns its exit code. It sets a heap
// floor first (see internal/heapfloor): the tools' start is allocation
// heavy, and GOGC in the environment still wins.
func Main(tool string, run RunFunc) int {
	heapfloor.Set(heapfloor.DefaultFloor)
	// With SIGPIPE caught, a write to a closed stdout returns EPIPE instead
	// of killing the process; Exit treats that as "the reader has enough".
	signal.Notify(make(chan os.Signal, 1), syscall.SIGPIPE)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	go func() {
		<-ctx.Done()
		stop() // a second Ctrl-C kills hard
	}()
	err := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	return Exit(tool, os.Stderr, err)
}

// Exit prints err (if it needs printing) to stderr and returns the exit
// code for it.
func Exit(tool string, stderr io.Writer, err error) int {
	var usage *UsageError
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp), errors.Is(err, syscall.EPIPE):
		return ExitOK
	case errors.As(err, &usage):
		fmt.Fprintf(stderr, "%s: error: %s\n", tool, usage.Msg)
		fmt.Fprintf(stderr, "%s: hint: run '%s --help' for usage\n", tool, tool)
		return ExitUsage
	case errors.Is(err, ErrRecordsFailed):
		fmt.Fprintf(stderr, "%s: error: %v\n", tool, err)
		return ExitFailed
	case errors.Is(err, context.Canceled):
		fmt.Fprintf(stderr, "%s: interrupted\n", tool)
		return ExitFailed
	}
	fmt.Fprintf(stderr, "%s: error: %v\n", tool, err)
	var h *hinted
	if errors.As(err, &h) {
		fmt.Fprintf(stderr, "%s: hint: %s\n", tool, h.hint)
	}
	return ExitFailed
}

// ErrRecordsFailed is matched (errors.Is) by a run's error when some
// records failed (and were reported as such) while the others were
// processed; see Failedf.
var ErrRecordsFailed = errors.New("records failed")

type failedError struct{ msg string }

func (e *failedError) Error() string        { return e.msg }
func (e *failedError) Is(target error) bool { return target == ErrRecordsFailed }

// Failedf returns an error matching ErrRecordsFailed with a message saying
// how many records failed (exit code 1).
func Failedf(format string, args ...any) error {
	return &failedError{msg: fmt.Sprintf(format, args...)}
}

// UsageError is a mistake in flags or arguments (exit code 2).
type UsageError struct{ Msg string }

func (e *UsageError) Error() string { return e.Msg }

// Usagef returns a UsageError.
func Usagef(format string, args ...any) error {
	return &UsageError{Msg: fmt.Sprintf(format, args...)}
}

type hinted struct {
	err  error
	hint string
}

func (h *hinted) Error() string { return h.err.Error() }
func (h *hinted) Unwrap() error { return h.err }

// WithHint attaches a hint saying what to do, printed after the error.
func WithHint(err error, hint string) error {
	if err == nil {
		return nil
	}
	return &hinted{err: err, hint: hint}
}

// Parse parses args into fs, also from SG_* environment variables (flag
// "plain-http" from SG_PLAIN_HTTP), with flags allowed after positional
// arguments. -h/--help prints usage to stdout and returns flag.ErrHelp;
// --version prints the version and returns flag.ErrHelp.
func Parse(fs *flag.FlagSet, args []string, usage string, stdout io.Writer) ([]string, error) {
	// --version is looked for by hand rather than registered, so that ff
	// does not read it from SG_VERSION.
	for _, a := range args {
		if a == "--" {
			break
		}
		if a == "--"+versionFlag || a == "-"+versionFlag {
			fmt.Fprintf(stdout, "%s %s\n", fs.Name(), Version())
			return nil, flag.ErrHelp
		}
	}
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	err := ff.Parse(fs, args, ff.WithEnvVarPrefix(EnvPrefix))
	var pos []string
	for err == nil && fs.NArg() > 0 {
		pos = append(pos, fs.Arg(0))
		err = fs.Parse(fs.Args()[1:])
	}
	switch {
	case errors.Is(err, flag.ErrHelp):
		fmt.Fprint(stdout, usage)
		return nil, flag.ErrHelp
	case err != nil:
		return nil, Usagef("%v", strings.TrimPrefix(err.Error(), "error parsing commandline arguments: "))
	}
	return pos, nil
}

// Version is the module version the binary was built from, or "devel".
func Version() string {
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "devel"
}

// Logger writes "tool: message" lines to stderr for --verbose; it is safe
// for concurrent use. A nil *Logger discards.
type Logger struct {
	mu   sync.Mutex
	w    io.Writer
	tool string
}

// NewLogger returns a Logger writing to w when on, else nil.
func NewLogger(tool string, w io.Writer, on bool) *Logger {
	if !on {
		return nil
	}
	return &Logger{w: w, tool: tool}
}

// Logf prints one line.
func (l *Logger) Logf(format string, args ...any) {
	if l == nil {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	fmt.Fprintf(l.w, "%s: %s\n", l.tool, fmt.Sprintf(format, args...))
}

// Func returns Logf, or nil for a nil Logger (so libraries skip logging).
func (l *Logger) Func() func(string, ...any) {
	if l == nil {
		return nil
	}
	return l.Logf
}

// IsEPIPE reports whether err is a write to a closed pipe: the reader
// (e.g. head) has what it wants.
func IsEPIPE(err error) bool { return errors.Is(err, syscall.EPIPE) }
