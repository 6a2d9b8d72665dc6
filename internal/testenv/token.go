package testenv

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Token service defaults.
const (
	// DefaultTokenTTL is how long a token is good for unless TokenOptions or
	// SetTokenTTL say otherwise: what Docker Hub and GHCR hand out.
	DefaultTokenTTL = 60 * time.Second
	// TokenPath is where the token endpoint is served, on the registry's
	// own host:port.
	TokenPath = "/token"
	// TokenService and TokenIssuer are the "service" and "iss" the registry
	// is configured to accept.
	TokenService = "stargz-get-test-registry"
	TokenIssuer  = "stargz-get-test-token-issuer"
	// registryLeeway is the clock-skew leeway the distribution registry
	// adds to a token's "exp" (registry/auth/token.Leeway in v3). The
	// issuer sets "exp" this much earlier, so a token of TTL d is refused
	// by the registry d after it was issued, as expires_in says.
	registryLeeway = 60 * time.Second
)

// TokenOptions configures StartTokenRegistry.
type TokenOptions struct {
	// Users maps user names to passwords. A user with the right password
	// is granted pull and push on every repository.
	Users map[string]string
	// Public lists repositories that anyone, without credentials, may
	// pull: exact names, or prefixes ending in "/".
	Public []string
	// TTL is how long tokens are good for; zero means DefaultTokenTTL.
	TTL time.Duration
	// TLS also serves the registry over HTTPS on TLSHost, with a
	// certificate for 127.0.0.1 and localhost signed by a test CA written
	// to CAFile.
	TLS bool
}

// TokenRegistry is the distribution registry configured with "auth:
// token", as Docker Hub, GHCR, Quay and Harbor are, behind a small front
// that also serves the token endpoint, so that the token realm is on the
// registry's own host:port as on ghcr.io (go-containerregistry accepts a
// loopback realm only there).
//
// The token endpoint implements the Docker token spec: GET TokenPath with
// service, scope parameters and optional Basic credentials returns a JWT
// (ES256, signed with a key whose self-signed certificate is the
// registry's rootcertbundle) granting the asked-for actions the caller is
// allowed; wrong credentials get 401. The registry checks the signature,
// issuer, audience, expiry and that the token grants the repository and
// action of each request.
//
// The registry builds the realm from each request's Host (its
// "autoredirect" option), so a proxy in front of it that keeps the Host
// header (like FaultProxy) sees the token requests go through it too.
type TokenRegistry struct {
	// Host is the registry's address, "127.0.0.1:PORT", serving plain HTTP.
	Host string
	// TLSHost and CAFile are set with TokenOptions.TLS: the same registry
	// over HTTPS, and the PEM file of the CA that signed its certificate.
	TLSHost, CAFile string

	reg     *Registry
	servers []*http.Server
	users   map[string]string
	public  []string
	key     *ecdsa.PrivateKey
	x5c     string // base64 DER of the key's certificate
	ttl     atomic.Int64
	issued  atomic.Int64
	denied  atomic.Int64

	closeOnce sync.Once
	closeErr  error
}

// StartTokenRegistry starts a distribution registry with token auth (see
// RegistryBinary) and its front with the token endpoint on free loopback
// ports. The caller must call Close.
func StartTokenRegistry(opts TokenOptions) (_ *TokenRegistry, err error) {
	bin, err := RegistryBinary()
	if err != nil {
		return nil, err
	}
	r := &TokenRegistry{users: opts.Users, public: opts.Public}
	r.ttl.Store(int64(opts.TTL))
	if opts.TTL <= 0 {
		r.ttl.Store(int64(DefaultTokenTTL))
	}
	defer func() {
		if err != nil {
			r.Close()
		}
	}()
	dir, err := os.MkdirTemp("", "stargz-get-token-registry-")
	if err != nil {
		return nil, fmt.Errorf("creating registry dir: %w", err)
	}
	if err := os.Mkdir(filepath.Join(dir, "data"), 0o755); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("creating registry storage dir: %w", err)
	}
	// The registry's Close removes dir; until it runs, remove it here.
	started := false
	defer func() {
		if !started {
			os.RemoveAll(dir)
		}
	}()

	// The signing key and its certificate, the registry's root bundle.
	if r.key, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
		return nil, fmt.Errorf("generating token signing key: %w", err)
	}
	certDER, err := selfSigned(r.key, "stargz-get test token issuer")
	if err != nil {
		return nil, err
	}
	r.x5c = base64.StdEncoding.EncodeToString(certDER)
	bundle := filepath.Join(dir, "token-issuer.pem")
	if err := os.WriteFile(bundle, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: certDER}), 0o644); err != nil {
		return nil, fmt.Errorf("writing token root bundle: %w", err)
	}

	// The front's listeners first: the realm names the front.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("listening for the registry front: %w", err)
	}
	r.Host = ln.Addr().String()
	var lastErr error
	for range registryStartAttempts {
		r.reg, lastErr = startRegistryProcess(bin, dir, func(host string) []byte {
			return tokenRegistryConfig(dir, host, "http://"+r.Host+TokenPath, bundle)
		})
		if !errors.Is(lastErr, errPortTaken) {
			break
		}
	}
	if lastErr != nil {
		ln.Close()
		return nil, fmt.Errorf("starting token registry: %w", lastErr)
	}
	started = true
	r.serve(ln, r.handler("http"))

	if opts.TLS {
		if err := r.startTLS(dir); err != nil {
			return nil, err
		}
	}
	return r, nil
}

