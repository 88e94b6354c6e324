package pulsedive_test

import (
	"context"
	"testing"
	"testing/synctest"
	"time"

	"github.com/pulsedive-relay/relay/pulsedive"
	"github.com/pulsedive-relay/relay/pulsedive/pulsedivetest"
)

// deadlineLimiter records how long each Wait was given (its context's
// deadline from now; -1 without one) and refuses every call: by a
// RetryAfter error, or, when slow, by waiting until its context ends, as a
// shared limiter whose answer comes too late would.
type deadlineLimiter struct {
	slow  bool
	given []time.Duration
}

func (l *deadlineLimiter) Wait(ctx context.Context, _ string) error {
	d := time.Duration(-1)
	if dl, ok := ctx.Deadline(); ok {
		d = time.Until(dl)
	}
	l.given = append(l.given, d)
	if l.slow {
		<-ctx.Done()
		return ctx.Err()
	}
	return retryAfterError{7 * time.Second}
}

func (*deadlineLimiter) PauseUntil(string, time.Time) {}

// TestBudgetDeadline checks how long the client lets the limiter wait,
// with and without a budget deadline, on a fake clock; and that a budget
// deadline the limiter runs into is a refusal, while the request's own is
// not.
func TestBudgetDeadline(t *testing.T) {
	const none = time.Duration(-1)
	tests := []struct {
		name     string
		request  time.Duration // the request's deadline from now; none: no deadline
		budget   time.Duration // the budget deadline from now; none: not set
		slow     bool
		wantWait time.Duration
		wantErr  error
	}{
		{name: "request deadline less the call margin", request: 10 * time.Second, budget: none, wantWait: 9 * time.Second,
			wantErr: &pulsedive.RateLimitError{RetryAfter: 7 * time.Second}},
		{name: "budget deadline first", request: 10 * time.Second, budget: 3 * time.Second, wantWait: 3 * time.Second,
			wantErr: &pulsedive.RateLimitError{RetryAfter: 7 * time.Second}},
		{name: "request deadline first", request: 10 * time.Second, budget: 20 * time.Second, wantWait: 9 * time.Second,
			wantErr: &pulsedive.RateLimitError{RetryAfter: 7 * time.Second}},
		{name: "budget deadline without a request deadline", request: none, budget: 3 * time.Second, wantWait: 3 * time.Second,
			wantErr: &pulsedive.RateLimitError{RetryAfter: 7 * time.Second}},
		{name: "budget deadline now: a free token only", request: 10 * time.Second, budget: 0, wantWait: 50 * time.Millisecond,
			wantErr: &pulsedive.RateLimitError{RetryAfter: 7 * time.Second}},
		{name: "budget deadline passed: a free token only", request: 10 * time.Second, budget: -time.Minute, wantWait: 50 * time.Millisecond,
			wantErr: &pulsedive.RateLimitError{RetryAfter: 7 * time.Second}},
		{name: "slow limiter past the budget deadline", request: 10 * time.Second, budget: 0, slow: true, wantWait: 50 * time.Millisecond,
			wantErr: &pulsedive.RateLimitError{}},
		{name: "slow limiter past the request's wait", request: 10 * time.Second, budget: none, slow: true, wantWait: 9 * time.Second,
			wantErr: &pulsedive.UnavailableError{Cause: pulsedive.CauseLimiterFailed, Reason: "rate limiter failed"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				lim := &deadlineLimiter{slow: tt.slow}
				// No call reaches this address: the limiter refuses first.
				c := newClient(t, "http://127.0.0.1:9/api/", func(cfg *pulsedive.Config) { cfg.Limiter = lim })
				ctx := t.Context()
				if tt.request != none {
					var cancel context.CancelFunc
					ctx, cancel = context.WithTimeout(ctx, tt.request)
					defer cancel()
				}
				if tt.budget != none {
					ctx = pulsedive.WithBudgetDeadline(ctx, time.Now().Add(tt.budget))
				}
				_, err := c.Links(ctx, testKey, "parkingcrew.net")
				checkErr(t, err, tt.wantErr)
				if len(lim.given) != 1 || lim.given[0] != tt.wantWait {
					t.Errorf("limiter waits given %v, want [%v]", lim.given, tt.wantWait)
				}
			})
		})
	}
}

// TestBudgetDeadlineKeepsHTTPDeadline: the budget deadline bounds the wait
// for a token, not the call that follows it.
func TestBudgetDeadlineKeepsHTTPDeadline(t *testing.T) {
	srv := newFake(t, pulsedivetest.Config{Latency: 100 * time.Millisecond})
	c := newClient(t, srv.URL(), func(cfg *pulsedive.Config) { cfg.Limiter = &recLimiter{} })
	ctx := pulsedive.WithBudgetDeadline(t.Context(), time.Now().Add(-time.Hour))
	links, err := c.Links(ctx, testKey, "parkingcrew.net")
	if err != nil || links == nil || len(links.ActiveDNS) == 0 {
		t.Errorf("call with a free token, past its budget deadline: links %v, error %v; want the document", links, err)
	}
}
