// Package pulsedive is the Pulsedive API client: typed, lenient decoding of
// info.php documents (CONTRACT.md section 4), retries, rate-limit learning, per-key
// circuit breakers, bounds on calls in flight, and typed errors whose
// causes every decision switches on (CONTRACT.md section 6).
//
// This package imports no other package of the relay; see the import rule in
// the pipeline package's documentation.
package pulsedive

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// Limiter is the per-key budget the client waits on before every attempt,
// retries included. Keys are APIKey.Fingerprint values, never keys. Wait
// returns nil when a call may go now; an error with a RetryAfter()
// time.Duration method when the budget refuses the call (the client turns
// it into *RateLimitError); or the context's error. PauseUntil stops a key
// after Pulsedive said its quota is spent.
type Limiter interface {
	Wait(ctx context.Context, key string) error
	PauseUntil(key string, until time.Time)
}

// Observer receives the client's measurements; metrics.Metrics is one.
// Outcome is one of the Outcome constants.
type Observer interface {
	// PulsediveCall is one HTTP attempt and how long it took.
	PulsediveCall(kind, outcome string, d time.Duration)
	// PulsediveRefused is a call the relay did not make (OutcomeRefused,
	// OutcomeBreakerOpen): it is counted, but has no latency to observe.
	PulsediveRefused(kind, outcome string)
	PulsediveInFlight(delta int)
	LimiterWait(d time.Duration)
	// BreakerKeys is the number of keys whose breaker is in state (a
	// BreakerState's String) after a change.
	BreakerKeys(state string, n int)
}

// Outcomes of one Pulsedive call, as counted in metrics: a bounded set.
const (
	OutcomeOK          = "ok"
	OutcomeNotFound    = "not_found"
	OutcomeRateLimited = "rate_limited" // HTTP 429
	OutcomeClientError = "client_error" // other 4xx
	OutcomeServerError = "server_error" // 5xx
	OutcomeTimeout     = "timeout"
	OutcomeUnavailable = "unavailable"  // refused, reset, DNS, TLS
	OutcomeBadAnswer   = "bad_answer"   // invalid JSON, oversized, API error text, redirect, unexpected answer
	OutcomeRefused     = "refused"      // the relay's own limiter said no
	OutcomeBreakerOpen = "breaker_open" // the key's circuit breaker said no
)

// Outcomes returns every Outcome constant, so that what counts them can
// check it knows each one.
func Outcomes() []string {
	return []string{
		OutcomeOK, OutcomeNotFound, OutcomeRateLimited, OutcomeClientError, OutcomeServerError,
		OutcomeTimeout, OutcomeUnavailable, OutcomeBadAnswer, OutcomeRefused, OutcomeBreakerOpen,
	}
}

// Document kinds, as used in metrics and cache keys.
const (
	KindInfo   = "info"
	KindLinks  = "links"
	KindHealth = "health"
)

// Kinds returns every Kind constant.
func Kinds() []string { return []string{KindInfo, KindLinks, KindHealth} }

// Defaults applied by New to zero Config fields; the relay's settings
// (PULSEDIVE_API_URL, PULSEDIVE_TIMEOUT, BREAKER_OPEN_FOR) take theirs
// from here.
const (
	DefaultBaseURL        = "https://pulsedive.com/api/"
	DefaultTimeout        = 10 * time.Second
	DefaultMaxRetries     = 2
	DefaultMaxBodyBytes   = 4 << 20
	DefaultBreakerOpenFor = 30 * time.Second
)

