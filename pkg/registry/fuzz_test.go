package registry_test

import (
	"testing"

	"github.com/stargz-get/stargz-get/pkg/registry"
)

// FuzzParseReference: parsing never panics, and a reference it accepts
// names a registry and a repository and parses again to itself.
func FuzzParseReference(f *testing.F) {
	for _, s := range []string{
		"ubuntu", "ubuntu:24.04", "library/ubuntu@sha256:" + "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
		"localhost:5000/a/b:t", "localhost/a", "[::1]:5000/a:t", "127.0.0.1:5000/x", "ghcr.io/stargz-containers/node:13.13.0-esgz",
		"UPPER/Case", "a//b", "a:", "@sha256:", "host:port/x", ":tag", "a/b/c/d/e:f", "x@sha256:zz",
	} {
		f.Add(s, false)
		f.Add(s, true)
	}
	f.Fuzz(func(t *testing.T, s string, plainHTTP bool) {
		ref, err := registry.ParseReference(s, plainHTTP)
		if err != nil {
			return
		}
		if ref.Context().RegistryStr() == "" || ref.Context().RepositoryStr() == "" {
			t.Fatalf("%q parsed to %q with an empty registry or repository", s, ref.Name())
		}
		again, err := registry.ParseReference(ref.Name(), plainHTTP)
		if err != nil {
			t.Fatalf("%q parsed to %q, which does not parse: %v", s, ref.Name(), err)
		}
		if again.Name() != ref.Name() {
			t.Fatalf("%q parsed to %q, which parses to %q", s, ref.Name(), again.Name())
		}
	})
}
