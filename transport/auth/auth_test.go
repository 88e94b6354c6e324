package auth_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/pulsedive-relay/relay/pulsedive"
	"github.com/pulsedive-relay/relay/transport/auth"
	"github.com/pulsedive-relay/relay/transport/authtest"
)

func b64(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }

// null is a JSON null claim (a nil value in with deletes the claim).
var null = json.RawMessage("null")

func defaultClaims() auth.Claims {
	return auth.Claims{Key: pulsedive.APIKey(testAPIKey), EntitiesLimit: auth.DefaultEntitiesLimit}
}

// TestAuthenticate pins every reason of the contract, the order in which
// the checks run, and which checks happen before any network request.
func TestAuthenticate(t *testing.T) {
	signing, foreign, second := keys(t)
	pubPEM, err := signing.PublicKeyPEM()
	if err != nil {
		t.Fatal(err)
	}
	pubDER, err := x509.MarshalPKIXPublicKey(&signing.Private.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	ecKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}

	// Token builders. Each runs against a fresh fixture.
	signed := func(fields map[string]any) func(*fixture) *http.Request {
		return func(f *fixture) *http.Request { return bearer(f.mint(with(f.claims(), fields))) }
	}
	signedHeader := func(header map[string]any, fields map[string]any) func(*fixture) *http.Request {
		return func(f *fixture) *http.Request {
			tok, err := f.key.MintHeader(header, with(f.claims(), fields))
			if err != nil {
				t.Fatal(err)
			}
			return bearer(tok)
		}
	}
	mintWith := func(method string, key any, fields map[string]any) func(*fixture) *http.Request {
		return func(f *fixture) *http.Request {
			tok, err := authtest.MintWith(method, key, testKID, with(f.claims(), fields))
			if err != nil {
				t.Fatal(err)
			}
			return bearer(tok)
		}
	}
	signedBy := func(k *authtest.Key, kid string, fields map[string]any) func(*fixture) *http.Request {
		return func(f *fixture) *http.Request {
			tok, err := k.MintHeader(map[string]any{"kid": kid}, with(f.claims(), fields))
			if err != nil {
				t.Fatal(err)
			}
			return bearer(tok)
		}
	}
	// edited takes a valid token apart and rebuilds it.
	edited := func(edit func(header, payload, sig string) string) func(*fixture) *http.Request {
		return func(f *fixture) *http.Request {
			parts := strings.Split(f.mint(f.claims()), ".")
			return bearer(edit(parts[0], parts[1], parts[2]))
		}
	}
	header := func(v ...string) func(*fixture) *http.Request {
		return func(*fixture) *http.Request { return request(v...) }
	}
	now := epoch.Unix()

	tests := []struct {
		name  string
		setup func(*fixture)
		req   func(*fixture) *http.Request
		want  string      // reason; "" is success
		claim auth.Claims // on success; zero means defaultClaims
		// fetches is how many JWKS requests reached the allowed server.
		fetches int
	}{
		// 1-2: the header.
		{name: "no Authorization header", req: header(), want: auth.ReasonMissingHeader},
		{name: "empty header", req: header(""), want: auth.ReasonWrongType},
		{name: "blank header", req: header("  \t "), want: auth.ReasonWrongType},
		{name: "scheme only", req: header("Bearer"), want: auth.ReasonWrongType},
		{name: "token without scheme", req: func(f *fixture) *http.Request { return request(f.mint(f.claims())) }, want: auth.ReasonWrongType},
		{name: "basic scheme", req: header("Basic dXNlcjpwYXNz"), want: auth.ReasonWrongType},
		{name: "three words", req: header("Bearer a.b.c extra"), want: auth.ReasonWrongType},
		{name: "bearer without token but two blanks", req: header("Bearer   "), want: auth.ReasonWrongType},
		{name: "two Authorization headers", req: func(f *fixture) *http.Request {
			tok := f.mint(f.claims())
			return request("Bearer "+tok, "Bearer "+tok)
		}, want: auth.ReasonWrongType},
		{name: "scheme in any case, extra blanks", req: func(f *fixture) *http.Request {
			return request(" bEaReR \t " + f.mint(f.claims()) + "  ")
		}, fetches: 1},

		// 3: structure.
		{name: "one part", req: header("Bearer abc"), want: auth.ReasonWrongStructure},
		{name: "two parts", req: header("Bearer abc.def"), want: auth.ReasonWrongStructure},
		{name: "four parts", req: edited(func(h, p, s string) string { return h + "." + p + "." + s + "." + s }), want: auth.ReasonWrongStructure},
		{name: "empty parts", req: header("Bearer .."), want: auth.ReasonWrongStructure},
		{name: "header not base64url", req: edited(func(_, p, s string) string { return "eyJ!!!." + p + "." + s }), want: auth.ReasonWrongStructure},
		{name: "header in standard base64", req: edited(func(_, p, s string) string {
			return base64.StdEncoding.EncodeToString([]byte(`{"alg":"RS256","kid":"kid-1","x":"??>"}`)) + "." + p + "." + s
		}), want: auth.ReasonWrongStructure},
		{name: "header a JSON list", req: edited(func(_, p, s string) string { return b64(`["RS256"]`) + "." + p + "." + s }), want: auth.ReasonWrongStructure},
		{name: "header JSON null", req: edited(func(_, p, s string) string { return b64(`null`) + "." + p + "." + s }), want: auth.ReasonWrongStructure},
		{name: "payload not JSON", req: edited(func(h, _, s string) string { return h + "." + b64("jwks_host") + "." + s }), want: auth.ReasonWrongStructure},
		{name: "payload a string", req: edited(func(h, _, s string) string { return h + "." + b64(`"x"`) + "." + s }), want: auth.ReasonWrongStructure},
		{name: "payload with trailing data", req: edited(func(h, p, s string) string {
			raw, _ := base64.RawURLEncoding.DecodeString(p)
			return h + "." + b64(string(raw)+"{}") + "." + s
		}), want: auth.ReasonWrongStructure},
		{name: "signature not base64url", req: edited(func(h, p, _ string) string { return h + "." + p + ".%%%" }), want: auth.ReasonWrongStructure},
		{name: "token over 16 KiB", req: signed(map[string]any{"pad": strings.Repeat("x", 16<<10)}), want: auth.ReasonWrongStructure},
		{name: "padded signature is tolerated", req: edited(func(h, p, s string) string {
			return h + "." + p + "." + s + strings.Repeat("=", (4-len(s)%4)%4)
		}), fetches: 1},
		{name: "padded payload decodes but was not what was signed", req: edited(func(h, p, s string) string {
			return h + "." + p + "=." + s
		}), want: auth.ReasonWrongKey, fetches: 1},

		// 4: jwks_host present.
		{name: "jwks_host absent", req: signed(map[string]any{"jwks_host": nil}), want: auth.ReasonMissingJWKSHost},
		{name: "jwks_host empty", req: signed(map[string]any{"jwks_host": ""}), want: auth.ReasonMissingJWKSHost},
		{name: "jwks_host null", req: signed(map[string]any{"jwks_host": null}), want: auth.ReasonMissingJWKSHost},
		{name: "jwks_host a number", req: signed(map[string]any{"jwks_host": 443}), want: auth.ReasonMissingJWKSHost},
		{name: "jwks_host a list", req: signed(map[string]any{"jwks_host": []string{"x"}}), want: auth.ReasonMissingJWKSHost},

		// 5: jwks_host allowed, without a request to it.
		{name: "jwks_host outside the allow-list", req: func(f *fixture) *http.Request {
			return bearer(f.mint(with(f.claims(), map[string]any{"jwks_host": f.evil.Host()})))
		}, want: auth.ReasonWrongJWKSHost},
		{name: "jwks_host a URL", req: func(f *fixture) *http.Request {
			return bearer(f.mint(with(f.claims(), map[string]any{"jwks_host": "https://" + f.srv.Host()})))
		}, want: auth.ReasonWrongJWKSHost},

		// 6: alg, before any key is fetched.
		{name: "alg none", req: mintWith("none", nil, nil), want: auth.ReasonWrongKey},
		{name: "alg None", req: mintWith("None", nil, nil), want: auth.ReasonWrongKey},
		{name: "alg NONE with a signature", req: edited(func(_, p, s string) string {
			return b64(`{"alg":"NONE","kid":"kid-1"}`) + "." + p + "." + s
		}), want: auth.ReasonWrongKey},
		{name: "HS256 keyed with the public key PEM", req: mintWith("HS256", pubPEM, nil), want: auth.ReasonWrongKey},
		{name: "HS256 keyed with the public key DER", req: mintWith("HS256", pubDER, nil), want: auth.ReasonWrongKey},
		{name: "HS512 keyed with the public key PEM", req: mintWith("HS512", pubPEM, nil), want: auth.ReasonWrongKey},
		{name: "RS384 with the right key", req: mintWith("RS384", signing.Private, nil), want: auth.ReasonWrongKey},
		{name: "RS512 with the right key", req: mintWith("RS512", signing.Private, nil), want: auth.ReasonWrongKey},
		{name: "PS256 with the right key", req: mintWith("PS256", signing.Private, nil), want: auth.ReasonWrongKey},
		{name: "ES256", req: mintWith("ES256", ecKey, nil), want: auth.ReasonWrongKey},
		{name: "alg rs256 in lower case", req: edited(func(_, p, s string) string {
			return b64(`{"alg":"rs256","kid":"kid-1"}`) + "." + p + "." + s
		}), want: auth.ReasonWrongKey},
		{name: "alg absent", req: signedHeader(map[string]any{"alg": nil}, nil), want: auth.ReasonWrongKey},
		{name: "alg a number", req: signedHeader(map[string]any{"alg": 256}, nil), want: auth.ReasonWrongKey},

		// 7: the JWKS fetch.
		{name: "JWKS answers 500", setup: func(f *fixture) { f.srv.SetStatus(http.StatusInternalServerError) }, req: signed(nil), want: auth.ReasonWrongJWKSHost, fetches: 1},
		{name: "JWKS answers 404", setup: func(f *fixture) { f.srv.SetStatus(http.StatusNotFound) }, req: signed(nil), want: auth.ReasonWrongJWKSHost, fetches: 1},
		{name: "JWKS answers 204", setup: func(f *fixture) { f.srv.SetStatus(http.StatusNoContent) }, req: signed(nil), want: auth.ReasonWrongJWKSHost, fetches: 1},
		{name: "JWKS redirects to another host", setup: func(f *fixture) { f.srv.SetRedirect(f.evil.URL()) }, req: signed(nil), want: auth.ReasonWrongJWKSHost, fetches: 1},
		{name: "JWKS redirects to itself", setup: func(f *fixture) { f.srv.SetRedirect(f.srv.URL()) }, req: signed(nil), want: auth.ReasonWrongJWKSHost, fetches: 1},
		{name: "JWKS not JSON", setup: func(f *fixture) { f.srv.SetJWKS([]byte("<html>hello</html>")) }, req: signed(nil), want: auth.ReasonWrongJWKSHost, fetches: 1},
		{name: "JWKS without keys", setup: func(f *fixture) { f.srv.SetJWKS([]byte(`{"keys":[]}`)) }, req: signed(nil), want: auth.ReasonWrongJWKSHost, fetches: 1},
		{name: "JWKS keys not a list", setup: func(f *fixture) { f.srv.SetJWKS([]byte(`{"keys":{"kid":"kid-1"}}`)) }, req: signed(nil), want: auth.ReasonWrongJWKSHost, fetches: 1},
		{name: "JWKS with only EC and oct keys", setup: func(f *fixture) {
			f.srv.SetJWKS(mustJWKS(t, map[string]any{"kty": "EC", "kid": testKID, "crv": "P-256", "x": "AA", "y": "AA"},
				map[string]any{"kty": "oct", "kid": testKID, "k": b64("secret")}))
		}, req: signed(nil), want: auth.ReasonWrongJWKSHost, fetches: 1},
		{name: "JWKS over 1 MiB", setup: func(f *fixture) {
			doc, _ := authtest.JWKS(f.key)
			f.srv.SetJWKS(append(doc, strings.Repeat(" ", 1<<20)...))
		}, req: signed(nil), want: auth.ReasonWrongJWKSHost, fetches: 1},

		// 8: kid.
		{name: "kid absent", req: signedHeader(map[string]any{"kid": nil}, nil), want: auth.ReasonKIDNotFound, fetches: 1},
		{name: "kid empty", req: signedHeader(map[string]any{"kid": ""}, nil), want: auth.ReasonKIDNotFound, fetches: 1},
		{name: "kid a number", req: signedHeader(map[string]any{"kid": 1}, nil), want: auth.ReasonKIDNotFound, fetches: 1},
		{name: "kid unknown", req: signedHeader(map[string]any{"kid": "kid-9"}, nil), want: auth.ReasonKIDNotFound, fetches: 1},
		{name: "kid ../", req: signedHeader(map[string]any{"kid": "../kid-1"}, nil), want: auth.ReasonKIDNotFound, fetches: 1},
		{name: "kid /etc/passwd", req: signedHeader(map[string]any{"kid": "/etc/passwd"}, nil), want: auth.ReasonKIDNotFound, fetches: 1},
		{name: "kid with a path to the JWKS", req: signedHeader(map[string]any{"kid": "../../.well-known/jwks"}, nil), want: auth.ReasonKIDNotFound, fetches: 1},

		// 9: signature.
		{name: "foreign key under a known kid", req: signedBy(foreign, testKID, nil), want: auth.ReasonWrongKey, fetches: 1},
		{name: "second key under the first key's kid", req: signedBy(second, testKID, nil), want: auth.ReasonWrongKey, fetches: 1},
		{name: "tampered payload", req: func(f *fixture) *http.Request {
			parts := strings.Split(f.mint(f.claims()), ".")
			other := strings.Split(f.mint(with(f.claims(), map[string]any{"key": "someone-else"})), ".")
			return bearer(parts[0] + "." + other[1] + "." + parts[2])
		}, want: auth.ReasonWrongKey, fetches: 1},
		{name: "empty signature", req: edited(func(h, p, _ string) string { return h + "." + p + "." }), want: auth.ReasonWrongKey, fetches: 1},
		{name: "truncated signature", req: edited(func(h, p, s string) string { return h + "." + p + "." + s[:len(s)-4] }), want: auth.ReasonWrongKey, fetches: 1},
		{name: "second key under its own kid", req: signedBy(second, "kid-2", nil), fetches: 1},

		// 10: exp and nbf, with the injected clock and no leeway.
		{name: "expired", req: signed(map[string]any{"exp": now - 1}), want: auth.ReasonExpired, fetches: 1},
		{name: "expires now", req: signed(map[string]any{"exp": now}), want: auth.ReasonExpired, fetches: 1},
		{name: "exp 0", req: signed(map[string]any{"exp": 0}), want: auth.ReasonExpired, fetches: 1},
		{name: "expires in a second", req: signed(map[string]any{"exp": now + 1}), fetches: 1},
		{name: "no exp", req: signed(map[string]any{"exp": nil}), fetches: 1},
		{name: "not valid yet", req: signed(map[string]any{"nbf": now + 1}), want: auth.ReasonNotYetValid, fetches: 1},
		{name: "valid from now", req: signed(map[string]any{"nbf": now}), fetches: 1},
		{name: "expired and not valid yet", req: signed(map[string]any{"exp": now - 1, "nbf": now + 1}), want: auth.ReasonExpired, fetches: 1},
		{name: "exp a string", req: signed(map[string]any{"exp": "tomorrow"}), want: auth.ReasonWrongStructure, fetches: 1},
		{name: "iat in the future is not checked", req: signed(map[string]any{"iat": now + 3600}), fetches: 1},

		// 11: aud.
		{name: "aud absent", req: signed(map[string]any{"aud": nil}), want: auth.ReasonWrongAudience, fetches: 1},
		{name: "aud another relay", req: signed(map[string]any{"aud": "https://other.example"}), want: auth.ReasonWrongAudience, fetches: 1},
		{name: "aud with a trailing slash", req: signed(map[string]any{"aud": testAudience + "/"}), want: auth.ReasonWrongAudience, fetches: 1},
		{name: "aud in another case", req: signed(map[string]any{"aud": strings.ToUpper(testAudience)}), want: auth.ReasonWrongAudience, fetches: 1},
		{name: "aud a list holding ours", req: signed(map[string]any{"aud": []string{"https://other.example", testAudience}}), fetches: 1},
		{name: "aud a list without ours", req: signed(map[string]any{"aud": []string{"https://other.example"}}), want: auth.ReasonWrongAudience, fetches: 1},
		{name: "aud an empty list", req: signed(map[string]any{"aud": []string{}}), want: auth.ReasonWrongAudience, fetches: 1},
		{name: "aud a list with a number", req: signed(map[string]any{"aud": []any{testAudience, 1}}), want: auth.ReasonWrongAudience, fetches: 1},
		{name: "aud a number", req: signed(map[string]any{"aud": 1}), want: auth.ReasonWrongAudience, fetches: 1},

		// 12: key.
		{name: "key absent", req: signed(map[string]any{"key": nil}), want: auth.ReasonWrongPayload, fetches: 1},
		{name: "key empty", req: signed(map[string]any{"key": ""}), want: auth.ReasonWrongPayload, fetches: 1},
		{name: "key a number", req: signed(map[string]any{"key": 12345}), want: auth.ReasonWrongPayload, fetches: 1},

		// 13: CTR_ENTITIES_LIMIT.
		{name: "limit absent", req: signed(nil), fetches: 1},
		{name: "limit 0", req: signed(map[string]any{"CTR_ENTITIES_LIMIT": 0}), fetches: 1},
		{name: "limit -1", req: signed(map[string]any{"CTR_ENTITIES_LIMIT": -1}), fetches: 1},
		{name: "limit 7", req: signed(map[string]any{"CTR_ENTITIES_LIMIT": 7}), claim: auth.Claims{Key: testAPIKey, EntitiesLimit: 7}, fetches: 1},
		{name: `limit "7"`, req: signed(map[string]any{"CTR_ENTITIES_LIMIT": "7"}), claim: auth.Claims{Key: testAPIKey, EntitiesLimit: 7}, fetches: 1},
		{name: `limit " 7 "`, req: signed(map[string]any{"CTR_ENTITIES_LIMIT": " 7 "}), claim: auth.Claims{Key: testAPIKey, EntitiesLimit: 7}, fetches: 1},
		{name: "limit 7.0", req: signed(map[string]any{"CTR_ENTITIES_LIMIT": json.RawMessage("7.0")}), claim: auth.Claims{Key: testAPIKey, EntitiesLimit: 7}, fetches: 1},
		{name: "limit 1e1", req: signed(map[string]any{"CTR_ENTITIES_LIMIT": json.RawMessage("1e1")}), claim: auth.Claims{Key: testAPIKey, EntitiesLimit: 10}, fetches: 1},
		{name: "limit 7.5", req: signed(map[string]any{"CTR_ENTITIES_LIMIT": 7.5}), fetches: 1},
		{name: `limit "7.5"`, req: signed(map[string]any{"CTR_ENTITIES_LIMIT": "7.5"}), fetches: 1},
		{name: `limit "x"`, req: signed(map[string]any{"CTR_ENTITIES_LIMIT": "x"}), fetches: 1},
		{name: `limit "-3"`, req: signed(map[string]any{"CTR_ENTITIES_LIMIT": "-3"}), fetches: 1},
		{name: "limit true", req: signed(map[string]any{"CTR_ENTITIES_LIMIT": true}), fetches: 1},
		{name: "limit null", req: signed(map[string]any{"CTR_ENTITIES_LIMIT": null}), fetches: 1},
		{name: "limit 1e30", req: signed(map[string]any{"CTR_ENTITIES_LIMIT": json.RawMessage("1e30")}), fetches: 1},

		// The order of the checks when several fail.
		{name: "alg none and no jwks_host", req: mintWith("none", nil, map[string]any{"jwks_host": nil}), want: auth.ReasonMissingJWKSHost},
		{name: "alg none and jwks_host not allowed", req: mintWith("none", nil, map[string]any{"jwks_host": "evil.example"}), want: auth.ReasonWrongJWKSHost},
		{name: "HS256 and JWKS down", setup: func(f *fixture) { f.srv.SetStatus(http.StatusBadGateway) }, req: mintWith("HS256", pubPEM, nil), want: auth.ReasonWrongKey},
		{name: "JWKS down and kid absent", setup: func(f *fixture) { f.srv.SetStatus(http.StatusBadGateway) }, req: signedHeader(map[string]any{"kid": nil}, nil), want: auth.ReasonWrongJWKSHost, fetches: 1},
		{name: "foreign key and expired", req: signedBy(foreign, testKID, map[string]any{"exp": now - 1}), want: auth.ReasonWrongKey, fetches: 1},
		{name: "expired and wrong aud", req: signed(map[string]any{"exp": now - 1, "aud": "x"}), want: auth.ReasonExpired, fetches: 1},
		{name: "wrong aud and no key", req: signed(map[string]any{"aud": "x", "key": nil}), want: auth.ReasonWrongAudience, fetches: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, nil)
			if tt.setup != nil {
				tt.setup(f)
			}
			r := tt.req(f)
			got, err := f.auth.Authenticate(r)
			if diff := cmp.Diff(tt.want, reasonOf(t, err)); diff != "" {
				t.Errorf("reason (-want +got):\n%s", diff)
			}
			want := auth.Claims{}
			if tt.want == "" {
				want = tt.claim
				if want == (auth.Claims{}) {
					want = defaultClaims()
				}
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("claims (-want +got):\n%s", diff)
			}
			if got, want := f.srv.Requests(authtest.JWKSPath), tt.fetches; got != want {
				t.Errorf("JWKS fetches = %d, want %d", got, want)
			}
			if got := f.evil.TotalRequests(); got != 0 {
				t.Errorf("%d requests reached the host outside the allow-list", got)
			}
			if err != nil {
				tok := strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(r.Header.Get("Authorization")), "Bearer"))
				msg := fmt.Sprintf("%v %+v", err, err)
				if strings.Contains(msg, testAPIKey) || (len(tok) > 8 && strings.Contains(msg, tok)) {
					t.Errorf("error %q carries the key or the token", msg)
				}
			}
			// One log line per refusal, none for a success, and never a
			// secret in them.
			wantLines := map[string]int{}
			if err != nil {
				wantLines["WARN"] = 1
			}
			if diff := cmp.Diff(wantLines, f.logs.levels(t, "token refused")); diff != "" {
				t.Errorf("\"token refused\" lines by level (-want +got):\n%s", diff)
			}
			for _, v := range r.Header.Values("Authorization") {
				for _, word := range strings.Fields(v) {
					for _, secret := range secretsOf(word) {
						if strings.Contains(f.logs.text(), secret) {
							t.Errorf("the log holds %q:\n%s", secret, f.logs.text())
						}
					}
				}
			}
		})
	}
}

