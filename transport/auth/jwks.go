package auth

import (
	"context"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"strings"
	"sync"
	"time"
)

// keyCache holds, per allow-listed host, the RSA keys of its JWKS. It is
// bounded by the allow-list: no other host is ever fetched.
type keyCache struct {
	mu    sync.Mutex
	hosts map[string]*hostKeys
}

// hostKeys is one host's state. keys is replaced whole, never mutated, so a
// reader may keep it after unlocking.
type hostKeys struct {
	keys      map[string]*rsa.PublicKey // nil until a fetch succeeded
	fetched   time.Time                 // when keys were fetched
	attempted time.Time                 // when the last fetch started, failed ones included
}

// publicKey finds kid in host's JWKS. A missing or expired JWKS is fetched;
// an unknown kid refetches it unless the host was fetched less than
// RefreshInterval ago. Concurrent fetches of one host share one request.
func (a *Authenticator) publicKey(ctx context.Context, host, kid string) (*rsa.PublicKey, error) {
	now := a.now()
	a.keys.mu.Lock()
	hk := a.keys.hosts[host]
	var keys map[string]*rsa.PublicKey
	fresh := hk != nil && hk.keys != nil && now.Before(hk.fetched.Add(a.jwksTTL))
	if fresh {
		keys = hk.keys
	}
	throttled := hk != nil && now.Before(hk.attempted.Add(a.refreshInterval))
	a.keys.mu.Unlock()

	if fresh {
		if k, ok := keys[kid]; ok {
			return k, nil
		}
		if kid == "" || throttled {
			return nil, fail(ReasonKIDNotFound)
		}
	}
	keys, err := a.refresh(ctx, host, !fresh)
	if err != nil {
		return nil, err
	}
	if k, ok := keys[kid]; ok {
		return k, nil
	}
	return nil, fail(ReasonKIDNotFound)
}

// refresh fetches host's JWKS, sharing the fetch with concurrent callers.
// stale tells whether the caller found no fresh document (rather than a
// fresh one without its kid).
func (a *Authenticator) refresh(ctx context.Context, host string, stale bool) (map[string]*rsa.PublicKey, error) {
	v, err, _ := a.fetch.Do(host, func() (any, error) {
		now := a.now()
		a.keys.mu.Lock()
		hk := a.keys.hosts[host]
		if hk == nil {
			hk = &hostKeys{}
			a.keys.hosts[host] = hk
		}
		// Between the caller's look at the cache and this call, another
		// fetch may have finished: a caller that found no fresh document
		// takes the one now cached; a caller refreshing for an unknown kid
		// takes it if that fetch was within the refresh interval.
		fresh := hk.keys != nil && now.Before(hk.fetched.Add(a.jwksTTL))
		if fresh && (stale || now.Before(hk.attempted.Add(a.refreshInterval))) {
			keys := hk.keys
			a.keys.mu.Unlock()
			return keys, nil
		}
		hk.attempted = now
		a.keys.mu.Unlock()

		keys, err := a.download(ctx, host)
		a.observe(err)
		if err != nil {
			return nil, err
		}
		a.keys.mu.Lock()
		hk.keys, hk.fetched = keys, now
		a.keys.mu.Unlock()
		return keys, nil
	})
	if err != nil {
		return nil, failBecause(ReasonWrongJWKSHost, err)
	}
	return v.(map[string]*rsa.PublicKey), nil
}

func (a *Authenticator) observe(err error) {
	if a.observer == nil {
		return
	}
	if err != nil {
		a.observer.JWKSFetch(fetchOutcomeError)
		return
	}
	a.observer.JWKSFetch(fetchOutcomeOK)
}

// download GETs https://host/.well-known/jwks. The request is detached from
// ctx's cancellation (others may share it) and bounded by FetchTimeout.
// Errors name the host, never a token.
func (a *Authenticator) download(ctx context.Context, host string) (map[string]*rsa.PublicKey, error) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), a.fetchTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+host+"/.well-known/jwks", nil)
	if err != nil {
		return nil, fmt.Errorf("jwks %s: %w", host, err)
	}
	req.Header.Set("Accept", "application/json")
	resp, err := a.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("jwks %s: %w", host, err)
	}
	defer func() { _ = resp.Body.Close() }()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return nil, fmt.Errorf("jwks %s: HTTP %d", host, resp.StatusCode)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxJWKSBytes+1))
	if err != nil {
		return nil, fmt.Errorf("jwks %s: %w", host, err)
	}
	if len(body) > maxJWKSBytes {
		return nil, fmt.Errorf("jwks %s: document over %d bytes", host, maxJWKSBytes)
	}
	keys, err := parseJWKS(body)
	if err != nil {
		return nil, fmt.Errorf("jwks %s: %w", host, err)
	}
	return keys, nil
}

// Limits on the RSA keys a JWKS may hold. Below 2048 bits is too weak; the
// upper bound keeps one verification cheap.
const (
	minRSABits = 2048
	maxRSABits = 8192
)

var errNoRSAKey = errors.New("no usable RSA signing key")

// parseJWKS reads a JWKS document, {"keys":[...]}, into its usable RSA
// keys by kid. An entry is skipped when it is not kty RSA, has no kid, is
// for another use than sig or another alg than RS256, or has an n or e that
// is not base64url, outside 2048-8192 bits, or an exponent that is even,
// below 3 or over 2^31-1. The first entry of a kid wins. A document that is
// not JSON, has no keys list, or has no usable key is an error.
func parseJWKS(doc []byte) (map[string]*rsa.PublicKey, error) {
	var set struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal(doc, &set); err != nil {
		return nil, fmt.Errorf("not a JWKS: %w", err)
	}
	keys := map[string]*rsa.PublicKey{}
	for _, raw := range set.Keys {
		var jwk struct {
			Kty, Kid, Use, Alg, N, E string
		}
		if json.Unmarshal(raw, &jwk) != nil {
			continue
		}
		if jwk.Kty != "RSA" || jwk.Kid == "" || (jwk.Use != "" && jwk.Use != "sig") ||
			(jwk.Alg != "" && jwk.Alg != "RS256") {
			continue
		}
		if _, dup := keys[jwk.Kid]; dup {
			continue
		}
		if pub, ok := rsaKey(jwk.N, jwk.E); ok {
			keys[jwk.Kid] = pub
		}
	}
	if len(keys) == 0 {
		return nil, errNoRSAKey
	}
	return keys, nil
}

func rsaKey(n64, e64 string) (*rsa.PublicKey, bool) {
	nb, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(n64, "="))
	if err != nil {
		return nil, false
	}
	eb, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(e64, "="))
	if err != nil || len(eb) == 0 || len(eb) > 4 {
		return nil, false
	}
	n := new(big.Int).SetBytes(nb)
	if bits := n.BitLen(); bits < minRSABits || bits > maxRSABits {
		return nil, false
	}
	e := new(big.Int).SetBytes(eb).Int64()
	if e < 3 || e > 1<<31-1 || e%2 == 0 {
		return nil, false
	}
	return &rsa.PublicKey{N: n, E: int(e)}, true
}
