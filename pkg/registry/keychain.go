package registry

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/docker/cli/cli/config"
	"github.com/docker/cli/cli/config/configfile"
	"github.com/docker/cli/cli/config/credentials"
	"github.com/docker/cli/cli/config/types"
	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
)

// DefaultKeychain finds credentials where docker and podman keep them. The
// first of these with credentials for the registry wins:
//
//  1. docker's config.json in $DOCKER_CONFIG, or in ~/.docker when that is
//     unset: a "credHelpers" entry for the registry or the "credsStore"
//     (both run docker-credential-NAME from PATH), else "auths";
//     DOCKER_AUTH_CONFIG is honoured as docker does.
//  2. containers auth.json: $REGISTRY_AUTH_FILE when set; otherwise
//     ${XDG_RUNTIME_DIR}/containers/auth.json, then
//     ${XDG_CONFIG_HOME:-~/.config}/containers/auth.json. As in podman, an
//     entry may name a repository or namespace ("quay.io/org/app",
//     "quay.io/org") as well as a registry, and the most specific wins;
//     "credHelpers" entries are honoured too.
//
// Unlike go-containerregistry's authn.DefaultKeychain, a docker config that
// exists but has nothing for the registry does not hide auth.json. With no
// credentials anywhere, requests are anonymous.
var DefaultKeychain authn.Keychain = authn.NewMultiKeychain(dockerKeychain{}, containersKeychain{})

// sourcedAuth is an Authenticator that remembers where it was found, for
// --verbose (never the secret itself).
type sourcedAuth struct {
	authn.Authenticator
	source string
}

func found(cfg types.AuthConfig, source string) (authn.Authenticator, bool) {
	if cfg.Username == "" && cfg.Password == "" && cfg.Auth == "" && cfg.IdentityToken == "" && cfg.RegistryToken == "" {
		return nil, false
	}
	return &sourcedAuth{
		Authenticator: authn.FromConfig(authn.AuthConfig{
			Username:      cfg.Username,
			Password:      cfg.Password,
			Auth:          cfg.Auth,
			IdentityToken: cfg.IdentityToken,
			RegistryToken: cfg.RegistryToken,
		}),
		source: source,
	}, true
}

// dockerKeychain reads docker's config.json the way the docker CLI does.
type dockerKeychain struct{}

func (dockerKeychain) Resolve(target authn.Resource) (authn.Authenticator, error) {
	dir := os.Getenv(config.EnvOverrideConfigDir)
	if dir == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			return authn.Anonymous, nil
		}
		dir = filepath.Join(home, ".docker")
	}
	path := filepath.Join(dir, config.ConfigFileName)
	if !fileExists(path) && os.Getenv(configfile.DockerEnvConfigKey) == "" {
		return authn.Anonymous, nil
	}
	// An explicit directory: config.Load("") would use a directory cached
	// at first use.
	cf, err := config.Load(dir)
	if err != nil {
		return nil, fmt.Errorf("reading docker config: %w", err)
	}
	// As docker and go-containerregistry: the repository, then the registry.
	for _, key := range []string{target.String(), target.RegistryStr()} {
		if key == name.DefaultRegistry {
			key = authn.DefaultAuthKey
		}
		cfg, err := cf.GetAuthConfig(key)
		if err != nil {
			return nil, fmt.Errorf("reading docker credentials for %s (%s): %w", key, describeStore(cf, path, key), err)
		}
		if a, ok := found(cfg, describeStore(cf, path, key)); ok {
			return a, nil
		}
	}
	return authn.Anonymous, nil
}

// describeStore names where cf keeps key's credentials.
func describeStore(cf *configfile.ConfigFile, path, key string) string {
	helper := cf.CredentialHelpers[key]
	what := "credHelpers"
	if helper == "" {
		helper, what = cf.CredentialsStore, "credsStore"
	}
	if helper != "" {
		return fmt.Sprintf("%s (%s: docker-credential-%s)", path, what, helper)
	}
	if os.Getenv(configfile.DockerEnvConfigKey) != "" {
		return path + " or " + configfile.DockerEnvConfigKey
	}
	return path
}

// containersKeychain reads the auth.json of podman, buildah and skopeo.
type containersKeychain struct{}

// containersAuthFiles lists the auth.json files to look in, in order.
func containersAuthFiles() []string {
	if p := os.Getenv("REGISTRY_AUTH_FILE"); p != "" {
		return []string{p}
	}
	var files []string
	if d := os.Getenv("XDG_RUNTIME_DIR"); d != "" {
		files = append(files, filepath.Join(d, "containers", "auth.json"))
	}
	cfgDir := os.Getenv("XDG_CONFIG_HOME")
	if cfgDir == "" {
		if home, err := os.UserHomeDir(); err == nil {
			cfgDir = filepath.Join(home, ".config")
		}
	}
	if cfgDir != "" {
		files = append(files, filepath.Join(cfgDir, "containers", "auth.json"))
	}
	return files
}

func (containersKeychain) Resolve(target authn.Resource) (authn.Authenticator, error) {
	host := target.RegistryStr()
	if host == name.DefaultRegistry {
		host = "docker.io" // podman's key for Docker Hub
	}
	// Most specific first: host/a/b, host/a, host.
	var keys []string
	if repo, ok := strings.CutPrefix(target.String(), target.RegistryStr()+"/"); ok {
		for p := host + "/" + repo; strings.Contains(p, "/"); p = p[:strings.LastIndex(p, "/")] {
			keys = append(keys, p)
		}
	}
	keys = append(keys, host)
	for _, path := range containersAuthFiles() {
		if !fileExists(path) {
			continue
		}
		cf, err := loadConfigFile(path)
		if err != nil {
			return nil, err
		}
		if helper := cf.CredentialHelpers[host]; helper != "" {
			cfg, err := cf.GetAuthConfig(host)
			source := fmt.Sprintf("%s (credHelpers: docker-credential-%s)", path, helper)
			if err != nil {
				return nil, fmt.Errorf("reading credentials for %s (%s): %w", host, source, err)
			}
			if a, ok := found(cfg, source); ok {
				return a, nil
			}
			continue
		}
		auths := map[string]types.AuthConfig{}
		for k, ac := range cf.GetAuthConfigs() {
			if strings.Contains(k, "://") {
				k = credentials.ConvertToHostname(k)
			}
			if k == name.DefaultRegistry {
				k = "docker.io"
			}
			auths[k] = ac
		}
		for _, key := range keys {
			if a, ok := found(auths[key], path); ok {
				return a, nil
			}
		}
	}
	return authn.Anonymous, nil
}

func loadConfigFile(path string) (*configfile.ConfigFile, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", path, err)
	}
	defer f.Close()
	cf, err := config.LoadFromReader(f)
	if err != nil {
		return nil, fmt.Errorf("parsing %s: %w", path, err)
	}
	return cf, nil
}

func fileExists(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && !fi.IsDir() || err != nil && !errors.Is(err, os.ErrNotExist)
}
