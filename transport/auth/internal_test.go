package auth

import (
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

// jwksEntry is a JWKS entry with n and e of the given modulus and exponent.
func jwksEntry(kid string, n *big.Int, e int64) string {
	return `{"kty":"RSA","kid":"` + kid + `","use":"sig","alg":"RS256","n":"` +
		base64.RawURLEncoding.EncodeToString(n.Bytes()) + `","e":"` +
		base64.RawURLEncoding.EncodeToString(big.NewInt(e).Bytes()) + `"}`
}

// modulus is a fixed 2048-bit odd number: parseJWKS checks sizes, not
// primality, and Verify needs no real key here.
func modulus(bits int) *big.Int {
	n := new(big.Int).Lsh(big.NewInt(1), uint(bits-1))
	return n.Add(n, big.NewInt(12345))
}

func TestParseJWKS(t *testing.T) {
	n := modulus(2048)
	ok := jwksEntry("a", n, 65537)
	tests := []struct {
		name     string
		doc      string
		wantKIDs []string // nil: an error
	}{
		{name: "one key", doc: `{"keys":[` + ok + `]}`, wantKIDs: []string{"a"}},
		{name: "padded n and e", doc: `{"keys":[{"kty":"RSA","kid":"a","n":"` +
			base64.URLEncoding.EncodeToString(n.Bytes()) + `","e":"AQAB"}]}`, wantKIDs: []string{"a"}},
		{name: "no use or alg", doc: `{"keys":[{"kty":"RSA","kid":"a","n":"` +
			base64.RawURLEncoding.EncodeToString(n.Bytes()) + `","e":"AQAB"}]}`, wantKIDs: []string{"a"}},
		{name: "EC and oct skipped", doc: `{"keys":[{"kty":"EC","kid":"e","crv":"P-256","x":"AA","y":"AA"},{"kty":"oct","kid":"o","k":"AA"},` + ok + `]}`, wantKIDs: []string{"a"}},
		{name: "enc key skipped", doc: `{"keys":[` + strings.Replace(ok, `"use":"sig"`, `"use":"enc"`, 1) + `]}`},
		{name: "RS512 key skipped", doc: `{"keys":[` + strings.Replace(ok, `"alg":"RS256"`, `"alg":"RS512"`, 1) + `]}`},
		{name: "kid missing", doc: `{"keys":[` + strings.Replace(ok, `"kid":"a",`, ``, 1) + `]}`},
		{name: "kty rsa in lower case", doc: `{"keys":[` + strings.Replace(ok, `"RSA"`, `"rsa"`, 1) + `]}`},
		{name: "first of a kid wins", doc: `{"keys":[` + ok + `,` + jwksEntry("a", modulus(3072), 3) + `]}`, wantKIDs: []string{"a"}},
		{name: "two kids", doc: `{"keys":[` + ok + `,` + jwksEntry("b", n, 3) + `]}`, wantKIDs: []string{"a", "b"}},
		{name: "n not base64url", doc: `{"keys":[{"kty":"RSA","kid":"a","n":"!!","e":"AQAB"}]}`},
		{name: "n a number", doc: `{"keys":[{"kty":"RSA","kid":"a","n":5,"e":"AQAB"}]}`},
		{name: "1024-bit key", doc: `{"keys":[` + jwksEntry("a", modulus(1024), 65537) + `]}`},
		{name: "8192-bit key", doc: `{"keys":[` + jwksEntry("a", modulus(8192), 65537) + `]}`, wantKIDs: []string{"a"}},
		{name: "8193-bit key", doc: `{"keys":[` + jwksEntry("a", modulus(8193), 65537) + `]}`},
		{name: "e even", doc: `{"keys":[` + jwksEntry("a", n, 65536) + `]}`},
		{name: "e 1", doc: `{"keys":[` + jwksEntry("a", n, 1) + `]}`},
		{name: "e over 2^31-1", doc: `{"keys":[` + jwksEntry("a", n, 1<<33+1) + `]}`},
		{name: "e empty", doc: `{"keys":[{"kty":"RSA","kid":"a","n":"` + base64.RawURLEncoding.EncodeToString(n.Bytes()) + `","e":""}]}`},
		{name: "empty keys", doc: `{"keys":[]}`},
		{name: "no keys field", doc: `{"kty":"RSA"}`},
		{name: "keys not a list", doc: `{"keys":"x"}`},
		{name: "a list", doc: `[]`},
		{name: "null", doc: `null`},
		{name: "not JSON", doc: `<html>`},
		{name: "empty", doc: ``},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			keys, err := parseJWKS([]byte(tt.doc))
			if tt.wantKIDs == nil {
				if err == nil {
					t.Fatalf("parseJWKS() = %d keys, want an error", len(keys))
				}
				return
			}
			if err != nil {
				t.Fatalf("parseJWKS(): %v", err)
			}
			var got []string
			for kid := range keys {
				got = append(got, kid)
			}
			if diff := cmp.Diff(tt.wantKIDs, got, cmpopts.SortSlices(func(a, b string) bool { return a < b })); diff != "" {
				t.Errorf("kids (-want +got):\n%s", diff)
			}
		})
	}
}

