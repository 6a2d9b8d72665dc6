package registry_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/stargz-get/stargz-get/internal/testenv"
)

// The htpasswd registry's user.
const (
	testUser     = "alice"
	testPassword = "s3cret"
)

// pushTimeout bounds pushing the fixtures (about 17 MB) to both registries.
const pushTimeout = 2 * time.Minute

// env is what the tests run against: the fixture images, pushed to an
// anonymous registry and to one behind htpasswd Basic auth.
type env struct {
	fx      *testenv.Fixtures
	anon    *testenv.Registry
	private *testenv.Registry
}

var (
	envOnce sync.Once
	envVal  *env
	envErr  error
)

// testEnv starts the registries and pushes the fixtures on first use, so
// that tests not needing them (reference parsing) run without them. TestMain
// closes them at the end.
func testEnv(t *testing.T) *env {
	t.Helper()
	envOnce.Do(func() { envVal, envErr = startEnv() })
	if envErr != nil {
		t.Fatal(envErr)
	}
	return envVal
}

func startEnv() (*env, error) {
	fx, err := testenv.BuildFixtures(filepath.Join(os.TempDir(), "stargz-get-fixtures"))
	if err != nil {
		return nil, err
	}
	e := &env{fx: fx}
	var wg sync.WaitGroup
	var anonErr, privErr error
	wg.Go(func() { e.anon, anonErr = testenv.StartRegistry(testenv.RegistryOptions{}) })
	wg.Go(func() {
		e.private, privErr = testenv.StartRegistry(testenv.RegistryOptions{Users: map[string]string{testUser: testPassword}})
	})
	wg.Wait()
	if err := errors.Join(anonErr, privErr); err != nil {
		e.close()
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), pushTimeout)
	defer cancel()
	wg.Go(func() { _, anonErr = fx.Push(ctx, e.anon.Host, "", "") })
	wg.Go(func() { _, privErr = fx.Push(ctx, e.private.Host, testUser, testPassword) })
	wg.Wait()
	if err := errors.Join(anonErr, privErr); err != nil {
		e.close()
		return nil, fmt.Errorf("pushing fixtures: %w", err)
	}
	return e, nil
}

func (e *env) close() {
	for _, r := range []*testenv.Registry{e.anon, e.private} {
		if r == nil {
			continue
		}
		if err := r.Close(); err != nil {
			fmt.Fprintln(os.Stderr, err)
		}
	}
}

// tokenEnvironment is the fixtures on a registry with token auth (as
// Docker Hub, GHCR and Quay have), served over plain HTTP and over TLS. The
// multi-platform index is public: anyone may pull it without credentials.
type tokenEnvironment struct {
	fx  *testenv.Fixtures
	reg *testenv.TokenRegistry
}

var (
	tokenOnce sync.Once
	tokenVal  *tokenEnvironment
	tokenErr  error
)

func tokenEnv(t *testing.T) *tokenEnvironment {
	t.Helper()
	e := testEnv(t) // for the fixtures
	tokenOnce.Do(func() {
		reg, err := testenv.StartTokenRegistry(testenv.TokenOptions{
			Users:  map[string]string{testUser: testPassword},
			Public: []string{e.fx.Index.Name},
			TLS:    true,
		})
		if err != nil {
			tokenErr = err
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), pushTimeout)
		defer cancel()
		if _, err := e.fx.Push(ctx, reg.Host, testUser, testPassword); err != nil {
			reg.Close()
			tokenErr = fmt.Errorf("pushing fixtures to the token registry: %w", err)
			return
		}
		tokenVal = &tokenEnvironment{fx: e.fx, reg: reg}
	})
	if tokenErr != nil {
		t.Fatal(tokenErr)
	}
	return tokenVal
}

func TestMain(m *testing.M) {
	code := m.Run()
	if envVal != nil {
		envVal.close()
	}
	if tokenVal != nil {
		if err := tokenVal.reg.Close(); err != nil {
			fmt.Fprintln(os.Stderr, err)
		}
	}
	os.Exit(code)
}
