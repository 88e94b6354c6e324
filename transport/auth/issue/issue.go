// Package issue mints configuration tokens and writes JWKS documents the way
// Cisco Threat Response does (CONTRACT.md section 3): an RS256 JWT signed
// under a key's kid, whose payload names the jwks_host, the audience and the
// Pulsedive key, and the key's public part as a JSON Web Key. The relay's
// token and jwks commands use it so that an operator can test a relay end to
// end; the tests' fakes (transport/authtest) build on it.
//
// It imports no other package of this project.
package issue

import (
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math/big"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// Key is an RSA signing key and the kid it is published under.
type Key struct {
	ID      string
	Private *rsa.PrivateKey
}

// JWK is the public key as a JSON Web Key: kty RSA, kid, use sig, alg
// RS256, and n and e in unpadded base64url. It never holds the private
// exponent or primes.
func (k *Key) JWK() map[string]any {
	n, e := members(&k.Private.PublicKey)
	return map[string]any{"kty": "RSA", "kid": k.ID, "use": "sig", "alg": "RS256", "n": n, "e": e}
}

// members are an RSA public key's JWK members n and e.
func members(pub *rsa.PublicKey) (n, e string) {
	return base64.RawURLEncoding.EncodeToString(pub.N.Bytes()),
		base64.RawURLEncoding.EncodeToString(big.NewInt(int64(pub.E)).Bytes())
}

// JWKS is a JWKS document holding only this key.
func (k *Key) JWKS() ([]byte, error) { return JWKS(k) }

// JWKS is a JWKS document, {"keys":[...]}, holding the given keys in order;
// no keys give {"keys":[]}.
func JWKS(keys ...*Key) ([]byte, error) {
	entries := make([]map[string]any, 0, len(keys))
	for _, k := range keys {
		entries = append(entries, k.JWK())
	}
	b, err := json.Marshal(map[string]any{"keys": entries})
	if err != nil {
		return nil, fmt.Errorf("encode JWKS: %w", err)
	}
	return b, nil
}

// Mint signs claims with RS256; the header carries the key's kid.
func (k *Key) Mint(claims map[string]any) (string, error) {
	t := jwt.NewWithClaims(jwt.SigningMethodRS256, jwt.MapClaims(claims))
	t.Header["kid"] = k.ID
	s, err := t.SignedString(k.Private)
	if err != nil {
		return "", fmt.Errorf("sign: %w", err)
	}
	return s, nil
}

// Thumbprint is the RFC 7638 JWK thumbprint of an RSA public key: SHA-256
// over its required members in lexicographic order, in base64url. The
// relay's token and jwks commands use it as the default kid, so that both
// name a key alike without being told.
func Thumbprint(pub *rsa.PublicKey) string {
	// encoding/json sorts map keys and writes no white space: the
	// canonical form RFC 7638 asks for. Strings cannot fail to encode.
	n, e := members(pub)
	canonical, _ := json.Marshal(map[string]string{"e": e, "kty": "RSA", "n": n})
	sum := sha256.Sum256(canonical)
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

// Claims is the payload Threat Response puts in a configuration token:
// jwks_host, aud, key (the Pulsedive API key), iat, and exp ttl after now
// (no exp when ttl is 0). Callers add or delete fields (CTR_ENTITIES_LIMIT,
// nbf) on the map.
func Claims(jwksHost, aud, apiKey string, now time.Time, ttl time.Duration) map[string]any {
	c := map[string]any{
		"jwks_host": jwksHost,
		"aud":       aud,
		"key":       apiKey,
		"iat":       now.Unix(),
	}
	if ttl > 0 {
		c["exp"] = now.Add(ttl).Unix()
	}
	return c
}
