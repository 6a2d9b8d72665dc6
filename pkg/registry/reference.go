package registry

import (
	"fmt"
	"slices"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// ParseReference parses an image reference the way docker and crane do:
// "ubuntu" is index.docker.io/library/ubuntu:latest, "host:5000/app" names
// a registry with a port, and "app@sha256:..." pins a manifest digest.
// plainHTTP makes the registry be spoken to over plain HTTP even when it is
// not on loopback.
func ParseReference(s string, plainHTTP bool) (name.Reference, error) {
	var opts []name.Option
	// docker takes a bare "localhost" as a registry host on plain HTTP;
	// go-containerregistry only knows "localhost:PORT".
	if plainHTTP || s == "localhost" || strings.HasPrefix(s, "localhost/") {
		opts = append(opts, name.Insecure)
	}
	ref, err := name.ParseReference(s, opts...)
	if err != nil {
		return nil, fmt.Errorf("parsing image reference %q: %w", s, err)
	}
	return ref, nil
}

// ParsePlatform parses "os/arch[/variant]" as used by --platform.
func ParsePlatform(s string) (v1.Platform, error) {
	parts := strings.Split(s, "/")
	if len(parts) < 2 || len(parts) > 3 || slices.Contains(parts, "") {
		return v1.Platform{}, fmt.Errorf("invalid platform %q: want os/arch or os/arch/variant, e.g. linux/amd64 or linux/arm/v7", s)
	}
	p := v1.Platform{OS: parts[0], Architecture: parts[1]}
	if len(parts) == 3 {
		p.Variant = parts[2]
	}
	return p, nil
}

// FormatPlatform formats p as "os/arch[/variant]".
func FormatPlatform(p *v1.Platform) string {
	if p == nil || p.OS == "" {
		return ""
	}
	s := p.OS + "/" + p.Architecture
	if p.Variant != "" {
		s += "/" + p.Variant
	}
	return s
}
