package testenv

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/bcrypt"
)

// RegistryModule is the Go package of the CNCF distribution registry binary
// that the tests run.
const RegistryModule = "github.com/distribution/distribution/v3/cmd/registry"

// RegistryVersion is the pinned version of RegistryModule. Changing it
// changes the cache path, so the new version is built on first use.
const RegistryVersion = "v3.1.2"

// RegistryBinEnv names the environment variable that, when set, gives the
// path of a registry binary to use instead of the cached build.
const RegistryBinEnv = "SG_REGISTRY_BIN"

const (
	// registryStartTimeout bounds the wait for a started registry to answer
	// GET /v2/; a cold start on a loaded CI machine takes about a second.
	registryStartTimeout = 20 * time.Second
	// registryPollInterval is how often the readiness probe is repeated.
	registryPollInterval = 50 * time.Millisecond
	// registryStartAttempts is how many fresh ports are tried when another
	// process grabs the probed port before the registry binds it.
	registryStartAttempts = 5
)

// RegistryBinary returns the path of the distribution registry binary,
// building it once with "go install RegistryModule@RegistryVersion" into
// the user cache directory when needed. The environment variable
// SG_REGISTRY_BIN overrides the lookup with an existing executable.
//
// The first build takes a minute or two; concurrent callers (several test
// binaries of one "go test ./...") wait for one build and share it.
func RegistryBinary() (string, error) {
	if p := os.Getenv(RegistryBinEnv); p != "" {
		if err := checkExecutable(p); err != nil {
			return "", fmt.Errorf("checking %s: %w", RegistryBinEnv, err)
		}
		return p, nil
	}
	base, err := os.UserCacheDir()
	if err != nil {
		base = os.TempDir()
	}
	dir := filepath.Join(base, "stargz-get", "registry-"+RegistryVersion)
	bin := filepath.Join(dir, "registry")
	if checkExecutable(bin) == nil {
		return bin, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("creating registry cache dir: %w", err)
	}
	// Serialize builds across processes; whoever gets the lock second finds
	// the binary in place.
	lock, err := os.OpenFile(filepath.Join(dir, "build.lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return "", fmt.Errorf("opening registry build lock: %w", err)
	}
	defer lock.Close()
	if err := lockFile(lock); err != nil {
		return "", fmt.Errorf("locking registry build: %w", err)
	}
	if checkExecutable(bin) == nil {
		return bin, nil
	}
	if err := buildRegistry(dir, bin); err != nil {
		return "", err
	}
	return bin, nil
}

// buildRegistry runs go install into a fresh directory under dir and
// renames the result to bin.
func buildRegistry(dir, bin string) error {
	gobin, err := os.MkdirTemp(dir, "build-")
	if err != nil {
		return fmt.Errorf("creating registry build dir: %w", err)
	}
	defer os.RemoveAll(gobin)
	goCmd, err := goTool()
	if err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "testenv: building distribution registry %s (once) ...\n", RegistryVersion)
	cmd := exec.Command(goCmd, "install", RegistryModule+"@"+RegistryVersion)
	cmd.Dir = gobin // outside any module or workspace
	cmd.Env = append(os.Environ(), "GOBIN="+gobin, "GOWORK=off", "GOFLAGS=")
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("building registry %s@%s: %w\n%s", RegistryModule, RegistryVersion, err, out)
	}
	built := filepath.Join(gobin, "registry")
	if runtime.GOOS == "windows" {
		built += ".exe"
	}
	if err := os.Rename(built, bin); err != nil {
		// Another process may have put its build in place meanwhile.
		if checkExecutable(bin) == nil {
			return nil
		}
		return fmt.Errorf("installing registry binary: %w", err)
	}
	return nil
}

// goTool returns the go command to run: the one on PATH ("go test" puts
// GOROOT/bin first), else the one of the toolchain this binary was built by.
func goTool() (string, error) {
	if p, err := exec.LookPath("go"); err == nil {
		return p, nil
	}
	if root := runtime.GOROOT(); root != "" { //nolint:staticcheck // only a fallback
		p := filepath.Join(root, "bin", "go")
		if checkExecutable(p) == nil {
			return p, nil
		}
	}
	return "", errors.New("finding go command: not on PATH")
}

