// Package authtest plays Cisco Threat Response for tests, the demo and
// relaybench (CONTRACT.md section 3): throwaway keys, tokens well or badly
// formed (attack tests), and a JWKS server on loopback TLS. Tokens are
// minted as transport/auth/issue mints them for operators. It returns errors
// and never imports package testing, so that commands can use it; the
// relay's binary does not (TestImportRule).
package authtest

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/pulsedive-relay/relay/transport/auth/issue"
)

// Key is an RSA signing key and the kid it is published under: an
// issue.Key (JWK, JWKS, Mint) with what only tests need besides.
type Key struct{ issue.Key }

// NewKey generates a 2048-bit RSA key published under kid. Generating a key
// takes tens of milliseconds: tests should make one and share it.
func NewKey(kid string) (*Key, error) {
	priv, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, fmt.Errorf("generate key: %w", err)
	}
	return newKey(kid, priv), nil
}

func newKey(kid string, priv *rsa.PrivateKey) *Key {
	return &Key{issue.Key{ID: kid, Private: priv}}
}

// ParseKeyPEM reads an RSA private key from the first PEM block of pemBytes,
// in PKCS#1 ("RSA PRIVATE KEY") or PKCS#8 ("PRIVATE KEY") form. A PKCS#8
// key that is not RSA is an error.
func ParseKeyPEM(pemBytes []byte, kid string) (*Key, error) {
	block, _ := pem.Decode(pemBytes)
	if block == nil {
		return nil, errors.New("parse key: no PEM block")
	}
	if priv, err := x509.ParsePKCS1PrivateKey(block.Bytes); err == nil {
		return newKey(kid, priv), nil
	}
	parsed, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("parse key: neither PKCS#1 nor PKCS#8: %w", err)
	}
	priv, ok := parsed.(*rsa.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("parse key: %T is not an RSA key", parsed)
	}
	return newKey(kid, priv), nil
}

// PrivateKeyPEM encodes the private key as a PKCS#8 PEM block, the form
// ParseKeyPEM reads back.
func (k *Key) PrivateKeyPEM() ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(k.Private)
	if err != nil {
		return nil, fmt.Errorf("encode key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// PublicKeyPEM encodes the public key as a PKIX PEM block. Attack tests use
// these bytes as an HMAC secret (the classic RS256→HS256 confusion).
func (k *Key) PublicKeyPEM() ([]byte, error) {
	der, err := x509.MarshalPKIXPublicKey(&k.Private.PublicKey)
	if err != nil {
		return nil, fmt.Errorf("encode public key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), nil
}

// JWKS is a JWKS document, {"keys":[...]}, holding the given keys in order.
func JWKS(keys ...*Key) ([]byte, error) {
	ks := make([]*issue.Key, 0, len(keys))
	for _, k := range keys {
		ks = append(ks, &k.Key)
	}
	return issue.JWKS(ks...)
}

// JWKSOf is a JWKS document holding the given raw entries in order, for
// documents no real key produces (EC or oct entries, malformed n or e).
func JWKSOf(entries ...map[string]any) ([]byte, error) {
	if entries == nil {
		entries = []map[string]any{}
	}
	b, err := json.Marshal(map[string]any{"keys": entries})
	if err != nil {
		return nil, fmt.Errorf("encode JWKS: %w", err)
	}
	return b, nil
}

// MintHeader is Mint with extra header fields (jku, x5u, typ, or a kid that
// overrides the key's own); a nil value removes the field.
func (k *Key) MintHeader(header, claims map[string]any) (string, error) {
	h := map[string]any{"alg": "RS256", "typ": "JWT", "kid": k.ID}
	for name, v := range header {
		if v == nil {
			delete(h, name)
			continue
		}
		h[name] = v
	}
	return sign(h, claims, jwt.SigningMethodRS256, k.Private)
}

// MintWith builds a token for attack tests: header alg is method exactly as
// given (so "None" and "nOnE" are possible) and kid is omitted when empty.
// The signature is made with the golang-jwt method of that name and key:
// an *rsa.PrivateKey for RS*/PS*, an *ecdsa.PrivateKey for ES*, a []byte
// for HS* (the public key's PEM or DER, say). When method names no
// algorithm golang-jwt knows, or is "none" in any case, or key is nil, the
// signature part is empty.
func MintWith(method string, key any, kid string, claims map[string]any) (string, error) {
	h := map[string]any{"alg": method, "typ": "JWT"}
	if kid != "" {
		h["kid"] = kid
	}
	var m jwt.SigningMethod
	if key != nil && !strings.EqualFold(method, "none") {
		m = jwt.GetSigningMethod(method)
	}
	return sign(h, claims, m, key)
}

func sign(header, claims map[string]any, m jwt.SigningMethod, key any) (string, error) {
	hb, err := json.Marshal(header)
	if err != nil {
		return "", fmt.Errorf("encode header: %w", err)
	}
	cb, err := json.Marshal(claims)
	if err != nil {
		return "", fmt.Errorf("encode claims: %w", err)
	}
	input := base64.RawURLEncoding.EncodeToString(hb) + "." + base64.RawURLEncoding.EncodeToString(cb)
	if m == nil {
		return input + ".", nil
	}
	sig, err := m.Sign(input, key)
	if err != nil {
		return "", fmt.Errorf("sign %s: %w", m.Alg(), err)
	}
	return input + "." + base64.RawURLEncoding.EncodeToString(sig), nil
}

// Claims is the payload Threat Response puts in a configuration token
// (issue.Claims): jwks_host, aud, the Pulsedive key, iat and exp (exp
// omitted when ttl is 0). Callers add or delete fields (CTR_ENTITIES_LIMIT,
// nbf) on the map.
func Claims(jwksHost, aud, apiKey string, now time.Time, ttl time.Duration) map[string]any {
	return issue.Claims(jwksHost, aud, apiKey, now, ttl)
}