func mustJWKS(t *testing.T, entries ...map[string]any) []byte {
	t.Helper()
	doc, err := authtest.JWKSOf(entries...)
	if err != nil {
		t.Fatal(err)
	}
	return doc
}

func TestClaimsRedactKey(t *testing.T) {
	f := newFixture(t, nil)
	c, err := f.auth.Authenticate(bearer(f.mint(f.claims())))
	if err != nil {
		t.Fatal(err)
	}
	if got := c.Key.Reveal(); got != testAPIKey {
		t.Errorf("Key.Reveal() = %q, want %q", got, testAPIKey)
	}
	for _, s := range []string{fmt.Sprint(c), fmt.Sprintf("%+v", c), fmt.Sprintf("%#v", c)} {
		if strings.Contains(s, testAPIKey) {
			t.Errorf("claims print the key: %s", s)
		}
	}
}

func TestMaxTokenBytes(t *testing.T) {
	f := newFixture(t, nil)
	tok := f.mint(f.claims())
	for _, tt := range []struct {
		name string
		max  int
		want string
	}{
		{name: "token at the limit", max: len(tok)},
		{name: "token a byte over", max: len(tok) - 1, want: auth.ReasonWrongStructure},
	} {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, func(c *auth.Config) { c.MaxTokenBytes = tt.max })
			tok := f.mint(f.claims())
			_, err := f.auth.Authenticate(bearer(tok))
			if diff := cmp.Diff(tt.want, reasonOf(t, err)); diff != "" {
				t.Errorf("reason (-want +got):\n%s", diff)
			}
		})
	}
}