// Config configures a Client. Zero fields take the defaults noted.
type Config struct {
	// BaseURL is the API base, DefaultBaseURL when empty.
	BaseURL string
	// HTTPClient sends the requests; http.DefaultClient's transport when nil.
	// Its own Timeout should be zero: Timeout below bounds each call. The
	// client uses a copy whose CheckRedirect refuses every redirect: the
	// API key is in the URL (CONTRACT.md section 6).
	HTTPClient *http.Client
	// Timeout bounds one HTTP call (DefaultTimeout when zero). A call that
	// runs into it is not retried.
	Timeout time.Duration
	// UserAgent names the relay and its version.
	UserAgent string
	// MaxRetries is how often a 5xx answer or a connection failure is
	// retried (DefaultMaxRetries when zero; a negative value disables
	// retries). Retry n waits a random time up to 100ms·2^(n-1), at most
	// 2s (jitteredBackoff).
	MaxRetries int
	// MaxBodyBytes caps what is read of one answer (DefaultMaxBodyBytes
	// when zero).
	MaxBodyBytes int64
	// Limiter is waited on before every attempt; nil means no local limit.
	Limiter Limiter
	// Observer receives metrics; nil means none.
	Observer Observer
	// Now is the clock of rate-limit pauses; time.Now by default. It is
	// passed in, as the style guide asks of constructors, so that the
	// pause a test provokes ends at a time the test can name. The breakers
	// and the retries' backoff read time.Now (gobreaker does): their tests
	// run in testing/synctest bubbles, where waiting costs no time.
	Now func() time.Time
	// MaxInFlight bounds the calls in flight across every request of the
	// process; excess calls wait within their deadline. 0 means no bound.
	MaxInFlight int
	// MaxInFlightPerKey bounds the calls in flight of one API key, so that
	// one tenant cannot hold every slot of MaxInFlight; a call over its
	// key's share waits within its deadline, without holding a
	// process-wide slot. 0 means no per-key bound.
	MaxInFlightPerKey int
	// Breaker configures the per-key circuit breakers; its zero value
	// disables them.
	Breaker BreakerConfig
}

// Client calls Pulsedive's info.php. It is safe for concurrent use.
type Client struct {
	base       *url.URL
	http       *http.Client
	timeout    time.Duration
	userAgent  string
	maxRetries int
	maxBody    int64
	limiter    Limiter
	obs        Observer
	now        func() time.Time
	breakers   *breakers
	slots      *slots // nil when unbounded
}

// New checks cfg and returns a client.
func New(cfg Config) (*Client, error) {
	if cfg.BaseURL == "" {
		cfg.BaseURL = DefaultBaseURL
	}
	base, err := url.Parse(cfg.BaseURL)
	if err != nil || (base.Scheme != "http" && base.Scheme != "https") || base.Host == "" {
		return nil, fmt.Errorf("pulsedive: base URL %q is not an http(s) URL", cfg.BaseURL)
	}
	if !strings.HasSuffix(base.Path, "/") {
		base.Path += "/"
	}
	c := &Client{
		base:       base,
		http:       noRedirects(cfg.HTTPClient),
		timeout:    cfg.Timeout,
		userAgent:  cfg.UserAgent,
		maxRetries: cfg.MaxRetries,
		maxBody:    cfg.MaxBodyBytes,
		limiter:    cfg.Limiter,
		obs:        cfg.Observer,
		now:        cfg.Now,
	}
	if c.timeout <= 0 {
		c.timeout = DefaultTimeout
	}
	if c.userAgent == "" {
		c.userAgent = "pulsedive-relay"
	}
	if c.maxRetries == 0 {
		c.maxRetries = DefaultMaxRetries
	} else if c.maxRetries < 0 {
		c.maxRetries = 0
	}
	if c.maxBody <= 0 {
		c.maxBody = DefaultMaxBodyBytes
	}
	if c.obs == nil {
		c.obs = nopObserver{}
	}
	if c.now == nil {
		c.now = time.Now
	}
	c.breakers = newBreakers(cfg.Breaker, c.obs)
	c.slots = newSlots(cfg.MaxInFlight, cfg.MaxInFlightPerKey)
	return c, nil
}

