package limiter

import (
	"context"
	"errors"
	"math/rand/v2"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// t0 is where every fake clock starts.
var t0 = time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)

func newLimiter(t testing.TB, cfg Config) *Limiter {
	t.Helper()
	l, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return l
}

func TestNew(t *testing.T) {
	tests := []struct {
		name    string
		cfg     Config
		wantErr string
	}{
		{name: "zero config", cfg: Config{}},
		{name: "spec defaults", cfg: Config{PerMinute: 30, Burst: 5, IdleAfter: 10 * time.Minute}},
		{name: "negative rate", cfg: Config{PerMinute: -1}, wantErr: "limiter: PerMinute -1 is not a finite number of calls, zero or more"},
		{name: "infinite rate", cfg: Config{PerMinute: posInf()}, wantErr: "limiter: PerMinute +Inf is not a finite number of calls, zero or more"},
		{name: "negative burst", cfg: Config{Burst: -1}, wantErr: "limiter: Burst -1 is negative"},
		{name: "negative idle", cfg: Config{IdleAfter: -time.Second}, wantErr: "limiter: IdleAfter -1s is negative"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := New(tt.cfg)
			got := ""
			if err != nil {
				got = err.Error()
			}
			if got != tt.wantErr {
				t.Errorf("New() error = %q, want %q", got, tt.wantErr)
			}
		})
	}
}

func posInf() float64 {
	var zero float64
	return 1 / zero
}

func TestWaitError(t *testing.T) {
	tests := []struct {
		delay time.Duration
		want  string
	}{
		{2 * time.Second, "limiter: rate limit for this key reached; retry in 2s"},
		{1500 * time.Millisecond, "limiter: rate limit for this key reached; retry in 2s"},
		{time.Millisecond, "limiter: rate limit for this key reached; retry in 1s"},
		{time.Hour, "limiter: rate limit for this key reached; retry in 3600s"},
	}
	for _, tt := range tests {
		t.Run(tt.delay.String(), func(t *testing.T) {
			var err error = &WaitError{Delay: tt.delay}
			if got := err.Error(); got != tt.want {
				t.Errorf("Error() = %q, want %q", got, tt.want)
			}
			// The pulsedive client finds the wait through this interface.
			var ra interface{ RetryAfter() time.Duration }
			if !errors.As(err, &ra) || ra.RetryAfter() != tt.delay {
				t.Errorf("RetryAfter() not found or not %v", tt.delay)
			}
		})
	}
}

// step is one call in a scripted scenario: PauseUntil(key, t0+pause) when
// pause is set, else Reserve(key, t0+at, maxWait).
type step struct {
	key     string
	at      time.Duration
	maxWait time.Duration
	pause   time.Duration
}

// outcome is what a Reserve step returned.
type outcome struct {
	Wait time.Duration
	Err  *WaitError
}

func waits(d time.Duration) outcome   { return outcome{Wait: d} }
func refused(d time.Duration) outcome { return outcome{Err: &WaitError{Delay: d}} }

// reserve builds a Reserve step.
func reserve(key string, at, maxWait time.Duration) step {
	return step{key: key, at: at, maxWait: maxWait}
}

// pause builds a PauseUntil step; it has no outcome.
func pause(key string, until time.Duration) step { return step{key: key, pause: until} }

const unbounded = -1

