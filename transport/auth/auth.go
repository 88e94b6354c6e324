// Package auth verifies Threat Response configuration tokens (CONTRACT.md section 3
// and the authorization rows of section 2): an RS256 JWT whose keys are
// fetched from an allow-listed jwks_host, cached, and whose verified payload
// carries the caller's Pulsedive key. Every refusal is logged with its real
// cause and counted by a bounded reason; the caller reads only the
// contract's message.
package auth

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"golang.org/x/sync/singleflight"

	"github.com/pulsedive-relay/relay/pulsedive"
)

// The reasons of the contract (CONTRACT.md section 2), what follows
// "Authorization failed: " in an Error's message.
const (
	ReasonMissingHeader   = "Authorization header is missing"
	ReasonWrongType       = "Wrong authorization type"
	ReasonWrongStructure  = "Wrong JWT structure"
	ReasonMissingJWKSHost = "jwks_host is missing in JWT payload. Make sure custom_jwks_host field is present in module_type"
	ReasonWrongJWKSHost   = "Wrong jwks_host in JWT payload. Make sure domain follows the visibility.<region>.cisco.com structure"
	ReasonWrongKey        = "Failed to decode JWT with provided key. Make sure domain in custom_jwks_host corresponds to your SecureX instance region."
	ReasonKIDNotFound     = "kid from JWT header not found in API response"
	ReasonExpired         = "Token has expired"
	ReasonNotYetValid     = "Token is not valid yet"
	ReasonWrongAudience   = "Wrong configuration-token-audience"
	ReasonWrongPayload    = "Wrong JWT payload structure"
)

// Error is an authentication failure; Error() is the contract's message
// "Authorization failed: " + Reason. Reason is one of the Reason constants.
// Unwrap returns the cause when there is one worth logging (a JWKS fetch
// that failed, say); the cause names the jwks_host but never the token or
// the key. Compare errors by Reason.
//
// The Authenticator logs every Error it returns, with what the contract's
// message leaves out; callers need not log it again.
type Error struct {
	Reason string
	cause  error
	// kind is the bounded name of the refusal for logs and metrics (one of
	// the kind constants of refusal.go); it splits ReasonWrongJWKSHost into a host outside the
	// allow-list and a host whose keys could not be had.
	kind string
	// attrs are the details of the log line beyond the reason, the host and
	// the kid: never the token, its signature or the key.
	attrs []slog.Attr
}

func (e *Error) Error() string { return "Authorization failed: " + e.Reason }

// Unwrap returns the underlying cause, or nil.
func (e *Error) Unwrap() error { return e.cause }

func fail(reason string, attrs ...slog.Attr) *Error {
	return &Error{Reason: reason, kind: kindOf(reason), attrs: attrs}
}

// ValidJWKSHost reports whether h is a bare host or host:port (no scheme,
// path, userinfo or bad port), the form Config.JWKSHosts entries and a
// token's jwks_host must have. Callers validating configuration use it so
// that what they accept, New accepts.
func ValidJWKSHost(h string) bool {
	_, ok := normalizeHost(h)
	return ok
}

// DefaultJWKSHosts are the Threat Response regions, the allow-list when
// Config.JWKSHosts is empty.
func DefaultJWKSHosts() []string {
	return []string{
		"visibility.amp.cisco.com",
		"visibility.eu.amp.cisco.com",
		"visibility.apjc.amp.cisco.com",
	}
}

// Defaults of Config.
const (
	DefaultJWKSTTL         = 10 * time.Minute
	DefaultRefreshInterval = 30 * time.Second
	DefaultMaxKeyAge       = 24 * time.Hour
	DefaultRefusalLogEvery = time.Minute
	DefaultFetchTimeout    = 5 * time.Second
	DefaultEntitiesLimit   = 100
	DefaultTokenCacheSize  = 4096
	DefaultMaxTokenBytes   = 16 << 10
)

// maxJWKSBytes bounds a JWKS document; a longer one is a failed fetch.
const maxJWKSBytes = 1 << 20

// The outcomes of a JWKS fetch, as Observer.JWKSFetch gets them.
const (
	fetchOutcomeOK    = "ok"
	fetchOutcomeError = "error"
)

// FetchOutcomes lists the outcomes of a JWKS fetch.
func FetchOutcomes() []string { return []string{fetchOutcomeOK, fetchOutcomeError} }