// noRedirects returns a copy of hc (a client over http.DefaultTransport
// when nil) that never follows a redirect: the request URL holds the API
// key, and following would send it, and a Referer naming it, to whatever
// host the redirect names. The 3xx answer itself comes back, and is
// reported as a *RedirectError.
func noRedirects(hc *http.Client) *http.Client {
	c := &http.Client{Transport: http.DefaultTransport}
	if hc != nil {
		copied := *hc
		c = &copied
	}
	c.Jar = nil
	c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	return c
}

// Indicator fetches info.php?indicator=value. It returns ErrNotFound when
// Pulsedive has no data, and otherwise one of the errors of errors.go, with
// any Pulsedive text in it scrubbed of the key.
func (c *Client) Indicator(ctx context.Context, key APIKey, value string) (*Indicator, error) {
	var ind *Indicator
	err := c.get(ctx, key, KindInfo, url.Values{"indicator": {value}}, func(body []byte) (err error) {
		ind, err = DecodeIndicator(body)
		return err
	})
	return ind, err
}

// Links fetches info.php?indicator=value&get=links, with the errors of
// Indicator.
func (c *Client) Links(ctx context.Context, key APIKey, value string) (*Links, error) {
	var links *Links
	err := c.get(ctx, key, KindLinks, url.Values{"indicator": {value}, "get": {"links"}}, func(body []byte) (err error) {
		links, err = DecodeLinks(body)
		return err
	})
	return links, err
}

// Health makes the cheap call of the health endpoint (info.php?iid=2) with
// the caller's key. An indicator document (an object with an iid), even one
// the mapping could not read, or Pulsedive's "no data" answer is healthy:
// the key was accepted and Pulsedive answered. Any other 200 answer is an
// *UnexpectedAnswerError, as a "no data" status without Pulsedive's JSON
// error is: the relay is not talking to Pulsedive.
func (c *Client) Health(ctx context.Context, key APIKey) error {
	err := c.get(ctx, key, KindHealth, url.Values{"iid": {"2"}}, decodeHealth)
	if errors.Is(err, ErrNotFound) {
		return nil
	}
	return err
}

func decodeHealth(body []byte) error {
	if _, err := DecodeIndicator(body); err != nil && !errors.Is(err, ErrSchema) {
		return err // not JSON, Pulsedive's error text, or "no data"
	}
	var doc struct {
		IID flexString `json:"iid"`
	}
	if json.Unmarshal(body, &doc) != nil || doc.IID == "" {
		return &UnexpectedAnswerError{StatusCode: http.StatusOK}
	}
	return nil
}

// get runs one logical call: breaker, limiter, the bounds on calls in
// flight, HTTP, decoding, and retries of transient failures, each retry
// passing the breaker and the limiter again. decode reads a 200 answer; its
// error decides the call's outcome too. The error returned has Pulsedive's
// text scrubbed of the key.
func (c *Client) get(ctx context.Context, key APIKey, kind string, q url.Values, decode func([]byte) error) error {
	q.Set("key", key.Reveal())
	u := *c.base
	u.Path += "info.php"
	u.RawQuery = q.Encode()
	target := u.String()
	fp := key.Fingerprint()

	for attempt := 0; ; attempt++ {
		retry, err := c.try(ctx, fp, kind, target, decode)
		if err == nil || !retry || attempt >= c.maxRetries {
			return scrub(err, key)
		}
		if sleep(ctx, jitteredBackoff(attempt+1)) != nil {
			return scrub(err, key) // the deadline leaves no time for another try: report what failed
		}
	}
}

// scrub removes the key from the Pulsedive text err carries. The error is
// the client's own, made for this call, so it is changed in place.
func scrub(err error, key APIKey) error {
	var se *StatusError
	var ae *APIError
	switch {
	case errors.As(err, &se):
		se.Message = key.scrub(se.Message)
	case errors.As(err, &ae):
		ae.Message = key.scrub(ae.Message)
	}
	return err
}

