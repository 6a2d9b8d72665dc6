package testenv

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Fault is what a FaultProxy does to a request instead of, or on top of,
// passing it to the registry. Fields combine where that makes sense
// (Latency with anything; IgnoreRange with CutAfter).
type Fault struct {
	// Latency delays the request before anything else happens.
	Latency time.Duration
	// Status answers with this status (and a registry-style JSON error
	// body) without asking the registry: 429, 500, 503, 416, ...
	Status int
	// RetryAfter is the Retry-After header sent with Status.
	RetryAfter string
	// Reset cuts the connection (TCP RST) without answering.
	Reset bool
	// CutAfter passes the request on, then cuts the connection (TCP RST)
	// after this many bytes of the response body. Zero means no cut.
	CutAfter int64
	// StallAfter and Stall pass the request on, send the headers and the
	// first StallAfter bytes of the body, then send nothing for Stall (or
	// until the client hangs up), then the rest.
	StallAfter int64
	Stall      time.Duration
	// Rate limits the response body to this many bytes per second, like a
	// slow link; zero means no limit.
	Rate int64
	// IgnoreRange drops the Range header before passing the request on,
	// so the registry answers 200 with the whole blob, as some registries
	// and CDNs do.
	IgnoreRange bool
	// FirstRange keeps only the first range of a multi-range Range header,
	// so the registry answers a plain 206 with that range alone, as some
	// servers do.
	FirstRange bool
	// ContentRange rewrites the Content-Range header of a 206 response.
	ContentRange func(string) string
	// Flip XORs the response body byte at this offset with 0xff, as a
	// corrupting middlebox or a bad disk would; zero means no flip (the first byte cannot be flipped).
	// Use with a Match that selects ranged blob GETs.
	Flip int64
	// Redirect answers a blob GET the registry authorizes with a 307 to
	// the proxy's BlobStorage (a signed URL), as registries backed by S3,
	// GCS or a CDN do. The registry's own answer to an unauthorized GET
	// (401 with a challenge) is passed on unchanged.
	Redirect bool
}

// Rule gives a Fault to the requests it matches.
type Rule struct {
	// Match selects requests; nil matches all. See MatchBlobs and friends.
	Match func(*http.Request) bool
	// Times is how many matching requests get the fault; 0 means all of
	// them.
	Times int
	// Fault is what happens to them.
	Fault Fault
}

// MatchBlobs matches GETs and HEADs of blobs.
func MatchBlobs(r *http.Request) bool { return blobURLPath.MatchString(r.URL.Path) }

// MatchManifests matches requests for manifests.
func MatchManifests(r *http.Request) bool { return strings.Contains(r.URL.Path, "/manifests/") }

// MatchToken matches requests to the token endpoint of a TokenRegistry.
func MatchToken(r *http.Request) bool { return r.URL.Path == TokenPath }

// MatchRanged matches requests with a Range header.
func MatchRanged(r *http.Request) bool { return r.Header.Get("Range") != "" }

// MatchAll matches requests all of ms match.
func MatchAll(ms ...func(*http.Request) bool) func(*http.Request) bool {
	return func(r *http.Request) bool {
		for _, m := range ms {
			if !m(r) {
				return false
			}
		}
		return true
	}
}

var blobURLPath = regexp.MustCompile(`^/v2/(.+)/blobs/(sha256:[0-9a-f]{64})$`)

// Seen is one request a FaultProxy handled.
type Seen struct {
	Method, Path, Range string
	// Auth says the request carried an Authorization header.
	Auth bool
	// Fault names the faults applied ("" for none), e.g. "status 503".
	Fault string
	// Status is the status sent to the client (0 when the connection was
	// cut before the headers).
	Status int
	// Start is when the request arrived, Answered when its response
	// headers (or the cut) went out.
	Start, Answered time.Time
}

// FaultProxy is an HTTP proxy in front of a registry that injects the
// faults of real networks and registries into chosen requests: resets
// before and in the middle of a body, 5xx and 429 answers with
// Retry-After, ignored Range headers, wrong Content-Range, stalls, latency,
// and redirects of blob GETs to a separate blob storage that refuses
// requests carrying the registry's Authorization header.
//
// It keeps the client's Host header, so a TokenRegistry behind it names
// the proxy in its token realm and token requests pass through it too.
type FaultProxy struct {
	// Host is the proxy's address, "127.0.0.1:PORT": use it in image
	// references in place of the registry's.
	Host string
	// Storage is where Redirect faults send blob GETs.
	Storage *BlobStorage

	target   string
	srv      *http.Server
	upstream *http.Transport

	mu    sync.Mutex
	rules []*ruleState
	seen  []Seen

	bodyBytes atomic.Int64
	blobBytes atomic.Int64
}