func FuzzParseJWKS(f *testing.F) {
	priv, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		f.Fatal(err)
	}
	real := jwksEntry("kid-1", priv.N, int64(priv.E))
	for _, seed := range []string{
		`{"keys":[` + real + `]}`,
		`{"keys":[` + real + `,{"kty":"EC","kid":"e","crv":"P-256","x":"AA","y":"AA"}]}`,
		`{"keys":[{"kty":"oct","kid":"o","k":"c2VjcmV0"}]}`,
		`{"keys":[{"kty":"RSA","kid":"a","n":"AQAB","e":"AQAB"}]}`,
		`{"keys":[]}`, `{"keys":null}`, `{}`, `[]`, `null`, `x`, ``,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, doc []byte) {
		keys, err := parseJWKS(doc)
		if err != nil {
			if keys != nil {
				t.Errorf("parseJWKS() = keys and error %v", err)
			}
			return
		}
		if len(keys) == 0 {
			t.Fatal("parseJWKS() = no keys and no error")
		}
		for kid, k := range keys {
			if kid == "" {
				t.Error("a key without kid")
			}
			if bits := k.N.BitLen(); bits < minRSABits || bits > maxRSABits {
				t.Errorf("kid %q: %d-bit modulus", kid, bits)
			}
			if k.E < 3 || k.E%2 == 0 {
				t.Errorf("kid %q: exponent %d", kid, k.E)
			}
		}
	})
}

func TestNormalizeHost(t *testing.T) {
	tests := []struct {
		in, want string // want "" means refused
	}{
		{in: "visibility.amp.cisco.com", want: "visibility.amp.cisco.com"},
		{in: "Visibility.EU.amp.cisco.com", want: "visibility.eu.amp.cisco.com"},
		{in: "jwks.example:8443", want: "jwks.example:8443"},
		{in: "127.0.0.1:65535", want: "127.0.0.1:65535"},
		{in: "[::1]", want: "[::1]"},
		{in: "[2001:DB8::1]:443", want: "[2001:db8::1]:443"},
		{in: "a-b.c", want: "a-b.c"},
		{in: ""},
		{in: "-a.b"},
		{in: "a-.b"},
		{in: "a..b"},
		{in: ".a"},
		{in: "a."},
		{in: "a_b.c"},
		{in: "a:0"},
		{in: "a:065"},
		{in: "a:65536"},
		{in: "a:123456"},
		{in: "a:+1"},
		{in: "a:1:2"},
		{in: "::1"},
		{in: "[::1]:"},
		{in: "[::1]x"},
		{in: "[::1%eth0]"},
		{in: "[127.0.0.1]"},
		{in: "[]"},
		{in: "a@b"},
		{in: "a/b"},
		{in: "a?b"},
		{in: "a#b"},
		{in: "a b"},
		{in: "a\tb"},
		{in: `a\b`},
		{in: "https://a"},
		{in: "é.example"},
		{in: strings.Repeat("a", 64) + ".example"},
		{in: strings.Repeat("a.", 127) + "ab"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, ok := normalizeHost(tt.in)
			if ok != (tt.want != "") || got != tt.want {
				t.Errorf("normalizeHost(%q) = %q, %v; want %q", tt.in, got, ok, tt.want)
			}
		})
	}
}

func FuzzNormalizeHost(f *testing.F) {
	for _, s := range []string{
		"visibility.amp.cisco.com", "127.0.0.1:8443", "[::1]:443", "a@b", "a/b", "a:0", "[::1%25x]", "A.B:1",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got, ok := normalizeHost(s)
		if !ok {
			return
		}
		if got != strings.ToLower(s) {
			t.Errorf("normalizeHost(%q) = %q, want the lower-cased input", s, got)
		}
		if strings.ContainsAny(got, "@/?#\\ \t\r\n%") {
			t.Errorf("normalizeHost(%q) = %q lets a URL delimiter through", s, got)
		}
		if again, ok := normalizeHost(got); !ok || again != got {
			t.Errorf("normalizeHost(%q) = %q, %v; not idempotent", got, again, ok)
		}
	})
}

func TestTokenCacheLRU(t *testing.T) {
	now := time.Date(2020, 4, 15, 0, 0, 0, 0, time.UTC)
	key := func(s string) tokenKey { return newTokenKey(s, []string{"aud"}) }
	c := newTokenCache(2)
	c.put(key("a"), Claims{Key: "a"}, now.Add(time.Hour))
	c.put(key("b"), Claims{Key: "b"}, now.Add(time.Hour))
	if _, ok := c.get(key("a"), now); !ok { // a is now the most recent
		t.Fatal("a missing")
	}
	c.put(key("c"), Claims{Key: "c"}, now.Add(time.Minute))
	if got := c.len(); got != 2 {
		t.Errorf("len = %d, want 2", got)
	}
	for _, tt := range []struct {
		token string
		at    time.Time
		want  bool
	}{
		{token: "b", at: now, want: false}, // evicted: least recently used
		{token: "a", at: now, want: true},
		{token: "c", at: now.Add(time.Minute - time.Nanosecond), want: true},
		{token: "c", at: now.Add(time.Minute), want: false}, // expired, dropped
	} {
		if _, got := c.get(key(tt.token), tt.at); got != tt.want {
			t.Errorf("get(%s) at %v = %v, want %v", tt.token, tt.at.Sub(now), got, tt.want)
		}
	}
	if got := c.len(); got != 1 {
		t.Errorf("len after the expired get = %d, want 1", got)
	}
}

func TestTokenKey(t *testing.T) {
	distinct := [][2]any{
		{"tok", []string{"a"}},
		{"tok", []string{"b"}},
		{"tok", []string{"a", "b"}},
		{"tok", []string{"ab"}},
		{"toka", []string{""}},
		{"tok", []string{"a", ""}},
		{"other", []string{"a"}},
	}
	seen := map[tokenKey]int{}
	for i, d := range distinct {
		k := newTokenKey(d[0].(string), d[1].([]string))
		if j, dup := seen[k]; dup {
			t.Errorf("inputs %d and %d share a key", j, i)
		}
		seen[k] = i
	}
	if k1, k2 := newTokenKey("tok", []string{"a"}), newTokenKey("tok", []string{"a"}); k1 != k2 {
		t.Error("the key is not deterministic")
	}
}