// try makes one attempt through the breaker, the limiter and the in-flight
// bounds. Calls the breaker or the limiter refuse are counted, not timed.
func (c *Client) try(ctx context.Context, fp, kind, target string, decode func([]byte) error) (retry bool, err error) {
	if err := ctx.Err(); err != nil {
		return false, contextError(err)
	}
	done, err := c.breakers.allow(fp)
	if err != nil {
		c.obs.PulsediveRefused(kind, outcomeOf(err))
		return false, err
	}
	defer func() { done(err) }()
	if err := c.wait(ctx, fp); err != nil {
		if errors.As(err, new(*RateLimitError)) {
			c.obs.PulsediveRefused(kind, outcomeOf(err))
		}
		return false, err
	}
	release, err := c.slots.acquire(ctx, fp)
	if err != nil {
		return false, err
	}
	defer release()
	return c.attempt(ctx, fp, kind, target, decode)
}

// callMargin is the time a call needs after its token: the limiter is told
// the request ends this much before its deadline, so that a token it hands
// out at the last moment is not spent on a call that cannot finish.
const callMargin = time.Second

func (c *Client) wait(ctx context.Context, fp string) error {
	if c.limiter == nil {
		return nil
	}
	waitCtx := ctx
	start := time.Now()
	deadline, ok, byBudget := waitDeadline(ctx, start)
	if ok {
		var cancel context.CancelFunc
		waitCtx, cancel = context.WithDeadline(ctx, deadline)
		defer cancel()
	}
	err := c.limiter.Wait(waitCtx, fp)
	c.obs.LimiterWait(time.Since(start))
	if err == nil {
		return nil
	}
	var ra interface{ RetryAfter() time.Duration }
	if errors.As(err, &ra) {
		return &RateLimitError{RetryAfter: ra.RetryAfter()}
	}
	if ctx.Err() != nil {
		return contextError(ctx.Err())
	}
	if byBudget && waitCtx.Err() != nil {
		// The budget deadline passed before the limiter could say when a
		// token comes (a slow shared limiter): a refusal all the same.
		return &RateLimitError{}
	}
	return unavailable(CauseLimiterFailed, err)
}

// attempt makes one HTTP request and decodes a 200 answer. retry says
// whether the failure is transient (5xx, refused, reset) and may be tried
// again. The request carries no Referer and no cookie: only what Pulsedive
// needs.
func (c *Client) attempt(ctx context.Context, fp, kind, target string, decode func([]byte) error) (retry bool, err error) {
	callCtx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(callCtx, http.MethodGet, target, nil)
	if err != nil {
		return false, fmt.Errorf("pulsedive: building request: %w", ErrSchema)
	}
	req.Header.Set("User-Agent", c.userAgent)
	req.Header.Set("Accept", "application/json")

	c.obs.PulsediveInFlight(1)
	start := time.Now()
	defer func() {
		c.obs.PulsediveInFlight(-1)
		c.obs.PulsediveCall(kind, outcomeOf(err), time.Since(start))
	}()

	resp, err := c.http.Do(req)
	if err != nil {
		return transportError(ctx, callCtx, err)
	}
	defer resp.Body.Close()

	body, err := io.ReadAll(io.LimitReader(resp.Body, c.maxBody+1))
	c.learn(fp, resp.StatusCode, resp.Header, body)
	if err != nil {
		return transportError(ctx, callCtx, err)
	}
	if int64(len(body)) > c.maxBody {
		return false, ErrTooLarge
	}
	if err := statusError(resp.StatusCode, body); err != nil {
		return resp.StatusCode >= 500, err
	}
	return false, decode(body)
}

// learn pauses the key when Pulsedive says its budget is spent. It runs
// once per answer, after the body is read (body may be partial), so that a
// 429's own message sets the pause: the limiter never shortens a pause, and
// a default pause set before the message was known would stand.
func (c *Client) learn(fp string, status int, h http.Header, body []byte) {
	if c.limiter == nil {
		return
	}
	msg := ""
	var se *StatusError
	if status == http.StatusTooManyRequests && errors.As(statusError(status, body), &se) {
		msg = se.Message
	}
	if until, ok := PauseFrom(status, h, msg, c.now()); ok {
		c.limiter.PauseUntil(fp, until)
	}
}