// BlobBytes returns how many bytes of blob bodies the proxy has sent,
// and with reset set starts counting again from zero.
func (p *FaultProxy) BlobBytes(reset bool) int64 {
	if reset {
		return p.blobBytes.Swap(0)
	}
	return p.blobBytes.Load()
}

// BodyBytes returns how many response body bytes of proxied requests the
// proxy has sent to clients.
func (p *FaultProxy) BodyBytes() int64 { return p.bodyBytes.Load() }

type ruleState struct {
	Rule
	used int
}

// StartFaultProxy starts a FaultProxy (and its BlobStorage) in front of
// the registry at target ("127.0.0.1:PORT", plain HTTP). The caller must
// call Close.
func StartFaultProxy(target string) (*FaultProxy, error) {
	storage, err := StartBlobStorage()
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		storage.Close()
		return nil, fmt.Errorf("listening for the fault proxy: %w", err)
	}
	p := &FaultProxy{
		Host:     ln.Addr().String(),
		Storage:  storage,
		target:   target,
		upstream: &http.Transport{Proxy: nil, MaxIdleConnsPerHost: 64, DisableCompression: true},
	}
	p.srv = &http.Server{Handler: http.HandlerFunc(p.serve), ReadHeaderTimeout: 10 * time.Second, ErrorLog: quietLog()}
	go p.srv.Serve(ln) //nolint:errcheck // ends with Close
	return p, nil
}

// Add appends rules. Each request gets the fault of the first rule that
// matches it and has not used up its Times.
func (p *FaultProxy) Add(rules ...Rule) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, r := range rules {
		p.rules = append(p.rules, &ruleState{Rule: r})
	}
}

// Clear removes all rules and forgets the requests seen.
func (p *FaultProxy) Clear() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.rules, p.seen = nil, nil
}

// Seen returns the requests handled so far, in the order they arrived.
func (p *FaultProxy) Seen() []Seen {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]Seen(nil), p.seen...)
}

// Close stops the proxy and its storage.
func (p *FaultProxy) Close() error {
	err := p.srv.Close()
	p.upstream.CloseIdleConnections()
	p.Storage.Close()
	return err
}

// pick returns the fault for r and records r.
func (p *FaultProxy) pick(r *http.Request) (Fault, int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.seen = append(p.seen, Seen{Method: r.Method, Path: r.URL.Path, Range: r.Header.Get("Range"), Auth: r.Header.Get("Authorization") != "", Start: time.Now()})
	i := len(p.seen) - 1
	for _, rs := range p.rules {
		if (rs.Match == nil || rs.Match(r)) && (rs.Times == 0 || rs.used < rs.Times) {
			rs.used++
			return rs.Fault, i
		}
	}
	return Fault{}, i
}

func (p *FaultProxy) note(i int, fault string, status int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.seen[i].Fault, p.seen[i].Status, p.seen[i].Answered = fault, status, time.Now()
}

