package relay

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/google/go-cmp/cmp"

	"github.com/pulsedive-relay/relay/pulsedive/pulsedivetest"
	"github.com/pulsedive-relay/relay/transport/auth/issue"
	"github.com/pulsedive-relay/relay/transport/authtest"
)

// testKeys are two RSA keys, generated once: generating one takes a while.
var testKeys = sync.OnceValues(func() ([2]*authtest.Key, error) {
	var keys [2]*authtest.Key
	for i := range keys {
		k, err := authtest.NewKey("")
		if err != nil {
			return keys, err
		}
		keys[i] = k
	}
	return keys, nil
})

func twoKeys(t *testing.T) (a, b *authtest.Key) {
	t.Helper()
	keys, err := testKeys()
	if err != nil {
		t.Fatal(err)
	}
	return keys[0], keys[1]
}

// writeKeyPEM writes k's private key as a PEM file of form "pkcs1" or
// "pkcs8" and returns its path.
func writeKeyPEM(t *testing.T, k *authtest.Key, form string) string {
	t.Helper()
	var block *pem.Block
	switch form {
	case "pkcs1":
		block = &pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(k.Private)}
	case "pkcs8":
		der, err := x509.MarshalPKCS8PrivateKey(k.Private)
		if err != nil {
			t.Fatal(err)
		}
		block = &pem.Block{Type: "PRIVATE KEY", Bytes: der}
	default:
		t.Fatalf("unknown PEM form %q", form)
	}
	return writeFile(t, form+".pem", pem.EncodeToMemory(block))
}

func writeFile(t *testing.T, name string, data []byte) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// runCLI runs the relay command line in-process and returns what it wrote.
func runCLI(t *testing.T, env map[string]string, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	var out, errs bytes.Buffer
	err = Run(context.Background(), args, mapEnv(env), mapEnviron(env), &out, &errs)
	return out.String(), errs.String(), err
}

// mustCLI is runCLI for a command that must succeed; it returns stdout.
func mustCLI(t *testing.T, env map[string]string, args ...string) string {
	t.Helper()
	stdout, stderr, err := runCLI(t, env, args...)
	if err != nil {
		t.Fatalf("relay %s: %v\nstderr:\n%s", strings.Join(args, " "), err, stderr)
	}
	return stdout
}

