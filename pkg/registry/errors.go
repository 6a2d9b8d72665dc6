package registry

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"syscall"

	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
)

// Sentinel errors for what callers tell apart with errors.Is.
var (
	// ErrAuth means the registry refused the credentials (or their absence).
	ErrAuth = errors.New("authentication failed")
	// ErrNotFound means the repository, tag, manifest or blob does not exist.
	ErrNotFound = errors.New("not found")
	// ErrUnreachable means no connection to the registry could be made.
	ErrUnreachable = errors.New("registry unreachable")
	// ErrUnavailable means a request failed every try (see RetryPolicy):
	// the registry kept answering 5xx or 429, or its connections kept
	// breaking or stalling.
	ErrUnavailable = errors.New("registry unavailable")
	// ErrTLS means the registry's TLS certificate could not be verified
	// (see WithCAFile and WithInsecure).
	ErrTLS = errors.New("TLS certificate not trusted")
)

// classify wraps err with the sentinel that describes it, keeping the
// registry's own words. host names the registry for the message.
func classify(host string, err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return unwrapURL(err) // the URL may be a signed blob-storage URL
	}
	var tries *triesError
	if errors.As(err, &tries) {
		return fmt.Errorf("%w: %s: %w", ErrUnavailable, host, tries)
	}
	// Before transport.Error: for a loopback registry go-containerregistry
	// also tries plain HTTP, whose 400 would hide the certificate problem.
	var cverr *tls.CertificateVerificationError
	if errors.As(err, &cverr) {
		return fmt.Errorf("%w for registry %s: %v", ErrTLS, host, cverr.Err)
	}
	var terr *transport.Error
	if errors.As(err, &terr) {
		switch {
		case terr.StatusCode == http.StatusUnauthorized || terr.StatusCode == http.StatusForbidden || hasCode(terr, transport.UnauthorizedErrorCode, transport.DeniedErrorCode):
			return fmt.Errorf("%w for registry %s: %s", ErrAuth, host, registryWords(terr))
		case terr.StatusCode == http.StatusNotFound || hasCode(terr, transport.ManifestUnknownErrorCode, transport.NameUnknownErrorCode, transport.BlobUnknownErrorCode):
			return fmt.Errorf("%w: %s", ErrNotFound, registryWords(terr))
		}
		return fmt.Errorf("registry %s: %s", host, registryWords(terr))
	}
	var uerr *url.Error
	var nerr net.Error
	var opErr *net.OpError
	var dnsErr *net.DNSError
	switch {
	case errors.As(err, &dnsErr), errors.Is(err, syscall.ECONNREFUSED), errors.As(err, &opErr) && opErr.Op == "dial":
		return fmt.Errorf("%w: %s: %v", ErrUnreachable, host, unwrapURL(err))
	case errors.As(err, &nerr) && nerr.Timeout():
		return fmt.Errorf("%w: %s: %v", ErrUnreachable, host, unwrapURL(err))
	case errors.As(err, &uerr):
		return fmt.Errorf("registry %s: %v", host, unwrapURL(err))
	}
	return err
}

func hasCode(terr *transport.Error, codes ...transport.ErrorCode) bool {
	for _, d := range terr.Errors {
		for _, c := range codes {
			if d.Code == c {
				return true
			}
		}
	}
	return false
}

// registryWords is the registry's own error text without the request URL
// (which go-containerregistry puts first, and which may carry signed query
// parameters).
func registryWords(terr *transport.Error) string {
	var parts []string
	for _, d := range terr.Errors {
		s := string(d.Code)
		if d.Message != "" {
			s += ": " + d.Message
		}
		parts = append(parts, s)
	}
	if len(parts) == 0 {
		return fmt.Sprintf("HTTP %d %s", terr.StatusCode, http.StatusText(terr.StatusCode))
	}
	return strings.Join(parts, "; ")
}

func unwrapURL(err error) error {
	var uerr *url.Error
	if errors.As(err, &uerr) {
		return uerr.Err
	}
	return err
}
