package pulsedive

import (
	"errors"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sony/gobreaker/v2"
)

// BreakerState is the state of one API key's circuit breaker.
type BreakerState int

// Breaker states.
const (
	BreakerClosed   BreakerState = iota // calls go through
	BreakerHalfOpen                     // probes test Pulsedive; other calls are refused
	BreakerOpen                         // every call is refused
	numBreakerStates
)

// BreakerStates returns every state, in the order above.
func BreakerStates() []BreakerState {
	return []BreakerState{BreakerClosed, BreakerHalfOpen, BreakerOpen}
}

// String names the state as metrics label it: closed, half_open, open.
func (s BreakerState) String() string {
	switch s {
	case BreakerClosed:
		return "closed"
	case BreakerHalfOpen:
		return "half_open"
	case BreakerOpen:
		return "open"
	}
	return "BreakerState(" + strconv.Itoa(int(s)) + ")"
}

func breakerState(s gobreaker.State) BreakerState {
	switch s {
	case gobreaker.StateHalfOpen:
		return BreakerHalfOpen
	case gobreaker.StateOpen:
		return BreakerOpen
	}
	return BreakerClosed
}

// BreakerConfig configures the circuit breakers that guard Pulsedive, one
// per API key: an outage then costs each observable one fast error (and a
// stale answer where the cache has one) instead of a timeout each, while
// one tenant's failing calls (a hanging indicator asked again and again)
// never shut out another tenant.
//
// Each key's breaker is a sony/gobreaker TwoStepCircuitBreaker. Its
// generation count drops the result of a call that started before the
// breaker last changed state, so a late answer from before an outage can
// neither close an open breaker without a probe nor re-open it over a
// successful probe. gobreaker reads time.Now itself; tests run it on
// testing/synctest's fake clock.
type BreakerConfig struct {
	// Failures is how many consecutive outage-like failures (5xx, timeouts,
	// refused or reset connections) of one key open its breaker; 0
	// disables breakers.
	Failures int
	// OpenFor is how long a breaker stays open before letting probes
	// through (DefaultBreakerOpenFor when zero).
	OpenFor time.Duration
	// Probes is how many calls may test Pulsedive while half-open (1 by
	// default); when as many have succeeded the breaker closes, and one
	// failure opens it again.
	Probes int
	// OnStateChange, when set, is told each change of one key's breaker.
	// It runs while that breaker is locked: it must be quick and must not
	// call the client.
	OnStateChange func(from, to BreakerState)
}

// breakers holds the breaker of every key that has a call in flight or
// has failed recently. A key whose breaker is closed with no failure
// counted and no call in flight has no entry: it would behave exactly like
// a fresh one, so memory is bounded by the keys calling or failing, not by
// all keys ever seen. Entries are created before a call is allowed, so that
// every call's result is judged by the generation it started in.
type breakers struct {
	cfg      BreakerConfig
	obs      Observer
	settings gobreaker.Settings

	mu        sync.Mutex
	keys      map[string]*keyBreaker
	nextSweep time.Time

	// counts holds the keys per state. It changes under a breaker's own
	// lock (state changes), so it is atomic; reportMu orders the reports,
	// so the last one an observer gets holds the latest counts.
	counts   [numBreakerStates]atomic.Int64
	reportMu sync.Mutex
}

type keyBreaker struct {
	cb *gobreaker.TwoStepCircuitBreaker[struct{}]
	// calls and last are guarded by breakers.mu. calls counts the calls
	// that asked the breaker and have not reported back; an entry is only
	// dropped at zero, so no result is ever lost to a dropped entry.
	calls int
	last  time.Time // the key's last call
}

func newBreakers(cfg BreakerConfig, obs Observer) *breakers {
	if cfg.Failures <= 0 {
		return nil
	}
	if cfg.OpenFor <= 0 {
		cfg.OpenFor = DefaultBreakerOpenFor
	}
	if cfg.Probes <= 0 {
		cfg.Probes = 1
	}
	b := &breakers{cfg: cfg, obs: obs, keys: make(map[string]*keyBreaker)}
	failures := uint32(min(cfg.Failures, 1<<31))
	b.settings = gobreaker.Settings{
		MaxRequests: uint32(min(cfg.Probes, 1<<31)),
		// Interval 0: the counts of a closed breaker are never cleared, so
		// failures are consecutive whatever time passes between them.
		Interval:      0,
		Timeout:       cfg.OpenFor,
		ReadyToTrip:   func(c gobreaker.Counts) bool { return c.ConsecutiveFailures >= failures },
		OnStateChange: func(_ string, from, to gobreaker.State) { b.changed(breakerState(from), breakerState(to)) },
		IsSuccessful:  func(err error) bool { return newsOf(err) == newsUp },
		IsExcluded:    func(err error) bool { return newsOf(err) == newsNone },
	}
	return b
}

