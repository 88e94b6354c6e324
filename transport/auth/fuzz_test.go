package auth_test

import (
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pulsedive-relay/relay/transport/auth"
	"github.com/pulsedive-relay/relay/transport/authtest"
)

// FuzzAuthenticate feeds arbitrary Authorization header values. Properties:
// no panic; every failure is an *auth.Error with one of the fixed reasons;
// a success carries the key of a token the test signed; no connection goes
// anywhere but the allow-listed test server.
func FuzzAuthenticate(f *testing.F) {
	signing, foreign, _ := keys(f)
	pubPEM, err := signing.PublicKeyPEM()
	if err != nil {
		f.Fatal(err)
	}
	var rec dialRecorder
	fx := newFixture(f, nil)
	fx.auth, err = auth.New(auth.Config{
		JWKSHosts:  []string{fx.srv.Host()},
		Audiences:  []string{testAudience},
		HTTPClient: rec.client(f, fx.srv),
		Now:        fx.clock.Now,
	})
	if err != nil {
		f.Fatal(err)
	}

	mint := func(k *authtest.Key, header, fields map[string]any) string {
		tok, err := k.MintHeader(header, with(fx.claims(), fields))
		if err != nil {
			f.Fatal(err)
		}
		return tok
	}
	attack := func(method string, key any) string {
		tok, err := authtest.MintWith(method, key, testKID, fx.claims())
		if err != nil {
			f.Fatal(err)
		}
		return tok
	}
	seeds := []string{
		"Bearer " + mint(signing, nil, nil),
		"bearer " + mint(signing, nil, map[string]any{"CTR_ENTITIES_LIMIT": "7", "aud": []string{"x", testAudience}}),
		"Bearer " + mint(signing, map[string]any{"kid": "../../etc/passwd"}, nil),
		"Bearer " + mint(signing, map[string]any{"jku": fx.evil.URL(), "x5u": fx.evil.URL()}, nil),
		"Bearer " + mint(signing, nil, map[string]any{"jwks_host": fx.evil.Host()}),
		"Bearer " + mint(signing, nil, map[string]any{"jwks_host": fx.srv.Host() + "@" + fx.evil.Host()}),
		"Bearer " + mint(signing, nil, map[string]any{"exp": epoch.Unix() - 1}),
		"Bearer " + mint(signing, nil, map[string]any{"key": nil}),
		"Bearer " + mint(foreign, nil, nil),
		"Bearer " + attack("none", nil),
		"Bearer " + attack("None", nil),
		"Bearer " + attack("HS256", pubPEM),
		"Bearer " + attack("RS384", signing.Private),
		"", "Bearer", "Basic dXNlcjpwYXNz", "Bearer a.b.c", "Bearer ..", "Bearer e30.e30.", "Bearer a b",
	}
	for _, s := range seeds {
		f.Add(s)
	}
	allowed := []string{fx.srv.Host()}

	f.Fuzz(func(t *testing.T, value string) {
		r := httptestRequest()
		r.Header.Set("Authorization", value)
		c, err := fx.auth.Authenticate(r)
		if err != nil {
			reasonOf(t, err)
		} else if c.Key.Reveal() != testAPIKey {
			t.Errorf("accepted a token the test did not sign: %q", value)
		}
		for _, addr := range rec.addrs() {
			if !slices.Contains(allowed, addr) {
				t.Fatalf("dialled %s for %q", addr, value)
			}
		}
	})
}

func httptestRequest() *http.Request {
	r, err := http.NewRequest(http.MethodPost, "http://relay.example/observe/observables", nil)
	if err != nil {
		panic(err)
	}
	return r
}

// BenchmarkAuthenticate compares a cold verification (RSA, JWKS cached)
// with a hit of the verified-token cache.
func BenchmarkAuthenticate(b *testing.B) {
	for _, bc := range []struct {
		name      string
		cacheSize int
	}{
		{name: "cold", cacheSize: -1},
		{name: "cached", cacheSize: 0},
	} {
		b.Run(bc.name, func(b *testing.B) {
			f := newFixture(b, func(c *auth.Config) { c.TokenCacheSize = bc.cacheSize })
			r := bearer(f.mint(f.claims()))
			if _, err := f.auth.Authenticate(r); err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			for b.Loop() {
				if _, err := f.auth.Authenticate(r); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// TestDefaultClientTrustsSSLCertFile runs in a child process, because Go
// reads SSL_CERT_FILE once per process: the relay's default client (nil
// Config.HTTPClient) fetches a JWKS served with a private CA named by
// SSL_CERT_FILE, as the relay's own tests and demo do.
func TestDefaultClientTrustsSSLCertFile(t *testing.T) {
	const childEnv = "AUTH_TEST_SSL_CERT_FILE_CHILD"
	if os.Getenv(childEnv) == "1" {
		defaultClientChild(t)
		return
	}
	if testing.Short() {
		t.Skip("starts a child process")
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestDefaultClientTrustsSSLCertFile$", "-test.count=1")
	cmd.Env = append(os.Environ(), childEnv+"=1")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("child: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "PASS") {
		t.Fatalf("child did not pass:\n%s", out)
	}
}

func defaultClientChild(t *testing.T) {
	signing, _, _ := keys(t)
	doc, err := signing.JWKS()
	if err != nil {
		t.Fatal(err)
	}
	srv := newServer(t, doc)
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	if err := srv.WriteCAFile(caFile); err != nil {
		t.Fatal(err)
	}
	t.Setenv("SSL_CERT_FILE", caFile)
	t.Cleanup(http.DefaultTransport.(*http.Transport).CloseIdleConnections)

	now := time.Now()
	a, err := auth.New(auth.Config{JWKSHosts: []string{srv.Host()}, Audiences: []string{testAudience}})
	if err != nil {
		t.Fatal(err)
	}
	tok, err := signing.Mint(authtest.Claims(srv.Host(), testAudience, testAPIKey, now, time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.Authenticate(bearer(tok)); err != nil {
		t.Fatalf("Authenticate: %v (cause %v)", err, err.(*auth.Error).Unwrap())
	}
	// The default client does not follow redirects either.
	srv.SetRedirect(srv.URL())
	tok, err = signing.MintHeader(map[string]any{"kid": "kid-new"}, authtest.Claims(srv.Host(), testAudience, testAPIKey, now, time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	a, err = auth.New(auth.Config{JWKSHosts: []string{srv.Host()}, Audiences: []string{testAudience}})
	if err != nil {
		t.Fatal(err)
	}
	_, err = a.Authenticate(bearer(tok))
	if got := reasonOf(t, err); got != auth.ReasonWrongJWKSHost {
		t.Errorf("redirected JWKS: reason %q, want %q", got, auth.ReasonWrongJWKSHost)
	}
	if got := srv.Requests(authtest.JWKSPath); got != 2 {
		t.Errorf("fetches = %d, want 2 (the redirect not followed)", got)
	}
}
