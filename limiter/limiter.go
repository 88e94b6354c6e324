// Package limiter is the relay's per-API-key token-bucket budget for calls
// to Pulsedive, over golang.org/x/time/rate, with pauses learnt from
// Pulsedive and eviction of idle buckets (CONTRACT.md section 6; PULSEDIVE_RATE_LIMIT
// and PULSEDIVE_BURST of section 7).
//
// It imports no other package of this project.
package limiter

import (
	"context"
	"fmt"
	"math"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// Defaults applied by New to zero Config fields (PerMinute has none: zero
// means unlimited). DefaultBurst is PULSEDIVE_BURST's default too.
const (
	DefaultBurst     = 10
	DefaultIdleAfter = 10 * time.Minute
)

// minSweepEvery is the fewest reservations between two amortised sweeps,
// so that a small map is not walked on every call.
const minSweepEvery = 1024

// Config configures a Limiter.
type Config struct {
	// PerMinute is the sustained number of calls per minute each key may
	// make. Zero means no limit (rate.Inf): Wait never waits for a token,
	// though PauseUntil still stops a key. Negative, NaN or infinite is an error.
	PerMinute float64
	// Burst is how many calls a rested key may make at once. Zero means
	// DefaultBurst; negative is an error. Ignored when PerMinute is zero.
	Burst int
	// IdleAfter is how long a bucket must go unused before it may be
	// evicted; it must also be full and not paused. Zero means
	// DefaultIdleAfter; negative is an error.
	IdleAfter time.Duration
	// StartEmpty makes a new bucket start with no tokens instead of a full
	// burst: its first token comes one refill interval after it is made.
	// For a budget that other processes may just have spent, such as the
	// share a replica falls back to when the shared budget is out of reach.
	StartEmpty bool
}

// Limiter holds one token bucket per key. Keys are opaque strings; the relay
// passes a fingerprint of the API key, never the key. It is safe for
// concurrent use and starts no goroutines.
//
// Every method that takes a time uses it as the bucket's clock, but a
// bucket's clock never runs backwards: a time earlier than one the bucket
// has already seen is treated as that later time, so that callers that read
// the clock before contending for the lock cannot earn tokens twice.
type Limiter struct {
	limit     rate.Limit
	burst     int
	idleAfter time.Duration
	empty     bool

	mu      sync.Mutex // guards everything below and every bucket's fields
	buckets map[string]*bucket
	// untilSweep counts down the reservations left before the next
	// amortised sweep.
	untilSweep int
}

type bucket struct {
	lim *rate.Limiter
	// seen is the latest time the bucket was reserved or cancelled at; it
	// is also when the bucket was last used.
	seen time.Time
	// pausedUntil: no token is granted before this time.
	pausedUntil time.Time
	// paused is closed when the pause is extended, waking the calls that
	// wait on this bucket; made by the first waiter, nil when none waits.
	paused chan struct{}
}

// New checks cfg, applies the defaults, and returns a Limiter with no
// buckets.
func New(cfg Config) (*Limiter, error) {
	switch {
	case math.IsNaN(cfg.PerMinute) || math.IsInf(cfg.PerMinute, 0) || cfg.PerMinute < 0:
		return nil, fmt.Errorf("limiter: PerMinute %v is not a finite number of calls, zero or more", cfg.PerMinute)
	case cfg.Burst < 0:
		return nil, fmt.Errorf("limiter: Burst %d is negative", cfg.Burst)
	case cfg.IdleAfter < 0:
		return nil, fmt.Errorf("limiter: IdleAfter %v is negative", cfg.IdleAfter)
	}
	l := &Limiter{
		limit:      rate.Limit(cfg.PerMinute / 60),
		burst:      cfg.Burst,
		idleAfter:  cfg.IdleAfter,
		empty:      cfg.StartEmpty,
		buckets:    make(map[string]*bucket),
		untilSweep: minSweepEvery,
	}
	if cfg.PerMinute == 0 {
		l.limit = rate.Inf
	}
	if l.burst == 0 {
		l.burst = DefaultBurst
	}
	if l.idleAfter == 0 {
		l.idleAfter = DefaultIdleAfter
	}
	return l, nil
}

// WaitError says that a key's budget cannot give a token within the bound
// the caller set. Nothing was taken from the budget.
type WaitError struct {
	// Delay is how long from the reservation's time until a token would be
	// free, pauses included.
	Delay time.Duration
}

// Error reports the wait, rounded up to the second, without naming the key.
func (e *WaitError) Error() string {
	secs := (e.Delay + time.Second - 1) / time.Second
	return fmt.Sprintf("limiter: rate limit for this key reached; retry in %ds", secs)
}

// RetryAfter is Delay; the pulsedive client looks for this method.
func (e *WaitError) RetryAfter() time.Duration { return e.Delay }

// reservation is one token taken from a bucket, to be used at act or
// cancelled before then.
type reservation struct {
	b      *bucket
	r      *rate.Reservation
	wait   time.Duration
	act    time.Time
	paused <-chan struct{} // closed if the key is paused before act
}

// reserve takes one token for key at now unless the caller would have to
// wait longer than maxWait for it (maxWait < 0 means no bound), and returns
// the reservation, whose wait is zero when a token is free now. When the
// key is paused past now+maxWait, or its bucket cannot give a token within
// maxWait, nothing is taken and the error is a *WaitError whose Delay is
// the wait that would have been needed (for a paused key, at least until
// the pause ends). The wait is measured from now; a now earlier than a
// time the bucket has already seen also waits out the difference. Taking
// now as a parameter keeps the budget's arithmetic testable without a
// clock (export_test.go).
func (l *Limiter) reserve(key string, now time.Time, maxWait time.Duration) (reservation, error) {
	l.mu.Lock()
	defer l.mu.Unlock()

	// Sweep again after as many reservations as the last sweep left
	// buckets (but at least minSweepEvery): each walk is then paid for by
	// as many reservations, O(1) amortised, and the map holds at most about
	// twice the keys active within IdleAfter, plus minSweepEvery.
	l.untilSweep--
	if l.untilSweep <= 0 {
		l.sweep(now)
	}

	b := l.bucket(key, now)
	if d := b.pausedUntil.Sub(now); d > 0 && maxWait >= 0 && d > maxWait {
		return reservation{}, &WaitError{Delay: d}
	}
	if l.limit == rate.Inf {
		// No budget, only pauses; rate.Limiter would merely echo at back.
		b.seen = latest(now, b.seen)
		wait := max(b.pausedUntil.Sub(now), 0)
		return reservation{b: b, wait: wait, act: now.Add(wait)}, nil
	}
	at := latest(now, b.seen, b.pausedUntil)
	b.seen = at
	r := b.lim.ReserveN(at, 1)
	if !r.OK() {
		// Unreachable: burst is at least 1 and ReserveN sets no bound.
		return reservation{}, fmt.Errorf("limiter: bucket refused a single token")
	}
	wait := r.DelayFrom(now)
	if maxWait >= 0 && wait > maxWait {
		// Under l.mu no other reservation came in between, so the cancel
		// restores exactly the token just taken.
		r.CancelAt(at)
		return reservation{}, &WaitError{Delay: wait}
	}
	res := reservation{b: b, r: r, wait: wait, act: now.Add(wait)}
	if wait > 0 {
		if b.paused == nil {
			b.paused = make(chan struct{})
		}
		res.paused = b.paused
	}
	return res, nil
}

// cancel gives back res's token, at now, as far as later reservations allow.
func (l *Limiter) cancel(res reservation, now time.Time) {
	if res.r == nil {
		return // unlimited: there is no token to give back
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	at := latest(now, res.b.seen)
	res.b.seen = at
	res.r.CancelAt(at)
}

// Wait takes one token for key, waiting for it when the budget allows one
// before ctx's deadline. It reserves at time.Now() with the deadline as bound
// (no deadline: no bound) and then waits on a timer. It fails fast with a
// *WaitError, taking nothing, when the token (or the end of a pause) comes
// after the deadline: it does not sleep until the deadline to find out. If
// ctx ends while waiting, the token is given back and ctx.Err() returned.
// If the key is paused while waiting (another call met a 429), Wait wakes
// at once, gives the token back and starts over, so it waits out the pause
// or fails fast without sleeping to its token's time first.
func (l *Limiter) Wait(ctx context.Context, key string) error {
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		now := time.Now()
		maxWait := time.Duration(-1)
		if dl, ok := ctx.Deadline(); ok {
			maxWait = max(dl.Sub(now), 0)
		}
		res, err := l.reserve(key, now, maxWait)
		if err != nil {
			return err
		}
		if res.wait > 0 {
			t := time.NewTimer(res.wait)
			select {
			case <-t.C:
			case <-res.paused:
				// Another call met a 429: give the token back and start
				// over, to wait out the pause or fail fast at once.
				t.Stop()
				l.cancel(res, time.Now())
				continue
			case <-ctx.Done():
				t.Stop()
				l.cancel(res, time.Now())
				return ctx.Err()
			}
		}
		if !l.pausedAfter(key, res.act) {
			return nil
		}
	}
}

// pausedAfter reports whether key is now paused until after t.
func (l *Limiter) pausedAfter(key string, t time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.buckets[key]
	return b != nil && b.pausedUntil.After(t)
}

// PauseUntil stops key until the given time: after a 429, or when a daily
// or monthly quota is spent. A later pause extends the current one; an
// earlier one does not shorten it. While paused, Wait fails fast with
// *WaitError{Delay: until-now} when until is past the caller's deadline,
// and otherwise waits at least until then. Tokens keep accruing during the
// pause, up to the burst.
func (l *Limiter) PauseUntil(key string, until time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	// A bucket made here has no clock reading yet: its tokens accrue
	// during the pause, up to the burst, even with StartEmpty.
	b := l.bucket(key, time.Time{})
	if until.After(b.pausedUntil) {
		b.pausedUntil = until
		if b.paused != nil {
			close(b.paused)
			b.paused = nil
		}
	}
}

// bucket returns key's bucket, making it at now when there is none (a zero
// now: at no particular time). The caller holds l.mu.
func (l *Limiter) bucket(key string, now time.Time) *bucket {
	b := l.buckets[key]
	if b == nil {
		b = &bucket{lim: rate.NewLimiter(l.limit, l.burst), seen: now}
		if l.empty && !now.IsZero() {
			l.spend(b, now)
		}
		l.buckets[key] = b
	}
	return b
}

// spend takes every token b holds at now (or at the latest time b has
// seen). The caller holds l.mu.
func (l *Limiter) spend(b *bucket, now time.Time) {
	if l.limit == rate.Inf {
		return
	}
	at := latest(now, b.seen)
	b.seen = at
	if n := int(b.lim.TokensAt(at)); n > 0 {
		b.lim.ReserveN(at, n)
	}
}

// Drain empties every bucket at now, as if each key had just spent what it
// held; pauses stay. New buckets are not affected (see
// Config.StartEmpty). A replica calls it when it stops sharing a budget
// with others and falls back to its own share: the shared budget may have
// been spent a moment ago, and a full local burst on top would overspend.
func (l *Limiter) Drain(now time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, b := range l.buckets {
		l.spend(b, now)
	}
}

// sweep evicts, at now, every bucket unused for IdleAfter that is full and
// not paused: such a bucket is indistinguishable from a new one, so an
// evicted key restarts full and gains nothing. reserve sweeps every so
// many reservations, so memory stays bounded with many keys without a
// background goroutine. The caller holds l.mu.
func (l *Limiter) sweep(now time.Time) {
	defer func() { l.untilSweep = max(minSweepEvery, len(l.buckets)) }()
	for key, b := range l.buckets {
		if now.Sub(b.seen) < l.idleAfter || b.pausedUntil.After(now) {
			continue
		}
		if l.limit != rate.Inf && b.lim.TokensAt(now) < float64(l.burst) {
			continue
		}
		delete(l.buckets, key)
	}
}

func latest(t time.Time, ts ...time.Time) time.Time {
	for _, u := range ts {
		if u.After(t) {
			t = u
		}
	}
	return t
}