// Config configures an Authenticator. Zero values take the defaults noted.
type Config struct {
	// JWKSHosts is the allow-list of jwks_host values, "host" or
	// "host:port", compared case-insensitively and otherwise exactly (so
	// "h" does not allow "h:443"). Default DefaultJWKSHosts().
	JWKSHosts []string
	// Audiences are the accepted aud values, compared exactly. Empty: the
	// request's own root URL, scheme://host[:port] with no trailing slash;
	// scheme https when r.TLS != nil or X-Forwarded-Proto is https; the
	// port dropped when it is the scheme's default.
	Audiences []string
	// HTTPClient fetches JWKS documents. Nil: a client with a 5s timeout
	// over http.DefaultTransport (system roots, SSL_CERT_FILE honoured).
	// Redirects are never followed, whichever client is given: a 3xx
	// answer is a failed fetch.
	HTTPClient *http.Client
	// JWKSTTL is how long a host's JWKS is used before it is fetched
	// again. Default 10m.
	JWKSTTL time.Duration
	// MaxKeyAge is how long, counted from the last successful fetch, a
	// host's keys keep verifying while every refetch fails (host down, TLS
	// failure, HTTP error, a document that is not a JWKS). Past it the host
	// has no keys and its tokens are refused as "Wrong jwks_host". Default
	// 24h; a value below JWKSTTL counts as JWKSTTL.
	MaxKeyAge time.Duration
	// RefreshInterval bounds the fetches of one host: at most one per
	// interval, counted from the start of the host's last fetch, whether an
	// unknown kid asks for it or the last fetch failed. Default 30s.
	RefreshInterval time.Duration
	// FetchTimeout bounds one JWKS fetch, on top of the client's own
	// timeout. Default 5s.
	FetchTimeout time.Duration
	// DefaultEntitiesLimit is used when the token has no valid
	// CTR_ENTITIES_LIMIT. Default 100.
	DefaultEntitiesLimit int
	// TokenCacheSize bounds the verified-token cache. Default 4096;
	// negative disables the cache.
	TokenCacheSize int
	// MaxTokenBytes: a longer token is "Wrong JWT structure". Default
	// 16 KiB.
	MaxTokenBytes int
	// Now is the clock for exp, nbf, the caches and the log rate limit.
	// Default time.Now.
	Now func() time.Time
	// Observer counts JWKS fetches and refusals; may be nil.
	Observer Observer
	// Logger receives a line for every refused token and every failed JWKS
	// fetch; nil discards them. Refusals are logged at warn level once per
	// RefusalLogEvery for each kind of refusal, cause and allow-listed
	// host, the next warn line counting those left out; every other refusal
	// is logged at debug level. No line holds the token, its signature or
	// the Pulsedive key.
	Logger *slog.Logger
	// RefusalLogEvery is the window of the warn-level rate limit above.
	// Default 1m.
	RefusalLogEvery time.Duration
}

// Observer is told the outcome of every JWKS fetch that reached for the
// network and the kind of every refusal. Both sets are bounded; the host,
// the token and the key are never passed.
type Observer interface {
	// JWKSFetch: "ok", or "error" (unreachable, timeout, non-2xx,
	// redirect, too large, not a JWKS): one of FetchOutcomes.
	JWKSFetch(outcome string)
	// AuthFailure: the kind of refusal, one of FailureKinds.
	AuthFailure(kind string)
}

// Claims is what a verified token grants.
type Claims struct {
	// Key is the caller's Pulsedive API key; it prints redacted.
	Key pulsedive.APIKey
	// EntitiesLimit is CTR_ENTITIES_LIMIT when it is a positive integer (a
	// JSON integer, or a string of one), else Config.DefaultEntitiesLimit.
	EntitiesLimit int
}

// Authenticator verifies configuration tokens. It is safe for concurrent
// use and starts no goroutines.
type Authenticator struct {
	hosts           map[string]bool
	audiences       []string
	audiencesKey    string // audiences as tokenKey holds them
	client          *http.Client
	jwksTTL         time.Duration
	maxKeyAge       time.Duration
	refreshInterval time.Duration
	fetchTimeout    time.Duration
	defaultLimit    int
	maxTokenBytes   int
	now             func() time.Time
	observer        Observer
	log             *slog.Logger
	refusals        *refusalLog
	validator       *jwt.Validator

	keys   *keyCache
	fetch  singleflight.Group
	tokens *tokenCache // nil when disabled
}

