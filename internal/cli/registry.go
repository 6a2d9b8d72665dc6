package cli

import (
	"errors"
	"flag"

	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/stargz-get/stargz-get/pkg/registry"
)

// RegistryFlags are the flags every tool has for reaching registries.
type RegistryFlags struct {
	Credential string
	PlainHTTP  bool
	Insecure   bool
	Platform   string
	Verbose    bool
}

// RegistryUsage documents RegistryFlags for the tools' help texts.
const RegistryUsage = `Registry options:
  --credential USER:PASSWORD  log in with these credentials instead of the
                              docker config (~/.docker/config.json, credential
                              helpers)                            SG_CREDENTIAL
  --platform OS/ARCH[/VARIANT]  platform to pick from a multi-platform image
                              (default linux/amd64)                 SG_PLATFORM
  --plain-http                speak plain HTTP to the registry; without it,
                              HTTPS is tried first and plain HTTP is used only
                              for loopback and private addresses  SG_PLAIN_HTTP
  --insecure                  skip TLS certificate verification     SG_INSECURE
  -v, --verbose               log HTTP requests and decisions to stderr
                                                                     SG_VERBOSE
  -h, --help                  show this help
  --version                   print the version
`

// Register adds the flags to fs.
func (f *RegistryFlags) Register(fs *flag.FlagSet) {
	fs.StringVar(&f.Credential, "credential", "", "USER:PASSWORD")
	fs.BoolVar(&f.PlainHTTP, "plain-http", false, "plain HTTP")
	fs.BoolVar(&f.Insecure, "insecure", false, "skip TLS verification")
	fs.StringVar(&f.Platform, "platform", "linux/amd64", "platform")
	fs.BoolVar(&f.Verbose, "verbose", false, "verbose")
	fs.BoolVar(&f.Verbose, "v", false, "verbose")
}

// PlatformValue parses --platform.
func (f *RegistryFlags) PlatformValue() (v1.Platform, error) {
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
	if f.Credential != "" {
		user, pass, ok := strings.Cut(f.Credential, ":")
		if !ok || user == "" {
			// Never echo the value: it may be a password.
			return nil, Usagef("--credential must be USER:PASSWORD")
		}
		opts = append(opts, registry.WithCredential(user, pass))
	}
	return registry.New(opts...)
}

// Hint adds what to do about common registry errors.
func Hint(err error) error {
	switch {
	case errors.Is(err, registry.ErrAuth):
		return WithHint(err, "check the user name and password given with --credential (or SG_CREDENTIAL), or log in with 'docker login'")
	case errors.Is(err, registry.ErrUnreachable):
		return WithHint(err, "check the registry host and port, and that it is running; use --plain-http for a registry without TLS")
	case errors.Is(err, registry.ErrNotFound):
		return WithHint(err, "check the repository name and tag (sg-layers IMAGE lists what an image has)")
	}
	return err
}