func (p *FaultProxy) serve(w http.ResponseWriter, r *http.Request) {
	f, i := p.pick(r)
	var applied []string
	done := func(status int) { p.note(i, strings.Join(applied, ", "), status) }
	if f.Latency > 0 {
		applied = append(applied, "latency "+f.Latency.String())
		select {
		case <-time.After(f.Latency):
		case <-r.Context().Done():
			done(0)
			return
		}
	}
	switch {
	case f.Reset:
		applied = append(applied, "reset")
		done(0)
		reset(w, false)
		return
	case f.Status != 0:
		applied = append(applied, "status "+strconv.Itoa(f.Status))
		if f.RetryAfter != "" {
			w.Header().Set("Retry-After", f.RetryAfter)
		}
		registryError(w, f.Status, "UNAVAILABLE", "injected by the fault proxy")
		done(f.Status)
		return
	case f.Redirect && r.Method == http.MethodGet && MatchBlobs(r):
		applied = append(applied, "redirect")
		done(p.redirect(w, r))
		return
	}

	out := r.Clone(r.Context())
	out.RequestURI = ""
	out.URL.Scheme, out.URL.Host = "http", p.target
	out.Host = r.Host // the registry builds its token realm from it
	if f.IgnoreRange && out.Header.Get("Range") != "" {
		applied = append(applied, "ignore Range")
		out.Header.Del("Range")
	}
	if rng := out.Header.Get("Range"); f.FirstRange && strings.Contains(rng, ",") {
		applied = append(applied, "first range only")
		first, _, _ := strings.Cut(rng, ",")
		out.Header.Set("Range", first)
	}
	resp, err := p.upstream.RoundTrip(out)
	if err != nil {
		applied = append(applied, "upstream: "+err.Error())
		done(http.StatusBadGateway)
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	defer resp.Body.Close()
	for k, vs := range resp.Header {
		w.Header()[k] = vs
	}
	if f.ContentRange != nil && resp.StatusCode == http.StatusPartialContent {
		applied = append(applied, "Content-Range")
		w.Header().Set("Content-Range", f.ContentRange(resp.Header.Get("Content-Range")))
	}
	w.WriteHeader(resp.StatusCode)
	done(resp.StatusCode)
	body := io.Reader(resp.Body)
	switch {
	case f.CutAfter > 0:
		p.note(i, strings.Join(append(applied, fmt.Sprintf("cut after %d bytes", f.CutAfter)), ", "), resp.StatusCode)
		n, _ := io.CopyN(w, body, f.CutAfter)
		p.bodyBytes.Add(n)
		reset(w, true)
		return
	case f.Stall > 0:
		p.note(i, strings.Join(append(applied, fmt.Sprintf("stall %s after %d bytes", f.Stall, f.StallAfter)), ", "), resp.StatusCode)
		n, _ := io.CopyN(w, body, f.StallAfter)
		p.bodyBytes.Add(n)
		if fl, ok := w.(http.Flusher); ok {
			fl.Flush()
		}
		select {
		case <-time.After(f.Stall):
		case <-r.Context().Done():
			return
		}
	}
	if f.Rate > 0 {
		p.note(i, strings.Join(append(applied, fmt.Sprintf("rate %d B/s", f.Rate)), ", "), resp.StatusCode)
		body = &slowReader{r: body, rate: f.Rate, ctx: r.Context()}
	}
	if f.Flip > 0 {
		p.note(i, strings.Join(append(applied, fmt.Sprintf("flip byte %d", f.Flip)), ", "), resp.StatusCode)
		body = &flipReader{r: body, at: f.Flip}
	}
	n, _ := io.Copy(w, body)
	p.bodyBytes.Add(n)
	if MatchBlobs(r) {
		p.blobBytes.Add(n)
	}
}

// flipReader inverts the byte at offset at.
type flipReader struct {
	r     io.Reader
	at, n int64
}

func (f *flipReader) Read(p []byte) (int, error) {
	n, err := f.r.Read(p)
	if i := f.at - f.n; i >= 0 && i < int64(n) {
		p[i] ^= 0xff
	}
	f.n += int64(n)
	return n, err
}

// slowReader reads at most rate bytes per second, in slices of a tick.
type slowReader struct {
	r    io.Reader
	rate int64
	ctx  interface{ Done() <-chan struct{} }
	next time.Time
}

func (s *slowReader) Read(p []byte) (int, error) {
	const tick = 50 * time.Millisecond
	if wait := time.Until(s.next); wait > 0 {
		select {
		case <-time.After(wait):
		case <-s.ctx.Done():
			return 0, io.ErrUnexpectedEOF
		}
	}
	n := max(s.rate*int64(tick)/int64(time.Second), 1)
	if int64(len(p)) > n {
		p = p[:n]
	}
	k, err := s.r.Read(p)
	s.next = time.Now().Add(time.Duration(int64(k) * int64(time.Second) / s.rate))
	return k, err
}

// redirect checks with the registry that the client may read the blob
// (HEAD with the client's credentials), has the storage hold the blob, and
// answers with a 307 to a freshly signed storage URL. It returns the
// status sent.
func (p *FaultProxy) redirect(w http.ResponseWriter, r *http.Request) int {
	digest := blobURLPath.FindStringSubmatch(r.URL.Path)[2]
	method := http.MethodHead
	if !p.Storage.has(digest) {
		method = http.MethodGet
	}
	out, err := http.NewRequestWithContext(r.Context(), method, "http://"+p.target+r.URL.Path, nil)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return http.StatusInternalServerError
	}
	out.Host = r.Host
	if a := r.Header.Get("Authorization"); a != "" {
		out.Header.Set("Authorization", a)
	}
	resp, err := p.upstream.RoundTrip(out)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return http.StatusBadGateway
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		for k, vs := range resp.Header {
			w.Header()[k] = vs
		}
		w.WriteHeader(resp.StatusCode)
		_, _ = io.Copy(w, resp.Body)
		return resp.StatusCode
	}
	if method == http.MethodGet {
		blob, err := io.ReadAll(resp.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return http.StatusBadGateway
		}
		p.Storage.Put(digest, blob)
	}
	http.Redirect(w, r, p.Storage.Sign(digest), http.StatusTemporaryRedirect)
	return http.StatusTemporaryRedirect
}