// New validates cfg and builds an Authenticator. A malformed allow-list
// entry (a scheme, path, userinfo, bad port), an empty audience or a
// negative duration or size is an error.
func New(cfg Config) (*Authenticator, error) {
	a := &Authenticator{
		hosts:           map[string]bool{},
		jwksTTL:         orDuration(cfg.JWKSTTL, DefaultJWKSTTL),
		maxKeyAge:       orDuration(cfg.MaxKeyAge, DefaultMaxKeyAge),
		refreshInterval: orDuration(cfg.RefreshInterval, DefaultRefreshInterval),
		fetchTimeout:    orDuration(cfg.FetchTimeout, DefaultFetchTimeout),
		defaultLimit:    orInt(cfg.DefaultEntitiesLimit, DefaultEntitiesLimit),
		maxTokenBytes:   orInt(cfg.MaxTokenBytes, DefaultMaxTokenBytes),
		now:             cfg.Now,
		observer:        cfg.Observer,
		log:             cfg.Logger,
		keys:            &keyCache{hosts: map[string]*hostKeys{}},
	}
	var errs []error
	for _, d := range []struct {
		name string
		d    time.Duration
	}{
		{"JWKSTTL", cfg.JWKSTTL}, {"MaxKeyAge", cfg.MaxKeyAge}, {"RefreshInterval", cfg.RefreshInterval},
		{"FetchTimeout", cfg.FetchTimeout}, {"RefusalLogEvery", cfg.RefusalLogEvery},
	} {
		if d.d < 0 {
			errs = append(errs, fmt.Errorf("%s %v is negative", d.name, d.d))
		}
	}
	if cfg.DefaultEntitiesLimit < 0 {
		errs = append(errs, fmt.Errorf("DefaultEntitiesLimit %d is negative", cfg.DefaultEntitiesLimit))
	}
	if cfg.MaxTokenBytes < 0 {
		errs = append(errs, fmt.Errorf("MaxTokenBytes %d is negative", cfg.MaxTokenBytes))
	}
	hosts := cfg.JWKSHosts
	if len(hosts) == 0 {
		hosts = DefaultJWKSHosts()
	}
	for _, h := range hosts {
		norm, ok := normalizeHost(strings.TrimSpace(h))
		if !ok {
			errs = append(errs, fmt.Errorf("JWKS host %q is not a bare host[:port]", h))
			continue
		}
		a.hosts[norm] = true
	}
	for _, aud := range cfg.Audiences {
		aud = strings.TrimSpace(aud)
		if aud == "" {
			errs = append(errs, errors.New("empty audience"))
			continue
		}
		a.audiences = append(a.audiences, aud)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("auth config: %w", err)
	}
	a.audiencesKey = audiencesKey(a.audiences)

	if a.now == nil {
		a.now = time.Now
	}
	a.maxKeyAge = max(a.maxKeyAge, a.jwksTTL)
	if a.log == nil {
		a.log = slog.New(slog.DiscardHandler)
	}
	a.refusals = newRefusalLog(orDuration(cfg.RefusalLogEvery, DefaultRefusalLogEvery))
	if cfg.HTTPClient != nil {
		c := *cfg.HTTPClient
		a.client = &c
	} else {
		a.client = &http.Client{Timeout: DefaultFetchTimeout}
	}
	a.client.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	a.validator = jwt.NewValidator(jwt.WithTimeFunc(a.now))
	if size := orInt(cfg.TokenCacheSize, DefaultTokenCacheSize); size > 0 {
		a.tokens = newTokenCache(size)
	}
	return a, nil
}

func orDuration(d, def time.Duration) time.Duration {
	if d == 0 {
		return def
	}
	return d
}

func orInt(n, def int) int {
	if n == 0 {
		return def
	}
	return n
}