// startTLS serves the front over HTTPS too, with a certificate from a
// fresh CA.
func (r *TokenRegistry) startTLS(dir string) error {
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fmt.Errorf("generating test CA key: %w", err)
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "stargz-get test CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return fmt.Errorf("creating test CA: %w", err)
	}
	caCert, err := x509.ParseCertificate(caDER)
	if err != nil {
		return err
	}
	srvKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fmt.Errorf("generating server key: %w", err)
	}
	srvTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: "127.0.0.1"},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:     []string{"localhost"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
	}
	srvDER, err := x509.CreateCertificate(rand.Reader, srvTmpl, caCert, &srvKey.PublicKey, caKey)
	if err != nil {
		return fmt.Errorf("creating server certificate: %w", err)
	}
	r.CAFile = filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(r.CAFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}), 0o644); err != nil {
		return fmt.Errorf("writing test CA: %w", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fmt.Errorf("listening for the TLS front: %w", err)
	}
	r.TLSHost = ln.Addr().String()
	cfg := &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{srvDER}, PrivateKey: srvKey}}}
	r.serve(tls.NewListener(ln, cfg), r.handler("https"))
	return nil
}

func (r *TokenRegistry) serve(ln net.Listener, h http.Handler) {
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second, ErrorLog: quietLog()}
	r.servers = append(r.servers, srv)
	go srv.Serve(ln) //nolint:errcheck // ends with Close
}

// handler serves the token endpoint and passes everything else to the
// registry, keeping the Host header (the registry builds the realm from
// it) and saying which scheme the client used.
func (r *TokenRegistry) handler(scheme string) http.Handler {
	target := &url.URL{Scheme: "http", Host: r.reg.Host}
	proxy := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(target)
			pr.Out.Host = pr.In.Host
			pr.Out.Header.Set("X-Forwarded-Proto", scheme)
		},
		ErrorLog: quietLog(),
	}
	mux := http.NewServeMux()
	mux.HandleFunc(TokenPath, r.serveToken)
	mux.Handle("/", proxy)
	return mux
}

// SetTokenTTL changes how long tokens issued from now on are good for.
func (r *TokenRegistry) SetTokenTTL(d time.Duration) { r.ttl.Store(int64(d)) }

// TokensIssued returns how many tokens the endpoint has issued.
func (r *TokenRegistry) TokensIssued() int64 { return r.issued.Load() }

// TokensDenied returns how many token requests were refused (wrong
// credentials, wrong service).
func (r *TokenRegistry) TokensDenied() int64 { return r.denied.Load() }

// Log returns what the registry process has logged.
func (r *TokenRegistry) Log() string {
	if r.reg == nil {
		return ""
	}
	return r.reg.Log()
}

// Close stops the front and the registry and removes its storage. It is
// safe to call more than once.
func (r *TokenRegistry) Close() error {
	r.closeOnce.Do(func() {
		for _, s := range r.servers {
			s.Close()
		}
		if r.reg != nil {
			r.closeErr = r.reg.Close()
		}
	})
	return r.closeErr
}