func TestReserve(t *testing.T) {
	tests := []struct {
		name  string
		cfg   Config
		steps []step
		want  []outcome
	}{
		{
			name: "burst, then one token every two seconds",
			cfg:  Config{PerMinute: 30, Burst: 5},
			steps: []step{
				reserve("k", 0, 0), reserve("k", 0, 0), reserve("k", 0, 0), reserve("k", 0, 0), reserve("k", 0, 0),
				reserve("k", 0, unbounded), reserve("k", 0, unbounded), reserve("k", 0, unbounded),
			},
			want: []outcome{waits(0), waits(0), waits(0), waits(0), waits(0), waits(2 * time.Second), waits(4 * time.Second), waits(6 * time.Second)},
		},
		{
			name: "tokens come back with time, up to the burst",
			cfg:  Config{PerMinute: 30, Burst: 2},
			steps: []step{
				reserve("k", 0, 0), reserve("k", 0, 0), reserve("k", 0, 0),
				reserve("k", 2*time.Second, 0), reserve("k", 2*time.Second, 0),
				reserve("k", time.Hour, 0), reserve("k", time.Hour, 0), reserve("k", time.Hour, 0),
			},
			want: []outcome{
				waits(0), waits(0), refused(2 * time.Second),
				waits(0), refused(2 * time.Second),
				waits(0), waits(0), refused(2 * time.Second),
			},
		},
		{
			name: "a refused reservation takes nothing",
			cfg:  Config{PerMinute: 30, Burst: 1},
			steps: []step{
				reserve("k", 0, 0),
				reserve("k", 0, time.Second), reserve("k", 0, 0), reserve("k", 0, 1999*time.Millisecond),
				reserve("k", 0, 2*time.Second), // would be 4s had the refusals taken tokens
				reserve("k", 0, 3*time.Second),
			},
			want: []outcome{waits(0), refused(2 * time.Second), refused(2 * time.Second), refused(2 * time.Second), waits(2 * time.Second), refused(4 * time.Second)},
		},
		{
			name: "keys are independent",
			cfg:  Config{PerMinute: 30, Burst: 1},
			steps: []step{
				reserve("a", 0, 0), reserve("a", 0, 0),
				reserve("b", 0, 0), reserve("b", 0, 0),
			},
			want: []outcome{waits(0), refused(2 * time.Second), waits(0), refused(2 * time.Second)},
		},
		{
			name: "a clock that runs backwards earns nothing",
			cfg:  Config{PerMinute: 60, Burst: 1},
			steps: []step{
				reserve("k", 10*time.Second, 0),
				reserve("k", 5*time.Second, unbounded), // token at 11s, six seconds from 5s
				reserve("k", 11*time.Second, 0),        // the 11s token is taken
				reserve("k", 12*time.Second, 0),
			},
			want: []outcome{waits(0), waits(6 * time.Second), refused(time.Second), waits(0)},
		},
		{
			name: "pause past the bound fails fast with the pause",
			cfg:  Config{PerMinute: 30, Burst: 5},
			steps: []step{
				pause("k", time.Minute),
				reserve("k", 0, 0), reserve("k", 0, 30*time.Second), reserve("k", 20*time.Second, 30*time.Second),
				reserve("k", 0, time.Minute), // within the bound: waits out the pause
				reserve("k", 0, unbounded),
				reserve("k", time.Minute, 0),
			},
			want: []outcome{
				refused(time.Minute), refused(time.Minute), refused(40 * time.Second),
				waits(time.Minute), waits(time.Minute), waits(0),
			},
		},
		{
			name: "pause and an empty bucket: the later of the two",
			cfg:  Config{PerMinute: 30, Burst: 1},
			steps: []step{
				reserve("k", 0, 0),
				pause("k", time.Second),
				reserve("k", 0, unbounded),
			},
			want: []outcome{waits(0), waits(2 * time.Second)},
		},
		{
			name: "a later pause extends",
			cfg:  Config{PerMinute: 30, Burst: 5},
			steps: []step{
				pause("k", 10*time.Second), pause("k", time.Minute),
				reserve("k", 0, 0), reserve("k", 30*time.Second, 0), reserve("k", time.Minute, 0),
			},
			want: []outcome{refused(time.Minute), refused(30 * time.Second), waits(0)},
		},
		{
			name: "an earlier pause does not shorten",
			cfg:  Config{PerMinute: 30, Burst: 5},
			steps: []step{
				pause("k", time.Minute), pause("k", 10*time.Second),
				reserve("k", 0, 0), reserve("k", 10*time.Second, 0),
			},
			want: []outcome{refused(time.Minute), refused(50 * time.Second)},
		},
		{
			name: "a pause stops only its key",
			cfg:  Config{PerMinute: 30, Burst: 5},
			steps: []step{
				pause("a", time.Minute),
				reserve("a", 0, 0), reserve("b", 0, 0),
			},
			want: []outcome{refused(time.Minute), waits(0)},
		},
		{
			name: "tokens accrue during a pause, up to the burst",
			cfg:  Config{PerMinute: 30, Burst: 2},
			steps: []step{
				reserve("k", 0, 0), reserve("k", 0, 0),
				pause("k", time.Minute),
				reserve("k", time.Minute, 0), reserve("k", time.Minute, 0), reserve("k", time.Minute, 0),
			},
			want: []outcome{waits(0), waits(0), waits(0), waits(0), refused(2 * time.Second)},
		},
		{
			name: "unlimited never waits",
			cfg:  Config{PerMinute: 0, Burst: 1},
			steps: []step{
				reserve("k", 0, 0), reserve("k", 0, 0), reserve("k", 0, 0), reserve("k", 0, 0),
				reserve("k", 10*time.Second, 0), reserve("k", 5*time.Second, 0),
			},
			want: []outcome{waits(0), waits(0), waits(0), waits(0), waits(0), waits(0)},
		},
		{
			name: "unlimited still honours a pause",
			cfg:  Config{PerMinute: 0},
			steps: []step{
				pause("k", time.Minute),
				reserve("k", 0, time.Second), reserve("k", 0, unbounded), reserve("k", time.Minute, 0),
			},
			want: []outcome{refused(time.Minute), waits(time.Minute), waits(0)},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := newLimiter(t, tt.cfg)
			var got []outcome
			for _, s := range tt.steps {
				if s.pause != 0 {
					l.PauseUntil(s.key, t0.Add(s.pause))
					continue
				}
				got = append(got, outcomeOf(l.Reserve(s.key, t0.Add(s.at), s.maxWait)))
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("outcomes mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func outcomeOf(wait time.Duration, err error) outcome {
	if err == nil {
		return waits(wait)
	}
	var we *WaitError
	if !errors.As(err, &we) {
		return outcome{Wait: -1, Err: &WaitError{Delay: -1}} // shows up in the diff
	}
	return outcome{Err: we}
}

// TestBudgetNeverExceeded simulates an hour of one key's traffic from
// several goroutines at once: reservations with assorted bounds at jittered,
// not strictly ordered times, a quarter of the waiting ones cancelled before
// their turn (a request's context ending). However they interleave, the
// calls that go ahead in any window of length W number at most
// Burst + PerMinute*W/1min, and the budget is not left unused either.
// A call goes ahead at its reservation's time plus its wait.
func TestBudgetNeverExceeded(t *testing.T) {
	const (
		perMinute = 30
		burst     = 5
		workers   = 4
		span      = time.Hour
	)
	l := newLimiter(t, Config{PerMinute: perMinute, Burst: burst})
	keys := []string{"a", "b"}
	maxWaits := []time.Duration{unbounded, 0, time.Second, 5 * time.Second, 20 * time.Second, 2 * time.Minute}

	var clock atomic.Int64 // nanoseconds since t0, shared and racy on purpose
	var mu sync.Mutex
	granted := map[string][]time.Time{}
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 42))
			mine := map[string][]time.Time{}
			defer func() {
				mu.Lock()
				defer mu.Unlock()
				for k, ts := range mine {
					granted[k] = append(granted[k], ts...)
				}
			}()
			for {
				// Read the clock, then contend for the limiter: another
				// worker may reserve at a later time in between.
				off := time.Duration(clock.Add(rng.Int64N(int64(200 * time.Millisecond))))
				if off > span {
					return
				}
				now := t0.Add(off)
				key := keys[rng.IntN(len(keys))]
				maxWait := maxWaits[rng.IntN(len(maxWaits))]
				res, err := l.reserve(key, now, maxWait)
				if err != nil {
					var we *WaitError
					if !errors.As(err, &we) || (maxWait >= 0 && we.Delay <= maxWait) {
						t.Errorf("reserve(%v, %v) error = %v, want a *WaitError beyond the bound", now, maxWait, err)
						return
					}
					continue
				}
				if maxWait >= 0 && res.wait > maxWait {
					t.Errorf("reserve(%v, %v) wait = %v, beyond the bound", now, maxWait, res.wait)
					return
				}
				if res.wait > 0 && rng.IntN(4) == 0 {
					l.cancel(res, now.Add(time.Duration(rng.Int64N(int64(res.wait)))))
					continue
				}
				mine[key] = append(mine[key], res.act)
			}
		}()
	}
	wg.Wait()

	for _, key := range keys {
		ts := granted[key]
		slices.SortFunc(ts, func(a, b time.Time) int { return a.Compare(b) })
		for i := range ts {
			for k := i; k < len(ts); k++ {
				w := ts[k].Sub(ts[i])
				calls := float64(k - i + 1)
				if limit := burst + perMinute*w.Minutes(); calls > limit+1e-6 {
					t.Fatalf("key %s: %.0f calls in the %v from %v, budget %.3f", key, calls, w, ts[i].Sub(t0), limit)
				}
			}
		}
		inSpan := 0
		for _, at := range ts {
			if at.Sub(t0) <= span {
				inSpan++
			}
		}
		t.Logf("key %s: %d calls granted, %d within the hour", key, len(ts), inSpan)
		// Each key is offered about five times its budget; it must spend
		// nearly all of it, cancellations notwithstanding (runs spend 1800
		// to 1804 of the 1805 calls possible).
		if want := perMinute * int(span.Minutes()) * 9 / 10; inSpan < want {
			t.Errorf("key %s: %d calls within the hour, want at least %d", key, inSpan, want)
		}
	}
}

