package testenv

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
)

// getToken asks r's token endpoint for scopes, with Basic credentials when
// user is not empty, and returns the token or the HTTP status.
func getToken(t *testing.T, host, user, pass string, scopes ...string) (string, int) {
	t.Helper()
	q := url.Values{"service": {TokenService}, "scope": scopes}
	req, err := http.NewRequest(http.MethodGet, "http://"+host+TokenPath+"?"+q.Encode(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if user != "" {
		req.SetBasicAuth(user, pass)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return "", resp.StatusCode
	}
	var body struct {
		Token     string `json:"token"`
		ExpiresIn int    `json:"expires_in"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		t.Fatal(err)
	}
	if body.Token == "" || body.ExpiresIn < 1 {
		t.Fatalf("token response without token or expires_in: %+v", body)
	}
	return body.Token, resp.StatusCode
}

// getManifest GETs repo's manifest tag with a bearer token and returns the
// status and the WWW-Authenticate header.
func getManifest(t *testing.T, base, repo, tag, token string, client *http.Client) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, base+"/v2/"+repo+"/manifests/"+tag, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Accept", "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode, resp.Header.Get("WWW-Authenticate")
}

// The token registry: the real registry accepts the issuer's JWTs for the
// scopes they grant, only until they expire, and the token endpoint checks
// credentials and scopes.
func TestTokenRegistry(t *testing.T) {
	r, err := StartTokenRegistry(TokenOptions{
		Users:  map[string]string{"alice": "s3cret"},
		Public: []string{"public/"},
		TLS:    true,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := r.Close(); err != nil {
			t.Error(err)
		}
	})
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()

	// Push through go-containerregistry's bearer flow, as alice.
	img, err := random.Image(1024, 1)
	if err != nil {
		t.Fatal(err)
	}
	alice := remote.WithAuth(&authn.Basic{Username: "alice", Password: "s3cret"})
	for _, repo := range []string{"private/app", "public/app"} {
		ref, err := name.ParseReference(r.Host+"/"+repo+":v1", name.Insecure)
		if err != nil {
			t.Fatal(err)
		}
		if err := remote.Write(ref, img, remote.WithContext(ctx), alice); err != nil {
			t.Fatalf("pushing %s: %v\nregistry log:\n%s", ref, err, r.Log())
		}
	}

	pull := func(repo string, opts ...remote.Option) error {
		ref, err := name.ParseReference(r.Host+"/"+repo+":v1", name.Insecure)
		if err != nil {
			t.Fatal(err)
		}
		_, err = remote.Get(ref, append(opts, remote.WithContext(ctx))...)
		return err
	}
	isStatus := func(err error, status int) bool {
		var terr *transport.Error
		return errors.As(err, &terr) && terr.StatusCode == status
	}
	t.Run("pull", func(t *testing.T) {
		if err := pull("private/app", alice); err != nil {
			t.Errorf("alice pulling private/app: %v", err)
		}
		if err := pull("public/app"); err != nil {
			t.Errorf("anonymous pull of public/app: %v", err)
		}
		if err := pull("private/app"); !isStatus(err, http.StatusUnauthorized) {
			t.Errorf("anonymous pull of private/app: %v, want 401", err)
		}
		denied := r.TokensDenied()
		err := pull("private/app", remote.WithAuth(&authn.Basic{Username: "alice", Password: "wrong"}))
		if !isStatus(err, http.StatusUnauthorized) {
			t.Errorf("pull with a wrong password: %v, want 401", err)
		}
		if err != nil && strings.Contains(err.Error(), "wrong") {
			t.Errorf("error shows the password: %v", err)
		}
		if r.TokensDenied() == denied {
			t.Errorf("the token endpoint did not deny the wrong password")
		}
	})

	t.Run("scopes", func(t *testing.T) {
		base := "http://" + r.Host
		if _, status := getToken(t, r.Host, "alice", "nope", "repository:private/app:pull"); status != http.StatusUnauthorized {
			t.Errorf("token with a wrong password: status %d, want 401", status)
		}
		if _, status := getToken(t, r.Host, "mallory", "s3cret", "repository:private/app:pull"); status != http.StatusUnauthorized {
			t.Errorf("token for an unknown user: status %d, want 401", status)
		}
		tok, _ := getToken(t, r.Host, "alice", "s3cret", "repository:private/app:pull")
		if status, _ := getManifest(t, base, "private/app", "v1", tok, http.DefaultClient); status != http.StatusOK {
			t.Errorf("manifest with a token for its repository: status %d", status)
		}
		status, challenge := getManifest(t, base, "public/app", "v1", tok, http.DefaultClient)
		if status != http.StatusUnauthorized || !strings.Contains(challenge, `error="insufficient_scope"`) {
			t.Errorf("manifest of another repository: status %d, challenge %q; want 401 insufficient_scope", status, challenge)
		}
		wantRealm := `realm="http://` + r.Host + TokenPath + `"`
		if !strings.Contains(challenge, wantRealm) || !strings.Contains(challenge, `scope="repository:public/app:pull"`) {
			t.Errorf("challenge %q lacks %s or the scope", challenge, wantRealm)
		}
		anon, _ := getToken(t, r.Host, "", "", "repository:private/app:pull")
		if status, _ := getManifest(t, base, "private/app", "v1", anon, http.DefaultClient); status != http.StatusUnauthorized {
			t.Errorf("anonymous token for a private repository: status %d, want 401", status)
		}
	})

	t.Run("expiry", func(t *testing.T) {
		r.SetTokenTTL(time.Second)
		defer r.SetTokenTTL(DefaultTokenTTL)
		tok, _ := getToken(t, r.Host, "alice", "s3cret", "repository:private/app:pull")
		base := "http://" + r.Host
		if status, _ := getManifest(t, base, "private/app", "v1", tok, http.DefaultClient); status != http.StatusOK {
			t.Fatalf("fresh token: status %d", status)
		}
		time.Sleep(2100 * time.Millisecond) // exp is in whole seconds
		status, challenge := getManifest(t, base, "private/app", "v1", tok, http.DefaultClient)
		if status != http.StatusUnauthorized || !strings.Contains(challenge, `error="invalid_token"`) {
			t.Errorf("expired token: status %d, challenge %q; want 401 invalid_token", status, challenge)
		}
	})

	t.Run("tls", func(t *testing.T) {
		pem, err := os.ReadFile(r.CAFile)
		if err != nil {
			t.Fatal(err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			t.Fatal("no certificate in CAFile")
		}
		client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
		base := "https://" + r.TLSHost
		status, challenge := getManifest(t, base, "private/app", "v1", "", client)
		want := `realm="https://` + r.TLSHost + TokenPath + `"`
		if status != http.StatusUnauthorized || !strings.Contains(challenge, want) {
			t.Errorf("over TLS: status %d, challenge %q; want 401 with %s", status, challenge, want)
		}
		if _, err := http.Get(base + "/v2/"); err == nil {
			t.Errorf("the TLS front is trusted without its CA")
		}
	})
}
