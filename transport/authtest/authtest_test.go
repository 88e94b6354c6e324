package authtest_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/google/go-cmp/cmp"
	"go.uber.org/goleak"

	"github.com/pulsedive-relay/relay/transport/authtest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

var sharedKey = sync.OnceValues(func() (*authtest.Key, error) { return authtest.NewKey("kid-1") })

func key(t *testing.T) *authtest.Key {
	t.Helper()
	k, err := sharedKey()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestParseKeyPEM(t *testing.T) {
	k := key(t)
	pkcs8, err := k.PrivateKeyPEM()
	if err != nil {
		t.Fatal(err)
	}
	pkcs1 := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(k.Private)})
	ec, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ecDER, err := x509.MarshalPKCS8PrivateKey(ec)
	if err != nil {
		t.Fatal(err)
	}
	ecPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: ecDER})

	tests := []struct {
		name    string
		pem     []byte
		wantErr bool
	}{
		{name: "PKCS#8", pem: pkcs8},
		{name: "PKCS#1", pem: pkcs1},
		{name: "EC key", pem: ecPEM, wantErr: true},
		{name: "not PEM", pem: []byte("hello"), wantErr: true},
		{name: "PEM of garbage", pem: pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte("x")}), wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := authtest.ParseKeyPEM(tt.pem, "kid-x")
			if tt.wantErr {
				if err == nil {
					t.Fatal("ParseKeyPEM() succeeded, want an error")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.ID != "kid-x" || !got.Private.Equal(k.Private) {
				t.Errorf("ParseKeyPEM() = kid %q and another key", got.ID)
			}
		})
	}
}

func TestJWKS(t *testing.T) {
	k := key(t)
	doc, err := k.JWKS()
	if err != nil {
		t.Fatal(err)
	}
	var set struct {
		Keys []map[string]string `json:"keys"`
	}
	if err := json.Unmarshal(doc, &set); err != nil {
		t.Fatal(err)
	}
	if len(set.Keys) != 1 {
		t.Fatalf("%d keys, want 1", len(set.Keys))
	}
	got := set.Keys[0]
	for field, want := range map[string]string{"kty": "RSA", "kid": "kid-1", "use": "sig", "alg": "RS256", "e": "AQAB"} {
		if got[field] != want {
			t.Errorf("%s = %q, want %q", field, got[field], want)
		}
	}
	n, err := base64.RawURLEncoding.DecodeString(got["n"])
	if err != nil {
		t.Fatal(err)
	}
	if new(big.Int).SetBytes(n).Cmp(k.Private.N) != 0 {
		t.Error("n is not the key's modulus")
	}

	empty, err := authtest.JWKS()
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(`{"keys":[]}`, string(empty)); diff != "" {
		t.Errorf("empty JWKS (-want +got):\n%s", diff)
	}
}

// parse splits a token into its decoded header and payload.
func parse(t *testing.T, tok string) (header, payload map[string]any, sig string) {
	t.Helper()
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		t.Fatalf("%d parts in %q", len(parts), tok)
	}
	for i, dst := range []*map[string]any{&header, &payload} {
		b, err := base64.RawURLEncoding.DecodeString(parts[i])
		if err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(b, dst); err != nil {
			t.Fatal(err)
		}
	}
	return header, payload, parts[2]
}