// tokenError answers a token request with a registry-style error.
func tokenError(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/json")
	if status == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Basic realm="stargz-get test token service"`)
	}
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]any{"errors": []map[string]string{{"code": code, "message": msg}}})
}

// resourceActions is one entry of a token's "access" claim.
type resourceActions struct {
	Type    string   `json:"type"`
	Name    string   `json:"name"`
	Actions []string `json:"actions"`
}

func (r *TokenRegistry) serveToken(w http.ResponseWriter, req *http.Request) {
	if req.Method != http.MethodGet {
		tokenError(w, http.StatusMethodNotAllowed, "UNSUPPORTED", "only GET is supported (no OAuth2 POST)")
		return
	}
	q := req.URL.Query()
	if q.Get("service") != TokenService {
		r.denied.Add(1)
		tokenError(w, http.StatusBadRequest, "DENIED", fmt.Sprintf("unknown service %q", q.Get("service")))
		return
	}
	subject := ""
	if req.Header.Get("Authorization") != "" {
		user, pass, ok := req.BasicAuth()
		want, known := r.users[user]
		if !ok || !known || subtle.ConstantTimeCompare([]byte(pass), []byte(want)) != 1 {
			r.denied.Add(1)
			tokenError(w, http.StatusUnauthorized, "UNAUTHORIZED", "invalid user name or password")
			return
		}
		subject = user
	}
	var access []resourceActions
	for _, param := range q["scope"] {
		for _, scope := range strings.Fields(param) {
			typ, rest, ok1 := strings.Cut(scope, ":")
			i := strings.LastIndex(rest, ":")
			if !ok1 || i < 0 || typ != "repository" {
				continue // registry:catalog:* and the like: nothing granted
			}
			name, actions := rest[:i], strings.Split(rest[i+1:], ",")
			var granted []string
			for _, a := range actions {
				if r.allowed(subject, name, a) && !slices.Contains(granted, a) {
					granted = append(granted, a)
				}
			}
			if len(granted) > 0 {
				access = append(access, resourceActions{Type: typ, Name: name, Actions: granted})
			}
		}
	}
	ttl := time.Duration(r.ttl.Load())
	tok, err := r.sign(subject, access, ttl)
	if err != nil {
		tokenError(w, http.StatusInternalServerError, "UNKNOWN", err.Error())
		return
	}
	r.issued.Add(1)
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{
		"token":        tok,
		"access_token": tok,
		"expires_in":   max(int(ttl/time.Second), 1),
		"issued_at":    time.Now().UTC().Format(time.RFC3339),
	})
}

// allowed says whether subject ("" for anonymous) may do action on repo.
func (r *TokenRegistry) allowed(subject, repo, action string) bool {
	if subject != "" {
		return action == "pull" || action == "push"
	}
	if action != "pull" {
		return false
	}
	for _, p := range r.public {
		if repo == p || strings.HasSuffix(p, "/") && strings.HasPrefix(repo, p) {
			return true
		}
	}
	return false
}

// sign returns a JWT in the form the distribution registry verifies:
// ES256, the signing certificate in "x5c".
func (r *TokenRegistry) sign(subject string, access []resourceActions, ttl time.Duration) (string, error) {
	now := time.Now()
	jti := make([]byte, 12)
	_, _ = rand.Read(jti)
	if access == nil {
		access = []resourceActions{}
	}
	header, err := json.Marshal(map[string]any{"alg": "ES256", "typ": "JWT", "x5c": []string{r.x5c}})
	if err != nil {
		return "", err
	}
	claims, err := json.Marshal(map[string]any{
		"iss":    TokenIssuer,
		"sub":    subject,
		"aud":    TokenService,
		"exp":    now.Add(ttl - registryLeeway).Unix(),
		"nbf":    now.Add(-time.Second).Unix(),
		"iat":    now.Unix(),
		"jti":    hex.EncodeToString(jti),
		"access": access,
	})
	if err != nil {
		return "", err
	}
	enc := base64.RawURLEncoding
	signing := enc.EncodeToString(header) + "." + enc.EncodeToString(claims)
	sum := sha256.Sum256([]byte(signing))
	rs, ss, err := ecdsa.Sign(rand.Reader, r.key, sum[:])
	if err != nil {
		return "", fmt.Errorf("signing token: %w", err)
	}
	sig := make([]byte, 64)
	rs.FillBytes(sig[:32])
	ss.FillBytes(sig[32:])
	return signing + "." + enc.EncodeToString(sig), nil
}

// selfSigned returns a self-signed certificate for key.
func selfSigned(key *ecdsa.PrivateKey, cn string) ([]byte, error) {
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(now.UnixNano()),
		Subject:               pkix.Name{CommonName: cn},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(7 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("creating token signing certificate: %w", err)
	}
	return der, nil
}

// tokenRegistryConfig renders the config.yml of a registry with token
// auth. The realm is built from each request's Host ("autoredirect"), so
// it names whatever host:port the client used; the front says the scheme
// in X-Forwarded-Proto.
func tokenRegistryConfig(dir, host, realm, bundle string) []byte {
	q := func(s string) string {
		b, _ := json.Marshal(s)
		return string(b)
	}
	var b bytes.Buffer
	b.Write(registryConfig(dir, host, ""))
	fmt.Fprintf(&b, `auth:
  token:
    realm: %s
    service: %s
    issuer: %s
    rootcertbundle: %s
    autoredirect: true
    autoredirectpath: %s
`, q(realm), q(TokenService), q(TokenIssuer), q(bundle), q(TokenPath))
	return b.Bytes()
}
