package auth

import (
	"context"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"
)

// keyCache holds, per allow-listed host, the RSA keys of its JWKS and the
// state of its fetches. It is bounded by the allow-list: no other host is
// ever fetched.
type keyCache struct {
	mu    sync.Mutex
	hosts map[string]*hostKeys
}

// hostKeys is one host's state. keys is replaced whole, never mutated, so a
// reader may keep it after unlocking.
type hostKeys struct {
	keys      map[string]*rsa.PublicKey // the last good keys; nil until a fetch succeeded
	fetched   time.Time                 // when keys were fetched
	attempted time.Time                 // when the last fetch started, failed ones included
	lastErr   *fetchError               // why the last fetch failed; nil after a success
	failures  int                       // fetches failed in a row
	failing   time.Time                 // when the first of them started
}

// keyView is what one look at a host's state tells a request.
type keyView struct {
	keys      map[string]*rsa.PublicKey // keys within MaxKeyAge, else nil
	until     time.Time                 // the end of their MaxKeyAge
	fresh     bool                      // keys within JWKSTTL
	throttled bool                      // a fetch started less than RefreshInterval ago
	lastErr   *fetchError               // the last fetch's failure, if it failed
	fetched   time.Time                 // when the keys held were fetched, usable or not; zero: never
}

func (a *Authenticator) look(host string, now time.Time) keyView {
	a.keys.mu.Lock()
	defer a.keys.mu.Unlock()
	hk := a.keys.hosts[host]
	if hk == nil {
		return keyView{}
	}
	v := keyView{
		throttled: now.Before(hk.attempted.Add(a.refreshInterval)),
		lastErr:   hk.lastErr,
		fetched:   hk.fetched,
	}
	if hk.keys != nil && now.Before(hk.fetched.Add(a.maxKeyAge)) {
		v.keys, v.until = hk.keys, hk.fetched.Add(a.maxKeyAge)
		v.fresh = now.Before(hk.fetched.Add(a.jwksTTL))
	}
	return v
}

// publicKey finds kid in host's JWKS and tells until when the key may be
// trusted (the end of its MaxKeyAge).
//
// Fresh keys (within JWKSTTL) answer at once; an unknown kid refetches
// them unless the host was asked less than RefreshInterval ago. Keys past
// JWKSTTL are fetched again, and while that fetch is in flight or failing
// the last good keys keep answering up to MaxKeyAge: a JWKS host that goes
// down does not take logins with it. A host that failed is asked again
// only once RefreshInterval has passed, however many tokens name it.
// Concurrent fetches of one host share one request.
func (a *Authenticator) publicKey(ctx context.Context, host, kid string) (*rsa.PublicKey, time.Time, error) {
	v := a.look(host, a.now())
	if v.keys != nil && (v.fresh || v.throttled) {
		if k, ok := v.keys[kid]; ok {
			return k, v.until, nil
		}
		if kid == "" || v.throttled {
			return nil, time.Time{}, kidNotFound(v.keys)
		}
	}
	if v.keys == nil && v.throttled && v.lastErr != nil {
		return nil, time.Time{}, unavailable(v.lastErr, v)
	}
	keys, until, err := a.refresh(ctx, host, !v.fresh)
	if err != nil {
		if k, ok := v.keys[kid]; ok {
			return k, v.until, nil
		}
		return nil, time.Time{}, unavailable(err, v)
	}
	if k, ok := keys[kid]; ok {
		return k, until, nil
	}
	return nil, time.Time{}, kidNotFound(keys)
}

// fetched is a refresh's result: keys and the end of their MaxKeyAge.
type fetched struct {
	keys  map[string]*rsa.PublicKey
	until time.Time
}

