package registry

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
)

// anonFirst is the transport of a repository for which no credentials are
// configured. The handshake (ping, then a token if the registry wants
// one) costs one or two round trips before the first request; registries
// that need no token (a local registry, a mirror, a CI cache) answer
// without it. So while the handshake runs, requests go out anonymously
// at once (retried as any request is); an answer other than success, a
// redirect, 416 or a refusal to serve several ranges (a 401 asking for a
// token, a TLS port answering plain HTTP, a 404 that may mean "not for
// you") sends the request again through the transport the handshake
// makes, which all requests use once it is there.
type anonFirst struct {
	c    *Client
	repo name.Repository
	// direct sends anonymous requests, with retries.
	direct http.RoundTripper

	mu sync.Mutex
	hs *handshake // the one in flight, or the last one
}

// handshake is one ping-and-token exchange; rt and err are set before
// done is closed.
type handshake struct {
	done chan struct{}
	rt   http.RoundTripper
	err  error
}

// newAnonFirst starts the handshake for repo and returns its anonFirst
// transport, made a transport.Wrapper, which go-containerregistry's remote
// package uses as it is (no handshake of its own, no retries on top of
// ours). Only transport.NewWithContext makes those, so it is given a
// transport that answers its ping itself: 200 (no auth) over the
// repository's scheme.
func newAnonFirst(ctx context.Context, c *Client, repo name.Repository) (http.RoundTripper, error) {
	a := &anonFirst{c: c, repo: repo, direct: c.base}
	a.handshake()
	return transport.NewWithContext(ctx, repo.Registry, authn.Anonymous, pingAnswered{a}, nil)
}

// pingAnswered answers GET /v2/ itself, for newAnonFirst.
type pingAnswered struct{ a *anonFirst }

func (p pingAnswered) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Method != http.MethodGet || req.URL.Path != "/v2/" || req.URL.Host != p.a.repo.RegistryStr() {
		return p.a.RoundTrip(req)
	}
	if req.URL.Scheme != p.a.repo.Scheme() {
		return nil, fmt.Errorf("%s is reached over %s", req.URL.Host, p.a.repo.Scheme())
	}
	return &http.Response{
		Status: "200 OK", StatusCode: http.StatusOK, Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header: http.Header{}, Body: http.NoBody, Request: req,
	}, nil
}

// handshake returns the handshake in flight or the last one that
// succeeded, starting one when there is neither: a failed handshake is
// tried again by the next request.
func (a *anonFirst) handshake() *handshake {
	a.mu.Lock()
	defer a.mu.Unlock()
	if h := a.hs; h != nil {
		select {
		case <-h.done:
			if h.err == nil {
				return h
			}
		default:
			return h
		}
	}
	h := &handshake{done: make(chan struct{})}
	a.hs = h
	go func() {
		// Not the first request's context: its end must not fail the
		// handshake every later request waits for.
		h.rt, h.err = transport.NewWithContext(context.Background(), a.repo.Registry, authn.Anonymous, a.c.base, []string{a.repo.Scope(transport.PullScope)})
		close(h.done)
	}()
	return h
}

func (a *anonFirst) RoundTrip(req *http.Request) (*http.Response, error) {
	h := a.handshake()
	select {
	case <-h.done:
	default:
		resp, err := a.direct.RoundTrip(req)
		var tries *triesError
		switch {
		case err == nil && (resp.StatusCode < 400 || resp.StatusCode == http.StatusRequestedRangeNotSatisfiable || multiRefusal(req, resp)):
			return resp, nil
		case errors.As(err, &tries):
			return nil, err // the registry answered, and was retried already
		}
		select {
		case <-h.done:
		case <-req.Context().Done():
			if resp != nil {
				drain(resp.Body)
			}
			return nil, req.Context().Err()
		}
		if resp != nil {
			// Without a handshake, a registry's 404 (a tag that is not
			// there) says more than the failed handshake; a 401, a 403
			// or a TLS port's 400 to plain HTTP does not.
			if h.err != nil && resp.StatusCode == http.StatusNotFound {
				return resp, nil
			}
			drain(resp.Body)
		}
	}
	if h.err != nil {
		return nil, h.err
	}
	return h.rt.RoundTrip(req)
}

// multiRefusal reports whether resp is a registry refusing to serve the
// several ranges req asks for (GCR answers 400, GHCR's CDN 501): the
// handshake would not change that answer, and the caller learns from it
// to ask for one range at a time.
func multiRefusal(req *http.Request, resp *http.Response) bool {
	return (resp.StatusCode == http.StatusBadRequest || resp.StatusCode == http.StatusNotImplemented) &&
		strings.Contains(req.Header.Get("Range"), ",")
}
