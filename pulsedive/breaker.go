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

// BreakerConfig configures the circuit breakers that guard Pulsedive, one
// per API key: an outage then costs each observable one fast error (and a
// stale answer where the cache has one) instead of a timeout each, while
// one tenant's failing calls (a hanging indicator asked again and again)
// never shut out another tenant.
//
// The relay has its own breaker rather than sony/gobreaker because
// gobreaker reads time.Now itself: with an injected clock the open and
// half-open periods are tested exactly, without sleeping.
type BreakerConfig struct {
	// Failures is how many consecutive outage-like failures (5xx, timeouts,
	// refused or reset connections) of one key open its breaker; 0
	// disables breakers.
	Failures int
	// OpenFor is how long a breaker stays open before letting probes
	// through (30s by default).
	OpenFor time.Duration
	// Probes is how many calls may test Pulsedive at once while half-open
	// (1 by default); one success closes the breaker, one failure opens it
	// again.
	Probes int
	// OnStateChange is told each change of the worst state over all keys
	// (open over half-open over closed), with the Breaker* constants, so a
	// single gauge shows whether any key is shut out.
	OnStateChange func(state int)
}

// errBreakerOpen is the cause inside the *UnavailableError a call gets
// while its key's breaker is open.
var errBreakerOpen = errors.New("circuit breaker open")

// breakers holds the breaker of every key that has failed recently. A key
// whose breaker is closed with no failure counted has no entry: it would
// behave exactly like a fresh one, so memory is bounded by the keys that
// are failing, not by all keys ever seen.
type breakers struct {
	cfg BreakerConfig
	now func() time.Time

	mu        sync.Mutex
	keys      map[string]*breakerState
	counts    [3]int // keys per state, closed entries included
	worst     int
	nextSweep time.Time
}

type breakerState struct {
	state    int
	failures int       // consecutive, while closed
	until    time.Time // end of the open period
	probes   int       // in flight, while half-open
	last     time.Time // the key's last call
}

func newBreakers(cfg BreakerConfig, now func() time.Time) *breakers {
	if cfg.Failures <= 0 {
		return nil
	}
	if cfg.OpenFor <= 0 {
		cfg.OpenFor = 30 * time.Second
	}
	if cfg.Probes <= 0 {
		cfg.Probes = 1
	}
	return &breakers{cfg: cfg, now: now, keys: make(map[string]*breakerState)}
}

// allow asks to make a call for key (a fingerprint). When it may go, done
// must be called with its result; when not, the error says the breaker is
// open. A nil *breakers lets everything through.
func (b *breakers) allow(key string) (done func(err error), _ error) {
	if b == nil {
		return func(error) {}, nil
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	now := b.now()
	b.sweep(now)
	k := b.keys[key]
	if k != nil {
		k.last = now
	}
	if k != nil && k.state == BreakerOpen {
		if now.Before(k.until) {
			return nil, &UnavailableError{Reason: "circuit breaker open", Err: errBreakerOpen}
		}
		b.set(k, BreakerHalfOpen)
	}
	probe := k != nil && k.state == BreakerHalfOpen
	if probe {
		if k.probes >= b.cfg.Probes {
			return nil, &UnavailableError{Reason: "circuit breaker open", Err: errBreakerOpen}
		}
		k.probes++
	}
	return func(err error) { b.record(key, probe, err) }, nil
}

func (b *breakers) record(key string, probe bool, err error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	k := b.keys[key]
	news := newsOf(err)
	failed := news == newsOutage
	if k == nil {
		if !failed {
			return
		}
		k = &breakerState{last: b.now()}
		b.keys[key] = k
		b.counts[BreakerClosed]++
	}
	if probe {
		k.probes--
	}
	switch {
	case news == newsNone:
		// The call learnt nothing of Pulsedive: neither count nor forgive.
	case !failed && k.state != BreakerOpen:
		k.failures = 0
		b.set(k, BreakerClosed)
	case failed && k.state == BreakerHalfOpen:
		b.open(k)
	case failed && k.state == BreakerClosed:
		k.failures++
		if k.failures >= b.cfg.Failures {
			b.open(k)
		}
	}
	if k.state == BreakerClosed && k.failures == 0 && k.probes == 0 {
		b.forget(key, k)
	}
}

// sweep forgets keys that have made no call for two open periods: a key
// that failed and went quiet would otherwise hold the worst state at open
// for good. A forgotten key starts afresh, closed. It runs at most once per
// open period, from allow, so no goroutine is needed.
func (b *breakers) sweep(now time.Time) {
	if now.Before(b.nextSweep) {
		return
	}
	b.nextSweep = now.Add(b.cfg.OpenFor)
	for key, k := range b.keys {
		if k.probes == 0 && now.Sub(k.last) >= 2*b.cfg.OpenFor {
			b.set(k, BreakerClosed)
			b.forget(key, k)
		}
	}
}

func (b *breakers) forget(key string, k *breakerState) {
	delete(b.keys, key)
	b.counts[k.state]--
}

func (b *breakers) open(k *breakerState) {
	k.failures = 0
	k.until = b.now().Add(b.cfg.OpenFor)
	b.set(k, BreakerOpen)
}

// set moves one key to state and reports a change of the worst state.
func (b *breakers) set(k *breakerState, state int) {
	if k.state == state {
		return
	}
	b.counts[k.state]--
	b.counts[state]++
	k.state = state
	worst := BreakerClosed
	switch {
	case b.counts[BreakerOpen] > 0:
		worst = BreakerOpen
	case b.counts[BreakerHalfOpen] > 0:
		worst = BreakerHalfOpen
	}
	if worst != b.worst {
		b.worst = worst
		if b.cfg.OnStateChange != nil {
			b.cfg.OnStateChange(worst)
		}
	}
}

// What a call's result says of Pulsedive.
const (
	newsUp     = iota // it answered: 2xx, 4xx, no data, even a bad document
	newsOutage        // server errors, failures to reach it or hear back in time
	newsNone          // nothing: the caller gave up, or the relay never called
)

// newsOf reads a call's result for the breaker. Answers about one key or
// one indicator (4xx, no data, a bad document) show Pulsedive is up. The
// caller's own deadline or cancellation and the relay's own limiter say
// nothing about it, and must neither open a breaker nor close one as a
// successful probe would.
func newsOf(err error) int {
	var se *StatusError
	var ue *UnavailableError
	switch {
	case err == nil:
		return newsUp
	case errors.As(err, new(*RateLimitError)):
		return newsNone
	case errors.As(err, &se):
		if se.StatusCode >= http.StatusInternalServerError {
			return newsOutage
		}
		return newsUp
	case errors.As(err, &ue):
		switch ue.Reason {
		case "request deadline exceeded", "request cancelled", "rate limiter failed":
			return newsNone
		}
		return newsOutage
	case errors.As(err, new(*TLSError)):
		return newsOutage
	}
	return newsUp
}
