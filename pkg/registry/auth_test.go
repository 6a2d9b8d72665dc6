package registry_test

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stargz-get/stargz-get/internal/testenv"
	"github.com/stargz-get/stargz-get/pkg/registry"
)

// checkNoSecrets fails if text shows any of secrets.
func checkNoSecrets(t *testing.T, what, text string, secrets ...string) {
	t.Helper()
	for _, s := range secrets {
		if s != "" && strings.Contains(text, s) {
			t.Errorf("%s shows %q:\n%s", what, s, text)
		}
	}
}

// The Docker token flow against the real registry with token auth: a pull
// token for the repository is fetched with the credentials (or
// anonymously) and sent as a Bearer token; wrong or missing credentials
// are ErrAuth without the password in the message.
func TestTokenAuth(t *testing.T) {
	e := tokenEnv(t)
	host := e.reg.Host
	private := e.fx.GoTree.Ref(host)
	public := e.fx.Index.Ref(host)
	const wrongPassword = "hunter2-not-it"
	tests := []struct {
		name    string
		ref     string
		opts    []registry.Option
		wantErr error
	}{
		{name: "anonymous, private repository", ref: private, wantErr: registry.ErrAuth},
		{name: "anonymous, public repository", ref: public},
		{name: "wrong password", ref: private, opts: []registry.Option{registry.WithCredential(testUser, wrongPassword)}, wantErr: registry.ErrAuth},
		{name: "unknown user", ref: private, opts: []registry.Option{registry.WithCredential("mallory", wrongPassword)}, wantErr: registry.ErrAuth},
		{name: "wrong password from keychain", ref: private, opts: []registry.Option{registry.WithKeychain(staticKeychain{testUser, wrongPassword})}, wantErr: registry.ErrAuth},
		{name: "right password", ref: private, opts: []registry.Option{registry.WithCredential(testUser, testPassword)}},
		{name: "right password from keychain", ref: private, opts: []registry.Option{registry.WithKeychain(staticKeychain{testUser, testPassword})}},
		{name: "right password, public repository", ref: public, opts: []registry.Option{registry.WithCredential(testUser, testPassword)}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx := testCtx(t)
			var log logLines
			c := newClient(t, append(tc.opts, registry.WithLogf(log.logf))...)
			img, err := c.Image(ctx, parseRef(t, tc.ref), registry.DefaultPlatform)
			checkNoSecrets(t, "log", strings.Join(log.all(), "\n"), testPassword, wrongPassword, "Authorization", "Bearer ey")
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("Image: %v, want %v", err, tc.wantErr)
				}
				if !strings.Contains(err.Error(), host) {
					t.Errorf("error %q does not name the registry", err)
				}
				checkNoSecrets(t, "error", err.Error(), testPassword, wrongPassword)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			l := img.Layers[0]
			b, err := c.Blob(ctx, img.Ref.Context(), l.Digest, l.Size)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := readRange(ctx, b, l.Size-51, 51); err != nil {
				t.Errorf("ReadRange of the footer: %v", err)
			}
		})
	}
}

// A long read that outlives its pull token: tokens are good for 2 s, and
// several readers keep reading ranges of one blob for over 5 s. Each
// expired token is answered with 401 and replaced transparently, and every
// byte comes out right.
func TestTokenExpiry(t *testing.T) {
	e := tokenEnv(t)
	e.reg.SetTokenTTL(2 * time.Second)
	defer e.reg.SetTokenTTL(testenv.DefaultTokenTTL)
	ctx := testCtx(t)
	var log logLines
	c := newClient(t, registry.WithCredential(testUser, testPassword), registry.WithLogf(log.logf))
	l := e.fx.GoTree.Layers[0]
	b := openBlob(t, ctx, c, e.fx.GoTree.Ref(e.reg.Host), l)
	want := fixtureBytes(t, l, 0, l.Size)
	issued := e.reg.TokensIssued()
	const (
		readers = 4
		span    = 4500 * time.Millisecond
		chunk   = 64 << 10
	)
	start := time.Now()
	var wg sync.WaitGroup
	for r := range readers {
		wg.Go(func() {
			off := int64(r) * (l.Size / readers)
			for time.Since(start) < span {
				n := min(int64(chunk), l.Size-off)
				got, err := readRange(ctx, b, off, n)
				if err != nil {
					t.Errorf("reader %d: ReadRange(%d, %d) after %v: %v", r, off, n, time.Since(start).Round(time.Millisecond), err)
					return
				}
				if !bytes.Equal(got, want[off:off+n]) {
					t.Errorf("reader %d: ReadRange(%d, %d): %s", r, off, n, describeDiff(want[off:off+n], got))
					return
				}
				off = (off + n) % l.Size
				time.Sleep(100 * time.Millisecond)
			}
		})
	}
	wg.Wait()
	text := strings.Join(log.all(), "\n")
	if n := e.reg.TokensIssued() - issued; n < 2 {
		t.Errorf("%d tokens issued during %v with tokens of 2s, want at least 2", n, span)
	}
	if !strings.Contains(text, "401 Unauthorized") {
		t.Errorf("log shows no 401 for an expired token")
	}
	checkNoSecrets(t, "log", text, testPassword, "Bearer ey")
}