// waitAsync runs Wait in a goroutine; the result arrives on the channel.
func waitAsync(ctx context.Context, l *Limiter, key string) <-chan error {
	done := make(chan error, 1)
	go func() { done <- l.Wait(ctx, key) }()
	return done
}

// The tests of Wait run in a synctest bubble: its clock moves only when
// every goroutine of the bubble waits, so how long Wait took, measured on
// that clock, is how long it waited on its timer, exactly.

// notYet fails the test if done has a result: Wait returned while it
// should still wait. Call it after synctest.Wait.
func notYet(t *testing.T, done <-chan error) {
	t.Helper()
	select {
	case err := <-done:
		t.Fatalf("Wait returned %v while it should wait", err)
	default:
	}
}

func TestWaitFreeTokenDoesNotWait(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := newLimiter(t, Config{PerMinute: 30, Burst: 2})
		start := time.Now()
		for range 2 {
			if err := l.Wait(context.Background(), "k"); err != nil {
				t.Fatalf("Wait = %v, want nil", err)
			}
		}
		if d := time.Since(start); d != 0 {
			t.Errorf("Wait took %v with free tokens, want no wait", d)
		}
	})
}

func TestWaitUnlimitedNeverWaits(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := newLimiter(t, Config{PerMinute: 0})
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		start := time.Now()
		for range 1000 {
			if err := l.Wait(ctx, "k"); err != nil {
				t.Fatalf("Wait = %v, want nil", err)
			}
		}
		if d := time.Since(start); d != 0 {
			t.Errorf("1000 unlimited Waits took %v, want no wait", d)
		}
	})
}