// refresh fetches host's JWKS, sharing the fetch with concurrent callers.
// stale tells whether the caller found no fresh document (rather than a
// fresh one without its kid). It fails without a request when the host's
// last fetch failed less than RefreshInterval ago.
func (a *Authenticator) refresh(ctx context.Context, host string, stale bool) (map[string]*rsa.PublicKey, time.Time, *fetchError) {
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
		// takes it if that fetch was within the refresh interval; and a
		// fetch that failed within it stands for this one.
		fresh := hk.keys != nil && now.Before(hk.fetched.Add(a.jwksTTL))
		throttled := now.Before(hk.attempted.Add(a.refreshInterval))
		if fresh && (stale || throttled) {
			f := fetched{hk.keys, hk.fetched.Add(a.maxKeyAge)}
			a.keys.mu.Unlock()
			return f, nil
		}
		if throttled && hk.lastErr != nil {
			err := hk.lastErr
			a.keys.mu.Unlock()
			return nil, err
		}
		hk.attempted = now
		a.keys.mu.Unlock()

		keys, err := a.download(ctx, host)
		a.observe(err)
		a.keys.mu.Lock()
		if err != nil {
			hk.lastErr = err
			if hk.failures == 0 {
				hk.failing = now
			}
			hk.failures++
			held, heldAt, failures := hk.keys, hk.fetched, hk.failures
			a.keys.mu.Unlock()
			a.fetchFailed(ctx, host, err, held, heldAt, failures, now)
			return nil, err
		}
		failures, failing := hk.failures, hk.failing
		hk.keys, hk.fetched, hk.lastErr, hk.failures = keys, now, nil, 0
		a.keys.mu.Unlock()
		if failures > 0 {
			a.log.LogAttrs(ctx, slog.LevelInfo, "JWKS fetch succeeded again",
				slog.String("jwks_host", host),
				slog.Int("failed_fetches", failures),
				slog.String("failing_for", now.Sub(failing).String()))
		}
		return fetched{keys, now.Add(a.maxKeyAge)}, nil
	})
	if err != nil {
		var fe *fetchError
		if !errors.As(err, &fe) {
			fe = &fetchError{host: host, kind: fetchNetwork, err: err}
		}
		return nil, time.Time{}, fe
	}
	f := v.(fetched)
	return f.keys, f.until, nil
}

// fetchFailed logs a failed fetch, with the keys that keep verifying, under
// the refusal log's rate limit (a failing host is asked at most once per
// RefreshInterval anyway).
func (a *Authenticator) fetchFailed(ctx context.Context, host string, err *fetchError, held map[string]*rsa.PublicKey, heldAt time.Time, failures int, now time.Time) {
	warn, suppressed := a.refusals.allow(refusalKey{kind: "jwks_fetch", host: host, cause: err.kind}, now)
	level := slog.LevelWarn
	if !warn {
		level = slog.LevelDebug
	}
	if !a.log.Enabled(ctx, level) {
		return
	}
	attrs := []slog.Attr{
		slog.String("jwks_host", host),
		slog.String("fetch_error", err.kind),
		slog.String("cause", err.Error()),
		slog.Int("failures_in_a_row", failures),
	}
	switch {
	case held == nil:
		attrs = append(attrs, slog.String("keys", "none: tokens naming this host are refused"))
	case now.Before(heldAt.Add(a.maxKeyAge)):
		attrs = append(attrs, slog.String("keys", "the last good keys keep verifying"),
			slog.Time("keys_fetched_at", heldAt), slog.Time("keys_usable_until", heldAt.Add(a.maxKeyAge)))
	default:
		attrs = append(attrs, slog.String("keys", "the last good keys are past their maximum age: tokens naming this host are refused"),
			slog.Time("keys_fetched_at", heldAt))
	}
	attrs = append(attrs, slog.Time("next_fetch_after", now.Add(a.refreshInterval)))
	if suppressed > 0 {
		attrs = append(attrs, slog.Int("suppressed", suppressed))
	}
	a.log.LogAttrs(ctx, level, "JWKS fetch failed", attrs...)
}

// kidNotFound is the refusal of a kid the host's keys do not hold; the log
// line lists the kids they do hold (public names).
func kidNotFound(keys map[string]*rsa.PublicKey) *Error {
	return fail(ReasonKIDNotFound, slog.Any("known_kids", knownKIDs(keys)))
}

// unavailable is the refusal of a token whose host's keys could not be had:
// the fetch failed and no key of the kid is held within MaxKeyAge.
func unavailable(err *fetchError, v keyView) *Error {
	e := &Error{Reason: ReasonWrongJWKSHost, kind: kindJWKSUnavailable, cause: err,
		attrs: []slog.Attr{slog.String("fetch_error", err.kind)}}
	switch {
	case v.keys != nil:
		e.attrs = append(e.attrs, detail("the kid is not among the last good keys"),
			slog.Any("known_kids", knownKIDs(v.keys)))
	case !v.fetched.IsZero():
		e.attrs = append(e.attrs, detail("the last good keys are past their maximum age"),
			slog.Time("keys_fetched_at", v.fetched))
	default:
		e.attrs = append(e.attrs, detail("no keys were ever fetched from this host"))
	}
	return e
}

// knownKIDs lists at most 8 kids of keys, sorted, for a log line.
func knownKIDs(keys map[string]*rsa.PublicKey) []string {
	kids := slices.Sorted(maps.Keys(keys))
	if len(kids) > 8 {
		kids = append(kids[:8], fmt.Sprintf("(and %d more)", len(kids)-8))
	}
	for i, k := range kids {
		kids[i] = clip(k)
	}
	return kids
}

func (a *Authenticator) observe(err *fetchError) {
	if a.observer == nil {
		return
	}
	if err != nil {
		a.observer.JWKSFetch(fetchOutcomeError)
		return
	}
	a.observer.JWKSFetch(fetchOutcomeOK)
}