// reset cuts the connection under w with a TCP RST, after flushing what
// was written when flush is set (a flush also sends headers not yet sent).
func reset(w http.ResponseWriter, flush bool) {
	if fl, ok := w.(http.Flusher); ok && flush {
		fl.Flush()
	}
	hj, ok := w.(http.Hijacker)
	if !ok {
		panic(http.ErrAbortHandler)
	}
	conn, _, err := hj.Hijack()
	if err != nil {
		panic(http.ErrAbortHandler)
	}
	if tc, ok := conn.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	_ = conn.Close()
}

// registryError answers with a distribution-style JSON error.
func registryError(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]any{"errors": []map[string]string{{"code": code, "message": msg}}})
}

// quietLog discards the http.Server's own logging (aborted handlers,
// TLS handshakes from probes), which would clutter test output.
func quietLog() *log.Logger { return log.New(io.Discard, "", 0) }

// BlobStorage stands in for the object storage (S3, GCS, Azure Blob, a
// CDN) that registries redirect blob GETs to. It serves blobs with Range
// support at signed URLs, like S3 presigned URLs: a request carrying an
// Authorization header is refused with 400 (S3 allows one auth mechanism),
// as is a HEAD (a presigned GET URL does not sign HEAD) with 403, and an
// expired signature with 403.
type BlobStorage struct {
	// Host is the storage's address, "127.0.0.1:PORT".
	Host string

	srv *http.Server

	mu      sync.Mutex
	blobs   map[string][]byte
	sigs    map[string]string // signature -> digest
	gets    int
	refused []string // why requests were refused
	sawAuth bool
	// multiStatus answers requests for several ranges, when not 0.
	multiStatus int
}

// RefuseMultiRange makes the storage answer requests for several ranges
// with status, as GHCR's blob CDN does with 501; 0 serves them.
func (s *BlobStorage) RefuseMultiRange(status int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.multiStatus = status
}

// StartBlobStorage starts a BlobStorage on a free loopback port. The
// caller must call Close.
func StartBlobStorage() (*BlobStorage, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("listening for blob storage: %w", err)
	}
	s := &BlobStorage{Host: ln.Addr().String(), blobs: map[string][]byte{}, sigs: map[string]string{}}
	s.srv = &http.Server{Handler: http.HandlerFunc(s.serve), ReadHeaderTimeout: 10 * time.Second, ErrorLog: quietLog()}
	go s.srv.Serve(ln) //nolint:errcheck // ends with Close
	return s, nil
}

// Put stores a blob.
func (s *BlobStorage) Put(digest string, blob []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.blobs[digest] = blob
}

func (s *BlobStorage) has(digest string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.blobs[digest]
	return ok
}

// Sign returns a new signed URL for the blob.
func (s *BlobStorage) Sign(digest string) string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	sig := hex.EncodeToString(b)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sigs[sig] = digest
	return fmt.Sprintf("http://%s/blobs/%s?X-Amz-Expires=300&X-Amz-Signature=%s", s.Host, digest, sig)
}

// Expire makes every URL signed so far invalid, as time does.
func (s *BlobStorage) Expire() {
	s.mu.Lock()
	defer s.mu.Unlock()
	clear(s.sigs)
}

// Gets returns how many GETs the storage has answered with blob bytes.
func (s *BlobStorage) Gets() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.gets
}

// SawAuth reports whether any request carried an Authorization header.
func (s *BlobStorage) SawAuth() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.sawAuth
}

// Refused returns why requests were refused, in order.
func (s *BlobStorage) Refused() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.refused...)
}

// Close stops the storage.
func (s *BlobStorage) Close() error { return s.srv.Close() }

func (s *BlobStorage) serve(w http.ResponseWriter, r *http.Request) {
	digest, _ := strings.CutPrefix(r.URL.Path, "/blobs/")
	sig := r.URL.Query().Get("X-Amz-Signature")
	s.mu.Lock()
	var why string
	var status int
	switch {
	case r.Header.Get("Authorization") != "":
		s.sawAuth = true
		why, status = "request carried Authorization", http.StatusBadRequest
	case r.Method != http.MethodGet:
		why, status = r.Method+" not signed", http.StatusForbidden
	case s.sigs[sig] != digest || digest == "":
		why, status = "signature expired or invalid", http.StatusForbidden
	case s.multiStatus != 0 && strings.Contains(r.Header.Get("Range"), ","):
		why, status = "several ranges asked for", s.multiStatus
	}
	blob := s.blobs[digest]
	if why != "" {
		s.refused = append(s.refused, why)
	} else {
		s.gets++
	}
	s.mu.Unlock()
	if why != "" {
		w.Header().Set("Content-Type", "application/xml")
		w.WriteHeader(status)
		fmt.Fprintf(w, "<Error><Code>AccessDenied</Code><Message>%s</Message></Error>", why)
		return
	}
	http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(blob))
}