func TestWaitOnTimer(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := newLimiter(t, Config{PerMinute: 30, Burst: 1})
		start := time.Now()
		l.Reserve("k", start, 0) // empty the bucket

		if err := l.Wait(context.Background(), "k"); err != nil {
			t.Fatalf("Wait = %v, want nil", err)
		}
		if d := time.Since(start); d != 2*time.Second {
			t.Errorf("Wait took %v, want 2s", d)
		}
		// Wait kept its token: the next one is 4s away.
		if got, want := outcomeOf(l.Reserve("k", start, 0)), refused(4*time.Second); !cmp.Equal(got, want) {
			t.Errorf("Reserve after Wait = %+v, want %+v", got, want)
		}
	})
}

func TestWaitCancelledReturnsToken(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := newLimiter(t, Config{PerMinute: 30, Burst: 1})
		start := time.Now()
		l.Reserve("k", start, 0)

		ctx, cancel := context.WithCancel(context.Background())
		done := waitAsync(ctx, l, "k")
		synctest.Wait() // Wait holds a reservation and is blocked on its timer
		notYet(t, done)
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Fatalf("Wait = %v, want context.Canceled", err)
		}
		if d := time.Since(start); d != 0 {
			t.Errorf("a cancelled Wait returned after %v, want at once", d)
		}
		// The cancelled reservation's token is back: the next is 2s away, not 4s.
		if got, want := outcomeOf(l.Reserve("k", start, unbounded)), waits(2*time.Second); !cmp.Equal(got, want) {
			t.Errorf("Reserve after a cancelled Wait = %+v, want %+v", got, want)
		}
	})
}