// checkExecutable returns an error unless p is a regular file with an
// execute bit set.
func checkExecutable(p string) error {
	fi, err := os.Stat(p)
	if err != nil {
		return err
	}
	if !fi.Mode().IsRegular() || fi.Mode().Perm()&0o111 == 0 {
		return fmt.Errorf("%s is not an executable file", p)
	}
	return nil
}

// RegistryOptions configures StartRegistry.
type RegistryOptions struct {
	// Users maps user names to passwords. When it is non-empty the registry
	// requires HTTP Basic auth (htpasswd with bcrypt hashes) for every
	// request, including GET /v2/.
	Users map[string]string
}

// Registry is a running distribution registry serving plain HTTP on a
// loopback port, with its storage in a temporary directory.
type Registry struct {
	// Host is the registry's address, "127.0.0.1:PORT", as used in image
	// references.
	Host string

	dir     string
	logPath string
	cmd     *exec.Cmd
	exited  chan struct{} // closed when the process has been waited for
	waitErr error         // valid after exited is closed

	closeOnce sync.Once
	closeErr  error
}

// StartRegistry starts a distribution registry (see RegistryBinary) on a
// free loopback port and waits until it answers. The caller must call
// Close. On Linux the registry is also killed when the calling process
// exits.
func StartRegistry(opts RegistryOptions) (*Registry, error) {
	bin, err := RegistryBinary()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "stargz-get-registry-")
	if err != nil {
		return nil, fmt.Errorf("creating registry dir: %w", err)
	}
	if err := os.Mkdir(filepath.Join(dir, "data"), 0o755); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("creating registry storage dir: %w", err)
	}
	htpasswd := ""
	if len(opts.Users) > 0 {
		htpasswd = filepath.Join(dir, "htpasswd")
		if err := writeHtpasswd(htpasswd, opts.Users); err != nil {
			os.RemoveAll(dir)
			return nil, err
		}
	}
	var lastErr error
	for attempt := 0; attempt < registryStartAttempts; attempt++ {
		r, err := startRegistryOnce(bin, dir, htpasswd)
		if err == nil {
			return r, nil
		}
		lastErr = err
		if !errors.Is(err, errPortTaken) {
			break
		}
	}
	os.RemoveAll(dir)
	return nil, fmt.Errorf("starting registry: %w", lastErr)
}

// errPortTaken reports that the registry exited because its port was in
// use; StartRegistry then retries with another port.
var errPortTaken = errors.New("port already in use")

func startRegistryOnce(bin, dir, htpasswd string) (*Registry, error) {
	return startRegistryProcess(bin, dir, func(host string) []byte { return registryConfig(dir, host, htpasswd) })
}

// waitReady polls GET /v2/ until the registry answers 200 (anonymous) or
// 401 (auth required) with the distribution API header, the process exits,
// or registryStartTimeout passes.
func (r *Registry) waitReady() error {
	client := &http.Client{
		Timeout:   time.Second,
		Transport: &http.Transport{DisableKeepAlives: true, Proxy: nil},
	}
	deadline := time.Now().Add(registryStartTimeout)
	for {
		select {
		case <-r.exited:
			return fmt.Errorf("registry exited early: %v", r.waitErr)
		default:
		}
		resp, err := client.Get("http://" + r.Host + "/v2/")
		if err == nil {
			resp.Body.Close()
			ours := resp.Header.Get("Docker-Distribution-Api-Version") == "registry/2.0"
			if ours && (resp.StatusCode == http.StatusOK || resp.StatusCode == http.StatusUnauthorized) {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("registry at %s not ready after %v (last probe: %v)", r.Host, registryStartTimeout, err)
		}
		select {
		case <-r.exited:
		case <-time.After(registryPollInterval):
		}
	}
}

// stop kills the process and waits for it; the temp dir stays.
func (r *Registry) stop() {
	select {
	case <-r.exited:
		return
	default:
	}
	_ = r.cmd.Process.Kill()
	<-r.exited
}

// Close stops the registry and removes its storage. It is safe to call
// more than once.
func (r *Registry) Close() error {
	r.closeOnce.Do(func() {
		r.stop()
		if err := os.RemoveAll(r.dir); err != nil {
			r.closeErr = fmt.Errorf("removing registry dir: %w", err)
		}
	})
	return r.closeErr
}

// Log returns what the registry has written to stdout and stderr so far,
// for error messages. It is empty after Close.
func (r *Registry) Log() string {
	b, err := os.ReadFile(r.logPath)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Sprintf("(reading registry log: %v)", err)
	}
	return string(b)
}

