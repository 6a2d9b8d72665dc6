package testenv

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"
)

// ScriptTokenTTL is how long the tokens of the testscripts' token registry
// are good for: short, so that any script running longer than this, and
// the long fetch of auth_token_expiry.txtar, renews its token.
const ScriptTokenTTL = 2 * time.Second

// slowRate is the speed of SLOWGOTREE's blob bodies: the compile binary's
// 3 MB range requests take over a second each, so fetching it outlives a
// token of ScriptTokenTTL.
const slowRate = 2_500_000

// ScriptRegistries are the registries of the testscripts beyond the
// anonymous and the htpasswd one: the fixtures on a registry with token
// auth (over plain HTTP and TLS), and fault proxies in front of it and of
// the anonymous registry. Vars are what the scripts see:
//
//	TOKENREG        host:port of the token-auth registry (alice:s3cret;
//	                tokens good for ScriptTokenTTL); fixtures/multiarch is
//	                public (anonymous pull)
//	TOKENGOTREE     GOTREE on TOKENREG (needs credentials)
//	TOKENMULTIARCH  MULTIARCH on TOKENREG (public)
//	TLSREG          TOKENREG over HTTPS, with a certificate signed by TLSCA
//	TLSCA           PEM file of the test CA
//	TLSMULTIARCH    MULTIARCH on TLSREG
//	SLOWGOTREE      TOKENGOTREE through a proxy sending blobs at 2.5 MB/s
//	FLAKYGOTREE     GOTREE through a proxy failing the first tries: one 503
//	                on the manifest; on blobs one 429 with Retry-After: 1,
//	                one reset, two bodies cut after 100000 bytes
//	DEADGOTREE      GOTREE through a proxy answering 503 to every blob GET
//	REDIRGOTREE     TOKENGOTREE through a proxy redirecting blob GETs to
//	                blob storage at STORAGE (signed URLs; it refuses
//	                requests carrying Authorization)
//	NORANGEGOTREE   GOTREE through a proxy that drops Range headers
//	RANGE416GOTREE  GOTREE through a proxy answering 416 to ranged blob GETs
//	NOMULTIGOTREE   GOTREE through a proxy that answers requests for
//	                several ranges with the whole blob, as object stores do
//	MULTI400GOTREE  GOTREE through a proxy answering 400 to requests for
//	                several ranges, as GCR does
//	MULTI501GOTREE  the same with 501
//	FIRSTRANGEGOTREE GOTREE through a proxy that serves only the first of
//	                several ranges, as a plain 206
//	CDN501GOTREE    GOTREE through a proxy redirecting blob GETs to blob
//	                storage (CDN501STORAGE) that answers 501 to requests
//	                for several ranges, as GHCR's blob CDN does
//	FLIPZSTD        ZSTDCHUNKED through a proxy flipping a byte of every
//	                ranged read of the layer's frames (not of its TOC)
//	FLAKYZSTD       ZSTDCHUNKED through a proxy cutting the first two
//	                bodies of frame reads over 100000 bytes
//	FLIPREG         host:port of a proxy in front of the anonymous registry
//	                that flips blob byte 5 (in a gzip header: the layer still
//	                inflates, its digest does not match)
//	COUNTA...COUNTF host:port of proxies in front of the anonymous
//	                registry that count the blob bytes they send (see
//	                Counters)
//	NORANGECOUNT    the same, dropping Range headers from blob GETs
//
// Each proxy's faults are used up by the requests that come first, so
// each proxy serves one script.
type ScriptRegistries struct {
	Vars []string
	// Counters are the COUNT* proxies by name.
	Counters map[string]*FaultProxy

	closers []func() error
}