// credentialHelper writes a docker credential helper named
// docker-credential-NAME into dir that answers "get" for any server with
// user and password.
func credentialHelper(t *testing.T, dir, name, user, password string) {
	t.Helper()
	script := fmt.Sprintf(`#!/bin/sh
read server
case "$1" in
get) printf '{"ServerURL":"%%s","Username":"%s","Secret":"%s"}\n' "$server" ;;
*) echo "unsupported" >&2; exit 1 ;;
esac
`, user, password)
	if err := os.WriteFile(filepath.Join(dir, "docker-credential-"+name), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
}

// authJSON is a docker config.json or containers auth.json with "auths"
// entries for keys (user:password each) and extra top-level fields.
func authJSON(t *testing.T, path string, auths map[string]string, extra string) {
	t.Helper()
	var entries []string
	for key, cred := range auths {
		entries = append(entries, fmt.Sprintf("%q: {\"auth\": %q}", key, b64(cred)))
	}
	body := "{\"auths\": {" + strings.Join(entries, ", ") + "}" + extra + "}\n"
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
}

// Where credentials come from, and in which order: explicit credentials,
// then docker's config.json (credential helpers before "auths"), then
// containers auth.json; the first source with credentials for the
// registry wins, and an empty docker config does not hide auth.json.
// Neither the log nor errors ever show a secret.
func TestCredentialSources(t *testing.T) {
	e := tokenEnv(t)
	host := e.reg.Host
	repoKey := host + "/" + e.fx.GoTree.Name
	right := testUser + ":" + testPassword
	// Each wrong password is different, so a leak names its source.
	wrong := func(where string) string { return testUser + ":wrong-" + where }
	type files struct {
		docker     map[string]string // DOCKER_CONFIG/config.json auths
		dockerRest string            // extra config.json fields
		home       map[string]string // ~/.docker/config.json auths (DOCKER_CONFIG unset)
		authFile   map[string]string // REGISTRY_AUTH_FILE
		runtime    map[string]string // $XDG_RUNTIME_DIR/containers/auth.json
		config     map[string]string // $XDG_CONFIG_HOME/containers/auth.json
	}
	tests := []struct {
		name       string
		files      files
		credential string // WithCredential USER:PASSWORD
		wantErr    error
		wantSource string // in the log
	}{
		{name: "nothing", wantErr: registry.ErrAuth, wantSource: "no credentials found"},
		{name: "docker auths", files: files{docker: map[string]string{host: right}}, wantSource: "config.json"},
		{name: "docker auths under ~/.docker", files: files{home: map[string]string{host: right}}, wantSource: ".docker/config.json"},
		{name: "docker auths wrong", files: files{docker: map[string]string{host: wrong("docker")}}, wantErr: registry.ErrAuth},
		{
			name:       "credential beats docker config",
			files:      files{docker: map[string]string{host: wrong("docker")}},
			credential: right, wantSource: "using the credentials given",
		},
		{
			name:       "credential is used even when wrong",
			files:      files{docker: map[string]string{host: right}},
			credential: wrong("flag"), wantErr: registry.ErrAuth,
		},
		{
			name:       "credHelpers beat auths",
			files:      files{docker: map[string]string{host: wrong("docker")}, dockerRest: fmt.Sprintf(`, "credHelpers": {%q: "sgtest"}`, host)},
			wantSource: "docker-credential-sgtest",
		},
		{
			name:       "credsStore",
			files:      files{docker: map[string]string{}, dockerRest: `, "credsStore": "sgtest"`},
			wantSource: "credsStore: docker-credential-sgtest",
		},
		{
			name:       "docker config without the registry falls through to REGISTRY_AUTH_FILE",
			files:      files{docker: map[string]string{"other.example": wrong("other")}, authFile: map[string]string{host: right}},
			wantSource: "auth.json",
		},
		{
			name:  "docker config beats REGISTRY_AUTH_FILE",
			files: files{docker: map[string]string{host: right}, authFile: map[string]string{host: wrong("authfile")}},
		},
		{
			name:       "auth.json repository entry beats registry entry",
			files:      files{authFile: map[string]string{repoKey: right, host: wrong("hostkey")}},
			wantSource: "auth.json",
		},
		{
			name:       "auth.json namespace entry",
			files:      files{authFile: map[string]string{host + "/fixtures": right, host + "/other": wrong("ns")}},
			wantSource: "auth.json",
		},
		{
			name:  "REGISTRY_AUTH_FILE beats XDG_RUNTIME_DIR",
			files: files{authFile: map[string]string{host: right}, runtime: map[string]string{host: wrong("runtime")}},
		},
		{
			name:       "XDG_RUNTIME_DIR auth.json",
			files:      files{runtime: map[string]string{host: right}, config: map[string]string{host: wrong("config")}},
			wantSource: "containers/auth.json",
		},
		{
			name:       "XDG_CONFIG_HOME auth.json",
			files:      files{config: map[string]string{host: right}},
			wantSource: "containers/auth.json",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			bin := filepath.Join(dir, "bin")
			if err := os.Mkdir(bin, 0o755); err != nil {
				t.Fatal(err)
			}
			credentialHelper(t, bin, "sgtest", testUser, testPassword)
			t.Setenv("PATH", bin+string(os.PathListSeparator)+os.Getenv("PATH"))
			t.Setenv("HOME", filepath.Join(dir, "home"))
			t.Setenv("XDG_CONFIG_HOME", filepath.Join(dir, "xdgconfig"))
			t.Setenv("XDG_RUNTIME_DIR", filepath.Join(dir, "run"))
			t.Setenv("DOCKER_AUTH_CONFIG", "")
			os.Unsetenv("DOCKER_AUTH_CONFIG")
			t.Setenv("DOCKER_CONFIG", "")
			os.Unsetenv("DOCKER_CONFIG")
			t.Setenv("REGISTRY_AUTH_FILE", "")
			os.Unsetenv("REGISTRY_AUTH_FILE")
			f := tc.files
			if f.docker != nil {
				t.Setenv("DOCKER_CONFIG", filepath.Join(dir, "docker"))
				authJSON(t, filepath.Join(dir, "docker", "config.json"), f.docker, f.dockerRest)
			}
			if f.home != nil {
				authJSON(t, filepath.Join(dir, "home", ".docker", "config.json"), f.home, "")
			}
			if f.authFile != nil {
				t.Setenv("REGISTRY_AUTH_FILE", filepath.Join(dir, "auth.json"))
				authJSON(t, filepath.Join(dir, "auth.json"), f.authFile, "")
			}
			if f.runtime != nil {
				authJSON(t, filepath.Join(dir, "run", "containers", "auth.json"), f.runtime, "")
			}
			if f.config != nil {
				authJSON(t, filepath.Join(dir, "xdgconfig", "containers", "auth.json"), f.config, "")
			}

			var log logLines
			opts := []registry.Option{registry.WithKeychain(registry.DefaultKeychain), registry.WithLogf(log.logf)}
			if tc.credential != "" {
				user, pass, _ := strings.Cut(tc.credential, ":")
				opts = append(opts, registry.WithCredential(user, pass))
			}
			c := newClient(t, opts...)
			_, err := c.Image(testCtx(t), parseRef(t, e.fx.GoTree.Ref(host)), registry.DefaultPlatform)
			text := strings.Join(log.all(), "\n")
			if !errors.Is(err, tc.wantErr) {
				t.Errorf("Image: %v, want %v; log:\n%s", err, tc.wantErr, text)
			}
			if tc.wantSource != "" && !strings.Contains(text, tc.wantSource) {
				t.Errorf("log does not say the credentials came from %q:\n%s", tc.wantSource, text)
			}
			secrets := []string{testPassword, "wrong-", b64(right)}
			checkNoSecrets(t, "log", text, secrets...)
			if err != nil {
				checkNoSecrets(t, "error", err.Error(), secrets...)
			}
		})
	}
}

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }
