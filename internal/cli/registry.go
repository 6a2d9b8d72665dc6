package cli

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/stargz-get/stargz-get/internal/source"
	"github.com/stargz-get/stargz-get/pkg/registry"
)

// AllPlatforms is the --platform value that makes sg-layers list every
// platform of a multi-platform image.
const AllPlatforms = "all"

// maxPasswordBytes bounds what --password-stdin reads: registry tokens
// (ECR, GCR) are a few KiB.
const maxPasswordBytes = 64 << 10

// RegistryFlags are the flags every tool has for reaching registries.
type RegistryFlags struct {
	Credential    string
	Username      string
	PasswordStdin bool
	PlainHTTP     bool
	Insecure      bool
	CAFile        string
	Platform      string
	Verbose       bool

	// Stdin is where --password-stdin reads the password. A tool sets it
	// only when its stdin is free, that is when its input came as
	// arguments; left nil, --password-stdin is refused, because stdin
	// carries the input records.
	Stdin io.Reader
}

// RegistryUsage documents RegistryFlags for the tools' help texts.
const RegistryUsage = `Registry options:
  --credential USER:PASSWORD  log in with these credentials   SG_CREDENTIAL
  --username USER --password-stdin
                              log in as USER with the password read from
                              stdin (only when IMAGE is given as an argument)
                                         SG_USERNAME, SG_PASSWORD_STDIN
                              Without these, credentials come from docker's
                              config.json ($DOCKER_CONFIG or ~/.docker, with
                              its credential helpers), then from containers
                              auth.json ($REGISTRY_AUTH_FILE, or
                              $XDG_RUNTIME_DIR/containers/auth.json, then
                              ~/.config/containers/auth.json); else anonymous.
  --platform OS/ARCH[/VARIANT]  platform to pick from a multi-platform image
                              (default linux/amd64; sg-layers also takes
                              "all")                                SG_PLATFORM
  --plain-http                speak plain HTTP to the registry; without it,
                              HTTPS is tried first and plain HTTP is used only
                              for loopback and private addresses  SG_PLAIN_HTTP
  --ca-file FILE              also trust the PEM CA certificates in FILE
                                                                    SG_CA_FILE
  --insecure                  skip TLS certificate verification     SG_INSECURE
  -v, --verbose               log HTTP requests, retries and decisions to
                              stderr (never secrets)                SG_VERBOSE
  -h, --help                  show this help
  --version                   print the version
`

// Register adds the flags to fs.
func (f *RegistryFlags) Register(fs *flag.FlagSet) {
	fs.StringVar(&f.Credential, "credential", "", "USER:PASSWORD")
	fs.StringVar(&f.Username, "username", "", "user name for --password-stdin")
	fs.BoolVar(&f.PasswordStdin, "password-stdin", false, "read the password from stdin")
	fs.BoolVar(&f.PlainHTTP, "plain-http", false, "plain HTTP")
	fs.BoolVar(&f.Insecure, "insecure", false, "skip TLS verification")
	fs.StringVar(&f.CAFile, "ca-file", "", "PEM CA certificates to trust")
	fs.StringVar(&f.Platform, "platform", "linux/amd64", "platform")
	fs.BoolVar(&f.Verbose, "verbose", false, "verbose")
	fs.BoolVar(&f.Verbose, "v", false, "verbose")
}

// AllPlatforms reports whether --platform all was given.
func (f *RegistryFlags) AllPlatforms() bool { return f.Platform == AllPlatforms }

// TakeAllPlatforms is for sg-layers, which lists every platform itself:
// it reports whether --platform all was given and, if so, sets Platform
// back to the default so that the rest (NewSource) accepts the flags.
func (f *RegistryFlags) TakeAllPlatforms() bool {
	if !f.AllPlatforms() {
		return false
	}
	f.Platform = registry.FormatPlatform(&registry.DefaultPlatform)
	return true
}

// PlatformValue parses --platform. "all" is refused here: only sg-layers
// takes it, and checks AllPlatforms first.
func (f *RegistryFlags) PlatformValue() (v1.Platform, error) {
	if f.AllPlatforms() {
		return v1.Platform{}, Usagef("--platform all is for sg-layers, which lists every platform; here name one platform, e.g. linux/arm64")
	}
	p, err := registry.ParsePlatform(f.Platform)
	if err != nil {
		return v1.Platform{}, Usagef("--platform: %v", err)
	}
	return p, nil
}