func TestMint(t *testing.T) {
	k := key(t)
	now := time.Date(2020, 4, 15, 0, 0, 0, 0, time.UTC)
	claims := authtest.Claims("visibility.amp.cisco.com", "https://relay.example", "pd-key", now, time.Hour)
	tok, err := k.Mint(claims)
	if err != nil {
		t.Fatal(err)
	}
	parsed, err := jwt.Parse(tok, func(*jwt.Token) (any, error) { return &k.Private.PublicKey, nil },
		jwt.WithValidMethods([]string{"RS256"}), jwt.WithTimeFunc(func() time.Time { return now }))
	if err != nil {
		t.Fatalf("the minted token does not verify: %v", err)
	}
	want := jwt.MapClaims{
		"jwks_host": "visibility.amp.cisco.com", "aud": "https://relay.example", "key": "pd-key",
		"iat": float64(now.Unix()), "exp": float64(now.Add(time.Hour).Unix()),
	}
	if diff := cmp.Diff(want, parsed.Claims); diff != "" {
		t.Errorf("claims (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(map[string]any{"alg": "RS256", "typ": "JWT", "kid": "kid-1"}, parsed.Header); diff != "" {
		t.Errorf("header (-want +got):\n%s", diff)
	}
	if _, ok := authtest.Claims("h", "a", "k", now, 0)["exp"]; ok {
		t.Error("Claims with ttl 0 has exp")
	}
}

func TestMintHeader(t *testing.T) {
	k := key(t)
	tests := []struct {
		name   string
		header map[string]any
		want   map[string]any
	}{
		{name: "extra fields", header: map[string]any{"jku": "https://evil.example/jwks"},
			want: map[string]any{"alg": "RS256", "typ": "JWT", "kid": "kid-1", "jku": "https://evil.example/jwks"}},
		{name: "kid overridden", header: map[string]any{"kid": "../x"},
			want: map[string]any{"alg": "RS256", "typ": "JWT", "kid": "../x"}},
		{name: "kid removed", header: map[string]any{"kid": nil},
			want: map[string]any{"alg": "RS256", "typ": "JWT"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tok, err := k.MintHeader(tt.header, map[string]any{"key": "k"})
			if err != nil {
				t.Fatal(err)
			}
			header, _, _ := parse(t, tok)
			if diff := cmp.Diff(tt.want, header); diff != "" {
				t.Errorf("header (-want +got):\n%s", diff)
			}
		})
	}
}

func TestMintWith(t *testing.T) {
	k := key(t)
	secret := []byte("public key bytes")
	tests := []struct {
		name       string
		method     string
		key        any
		kid        string
		wantHeader map[string]any
		wantSigned bool
		verifyKey  any // when signed: verifies with the method of that name
		wantErr    bool
	}{
		{name: "none", method: "none", kid: "kid-1", wantHeader: map[string]any{"alg": "none", "typ": "JWT", "kid": "kid-1"}},
		{name: "None with a key is still unsigned", method: "None", key: k.Private, wantHeader: map[string]any{"alg": "None", "typ": "JWT"}},
		{name: "HS256", method: "HS256", key: secret, kid: "kid-1", wantHeader: map[string]any{"alg": "HS256", "typ": "JWT", "kid": "kid-1"}, wantSigned: true, verifyKey: secret},
		{name: "PS256", method: "PS256", key: k.Private, wantHeader: map[string]any{"alg": "PS256", "typ": "JWT"}, wantSigned: true, verifyKey: &k.Private.PublicKey},
		{name: "unknown alg", method: "XX999", key: k.Private, wantHeader: map[string]any{"alg": "XX999", "typ": "JWT"}},
		{name: "HS256 with an RSA key", method: "HS256", key: k.Private, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tok, err := authtest.MintWith(tt.method, tt.key, tt.kid, map[string]any{"key": "k"})
			if tt.wantErr {
				if err == nil {
					t.Fatal("MintWith() succeeded, want an error")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			header, payload, sig := parse(t, tok)
			if diff := cmp.Diff(tt.wantHeader, header); diff != "" {
				t.Errorf("header (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(map[string]any{"key": "k"}, payload); diff != "" {
				t.Errorf("payload (-want +got):\n%s", diff)
			}
			if got := sig != ""; got != tt.wantSigned {
				t.Fatalf("signed = %v, want %v", got, tt.wantSigned)
			}
			if tt.wantSigned {
				raw, _ := base64.RawURLEncoding.DecodeString(sig)
				input := tok[:strings.LastIndexByte(tok, '.')]
				if err := jwt.GetSigningMethod(tt.method).Verify(input, raw, tt.verifyKey); err != nil {
					t.Errorf("signature does not verify: %v", err)
				}
			}
		})
	}
}

func TestJWKOf(t *testing.T) {
	doc, err := authtest.JWKSOf(map[string]any{"kty": "oct", "k": "AA"})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(`{"keys":[{"k":"AA","kty":"oct"}]}`, string(doc)); diff != "" {
		t.Errorf("JWKSOf (-want +got):\n%s", diff)
	}
	if _, err := authtest.JWKSOf(map[string]any{"x": func() {}}); err == nil {
		t.Error("JWKSOf of a function succeeded")
	}
}

func TestIssuer(t *testing.T) {
	iss, err := authtest.NewIssuerWithKey(key(t), authtest.ServerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(iss.Close)
	now := time.Date(2020, 4, 15, 0, 0, 0, 0, time.UTC)
	tok, err := iss.Token("https://relay.example", "pd-key", now, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	_, payload, _ := parse(t, tok)
	if got, want := payload["jwks_host"], iss.Server.Host(); got != want {
		t.Errorf("jwks_host = %v, want %v", got, want)
	}

	// The server publishes the key that signed the token.
	resp, err := iss.Server.Client().Get(iss.Server.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	var set struct {
		Keys []struct{ Kid, N string } `json:"keys"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&set); err != nil {
		t.Fatal(err)
	}
	if len(set.Keys) != 1 || set.Keys[0].Kid != "kid-1" ||
		set.Keys[0].N != base64.RawURLEncoding.EncodeToString(iss.Key.Private.N.Bytes()) {
		t.Errorf("served %+v, want the issuer's key", set.Keys)
	}
}