// The kinds of a failed JWKS fetch, a bounded set for log lines.
const (
	fetchTLSUnknownAuthority = "tls_unknown_authority" // no trusted root: a private CA missing from SSL_CERT_FILE
	fetchTLSCertificate      = "tls_certificate"       // expired, wrong name, or otherwise invalid
	fetchTLS                 = "tls"                   // handshake failed (not TLS, alert)
	fetchRefused             = "connection_refused"
	fetchDNS                 = "dns"
	fetchTimeout             = "timeout"
	fetchNetwork             = "network" // any other transport error
	fetchHTTPStatus          = "http_status"
	fetchRedirect            = "redirect"
	fetchTooLarge            = "too_large"
	fetchNotJWKS             = "not_jwks"
	fetchNoKey               = "no_usable_key"
)

// fetchError is a failed JWKS fetch. Its text names the host and the
// cause, never a token; kind sorts the cause for logs.
type fetchError struct {
	host string
	kind string
	err  error
}

func (e *fetchError) Error() string { return "jwks " + e.host + ": " + e.err.Error() }

func (e *fetchError) Unwrap() error { return e.err }

// transportErrorKind sorts an error of http.Client.Do.
func transportErrorKind(err error) string {
	var (
		unknownAuthority x509.UnknownAuthorityError
		hostname         x509.HostnameError
		invalid          x509.CertificateInvalidError
		verification     *tls.CertificateVerificationError
		record           tls.RecordHeaderError
		alert            tls.AlertError
		dns              *net.DNSError
		netErr           net.Error
	)
	switch {
	case errors.As(err, &unknownAuthority):
		return fetchTLSUnknownAuthority
	case errors.As(err, &hostname), errors.As(err, &invalid), errors.As(err, &verification):
		return fetchTLSCertificate
	case errors.As(err, &record), errors.As(err, &alert):
		return fetchTLS
	case errors.Is(err, syscall.ECONNREFUSED):
		return fetchRefused
	case errors.As(err, &dns):
		return fetchDNS
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &netErr) && netErr.Timeout():
		return fetchTimeout
	}
	return fetchNetwork
}

// download GETs https://host/.well-known/jwks. The request is detached from
// ctx's cancellation (others may share it) and bounded by FetchTimeout.
func (a *Authenticator) download(ctx context.Context, host string) (map[string]*rsa.PublicKey, *fetchError) {
	fail := func(kind string, err error) (map[string]*rsa.PublicKey, *fetchError) {
		return nil, &fetchError{host: host, kind: kind, err: err}
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), a.fetchTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+host+"/.well-known/jwks", nil)
	if err != nil {
		return fail(fetchNetwork, err)
	}
	req.Header.Set("Accept", "application/json")
	resp, err := a.client.Do(req)
	if err != nil {
		// The *url.Error repeats the URL, which the host already says.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return fail(transportErrorKind(err), err)
	}
	defer func() { _ = resp.Body.Close() }()
	switch {
	case resp.StatusCode >= 300 && resp.StatusCode <= 399:
		return fail(fetchRedirect, fmt.Errorf("HTTP %d (redirects are not followed)", resp.StatusCode))
	case resp.StatusCode < 200 || resp.StatusCode > 299:
		return fail(fetchHTTPStatus, fmt.Errorf("HTTP %d", resp.StatusCode))
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxJWKSBytes+1))
	if err != nil {
		return fail(transportErrorKind(err), err)
	}
	if len(body) > maxJWKSBytes {
		return fail(fetchTooLarge, fmt.Errorf("document over %d bytes", maxJWKSBytes))
	}
	keys, err := parseJWKS(body)
	switch {
	case errors.Is(err, errNoRSAKey):
		return fail(fetchNoKey, err)
	case err != nil:
		return fail(fetchNotJWKS, err)
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

var errNoKeysList = errors.New("not a JWKS: no keys list")

// parseJWKS reads a JWKS document, {"keys":[...]}, into its usable RSA
// keys by kid. An entry is skipped when it is not kty RSA, has no kid, is
// for another use than sig or another alg than RS256, or has an n or e that
// is not base64url, outside 2048-8192 bits, or an exponent that is even,
// below 3 or over 2^31-1. The first entry of a kid wins. A document that is
// not JSON or has no keys list is an error; one whose list holds no usable
// key is errNoRSAKey.
func parseJWKS(doc []byte) (map[string]*rsa.PublicKey, error) {
	var set struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal(doc, &set); err != nil {
		return nil, fmt.Errorf("not a JWKS: %w", err)
	}
	if set.Keys == nil {
		return nil, errNoKeysList
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
