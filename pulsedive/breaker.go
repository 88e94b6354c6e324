package pulsedive

import (
	"errors"
	"net/http"
	"sync"
	"time"
)

// Breaker states, as reported to BreakerConfig.OnStateChange and in
// metrics (pulsedive_relay_breaker_state).
const (
	BreakerClosed   = 0
	BreakerHalfOpen = 1
	BreakerOpen     = 2
)

// BreakerConfig configures the circuit breaker that guards Pulsedive as a
// whole: an outage then costs each observable one fast error (and a stale
// answer where the cache has one) instead of a timeout each.
//
// The relay has its own breaker rather than sony/gobreaker because
// gobreaker reads time.Now itself: with an injected clock the open and
// half-open periods are tested exactly, without sleeping.
type BreakerConfig struct {
	// Failures is how many consecutive outage-like failures (5xx, timeouts,
	// refused or reset connections) open the breaker; 0 disables it.
	Failures int
	// OpenFor is how long it stays open before letting probes through
	// (30s by default).
	OpenFor time.Duration
	// Probes is how many calls may test Pulsedive at once while half-open
	// (1 by default); one success closes the breaker, one failure opens it
	// again.
	Probes int
	// OnStateChange is told every transition, with the Breaker* constants.
	OnStateChange func(state int)
}

// errBreakerOpen is the cause inside the *UnavailableError a call gets
// while the breaker is open.
var errBreakerOpen = errors.New("circuit breaker open")

type breaker struct {
	cfg BreakerConfig
	now func() time.Time

	mu       sync.Mutex
	state    int
	failures int       // consecutive, while closed
	until    time.Time // end of the open period
	probes   int       // in flight, while half-open
}

func newBreaker(cfg BreakerConfig, now func() time.Time) *breaker {
	if cfg.Failures <= 0 {
		return nil
	}
	if cfg.OpenFor <= 0 {
		cfg.OpenFor = 30 * time.Second
	}
	if cfg.Probes <= 0 {
		cfg.Probes = 1
	}
	return &breaker{cfg: cfg, now: now}
}

// allow asks to make a call. When it may go, done must be called with its
// result; when not, the error says the breaker is open. A nil breaker lets
// everything through.
func (b *breaker) allow() (done func(err error), _ error) {
	if b == nil {
		return func(error) {}, nil
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.state == BreakerOpen {
		if b.now().Before(b.until) {
			return nil, &UnavailableError{Reason: "circuit breaker open", Err: errBreakerOpen}
		}
		b.set(BreakerHalfOpen)
	}
	probe := b.state == BreakerHalfOpen
	if probe {
		if b.probes >= b.cfg.Probes {
			return nil, &UnavailableError{Reason: "circuit breaker open", Err: errBreakerOpen}
		}
		b.probes++
	}
	return func(err error) { b.record(probe, err) }, nil
}

func (b *breaker) record(probe bool, err error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if probe {
		b.probes--
	}
	failed := outage(err)
	switch {
	case !failed && (b.state == BreakerHalfOpen || b.failures > 0):
		b.failures = 0
		b.set(BreakerClosed)
	case failed && b.state == BreakerHalfOpen:
		b.open()
	case failed && b.state == BreakerClosed:
		b.failures++
		if b.failures >= b.cfg.Failures {
			b.open()
		}
	}
}

func (b *breaker) open() {
	b.failures = 0
	b.until = b.now().Add(b.cfg.OpenFor)
	b.set(BreakerOpen)
}

func (b *breaker) set(state int) {
	if b.state == state {
		return
	}
	b.state = state
	if b.cfg.OnStateChange != nil {
		b.cfg.OnStateChange(state)
	}
}

// outage says whether a call's result speaks of Pulsedive being down:
// server errors and failures to reach it or hear back in time. Answers
// about one key or one indicator (4xx, no data, a bad document) and the
// caller's own deadline do not count.
func outage(err error) bool {
	var se *StatusError
	var ue *UnavailableError
	switch {
	case err == nil:
		return false
	case errors.As(err, &se):
		return se.StatusCode >= http.StatusInternalServerError
	case errors.As(err, &ue):
		return ue.Reason != "request deadline exceeded" && ue.Reason != "request cancelled"
	case errors.As(err, new(*TLSError)):
		return true
	}
	return false
}