func TestWaitDeadline(t *testing.T) {
	tests := []struct {
		name     string
		deadline time.Duration // after the clock's start
		paused   time.Duration // PauseUntil(start+paused) when set
		wantErr  error
		wantWait time.Duration // 0: fails fast, without waiting
	}{
		{name: "token after the deadline fails fast", deadline: 30 * time.Second, wantErr: &WaitError{Delay: time.Minute}},
		{name: "token just before the deadline waits", deadline: 90 * time.Second, wantWait: time.Minute},
		{name: "pause past the deadline fails fast", deadline: 90 * time.Second, paused: 2 * time.Minute, wantErr: &WaitError{Delay: 2 * time.Minute}},
		{name: "pause within the deadline waits", deadline: 3 * time.Minute, paused: 2 * time.Minute, wantWait: 2 * time.Minute},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				l := newLimiter(t, Config{PerMinute: 1, Burst: 1})
				start := time.Now()
				l.Reserve("k", start, 0)
				if tt.paused != 0 {
					l.PauseUntil("k", start.Add(tt.paused))
				}
				ctx, cancel := context.WithDeadline(context.Background(), start.Add(tt.deadline))
				defer cancel()

				err := l.Wait(ctx, "k")
				if diff := cmp.Diff(tt.wantErr, err, cmp.Comparer(sameError)); diff != "" {
					t.Errorf("Wait error mismatch (-want +got):\n%s", diff)
				}
				if d := time.Since(start); d != tt.wantWait {
					t.Errorf("Wait took %v, want %v", d, tt.wantWait)
				}
				if tt.wantErr != nil {
					// Failing fast took nothing: the token is still a minute away.
					want := outcome{Wait: max(time.Minute, tt.paused)}
					if got := outcomeOf(l.Reserve("k", start, unbounded)); !cmp.Equal(got, want) {
						t.Errorf("Reserve after a refused Wait = %+v, want %+v", got, want)
					}
				}
			})
		})
	}
}

func sameError(a, b error) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.Error() == b.Error()
}

func TestWaitDoneContext(t *testing.T) {
	l := newLimiter(t, Config{PerMinute: 30, Burst: 1})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := l.Wait(ctx, "k"); !errors.Is(err, context.Canceled) {
		t.Fatalf("Wait = %v, want context.Canceled", err)
	}
	if l.Len() != 0 {
		t.Errorf("Len = %d, want 0: a done context must not touch the budget", l.Len())
	}
}

// TestWaitPausedWhileWaiting: a call waits for its token; meanwhile another
// call meets a 429 and pauses the key. The waiter must not go ahead into the
// pause: it waits it out when its deadline allows, else fails fast, without
// sleeping to its token's time first.
func TestWaitPausedWhileWaiting(t *testing.T) {
	tests := []struct {
		name     string
		deadline time.Duration // 0: none
		wantWait time.Duration // from the start, when Wait returns
		wantErr  error
	}{
		{name: "no deadline: waits out the pause", wantWait: 30 * time.Second},
		{name: "deadline before the pause ends: fails fast", deadline: 10 * time.Second, wantErr: &WaitError{Delay: 30 * time.Second}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				l := newLimiter(t, Config{PerMinute: 60, Burst: 1})
				start := time.Now()
				l.Reserve("k", start, 0)
				ctx := context.Background()
				if tt.deadline != 0 {
					var cancel context.CancelFunc
					ctx, cancel = context.WithDeadline(ctx, start.Add(tt.deadline))
					defer cancel()
				}

				done := waitAsync(ctx, l, "k")
				synctest.Wait() // waiting one second for its token
				notYet(t, done)
				l.PauseUntil("k", start.Add(30*time.Second))
				err := <-done
				if d := time.Since(start); d != tt.wantWait {
					t.Errorf("Wait returned after %v, want %v", d, tt.wantWait)
				}
				if diff := cmp.Diff(tt.wantErr, err, cmp.Comparer(sameError)); diff != "" {
					t.Errorf("Wait error mismatch (-want +got):\n%s", diff)
				}
			})
		})
	}
}