// TestTokenAcceptedByRelay is the round trip an operator makes: publish
// `relay jwks`, mint with `relay token`, and call a relay that allow-lists
// the JWKS host and trusts its CA through SSL_CERT_FILE.
func TestTokenAcceptedByRelay(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the relay binary")
	}
	keyA, keyB := twoKeys(t)
	pemA, pemB := writeKeyPEM(t, keyA, "pkcs8"), writeKeyPEM(t, keyB, "pkcs1")
	const aud, apiKey = "https://relay.test.example", "pd-key/with+special=chars"

	doc := mustCLI(t, nil, "jwks", "-key", pemA)
	jwksSrv, err := authtest.NewJWKSServer(authtest.ServerConfig{JWKS: []byte(doc)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(jwksSrv.Close)
	caFile := filepath.Join(t.TempDir(), "jwks-ca.pem")
	if err := jwksSrv.WriteCAFile(caFile); err != nil {
		t.Fatal(err)
	}
	fake, err := pulsedivetest.NewServer(pulsedivetest.Config{Keys: []string{apiKey}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(fake.Close)

	mint := func(t *testing.T, keyFile string, extra ...string) string {
		t.Helper()
		args := append([]string{"token", "-key", keyFile, "-jwks-host", jwksSrv.Host(), "-aud", aud, "-pulsedive-key-env", "PD_KEY"}, extra...)
		return strings.TrimSpace(mustCLI(t, map[string]string{"PD_KEY": apiKey}, args...))
	}

	p := startChild(t, []string{
		"RELAY_ADDR=127.0.0.1:0",
		"RELAY_JWKS_HOSTS=" + jwksSrv.Host(),
		"RELAY_AUDIENCE=" + aud,
		"SSL_CERT_FILE=" + caFile,
		"PULSEDIVE_API_URL=" + fake.URL(),
		"RELAY_DRAIN_DELAY=0s",
	})
	base := "http://" + p.listeningAddr(t)
	client := newClient(t)
	call := func(t *testing.T, path, token, body string) []byte {
		t.Helper()
		return okJSON(t, send(t, client, base, request{method: http.MethodPost, path: path, auth: "Bearer " + token, body: body}))
	}
	const body = `[{"type":"ip","value":"185.141.25.242"}]`

	t.Run("accepted", func(t *testing.T) {
		token := mint(t, pemA)
		if got := call(t, "/health", token, ""); string(bytes.TrimSpace(got)) != `{"data":{"status":"ok"}}` {
			t.Errorf("health answered %s, want status ok", got)
		}
		got := call(t, "/observe/observables", token, body)
		// A judgement, not a verdict: at the relay's real clock the
		// fixture's verdict has expired and is left out (CONTRACT.md section 4b).
		if v := observablesOf(t, got, "judgements"); len(v) != 1 || v[0] != "ip 185.141.25.242" {
			t.Errorf("observe: judgements for %v, want ip 185.141.25.242; answer:\n%s", v, got)
		}
		if n := fake.CallsByKey(apiKey); n == 0 {
			t.Errorf("the fake saw no call with the token's Pulsedive key")
		}
		if n := jwksSrv.Requests(authtest.JWKSPath); n == 0 {
			t.Errorf("the relay never fetched %s", jwksSrv.URL())
		}
	})

	thumbA := issue.Thumbprint(&keyA.Private.PublicKey)
	refused := []struct {
		name  string
		token func(t *testing.T) string
		want  string
	}{
		{"another key", func(t *testing.T) string { return mint(t, pemB) },
			"Authorization failed: kid from JWT header not found in API response"},
		{"another key under the published kid", func(t *testing.T) string { return mint(t, pemB, "-kid", thumbA) },
			"Authorization failed: Failed to decode JWT with provided key."},
		{"another audience", func(t *testing.T) string {
			args := []string{"token", "-key", pemA, "-jwks-host", jwksSrv.Host(), "-aud", "https://other.example", "-pulsedive-key", apiKey}
			return strings.TrimSpace(mustCLI(t, nil, args...))
		}, "Authorization failed: Wrong configuration-token-audience"},
	}
	for _, tt := range refused {
		t.Run("refused/"+tt.name, func(t *testing.T) {
			got := call(t, "/observe/observables", tt.token(t), body)
			if !bytes.Contains(got, []byte(tt.want)) || bytes.Contains(got, []byte(`"data"`)) {
				t.Errorf("observe answered %s, want only the error %q", got, tt.want)
			}
		})
	}

	if err := p.interrupt(t); err != nil {
		t.Errorf("after SIGINT the relay exited with %v, want status 0", err)
	}
}

// TestTokenClaims mints with each PEM form and checks the token against
// the JWKS the jwks command prints for the same file.
func TestTokenClaims(t *testing.T) {
	key, _ := twoKeys(t)
	wantKid := issue.Thumbprint(&key.Private.PublicKey)
	tests := []struct {
		name      string
		form      string
		args      []string
		wantKid   string
		wantClaim map[string]any // besides jwks_host, aud, key, iat
		wantTTL   time.Duration  // exp - iat; 0: no exp
	}{
		{"pkcs8 defaults", "pkcs8", nil, wantKid, map[string]any{}, time.Hour},
		{"pkcs1 defaults", "pkcs1", nil, wantKid, map[string]any{}, time.Hour},
		{"entities limit and ttl", "pkcs1", []string{"-entities-limit", "7", "-ttl", "90m"}, wantKid, map[string]any{"CTR_ENTITIES_LIMIT": 7.0}, 90 * time.Minute},
		{"no exp", "pkcs8", []string{"-ttl", "0"}, wantKid, map[string]any{}, 0},
		{"named kid", "pkcs8", []string{"-kid", "tr-2024"}, "tr-2024", map[string]any{}, time.Hour},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			file := writeKeyPEM(t, key, tt.form)
			var kidArgs []string
			if tt.wantKid != wantKid {
				kidArgs = []string{"-kid", tt.wantKid}
			}
			doc := mustCLI(t, nil, append([]string{"jwks", "-key", file}, kidArgs...)...)
			before := time.Now().Unix()
			args := append([]string{"token", "-key", file, "-jwks-host", "jwks.example.com:8443", "-aud", "my-relay", "-pulsedive-key", "pd-123"}, tt.args...)
			out := mustCLI(t, nil, args...)
			after := time.Now().Unix()

			if strings.Count(out, "\n") != 1 || !strings.HasSuffix(out, "\n") {
				t.Errorf("token printed %q, want the token on one line and nothing else", out)
			}
			header, claims := verifyWithJWKS(t, strings.TrimSpace(out), []byte(doc))
			if diff := cmp.Diff(map[string]any{"alg": "RS256", "kid": tt.wantKid, "typ": "JWT"}, header); diff != "" {
				t.Errorf("header (-want +got):\n%s", diff)
			}
			iat, _ := claims["iat"].(float64)
			if int64(iat) < before || int64(iat) > after {
				t.Errorf("iat %v, want the time of minting, in [%d, %d]", claims["iat"], before, after)
			}
			want := map[string]any{"jwks_host": "jwks.example.com:8443", "aud": "my-relay", "key": "pd-123", "iat": iat}
			if tt.wantTTL > 0 {
				want["exp"] = iat + tt.wantTTL.Seconds()
			}
			for k, v := range tt.wantClaim {
				want[k] = v
			}
			if diff := cmp.Diff(want, claims); diff != "" {
				t.Errorf("claims (-want +got):\n%s", diff)
			}
		})
	}
}

// verifyWithJWKS checks the token's RS256 signature with the key of the
// JWKS document its kid names, and returns its header and claims.
func verifyWithJWKS(t *testing.T, token string, doc []byte) (header, claims map[string]any) {
	t.Helper()
	var jwks struct {
		Keys []struct{ Kty, Kid, Use, Alg, N, E string }
	}
	if err := json.Unmarshal(doc, &jwks); err != nil {
		t.Fatalf("jwks output is not a JWKS: %v\n%s", err, doc)
	}
	parsed, err := jwt.Parse(token, func(tok *jwt.Token) (any, error) {
		for _, k := range jwks.Keys {
			if k.Kid != tok.Header["kid"] {
				continue
			}
			if k.Kty != "RSA" || k.Use != "sig" || k.Alg != "RS256" {
				return nil, fmt.Errorf("JWKS entry %+v is not an RS256 signing key", k)
			}
			n, errN := base64.RawURLEncoding.DecodeString(k.N)
			e, errE := base64.RawURLEncoding.DecodeString(k.E)
			if errN != nil || errE != nil {
				return nil, fmt.Errorf("JWKS entry n or e is not base64url")
			}
			return &rsa.PublicKey{N: new(big.Int).SetBytes(n), E: int(new(big.Int).SetBytes(e).Int64())}, nil
		}
		return nil, fmt.Errorf("kid %v not in the JWKS", tok.Header["kid"])
	}, jwt.WithValidMethods([]string{"RS256"}), jwt.WithoutClaimsValidation())
	if err != nil {
		t.Fatalf("token does not verify against the JWKS: %v", err)
	}
	return parsed.Header, map[string]any(parsed.Claims.(jwt.MapClaims))
}

// TestJWKSForms checks both PEM forms of one key publish the same document.
func TestJWKSForms(t *testing.T) {
	key, _ := twoKeys(t)
	pkcs1 := mustCLI(t, nil, "jwks", "-key", writeKeyPEM(t, key, "pkcs1"))
	pkcs8 := mustCLI(t, nil, "jwks", "-key", writeKeyPEM(t, key, "pkcs8"))
	if diff := cmp.Diff(pkcs1, pkcs8); diff != "" {
		t.Errorf("jwks of the PKCS#1 and PKCS#8 forms differ (-pkcs1 +pkcs8):\n%s", diff)
	}
	var doc struct{ Keys []map[string]string }
	if err := json.Unmarshal([]byte(pkcs8), &doc); err != nil {
		t.Fatalf("jwks printed no JSON: %v\n%s", err, pkcs8)
	}
	if len(doc.Keys) != 1 {
		t.Fatalf("jwks printed %d keys, want 1", len(doc.Keys))
	}
	if _, ok := doc.Keys[0]["d"]; ok {
		t.Errorf("jwks published the private exponent")
	}
}

func TestTokenPulsediveKeySources(t *testing.T) {
	key, _ := twoKeys(t)
	file := writeKeyPEM(t, key, "pkcs8")
	keyFile := writeFile(t, "pd-key", []byte("  pd-from-file\n"))
	tests := []struct {
		name    string
		env     map[string]string
		args    []string
		wantKey string
		wantErr string // "" for success
		usage   bool   // a usage error (exit 2)
	}{
		{"literal", nil, []string{"-pulsedive-key", "pd-literal"}, "pd-literal", "", false},
		{"environment", map[string]string{"PD": "pd-from-env\n"}, []string{"-pulsedive-key-env", "PD"}, "pd-from-env", "", false},
		{"file", nil, []string{"-pulsedive-key-file", keyFile}, "pd-from-file", "", false},
		{"unset variable", nil, []string{"-pulsedive-key-env", "PD"}, "", "environment variable PD is unset or empty", false},
		{"missing file", nil, []string{"-pulsedive-key-file", keyFile + ".missing"}, "", "-pulsedive-key-file", false},
		{"empty file", nil, []string{"-pulsedive-key-file", writeFile(t, "empty", []byte("\n"))}, "", "the Pulsedive key is empty", false},
		{"no source", nil, nil, "", "exactly one of", true},
		{"two sources", map[string]string{"PD": "x"}, []string{"-pulsedive-key", "pd-literal", "-pulsedive-key-env", "PD"}, "", "exactly one of", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			args := append([]string{"token", "-key", file, "-jwks-host", "jwks.example.com", "-aud", "a"}, tt.args...)
			stdout, stderr, err := runCLI(t, tt.env, args...)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error %v, want one containing %q", err, tt.wantErr)
				}
				if got, want := ExitCode(err), map[bool]int{true: 2, false: 1}[tt.usage]; got != want {
					t.Errorf("exit code %d, want %d", got, want)
				}
				for _, secret := range []string{"pd-literal", "pd-from-env", "pd-from-file"} {
					if strings.Contains(err.Error()+stdout+stderr, secret) {
						t.Errorf("the output or error %q shows the Pulsedive key", err)
					}
				}
				return
			}
			if err != nil {
				t.Fatalf("token: %v\n%s", err, stderr)
			}
			_, claims := verifyWithJWKS(t, strings.TrimSpace(stdout), []byte(mustCLI(t, nil, "jwks", "-key", file)))
			if claims["key"] != tt.wantKey {
				t.Errorf("key claim %q, want %q", claims["key"], tt.wantKey)
			}
		})
	}
}