// TestAudience covers the audience derived from the request, as the
// original relay's request.url_root, and the configured list.
func TestAudience(t *testing.T) {
	tests := []struct {
		name      string
		audiences []string
		target    string // request URL: its host becomes the Host header
		forwarded string // X-Forwarded-Proto
		aud       any
		want      string
	}{
		{name: "http with port", target: "http://relay.example:8080/health", aud: "http://relay.example:8080"},
		{name: "http without port", target: "http://relay.example/health", aud: "http://relay.example"},
		{name: "http refuses https", target: "http://relay.example/health", aud: "https://relay.example", want: auth.ReasonWrongAudience},
		{name: "http refuses a trailing slash", target: "http://relay.example/health", aud: "http://relay.example/", want: auth.ReasonWrongAudience},
		{name: "http default port dropped", target: "http://relay.example:80/health", aud: "http://relay.example"},
		{name: "http default port kept in aud refused", target: "http://relay.example:80/health", aud: "http://relay.example:80", want: auth.ReasonWrongAudience},
		{name: "TLS", target: "https://relay.example/health", aud: "https://relay.example"},
		{name: "TLS refuses http", target: "https://relay.example/health", aud: "http://relay.example", want: auth.ReasonWrongAudience},
		{name: "TLS with port", target: "https://relay.example:8443/health", aud: "https://relay.example:8443"},
		{name: "TLS default port dropped", target: "https://relay.example:443/health", aud: "https://relay.example"},
		{name: "X-Forwarded-Proto https", target: "http://relay.example/health", forwarded: "https", aud: "https://relay.example"},
		{name: "X-Forwarded-Proto HTTPS with port", target: "http://relay.example:9090/health", forwarded: "HTTPS", aud: "https://relay.example:9090"},
		{name: "X-Forwarded-Proto chain, client side first", target: "http://relay.example/health", forwarded: "https, http", aud: "https://relay.example"},
		{name: "X-Forwarded-Proto http", target: "http://relay.example/health", forwarded: "http", aud: "https://relay.example", want: auth.ReasonWrongAudience},
		{name: "path is not part of the audience", target: "http://relay.example/health", aud: "http://relay.example/health", want: auth.ReasonWrongAudience},
		{name: "aud list holding the derived audience", target: "http://relay.example/health", aud: []string{"x", "http://relay.example"}},
		{name: "configured list, first", audiences: []string{"https://a.example", "https://b.example"}, target: "http://relay.example/health", aud: "https://a.example"},
		{name: "configured list, second", audiences: []string{"https://a.example", "https://b.example"}, target: "http://relay.example/health", aud: "https://b.example"},
		{name: "configured list replaces the derived one", audiences: []string{"https://a.example"}, target: "http://relay.example/health", aud: "http://relay.example", want: auth.ReasonWrongAudience},
		{name: "configured values are trimmed", audiences: []string{" https://a.example "}, target: "http://relay.example/health", aud: "https://a.example"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, func(c *auth.Config) { c.Audiences = tt.audiences })
			// httptest sets r.TLS for https targets.
			r := httptest.NewRequest(http.MethodPost, tt.target, nil)
			if tt.forwarded != "" {
				r.Header.Set("X-Forwarded-Proto", tt.forwarded)
			}
			r.Header.Set("Authorization", "Bearer "+f.mint(with(f.claims(), map[string]any{"aud": tt.aud})))
			_, err := f.auth.Authenticate(r)
			if diff := cmp.Diff(tt.want, reasonOf(t, err)); diff != "" {
				t.Errorf("reason (-want +got):\n%s", diff)
			}
		})
	}
}