func TestSweep(t *testing.T) {
	const idle = time.Minute
	tests := []struct {
		name  string
		cfg   Config
		setup func(l *Limiter) // at t0
		at    time.Duration    // Sweep at t0+at
		want  int              // Len after
	}{
		{
			name:  "idle and full: evicted",
			cfg:   Config{PerMinute: 30, Burst: 5, IdleAfter: idle},
			setup: func(l *Limiter) { l.Reserve("k", t0, 0) },
			at:    idle,
			want:  0,
		},
		{
			name:  "used within IdleAfter: kept",
			cfg:   Config{PerMinute: 30, Burst: 5, IdleAfter: idle},
			setup: func(l *Limiter) { l.Reserve("k", t0, 0) },
			at:    idle - time.Nanosecond,
			want:  1,
		},
		{
			name:  "idle but not yet refilled: kept",
			cfg:   Config{PerMinute: 1, Burst: 5, IdleAfter: idle},
			setup: func(l *Limiter) { l.Reserve("k", t0, 0); l.Reserve("k", t0, 0) },
			at:    idle, // one of the two tokens is back
			want:  1,
		},
		{
			name:  "idle, full, but paused: kept",
			cfg:   Config{PerMinute: 30, Burst: 5, IdleAfter: idle},
			setup: func(l *Limiter) { l.PauseUntil("k", t0.Add(2*idle)) },
			at:    idle,
			want:  1,
		},
		{
			name:  "pause over: evicted",
			cfg:   Config{PerMinute: 30, Burst: 5, IdleAfter: idle},
			setup: func(l *Limiter) { l.PauseUntil("k", t0.Add(2*idle)) },
			at:    2 * idle,
			want:  0,
		},
		{
			name: "reservations waiting beyond now: kept",
			cfg:  Config{PerMinute: 1, Burst: 1, IdleAfter: idle},
			setup: func(l *Limiter) {
				for range 3 { // tokens at t0, t0+1m and t0+2m
					l.Reserve("k", t0, unbounded)
				}
			},
			at:   idle,
			want: 1,
		},
		{
			name:  "unlimited and idle: evicted",
			cfg:   Config{PerMinute: 0, IdleAfter: idle},
			setup: func(l *Limiter) { l.Reserve("k", t0, 0) },
			at:    idle,
			want:  0,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := newLimiter(t, tt.cfg)
			tt.setup(l)
			l.Sweep(t0.Add(tt.at))
			if got := l.Len(); got != tt.want {
				t.Errorf("Len after Sweep = %d, want %d", got, tt.want)
			}
		})
	}
}

func TestEvictedKeyRestartsFull(t *testing.T) {
	l := newLimiter(t, Config{PerMinute: 30, Burst: 3, IdleAfter: time.Minute})
	for range 3 {
		l.Reserve("k", t0, 0)
	}
	later := t0.Add(time.Hour)
	l.Sweep(later)
	if l.Len() != 0 {
		t.Fatalf("Len after Sweep = %d, want 0", l.Len())
	}
	var got []outcome
	for range 4 {
		got = append(got, outcomeOf(l.Reserve("k", later, 0)))
	}
	want := []outcome{waits(0), waits(0), waits(0), refused(2 * time.Second)}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("outcomes after eviction mismatch (-want +got):\n%s", diff)
	}
}

// TestManyKeysStayBounded reserves for 100k distinct keys, one every 10ms,
// without ever calling Sweep: the amortised sweeps in Reserve keep the map
// near the number of keys active within IdleAfter.
func TestManyKeysStayBounded(t *testing.T) {
	const (
		keys  = 100_000
		every = 10 * time.Millisecond
		idle  = time.Minute
	)
	l := newLimiter(t, Config{PerMinute: 30, Burst: 5, IdleAfter: idle})
	active := int(idle/every) + 1 // keys used within any IdleAfter
	bound := 2*active + minSweepEvery
	peak := 0
	now := t0
	for i := range keys {
		now = now.Add(every)
		if _, err := l.Reserve(strconv.Itoa(i), now, 0); err != nil {
			t.Fatalf("Reserve(new key) = %v, want a free token", err)
		}
		peak = max(peak, l.Len())
	}
	t.Logf("peak Len %d, bound %d", peak, bound)
	if peak > bound {
		t.Errorf("peak Len = %d, want at most %d (%d keys active within IdleAfter)", peak, bound, active)
	}
	l.Sweep(now.Add(idle))
	if got := l.Len(); got != 0 {
		t.Errorf("Len after a final Sweep = %d, want 0", got)
	}
}

