package pulsedive

import (
	"errors"
	"fmt"
	"strconv"
	"time"
)

// Sentinel errors. The transport maps each error kind of this file to the
// contract's envelope (CONTRACT.md section 2) in one table; nothing here carries the
// API key or the request URL.
var (
	// ErrNotFound means Pulsedive has no data for the indicator: HTTP 400,
	// 404 or 406 with Pulsedive's JSON error body, or a 200 answer saying
	// "Indicator not found.". It is not a failure: the observable
	// contributes nothing.
	ErrNotFound = errors.New("pulsedive: no data")

	// ErrInvalidJSON means Pulsedive answered a body that is not JSON.
	ErrInvalidJSON = errors.New("pulsedive: invalid JSON")

	// ErrSchema means the JSON has a shape the relay cannot read (a list
	// that is a number, say): the contract's "key error".
	ErrSchema = errors.New("pulsedive: unexpected document structure")

	// ErrTooLarge means Pulsedive answered more bytes than the client reads.
	ErrTooLarge = errors.New("pulsedive: answer over the size limit")
)

// StatusError is an HTTP status other than 200, the "no data" ones and
// redirects. Message is Pulsedive's own "error" field, empty when it sent
// none, with the caller's API key scrubbed out.
type StatusError struct {
	StatusCode int
	Message    string
}

func (e *StatusError) Error() string {
	if e.Message == "" {
		return fmt.Sprintf("pulsedive: HTTP %d", e.StatusCode)
	}
	return fmt.Sprintf("pulsedive: HTTP %d: %s", e.StatusCode, e.Message)
}

// APIError is a 200 answer whose body holds an "error" text and no data.
// Message has the caller's API key scrubbed out.
type APIError struct{ Message string }

func (e *APIError) Error() string { return "pulsedive: " + e.Message }

// RedirectError means Pulsedive answered with a redirect (HTTP 3xx). The
// client never follows one: the API key is in the URL, and a redirect to
// another host would hand it over (CONTRACT.md section 6). The target is not
// kept, since it may echo the key.
type RedirectError struct{ StatusCode int }

func (e *RedirectError) Error() string {
	return fmt.Sprintf("pulsedive: answered with a redirect (HTTP %d)", e.StatusCode)
}

// UnexpectedAnswerError means an answer that Pulsedive does not give: HTTP
// 400, 404 or 406 without Pulsedive's JSON error body (an HTML page, an
// empty body, other JSON), or a health answer that is no indicator. The
// relay is most likely not talking to Pulsedive's API: PULSEDIVE_API_URL
// lacks its "api/" part or names another server (CONTRACT.md section 4).
type UnexpectedAnswerError struct{ StatusCode int }

func (e *UnexpectedAnswerError) Error() string {
	return fmt.Sprintf("pulsedive: unexpected answer (HTTP %d); check the API URL", e.StatusCode)
}

// Cause is why a call to Pulsedive failed without an answer, or was never
// made. Decisions (the breaker's, the metrics outcome's, the envelope's)
// switch on it, never on message text. A Cause is an error too, so
// errors.Is(err, pulsedive.CauseTimeout) and errors.As(err, &cause) find
// it inside the errors that carry one (*UnavailableError, *TLSError).
type Cause int

// Causes. The zero Cause is an unclassified failure to reach Pulsedive.
const (
	CauseUnknown       Cause = iota // no better classification: treated as an outage
	CauseTimeout                    // the call ran into PULSEDIVE_TIMEOUT
	CauseDeadline                   // the request's deadline passed
	CauseCancelled                  // the caller went away
	CauseRefused                    // connection refused
	CauseReset                      // connection reset or closed mid-answer
	CauseDNS                        // Pulsedive's host name did not resolve
	CauseConnect                    // another failure to connect
	CauseTLS                        // TLS verification of Pulsedive failed (*TLSError)
	CauseBreakerOpen                // the key's circuit breaker refused the call
	CauseLimiterFailed              // the relay's own rate limiter failed
	numCauses
)

// Causes returns every Cause, for tests and tables that must cover them all.
func Causes() []Cause {
	out := make([]Cause, 0, numCauses)
	for c := range numCauses {
		out = append(out, c)
	}
	return out
}

// String is the cause's short text, as the contract's "Pulsedive is
// unavailable: <short reason>" shows it.
func (c Cause) String() string {
	switch c {
	case CauseUnknown:
		return "connection failed"
	case CauseTimeout:
		return "timeout"
	case CauseDeadline:
		return "request deadline exceeded"
	case CauseCancelled:
		return "request cancelled"
	case CauseRefused:
		return "connection refused"
	case CauseReset:
		return "connection reset"
	case CauseDNS:
		return "host not found"
	case CauseConnect:
		return "connection failed"
	case CauseTLS:
		return "TLS verification failed"
	case CauseBreakerOpen:
		return "circuit breaker open"
	case CauseLimiterFailed:
		return "rate limiter failed"
	}
	return "Cause(" + strconv.Itoa(int(c)) + ")"
}

func (c Cause) Error() string { return "pulsedive: " + c.String() }

// UnavailableError means Pulsedive could not be reached or did not answer in
// time, or the call was not made (breaker, limiter, the caller's deadline).
// Cause says why, for every decision; Reason is the text shown, short and
// safe ("connection refused", "timeout"); Err is the underlying error,
// already stripped of the request URL. errors.Is finds both Cause and Err.
type UnavailableError struct {
	Cause  Cause
	Reason string
	Err    error
}

// unavailable returns the error of cause with its usual text.
func unavailable(cause Cause, err error) *UnavailableError {
	return &UnavailableError{Cause: cause, Reason: cause.String(), Err: err}
}

func (e *UnavailableError) Error() string { return "pulsedive unavailable: " + e.Reason }

// Unwrap gives the cause and the underlying error.
func (e *UnavailableError) Unwrap() []error {
	if e.Err == nil {
		return []error{e.Cause}
	}
	return []error{e.Cause, e.Err}
}

// TLSError means the TLS handshake with Pulsedive failed verification.
// Reason is the verifier's text without its package prefix. Its Cause is
// CauseTLS.
type TLSError struct {
	Reason string
	Err    error
}

func (e *TLSError) Error() string { return "pulsedive: TLS: " + e.Reason }

// Unwrap gives CauseTLS and the verifier's error.
func (e *TLSError) Unwrap() []error {
	if e.Err == nil {
		return []error{CauseTLS}
	}
	return []error{CauseTLS, e.Err}
}

// RateLimitError means the relay itself refused the call: the key's budget
// would not allow it before the request deadline, or the key is paused after
// a 429 or an exhausted daily or monthly quota. RetryAfter is how long until
// a call would be allowed.
type RateLimitError struct{ RetryAfter time.Duration }

func (e *RateLimitError) Error() string {
	return fmt.Sprintf("pulsedive: rate limit for this key reached; retry in %s", e.RetryAfter)
}
