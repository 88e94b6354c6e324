package pulsedive

import (
	"errors"
	"fmt"
	"time"
)

// Sentinel errors. The transport maps each error kind of this file to the
// contract's envelope (spec section 2) in one table; nothing here carries the
// API key or the request URL.
var (
	// ErrNotFound means Pulsedive has no data for the indicator: HTTP 400,
	// 404 or 406, or a 200 answer saying "Indicator not found.". It is not a
	// failure: the observable contributes nothing.
	ErrNotFound = errors.New("pulsedive: no data")

	// ErrInvalidJSON means Pulsedive answered a body that is not JSON.
	ErrInvalidJSON = errors.New("pulsedive: invalid JSON")

	// ErrSchema means the JSON has a shape the relay cannot read (a list
	// that is a number, say): the contract's "key error".
	ErrSchema = errors.New("pulsedive: unexpected document structure")

	// ErrTooLarge means Pulsedive answered more bytes than the client reads.
	ErrTooLarge = errors.New("pulsedive: answer over the size limit")
)

// StatusError is an HTTP status other than 200 and the "no data" ones.
// Message is Pulsedive's own "error" field, empty when it sent none.
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
type APIError struct{ Message string }

func (e *APIError) Error() string { return "pulsedive: " + e.Message }

// UnavailableError means Pulsedive could not be reached or did not answer in
// time. Reason is short and safe to show ("connection refused",
// "timeout", "request deadline exceeded"); Err is the cause, already
// stripped of the request URL.
type UnavailableError struct {
	Reason string
	Err    error
}

func (e *UnavailableError) Error() string { return "pulsedive unavailable: " + e.Reason }
func (e *UnavailableError) Unwrap() error { return e.Err }

// TLSError means the TLS handshake with Pulsedive failed verification.
// Reason is the verifier's text without its package prefix.
type TLSError struct {
	Reason string
	Err    error
}

func (e *TLSError) Error() string { return "pulsedive: TLS: " + e.Reason }
func (e *TLSError) Unwrap() error { return e.Err }

// RateLimitError means the relay itself refused the call: the key's budget
// would not allow it before the request deadline, or the key is paused after
// a 429 or an exhausted daily or monthly quota. RetryAfter is how long until
// a call would be allowed.
type RateLimitError struct{ RetryAfter time.Duration }

func (e *RateLimitError) Error() string {
	return fmt.Sprintf("pulsedive: rate limit for this key reached; retry in %s", e.RetryAfter)
}