// statusError turns an HTTP status into nil (200), a *RedirectError
// (3xx), ErrNotFound (400, 404, 406 with Pulsedive's JSON error body), an
// *UnexpectedAnswerError (those statuses with any other body: not
// Pulsedive) or a *StatusError carrying Pulsedive's own message.
func statusError(status int, body []byte) error {
	switch status {
	case http.StatusOK:
		return nil
	case http.StatusBadRequest, http.StatusNotFound, http.StatusNotAcceptable:
		if isPulsediveError(body) {
			return ErrNotFound
		}
		return &UnexpectedAnswerError{StatusCode: status}
	}
	if status >= 300 && status < 400 {
		return &RedirectError{StatusCode: status}
	}
	var doc struct {
		Error flexString `json:"error"`
	}
	if decodeObject(body, &doc) != nil {
		doc.Error = ""
	}
	return &StatusError{StatusCode: status, Message: string(doc.Error)}
}

// isPulsediveError says whether body is Pulsedive's JSON error: an object
// whose "error" member is a string.
func isPulsediveError(body []byte) bool {
	var doc map[string]json.RawMessage
	if json.Unmarshal(body, &doc) != nil {
		return false
	}
	var text string
	raw := bytes.TrimSpace(doc["error"])
	return len(raw) > 0 && raw[0] == '"' && json.Unmarshal(raw, &text) == nil
}

// outcomeOf names a call's result for metrics, by error type, status code
// and Cause, never by message text.
func outcomeOf(err error) string {
	var se *StatusError
	var cause Cause
	switch {
	case err == nil:
		return OutcomeOK
	case errors.Is(err, ErrNotFound):
		return OutcomeNotFound
	case errors.As(err, &se):
		switch {
		case se.StatusCode == http.StatusTooManyRequests:
			return OutcomeRateLimited
		case se.StatusCode >= 500:
			return OutcomeServerError
		default:
			return OutcomeClientError
		}
	case errors.As(err, new(*RateLimitError)):
		return OutcomeRefused
	case errors.As(err, &cause):
		return cause.outcome()
	default:
		return OutcomeBadAnswer
	}
}

// outcome names a failure of this cause for metrics. The caller's own
// deadline or cancellation during a call counts as unavailable, as it
// always has.
func (c Cause) outcome() string {
	switch c {
	case CauseTimeout:
		return OutcomeTimeout
	case CauseBreakerOpen:
		return OutcomeBreakerOpen
	}
	return OutcomeUnavailable
}

// jitteredBackoff is the wait before retry n (1-based): full jitter over
// 100ms·2^(n-1), capped at 2s, so that callers who failed together do not
// retry together.
func jitteredBackoff(retry int) time.Duration {
	ceiling := 100 * time.Millisecond << min(max(retry-1, 0), 5)
	ceiling = min(ceiling, 2*time.Second)
	return time.Duration(rand.Int64N(int64(ceiling) + 1))
}

// sleep waits d or until ctx ends. It refuses to start a wait that would
// outlast the context's deadline.
func sleep(ctx context.Context, d time.Duration) error {
	if dl, ok := ctx.Deadline(); ok && time.Until(dl) < d {
		return unavailable(CauseDeadline, context.DeadlineExceeded)
	}
	if d <= 0 {
		return nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return contextError(ctx.Err())
	}
}

type nopObserver struct{}

func (nopObserver) PulsediveCall(string, string, time.Duration) {}
func (nopObserver) PulsediveRefused(string, string)             {}
func (nopObserver) PulsediveInFlight(int)                       {}
func (nopObserver) LimiterWait(time.Duration)                   {}
func (nopObserver) BreakerKeys(string, int)                     {}