// allow asks to make a call for key (a fingerprint). When it may go, done
// must be called with its result; when not, the error is an
// *UnavailableError with CauseBreakerOpen. A nil *breakers lets everything
// through.
func (b *breakers) allow(key string) (done func(err error), _ error) {
	if b == nil {
		return func(error) {}, nil
	}
	b.mu.Lock()
	now := time.Now()
	b.sweep(now)
	k := b.keys[key]
	if k == nil {
		k = &keyBreaker{cb: gobreaker.NewTwoStepCircuitBreaker[struct{}](b.settings)}
		b.keys[key] = k
		b.add(BreakerClosed, 1)
	}
	k.calls++
	k.last = now
	b.mu.Unlock()

	report, err := k.cb.Allow()
	if err != nil {
		b.release(key, k)
		return nil, unavailable(CauseBreakerOpen, err)
	}
	return func(err error) {
		report(err)
		b.release(key, k)
	}, nil
}

// release ends one call of k and drops the entry when it holds nothing a
// fresh breaker would not.
func (b *breakers) release(key string, k *keyBreaker) {
	b.mu.Lock()
	defer b.mu.Unlock()
	k.calls--
	if k.calls == 0 && k.cb.State() == gobreaker.StateClosed && k.cb.Counts().ConsecutiveFailures == 0 {
		b.forget(key, k)
	}
}

// sweep forgets keys that have made no call for two open periods: a key
// that failed and went quiet would otherwise stay counted as open for good.
// A forgotten key starts afresh, closed. It runs at most once per open
// period, from allow, so no goroutine is needed. b.mu must be held.
func (b *breakers) sweep(now time.Time) {
	if now.Before(b.nextSweep) {
		return
	}
	b.nextSweep = now.Add(b.cfg.OpenFor)
	for key, k := range b.keys {
		if k.calls == 0 && now.Sub(k.last) >= 2*b.cfg.OpenFor {
			b.forget(key, k)
		}
	}
}

// forget drops k, which has no call in flight. b.mu must be held.
func (b *breakers) forget(key string, k *keyBreaker) {
	delete(b.keys, key)
	b.add(breakerState(k.cb.State()), -1)
}

// changed follows one key's change of state; gobreaker calls it with that
// key's breaker locked.
func (b *breakers) changed(from, to BreakerState) {
	b.add(from, -1)
	b.add(to, 1)
	if b.cfg.OnStateChange != nil {
		b.cfg.OnStateChange(from, to)
	}
}

// add moves the count of keys in state by delta and reports the count.
// Reading it under reportMu, after the change, makes the last report of a
// state hold its latest count whatever the order of concurrent changes.
func (b *breakers) add(state BreakerState, delta int64) {
	b.counts[state].Add(delta)
	b.reportMu.Lock()
	defer b.reportMu.Unlock()
	b.obs.BreakerKeys(state.String(), int(b.counts[state].Load()))
}

// What a call's result says of Pulsedive.
type news int

const (
	newsUp     news = iota // it answered: 2xx, 4xx, no data, even a bad document
	newsOutage             // server errors, failures to reach it or hear back in time
	newsNone               // nothing: the caller gave up, or the relay never called
)

// newsOf reads a call's result for the breaker, by error type, status code
// and Cause, never by message text. Answers about one key or one indicator
// (4xx, no data, a bad document, a redirect) show Pulsedive is up.
func newsOf(err error) news {
	var se *StatusError
	var cause Cause
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
	case errors.As(err, &cause):
		return cause.news()
	}
	return newsUp
}

// news says what a failure of this cause says of Pulsedive. The caller's
// own deadline or cancellation, the relay's own limiter and the breaker
// itself say nothing about it, and must neither open a breaker nor close
// one as a successful probe would.
func (c Cause) news() news {
	switch c {
	case CauseDeadline, CauseCancelled, CauseLimiterFailed, CauseBreakerOpen:
		return newsNone
	}
	return newsOutage
}