// Client builds the registry client the flags describe.
func (f *RegistryFlags) Client(log *Logger) (*registry.Client, error) {
	opts := []registry.Option{
		registry.WithPlainHTTP(f.PlainHTTP),
		registry.WithInsecure(f.Insecure),
		registry.WithUserAgent("stargz-get/" + Version()),
		registry.WithLogf(log.Func()),
	}
	user, pass, given, err := f.credential()
	if err != nil {
		return nil, err
	}
	if given != "" {
		log.Logf("credentials: from %s, for every registry", given)
		opts = append(opts, registry.WithCredential(user, pass))
	}
	if f.CAFile != "" {
		opts = append(opts, registry.WithCAFile(f.CAFile))
	}
	c, err := registry.New(opts...)
	if err != nil {
		return nil, Usagef("%v", err)
	}
	return c, nil
}

// credential returns the credentials given with flags or SG_* variables,
// and which flags gave them ("" when none did).
func (f *RegistryFlags) credential() (user, pass, given string, err error) {
	switch {
	case f.PasswordStdin && f.Credential != "":
		return "", "", "", Usagef("--password-stdin and --credential (or SG_CREDENTIAL) both give a password; use one")
	case f.PasswordStdin && f.Username == "":
		return "", "", "", Usagef("--password-stdin needs --username USER")
	case f.Username != "" && !f.PasswordStdin:
		return "", "", "", Usagef("--username needs --password-stdin (or give --credential USER:PASSWORD)")
	case f.PasswordStdin && f.Stdin == nil:
		return "", "", "", Usagef("--password-stdin reads stdin, which carries the input records here; give the image as arguments, or use SG_CREDENTIAL")
	case f.PasswordStdin:
		b, err := io.ReadAll(io.LimitReader(f.Stdin, maxPasswordBytes+1))
		if err != nil {
			return "", "", "", fmt.Errorf("--password-stdin: reading stdin: %w", err)
		}
		if len(b) > maxPasswordBytes {
			return "", "", "", Usagef("--password-stdin: more than %d bytes on stdin", maxPasswordBytes)
		}
		// As docker login: the whole of stdin, less one trailing newline.
		pw := strings.TrimSuffix(strings.TrimSuffix(string(b), "\n"), "\r")
		if pw == "" {
			return "", "", "", Usagef("--password-stdin: no password on stdin")
		}
		return f.Username, pw, "--username and --password-stdin", nil
	case f.Credential != "":
		user, pass, ok := strings.Cut(f.Credential, ":")
		if !ok || user == "" {
			// Never echo the value: it may be a password.
			return "", "", "", Usagef("--credential must be USER:PASSWORD")
		}
		return user, pass, "--credential (or SG_CREDENTIAL)", nil
	}
	return "", "", "", nil
}

// Hint adds what to do about common registry errors.
func Hint(err error) error {
	switch {
	case errors.Is(err, source.ErrNotLazy):
		return WithHint(err, source.NotLazyHint)
	case errors.Is(err, source.ErrBlob):
		return WithHint(err, source.BlobHint)
	case errors.Is(err, registry.ErrAuth):
		return WithHint(err, "check the user name and password given with --credential (or SG_CREDENTIAL, or --username and --password-stdin), or log in with 'docker login' or 'podman login'")
	case errors.Is(err, registry.ErrTLS):
		return WithHint(err, "pass the CA certificate that signed the registry's certificate with --ca-file FILE, or skip verification with --insecure")
	case errors.Is(err, registry.ErrUnavailable):
		return WithHint(err, "the registry, or the network to it, kept failing; try again later (-v shows every try)")
	case errors.Is(err, registry.ErrUnreachable):
		return WithHint(err, "check the registry host and port, and that it is running; use --plain-http for a registry without TLS")
	case errors.Is(err, registry.ErrNotFound):
		return WithHint(err, "check the repository name and tag (sg-layers IMAGE lists what an image has)")
	}
	return err
}