// StartScriptRegistries starts the ScriptRegistries, pushes fx to the token
// registry, and puts proxies in front of the anonymous registry at anon
// where fx is pushed already. The caller must call Close.
func StartScriptRegistries(ctx context.Context, fx *Fixtures, anon string) (_ *ScriptRegistries, err error) {
	s := &ScriptRegistries{}
	defer func() {
		if err != nil {
			s.Close()
		}
	}()
	tr, err := StartTokenRegistry(TokenOptions{
		Users:  map[string]string{"alice": "s3cret"},
		Public: []string{fx.Index.Name},
		TTL:    ScriptTokenTTL,
		TLS:    true,
	})
	if err != nil {
		return nil, err
	}
	s.closers = append(s.closers, tr.Close)
	if _, err := fx.Push(ctx, tr.Host, "alice", "s3cret"); err != nil {
		return nil, fmt.Errorf("pushing fixtures to the token registry: %w", err)
	}
	add := func(k, v string) { s.Vars = append(s.Vars, k+"="+v) }
	add("TOKENREG", tr.Host)
	add("TOKENGOTREE", fx.GoTree.Ref(tr.Host))
	add("TOKENMULTIARCH", fx.Index.Ref(tr.Host))
	add("TLSREG", tr.TLSHost)
	add("TLSCA", tr.CAFile)
	add("TLSMULTIARCH", fx.Index.Ref(tr.TLSHost))

	proxy := func(name, target string, rules ...Rule) (*FaultProxy, error) {
		p, err := StartFaultProxy(target)
		if err != nil {
			return nil, err
		}
		s.closers = append(s.closers, p.Close)
		p.Add(rules...)
		add(name, fx.GoTree.Ref(p.Host))
		return p, nil
	}
	blobs := func(times int, f Fault) Rule { return Rule{Match: MatchBlobs, Times: times, Fault: f} }
	if _, err := proxy("SLOWGOTREE", tr.Host, blobs(0, Fault{Rate: slowRate})); err != nil {
		return nil, err
	}
	if _, err := proxy("FLAKYGOTREE", anon,
		Rule{Match: MatchManifests, Times: 1, Fault: Fault{Status: http.StatusServiceUnavailable}},
		blobs(1, Fault{Status: http.StatusTooManyRequests, RetryAfter: "1"}),
		blobs(1, Fault{Reset: true}),
		Rule{Match: MatchAll(MatchBlobs, bigRange), Times: 2, Fault: Fault{CutAfter: 100_000}},
	); err != nil {
		return nil, err
	}
	if _, err := proxy("DEADGOTREE", anon, blobs(0, Fault{Status: http.StatusServiceUnavailable})); err != nil {
		return nil, err
	}
	redir, err := proxy("REDIRGOTREE", tr.Host, blobs(0, Fault{Redirect: true}))
	if err != nil {
		return nil, err
	}
	add("STORAGE", redir.Storage.Host)
	if _, err := proxy("NORANGEGOTREE", anon, blobs(0, Fault{IgnoreRange: true})); err != nil {
		return nil, err
	}
	if _, err := proxy("RANGE416GOTREE", anon, Rule{Match: MatchAll(MatchBlobs, MatchRanged), Fault: Fault{Status: http.StatusRequestedRangeNotSatisfiable}}); err != nil {
		return nil, err
	}
	// A byte of the gzip header's MTIME flipped: the layer still inflates,
	// but its digest does not match.
	flip, err := StartFaultProxy(anon)
	if err != nil {
		return nil, err
	}
	s.closers = append(s.closers, flip.Close)
	fromStart := func(r *http.Request) bool {
		rng := r.Header.Get("Range")
		return rng == "" || strings.HasPrefix(rng, "bytes=0-")
	}
	flip.Add(Rule{Match: MatchAll(MatchBlobs, fromStart), Fault: Fault{Flip: 5}})
	add("FLIPREG", flip.Host)
	s.Counters = map[string]*FaultProxy{}
	for _, n := range []string{"COUNTA", "COUNTB", "COUNTC", "COUNTD", "COUNTE", "COUNTF", "COUNTG"} {
		p, err := StartFaultProxy(anon)
		if err != nil {
			return nil, err
		}
		s.closers = append(s.closers, p.Close)
		s.Counters[n] = p
		add(n, p.Host)
	}
	noRange, err := StartFaultProxy(anon)
	if err != nil {
		return nil, err
	}
	s.closers = append(s.closers, noRange.Close)
	noRange.Add(Rule{Match: MatchBlobs, Fault: Fault{IgnoreRange: true}})
	s.Counters["NORANGECOUNT"] = noRange
	add("NORANGECOUNT", noRange.Host)
	multiRange := func(r *http.Request) bool { return strings.Contains(r.Header.Get("Range"), ",") }
	if _, err := proxy("NOMULTIGOTREE", anon, Rule{Match: MatchAll(MatchBlobs, multiRange), Fault: Fault{IgnoreRange: true}}); err != nil {
		return nil, err
	}
	for _, status := range []int{http.StatusBadRequest, http.StatusNotImplemented} {
		if _, err := proxy(fmt.Sprintf("MULTI%dGOTREE", status), anon, Rule{Match: MatchAll(MatchBlobs, multiRange), Fault: Fault{Status: status}}); err != nil {
			return nil, err
		}
	}
	if _, err := proxy("FIRSTRANGEGOTREE", anon, Rule{Match: MatchAll(MatchBlobs, multiRange), Fault: Fault{FirstRange: true}}); err != nil {
		return nil, err
	}
	cdn, err := proxy("CDN501GOTREE", anon, blobs(0, Fault{Redirect: true}))
	if err != nil {
		return nil, err
	}
	cdn.Storage.RefuseMultiRange(http.StatusNotImplemented)
	add("CDN501STORAGE", cdn.Storage.Host)
	if err := s.zstdProxies(fx, anon); err != nil {
		return nil, err
	}
	return s, nil
}

// bigRange matches requests for more than 100000 bytes (or the whole
// blob), whose bodies a CutAfter of 100000 can cut.
func bigRange(r *http.Request) bool {
	var a, z int64
	if _, err := fmt.Sscanf(r.Header.Get("Range"), "bytes=%d-%d", &a, &z); err != nil {
		return r.Header.Get("Range") == ""
	}
	return z-a+1 > 100_000
}

// Close stops everything StartScriptRegistries started.
func (s *ScriptRegistries) Close() error {
	var errs []error
	for i := len(s.closers) - 1; i >= 0; i-- {
		errs = append(errs, s.closers[i]())
	}
	return errors.Join(errs...)
}