// TestKeyFileErrors gives token and jwks files that are no RSA private key.
func TestKeyFileErrors(t *testing.T) {
	ec, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ecDER, err := x509.MarshalPKCS8PrivateKey(ec)
	if err != nil {
		t.Fatal(err)
	}
	key, _ := twoKeys(t)
	pub, err := key.PublicKeyPEM()
	if err != nil {
		t.Fatal(err)
	}
	files := []struct {
		name string
		path string
		want string
	}{
		{"not PEM", writeFile(t, "junk.pem", []byte("hello, I am not a key\n")), "no PEM block"},
		{"garbage in PEM", writeFile(t, "garbage.pem", pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: []byte("garbage")})), "neither PKCS#1 nor PKCS#8"},
		{"EC key", writeFile(t, "ec.pem", pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: ecDER})), "not an RSA key"},
		// Issue 11: what the file is and what to give, not the parser's
		// ASN.1 detail.
		{"public key", writeFile(t, "pub.pem", pub), "public key, not a private key; give the private key"},
		{"certificate", writeFile(t, "cert.pem", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte("x")})), "certificate, not a private key; give the private key"},
		{"encrypted PKCS#8", writeFile(t, "enc8.pem", pem.EncodeToMemory(&pem.Block{Type: "ENCRYPTED PRIVATE KEY", Bytes: []byte("x")})), "encrypted private key, which is not supported; decrypt it with: openssl pkey"},
		{"encrypted PKCS#1", writeFile(t, "enc1.pem", pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Headers: map[string]string{"Proc-Type": "4,ENCRYPTED", "DEK-Info": "AES-128-CBC,00000000000000000000000000000000"}, Bytes: []byte("x")})), "encrypted private key, which is not supported; decrypt it with: openssl pkey"},
		{"missing", filepath.Join(t.TempDir(), "absent.pem"), "no such file"},
	}
	for _, f := range files {
		for _, cmd := range [][]string{
			{"jwks", "-key", f.path},
			{"token", "-key", f.path, "-jwks-host", "jwks.example.com", "-aud", "a", "-pulsedive-key", "pd-secret-123"},
		} {
			t.Run(cmd[0]+"/"+f.name, func(t *testing.T) {
				stdout, _, err := runCLI(t, nil, cmd...)
				if err == nil {
					t.Fatalf("relay %s succeeded, want an error", strings.Join(cmd, " "))
				}
				msg := err.Error()
				if !strings.Contains(msg, f.want) || !strings.Contains(msg, "-key") {
					t.Errorf("error %q, want it to name -key and say %q", msg, f.want)
				}
				if f.name != "missing" && !strings.Contains(msg, f.path) {
					t.Errorf("error %q does not name the file %s", msg, f.path)
				}
				if strings.Contains(msg, "pd-secret-123") {
					t.Errorf("error %q shows the Pulsedive key", msg)
				}
				if strings.Contains(msg, "asn1") {
					t.Errorf("error %q shows the parser's ASN.1 detail", msg)
				}
				if got := ExitCode(err); got != 1 {
					t.Errorf("exit code %d, want 1", got)
				}
				if stdout != "" {
					t.Errorf("printed %q to stdout", stdout)
				}
			})
		}
	}
}