func BenchmarkReserve(b *testing.B) {
	b.Run("one key", func(b *testing.B) {
		l := newLimiter(b, Config{PerMinute: 30, Burst: 5})
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				l.Reserve("0123456789abcdef0123456789abcdef", time.Now(), 0)
			}
		})
	})
	b.Run("10k keys", func(b *testing.B) {
		l := newLimiter(b, Config{PerMinute: 30, Burst: 5})
		keys := make([]string, 10_000)
		for i := range keys {
			keys[i] = strconv.Itoa(i)
		}
		b.ReportAllocs()
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			i := 0
			for pb.Next() {
				l.Reserve(keys[i%len(keys)], time.Now(), 0)
				i++
			}
		})
	})
}

// TestWaitWakesWhenPaused: a call waiting for its token learns of a pause
// at once, without its timer firing, and fails fast when the pause outlasts
// its deadline; the token it held goes back to the bucket.
func TestWaitWakesWhenPaused(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := newLimiter(t, Config{PerMinute: 60, Burst: 1})
		start := time.Now()
		l.Reserve("k", start, 0)
		ctx, cancel := context.WithDeadline(context.Background(), start.Add(10*time.Second))
		defer cancel()
		done := waitAsync(ctx, l, "k")
		synctest.Wait() // waiting one second for its token; that timer never fires
		notYet(t, done)
		l.PauseUntil("k", start.Add(30*time.Second))
		err := <-done
		if diff := cmp.Diff(error(&WaitError{Delay: 30 * time.Second}), err, cmp.Comparer(sameError)); diff != "" {
			t.Errorf("Wait error mismatch (-want +got):\n%s", diff)
		}
		if d := time.Since(start); d != 0 {
			t.Errorf("Wait returned after %v, want at once", d)
		}
		// The token came back: after the pause the key has its full burst.
		if wait, err := l.Reserve("k", start.Add(30*time.Second), 0); err != nil || wait != 0 {
			t.Errorf("after the pause: wait %v, err %v; want a free token", wait, err)
		}
	})
}

// TestStartEmptyAndDrain: a limiter standing in for a budget others may have
// spent gives no burst, neither to a new key (StartEmpty) nor to a rested
// one (Drain); tokens then come at the refill rate, and pauses stay.
func TestStartEmptyAndDrain(t *testing.T) {
	tests := []struct {
		name  string
		empty bool
		drain bool
		want  []time.Duration // waits of four reservations at start
	}{
		{name: "full by default", want: []time.Duration{0, 0, 0, time.Second}},
		{name: "StartEmpty: a new key waits for its first token", empty: true, want: []time.Duration{time.Second, 2 * time.Second, 3 * time.Second, 4 * time.Second}},
		{name: "Drain: a rested key loses its burst", drain: true, want: []time.Duration{time.Second, 2 * time.Second, 3 * time.Second, 4 * time.Second}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := newLimiter(t, Config{PerMinute: 60, Burst: 3, StartEmpty: tt.empty})
			if tt.drain {
				// Make the bucket long before, let it fill, then drain it.
				if _, err := l.Reserve("k", t0.Add(-time.Hour), -1); err != nil {
					t.Fatal(err)
				}
				l.Drain(t0)
			}
			var got []time.Duration
			for range 4 {
				w, err := l.Reserve("k", t0, -1)
				if err != nil {
					t.Fatal(err)
				}
				got = append(got, w)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("waits (-want +got):\n%s", diff)
			}
		})
	}

	t.Run("Drain keeps pauses", func(t *testing.T) {
		l := newLimiter(t, Config{PerMinute: 60, Burst: 3})
		l.PauseUntil("k", t0.Add(time.Minute))
		l.Drain(t0)
		_, err := l.Reserve("k", t0, 10*time.Second)
		if diff := cmp.Diff(error(&WaitError{Delay: time.Minute}), err, cmp.Comparer(sameError)); diff != "" {
			t.Errorf("Reserve during the pause (-want +got):\n%s", diff)
		}
	})
	t.Run("unlimited: nothing to drain", func(t *testing.T) {
		l := newLimiter(t, Config{StartEmpty: true})
		l.Drain(t0)
		if w, err := l.Reserve("k", t0, 0); err != nil || w != 0 {
			t.Errorf("Reserve = %v, %v; want 0, nil", w, err)
		}
	})
}
