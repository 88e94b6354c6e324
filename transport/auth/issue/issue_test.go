package issue_test

import (
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"math/big"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/google/go-cmp/cmp"

	"github.com/pulsedive-relay/relay/transport/auth/issue"
)

// sharedKey is generated once: generating an RSA key takes a while.
var sharedKey = sync.OnceValues(func() (*rsa.PrivateKey, error) { return rsa.GenerateKey(rand.Reader, 2048) })

func key(t *testing.T, kid string) *issue.Key {
	t.Helper()
	priv, err := sharedKey()
	if err != nil {
		t.Fatal(err)
	}
	return &issue.Key{ID: kid, Private: priv}
}

// TestMint: the token verifies with the key's public part under RS256 and
// carries the kid and Threat Response's claims, exp only with a ttl.
func TestMint(t *testing.T) {
	k := key(t, "kid-1")
	now := time.Date(2020, 4, 15, 0, 0, 0, 0, time.UTC)
	tests := []struct {
		name string
		ttl  time.Duration
		want jwt.MapClaims
	}{
		{"with a lifetime", time.Hour, jwt.MapClaims{
			"jwks_host": "visibility.amp.cisco.com", "aud": "https://relay.example", "key": "pd-key",
			"iat": float64(now.Unix()), "exp": float64(now.Add(time.Hour).Unix()),
		}},
		{"without exp", 0, jwt.MapClaims{
			"jwks_host": "visibility.amp.cisco.com", "aud": "https://relay.example", "key": "pd-key",
			"iat": float64(now.Unix()),
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tok, err := k.Mint(issue.Claims("visibility.amp.cisco.com", "https://relay.example", "pd-key", now, tt.ttl))
			if err != nil {
				t.Fatal(err)
			}
			parsed, err := jwt.Parse(tok, func(*jwt.Token) (any, error) { return &k.Private.PublicKey, nil },
				jwt.WithValidMethods([]string{"RS256"}), jwt.WithTimeFunc(func() time.Time { return now }))
			if err != nil {
				t.Fatalf("the minted token does not verify: %v", err)
			}
			if diff := cmp.Diff(tt.want, parsed.Claims); diff != "" {
				t.Errorf("claims (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(map[string]any{"alg": "RS256", "typ": "JWT", "kid": "kid-1"}, parsed.Header); diff != "" {
				t.Errorf("header (-want +got):\n%s", diff)
			}
		})
	}
}

// TestJWKS: each key's public part, in order, and nothing private.
func TestJWKS(t *testing.T) {
	a, b := key(t, "kid-a"), key(t, "kid-b")
	tests := []struct {
		name string
		keys []*issue.Key
		kids []string
	}{
		{"none", nil, []string{}},
		{"one", []*issue.Key{a}, []string{"kid-a"}},
		{"two in order", []*issue.Key{b, a}, []string{"kid-b", "kid-a"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			doc, err := issue.JWKS(tt.keys...)
			if err != nil {
				t.Fatal(err)
			}
			var set struct {
				Keys []map[string]string `json:"keys"`
			}
			if err := json.Unmarshal(doc, &set); err != nil {
				t.Fatalf("%s: %v", doc, err)
			}
			if set.Keys == nil {
				t.Fatalf("%s: want a keys array", doc)
			}
			kids := []string{}
			for _, jwk := range set.Keys {
				kids = append(kids, jwk["kid"])
				want := map[string]string{"kty": "RSA", "kid": jwk["kid"], "use": "sig", "alg": "RS256", "e": "AQAB",
					"n": base64.RawURLEncoding.EncodeToString(a.Private.N.Bytes())}
				if diff := cmp.Diff(want, jwk); diff != "" {
					t.Errorf("entry (-want +got):\n%s", diff)
				}
			}
			if diff := cmp.Diff(tt.kids, kids); diff != "" {
				t.Errorf("kids (-want +got):\n%s", diff)
			}
		})
	}
	one, err := a.JWKS()
	if err != nil {
		t.Fatal(err)
	}
	if want, _ := issue.JWKS(a); string(one) != string(want) {
		t.Errorf("Key.JWKS = %s, want %s", one, want)
	}
}

// TestThumbprint pins the default kid to RFC 7638's worked example
// (section 3.1).
func TestThumbprint(t *testing.T) {
	n, err := base64.RawURLEncoding.DecodeString("0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw")
	if err != nil {
		t.Fatal(err)
	}
	got := issue.Thumbprint(&rsa.PublicKey{N: new(big.Int).SetBytes(n), E: 65537})
	if want := "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"; got != want {
		t.Errorf("Thumbprint = %q, want %q", got, want)
	}
}