// TestTokenUsageErrors covers command lines token and jwks refuse before
// reading anything (exit 2).
func TestTokenUsageErrors(t *testing.T) {
	complete := map[string]string{"-key": "k.pem", "-jwks-host": "jwks.example.com", "-aud": "a", "-pulsedive-key": "pd"}
	without := func(flag string, extra ...string) []string {
		args := []string{"token"}
		for _, f := range []string{"-key", "-jwks-host", "-aud", "-pulsedive-key"} {
			if f != flag {
				args = append(args, f, complete[f])
			}
		}
		return append(args, extra...)
	}
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"no key file", without("-key"), "-key is required"},
		{"no jwks host", without("-jwks-host"), "-jwks-host is required"},
		{"no audience", without("-aud"), "-aud is required"},
		{"two jwks hosts", without("", "-jwks-host", "a.example.com,b.example.com"), "one host only"},
		{"jwks host as URL", without("", "-jwks-host", "https://jwks.example.com/"), "not a host or host:port"},
		{"jwks host with path", without("", "-jwks-host", "jwks.example.com/keys"), "not a host or host:port"},
		{"negative entities limit", without("", "-entities-limit", "-1"), "-entities-limit"},
		{"negative ttl", without("", "-ttl", "-1h"), "-ttl"},
		{"bad ttl", without("", "-ttl", "soon"), "invalid value"},
		{"unknown flag", without("", "-exp", "1"), "-exp"},
		{"argument", without("", "extra"), "unexpected argument"},
		{"jwks without key", []string{"jwks"}, "-key is required"},
		{"jwks argument", []string{"jwks", "-key", "k.pem", "more"}, "unexpected argument"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			stdout, _, err := runCLI(t, nil, tt.args...)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("relay %v: error %v, want one containing %q", tt.args, err, tt.want)
			}
			if got := ExitCode(err); got != 2 {
				t.Errorf("exit code %d, want 2", got)
			}
			if stdout != "" {
				t.Errorf("printed %q to stdout", stdout)
			}
		})
	}
}