func TestNewValidatesConfig(t *testing.T) {
	tests := []struct {
		name    string
		cfg     auth.Config
		wantErr string
	}{
		{name: "zero config", cfg: auth.Config{}},
		{name: "hosts with ports and case", cfg: auth.Config{JWKSHosts: []string{"Visibility.AMP.cisco.com", "127.0.0.1:8443", "[::1]:443", " jwks.example "}}},
		{name: "scheme", cfg: auth.Config{JWKSHosts: []string{"https://visibility.amp.cisco.com"}}, wantErr: `auth config: JWKS host "https://visibility.amp.cisco.com" is not a bare host[:port]`},
		{name: "path", cfg: auth.Config{JWKSHosts: []string{"visibility.amp.cisco.com/.well-known"}}, wantErr: `auth config: JWKS host "visibility.amp.cisco.com/.well-known" is not a bare host[:port]`},
		{name: "userinfo", cfg: auth.Config{JWKSHosts: []string{"user@visibility.amp.cisco.com"}}, wantErr: `auth config: JWKS host "user@visibility.amp.cisco.com" is not a bare host[:port]`},
		{name: "empty entry", cfg: auth.Config{JWKSHosts: []string{"visibility.amp.cisco.com", ""}}, wantErr: `auth config: JWKS host "" is not a bare host[:port]`},
		{name: "port 0", cfg: auth.Config{JWKSHosts: []string{"jwks.example:0"}}, wantErr: `auth config: JWKS host "jwks.example:0" is not a bare host[:port]`},
		{name: "port too large", cfg: auth.Config{JWKSHosts: []string{"jwks.example:65536"}}, wantErr: `auth config: JWKS host "jwks.example:65536" is not a bare host[:port]`},
		{name: "empty port", cfg: auth.Config{JWKSHosts: []string{"jwks.example:"}}, wantErr: `auth config: JWKS host "jwks.example:" is not a bare host[:port]`},
		{name: "unclosed IPv6", cfg: auth.Config{JWKSHosts: []string{"[::1"}}, wantErr: `auth config: JWKS host "[::1" is not a bare host[:port]`},
		{name: "inner space", cfg: auth.Config{JWKSHosts: []string{"jwks example"}}, wantErr: `auth config: JWKS host "jwks example" is not a bare host[:port]`},
		{name: "empty audience", cfg: auth.Config{Audiences: []string{"https://relay.example", " "}}, wantErr: "auth config: empty audience"},
		{name: "negative TTL", cfg: auth.Config{JWKSTTL: -time.Second}, wantErr: "auth config: JWKSTTL -1s is negative"},
		{name: "negative max key age", cfg: auth.Config{MaxKeyAge: -time.Second}, wantErr: "auth config: MaxKeyAge -1s is negative"},
		{name: "negative refusal log window", cfg: auth.Config{RefusalLogEvery: -time.Second}, wantErr: "auth config: RefusalLogEvery -1s is negative"},
		{name: "negative refresh interval", cfg: auth.Config{RefreshInterval: -time.Second}, wantErr: "auth config: RefreshInterval -1s is negative"},
		{name: "negative fetch timeout", cfg: auth.Config{FetchTimeout: -time.Second}, wantErr: "auth config: FetchTimeout -1s is negative"},
		{name: "negative default limit", cfg: auth.Config{DefaultEntitiesLimit: -1}, wantErr: "auth config: DefaultEntitiesLimit -1 is negative"},
		{name: "negative max token bytes", cfg: auth.Config{MaxTokenBytes: -1}, wantErr: "auth config: MaxTokenBytes -1 is negative"},
		{name: "several problems, in field order", cfg: auth.Config{JWKSTTL: -time.Second, JWKSHosts: []string{"a/b"}, Audiences: []string{""}},
			wantErr: "auth config: JWKSTTL -1s is negative\n" + `JWKS host "a/b" is not a bare host[:port]` + "\nempty audience"},
		{name: "negative token cache disables it", cfg: auth.Config{TokenCacheSize: -1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := auth.New(tt.cfg)
			got := ""
			if err != nil {
				got = err.Error()
			}
			if diff := cmp.Diff(tt.wantErr, got); diff != "" {
				t.Errorf("New() error (-want +got):\n%s", diff)
			}
		})
	}
}

func TestDefaultEntitiesLimit(t *testing.T) {
	f := newFixture(t, func(c *auth.Config) { c.DefaultEntitiesLimit = 50 })
	got, err := f.auth.Authenticate(bearer(f.mint(with(f.claims(), map[string]any{"CTR_ENTITIES_LIMIT": "x"}))))
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(auth.Claims{Key: testAPIKey, EntitiesLimit: 50}, got); diff != "" {
		t.Errorf("claims (-want +got):\n%s", diff)
	}
}