// Authenticate verifies r's configuration token and returns its claims.
// Every failure is an *Error; the checks run in the order of the contract:
// header, scheme, structure, jwks_host present, jwks_host allowed, alg
// RS256, JWKS fetch, kid, signature, exp/nbf, aud, key. A jwks_host outside
// the allow-list, or a token whose alg is not RS256, never causes a network
// request; jku, x5u, jwk and x5c headers are ignored.
//
// A JWKS fetch is shared by every request that needs the same host at the
// same time and is not cancelled when r's context ends, so Authenticate can
// block up to FetchTimeout after r is cancelled. While a host fails, its
// last good keys keep verifying up to MaxKeyAge, and it is asked again at
// most once per RefreshInterval.
//
// A token verified before, for the same accepted audiences, is answered
// from a cache without a signature check until its exp, JWKSTTL after it
// was verified, or the end of its key's MaxKeyAge, whichever comes first.
//
// Every refusal is logged (see Config.Logger) and counted by the Observer.
func (a *Authenticator) Authenticate(r *http.Request) (Claims, error) {
	var sc scene
	c, err := a.authenticate(r, &sc)
	if err != nil {
		a.refused(r.Context(), err, &sc)
	}
	return c, err
}

func (a *Authenticator) authenticate(r *http.Request, sc *scene) (Claims, error) {
	raw, err := bearerToken(r)
	if err != nil {
		return Claims{}, err
	}
	if len(raw) > a.maxTokenBytes {
		return Claims{}, fail(ReasonWrongStructure, detail(fmt.Sprintf("token of %d bytes, over the %d-byte limit", len(raw), a.maxTokenBytes)))
	}
	now := a.now()
	var cacheKey tokenKey
	if a.tokens != nil {
		if len(a.audiences) > 0 {
			cacheKey = tokenKey{token: raw, auds: a.audiencesKey}
		} else {
			cacheKey = requestTokenKey(raw, r)
		}
		if c, ok := a.tokens.get(cacheKey, now); ok {
			return c, nil
		}
	}
	auds := a.audiences
	if len(auds) == 0 {
		auds = []string{requestAudience(r)}
	}

	c, until, err := a.verify(r, raw, auds, sc)
	if err != nil {
		return Claims{}, err
	}
	if a.tokens != nil {
		if limit := now.Add(a.jwksTTL); until.IsZero() || until.After(limit) {
			until = limit
		}
		a.tokens.put(cacheKey, c, until)
	}
	return c, nil
}

// bearerToken splits the Authorization header into exactly two words, as
// Python's str.split() would, and checks the scheme. More than one
// Authorization header is ambiguous and refused as the wrong type.
func bearerToken(r *http.Request) (string, error) {
	// The details never quote the header: a token sent without its scheme
	// is its first word.
	values := r.Header.Values("Authorization")
	switch len(values) {
	case 0:
		return "", fail(ReasonMissingHeader)
	case 1:
	default:
		return "", fail(ReasonWrongType, detail(fmt.Sprintf("%d Authorization headers", len(values))))
	}
	scheme, rest := nextWord(values[0])
	token, rest := nextWord(rest)
	if extra, _ := nextWord(rest); token == "" || extra != "" {
		return "", fail(ReasonWrongType, detail("the header is not two words"))
	}
	if !strings.EqualFold(scheme, "Bearer") {
		return "", fail(ReasonWrongType, detail("the scheme is not Bearer"))
	}
	return token, nil
}

// nextWord returns the first whitespace-separated word of s and what
// follows it.
func nextWord(s string) (word, rest string) {
	s = strings.TrimLeft(s, " \t\r\n\v\f")
	i := strings.IndexAny(s, " \t\r\n\v\f")
	if i < 0 {
		return s, ""
	}
	return s[:i], s[i:]
}

// requestScheme is the scheme of r's root URL: https when r came over TLS
// or a proxy says it did.
func requestScheme(r *http.Request) string {
	if r.TLS != nil || forwardedHTTPS(r.Header.Get("X-Forwarded-Proto")) {
		return "https"
	}
	return "http"
}

// requestAudience is r's root URL as Flask's request.url_root without the
// trailing slash: the Host header as sent, minus the scheme's default port.
func requestAudience(r *http.Request) string {
	scheme := requestScheme(r)
	host := r.Host
	switch scheme {
	case "http":
		host = strings.TrimSuffix(host, ":80")
	case "https":
		host = strings.TrimSuffix(host, ":443")
	}
	return scheme + "://" + host
}

// forwardedHTTPS reports whether the first (client-facing) value of
// X-Forwarded-Proto is https.
func forwardedHTTPS(v string) bool {
	first, _, _ := strings.Cut(v, ",")
	return strings.EqualFold(strings.TrimSpace(first), "https")
}