// freePort returns a loopback TCP port that was free a moment ago.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("finding a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// registryEnv is the environment of the registry process: ours, minus
// REGISTRY_* variables (they would override the config file), with
// OpenTelemetry export off (v3 otherwise tries to send traces to an OTLP
// collector on localhost:4318 for every request).
func registryEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "REGISTRY_") || strings.HasPrefix(kv, "OTEL_") {
			continue
		}
		env = append(env, kv)
	}
	return append(env, "OTEL_TRACES_EXPORTER=none", "OTEL_METRICS_EXPORTER=none", "OTEL_LOGS_EXPORTER=none")
}

// registryConfig renders the registry's config.yml. YAML accepts JSON
// strings, so values are quoted with encoding/json.
func registryConfig(dir, host, htpasswd string) []byte {
	q := func(s string) string {
		b, _ := json.Marshal(s)
		return string(b)
	}
	secret := make([]byte, 16)
	_, _ = rand.Read(secret)
	var b bytes.Buffer
	fmt.Fprintf(&b, `version: 0.1
log:
  level: warn
  formatter: text
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: %s
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: %s
  secret: %s
`, q(filepath.Join(dir, "data")), q(host), q(hex.EncodeToString(secret)))
	if htpasswd != "" {
		fmt.Fprintf(&b, `auth:
  htpasswd:
    realm: %s
    path: %s
`, q("stargz-get-test"), q(htpasswd))
	}
	return b.Bytes()
}

// writeHtpasswd writes users with bcrypt hashes (minimum cost, for speed)
// in htpasswd format.
func writeHtpasswd(path string, users map[string]string) error {
	names := make([]string, 0, len(users))
	for u := range users {
		if u == "" || strings.ContainsAny(u, ":\n") {
			return fmt.Errorf("writing htpasswd: invalid user name %q", u)
		}
		names = append(names, u)
	}
	sort.Strings(names)
	var b bytes.Buffer
	for _, u := range names {
		h, err := bcrypt.GenerateFromPassword([]byte(users[u]), bcrypt.MinCost)
		if err != nil {
			return fmt.Errorf("hashing password of %s: %w", u, err)
		}
		fmt.Fprintf(&b, "%s:%s\n", u, h)
	}
	if err := os.WriteFile(path, b.Bytes(), 0o600); err != nil {
		return fmt.Errorf("writing htpasswd: %w", err)
	}
	return nil
}

// startRegistryProcess starts the registry binary bin in dir with the
// config that config renders for its listen address, and waits until it
// answers. The config is left to the caller (htpasswd, token auth).
func startRegistryProcess(bin, dir string, config func(host string) []byte) (*Registry, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	host := fmt.Sprintf("127.0.0.1:%d", port)
	cfgPath := filepath.Join(dir, "config.yml")
	if err := os.WriteFile(cfgPath, config(host), 0o644); err != nil {
		return nil, fmt.Errorf("writing registry config: %w", err)
	}
	logPath := filepath.Join(dir, "registry.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		return nil, fmt.Errorf("creating registry log: %w", err)
	}
	defer logFile.Close()
	cmd := exec.Command(bin, "serve", cfgPath)
	cmd.Dir = dir
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	cmd.Env = registryEnv()
	setDeathSignal(cmd)
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("running %s: %w", bin, err)
	}
	r := &Registry{Host: host, dir: dir, logPath: logPath, cmd: cmd, exited: make(chan struct{})}
	go func() {
		r.waitErr = cmd.Wait()
		close(r.exited)
	}()
	if err := r.waitReady(); err != nil {
		log := r.Log()
		r.stop()
		if strings.Contains(log, "address already in use") {
			return nil, errPortTaken
		}
		return nil, fmt.Errorf("%w; registry log:\n%s", err, log)
	}
	return r, nil
}
