package pulsedive

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"testing"
	"testing/synctest"
	"time"

	"github.com/google/go-cmp/cmp"
)

// failures are one error of every kind the client returns, with the text
// it gives them.
func failures() map[string]error {
	m := map[string]error{
		"nil":         nil,
		"no data":     ErrNotFound,
		"invalid":     ErrInvalidJSON,
		"schema":      ErrSchema,
		"too large":   ErrTooLarge,
		"api error":   &APIError{Message: "Something broke."},
		"redirect":    &RedirectError{StatusCode: 302},
		"unexpected":  &UnexpectedAnswerError{StatusCode: 404},
		"rate limit":  &RateLimitError{RetryAfter: time.Second},
		"tls":         &TLSError{Reason: "Certificate signed by unknown authority"},
		"status 500":  &StatusError{StatusCode: 500, Message: "Oops."},
		"status 503":  &StatusError{StatusCode: 503},
		"status 429":  &StatusError{StatusCode: 429, Message: "Requests disabled for 1 minute."},
		"status 401":  &StatusError{StatusCode: 401, Message: "Invalid API key."},
		"status 408":  &StatusError{StatusCode: 408, Message: "Request(s) still processing."},
		"context end": context.DeadlineExceeded,
	}
	for _, c := range Causes() {
		m["cause "+c.String()+fmt.Sprint(int(c))] = unavailable(c, errors.New("underlying"))
	}
	return m
}

// rewordings are the ways a message may change: another text, another
// cause's text, none, and a wrapper with text of its own.
func rewordings(err error) map[string]error {
	out := map[string]error{"as made": err}
	if err == nil {
		return out
	}
	texts := []string{"reworded entirely", "", "timeout", "request cancelled", "circuit breaker open", "rate limiter failed", "Indicator not found."}
	for i, text := range texts {
		name := fmt.Sprintf("text %d %q", i, text)
		switch e := err.(type) {
		case *UnavailableError:
			out[name] = &UnavailableError{Cause: e.Cause, Reason: text, Err: e.Err}
		case *StatusError:
			out[name] = &StatusError{StatusCode: e.StatusCode, Message: text}
		case *APIError:
			out[name] = &APIError{Message: text}
		case *TLSError:
			out[name] = &TLSError{Reason: text, Err: e.Err}
		}
		out[name+", wrapped"] = fmt.Errorf("%s: %w", text, err)
	}
	return out
}

// TestDecisionsDependOnCauseNotText rewords every message the client
// gives and checks that what the breaker learns (newsOf) and the metrics
// outcome (outcomeOf) stay the same: they switch on error types, status
// codes and Cause, never on text.
func TestDecisionsDependOnCauseNotText(t *testing.T) {
	for name, err := range failures() {
		t.Run(name, func(t *testing.T) {
			wantNews, wantOutcome := newsOf(err), outcomeOf(err)
			for how, reworded := range rewordings(err) {
				if got := newsOf(reworded); got != wantNews {
					t.Errorf("%s: breaker news %d, want %d", how, got, wantNews)
				}
				if got := outcomeOf(reworded); got != wantOutcome {
					t.Errorf("%s: outcome %q, want %q", how, got, wantOutcome)
				}
			}
		})
	}
}

// TestCauseDecisions pins what each cause means to the breaker and to
// metrics.
func TestCauseDecisions(t *testing.T) {
	type decision struct {
		News    news
		Outcome string
	}
	want := map[Cause]decision{
		CauseUnknown:       {newsOutage, OutcomeUnavailable},
		CauseTimeout:       {newsOutage, OutcomeTimeout},
		CauseDeadline:      {newsNone, OutcomeUnavailable},
		CauseCancelled:     {newsNone, OutcomeUnavailable},
		CauseRefused:       {newsOutage, OutcomeUnavailable},
		CauseReset:         {newsOutage, OutcomeUnavailable},
		CauseDNS:           {newsOutage, OutcomeUnavailable},
		CauseConnect:       {newsOutage, OutcomeUnavailable},
		CauseTLS:           {newsOutage, OutcomeUnavailable},
		CauseBreakerOpen:   {newsNone, OutcomeBreakerOpen},
		CauseLimiterFailed: {newsNone, OutcomeUnavailable},
	}
	got := map[Cause]decision{}
	for _, c := range Causes() {
		got[c] = decision{newsOf(unavailable(c, nil)), outcomeOf(unavailable(c, nil))}
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("decisions by cause (-want +got):\n%s", diff)
	}
	tls := &TLSError{Reason: "x"}
	if !errors.Is(tls, CauseTLS) || newsOf(tls) != newsOutage {
		t.Errorf("a TLS verification failure must carry CauseTLS and count as an outage")
	}
	for _, c := range Causes() {
		if !errors.Is(fmt.Errorf("wrapped: %w", unavailable(c, context.Canceled)), c) {
			t.Errorf("errors.Is does not find %v", c)
		}
		var got Cause
		if !errors.As(unavailable(c, nil), &got) || got != c {
			t.Errorf("errors.As gives %v, want %v", got, c)
		}
	}
}

// TestBreakerIgnoresWording feeds a key's breaker each failure, as made
// and reworded, and checks the breaker ends in the same state and reports
// the same counts either way.
func TestBreakerIgnoresWording(t *testing.T) {
	const failuresToOpen = 3
	run := func(t *testing.T, errs []error) (BreakerState, map[string]int) {
		var state BreakerState
		obs := &countObserver{}
		synctest.Test(t, func(t *testing.T) {
			b := newBreakers(BreakerConfig{Failures: failuresToOpen, OpenFor: time.Minute}, obs)
			for _, err := range errs {
				done, refused := b.allow("k")
				if refused != nil {
					continue
				}
				done(err)
			}
			b.mu.Lock()
			defer b.mu.Unlock()
			if k := b.keys["k"]; k != nil {
				state = breakerState(k.cb.State())
			}
		})
		return state, obs.keys
	}
	for name, err := range failures() {
		t.Run(name, func(t *testing.T) {
			var canonical []error
			for range failuresToOpen {
				canonical = append(canonical, err)
			}
			wantState, wantKeys := run(t, canonical)
			for how, reworded := range rewordings(err) {
				var errs []error
				for range failuresToOpen {
					errs = append(errs, reworded)
				}
				state, keys := run(t, errs)
				if state != wantState || !cmp.Equal(keys, wantKeys) {
					t.Errorf("%s: state %v, keys %v; want %v, %v", how, state, keys, wantState, wantKeys)
				}
			}
		})
	}
}

type countObserver struct {
	nopObserver
	keys map[string]int
}

func (o *countObserver) BreakerKeys(state string, n int) {
	if o.keys == nil {
		o.keys = map[string]int{}
	}
	o.keys[state] = n
}

// TestSlotsForgetKeys: the per-key bookkeeping holds only keys with calls
// holding or waiting for a slot.
func TestSlotsForgetKeys(t *testing.T) {
	s := newSlots(4, 1)
	ctx := context.Background()
	var releases []func()
	for i := range 3 {
		release, err := s.acquire(ctx, fmt.Sprint("key-", i))
		if err != nil {
			t.Fatal(err)
		}
		releases = append(releases, release)
	}
	if n := len(s.keys); n != 3 {
		t.Errorf("keys held = %d, want 3", n)
	}

	// A call over its key's share waits; when its context ends it leaves
	// nothing behind.
	waitCtx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := s.acquire(waitCtx, "key-0"); !errors.Is(err, CauseCancelled) {
		t.Errorf("acquire over the share with an ended context: %v, want CauseCancelled", err)
	}
	if n := s.keys["key-0"].users; n != 1 {
		t.Errorf("key-0 users = %d, want 1 (the holder)", n)
	}

	for _, release := range releases {
		release()
	}
	if n := len(s.keys); n != 0 {
		t.Errorf("keys held after every release = %d, want 0", n)
	}
	if n := s.inUse; n != 0 {
		t.Errorf("process-wide slots taken = %d, want 0", n)
	}
	if n := len(s.waiting); n != 0 {
		t.Errorf("keys waiting after every release = %d, want 0", n)
	}
}

// TestSlotsGoToTheKeyHoldingFewest: when every process-wide slot is taken,
// a slot that frees goes to the waiting key that holds the fewest, not to
// the calls that queued first. One tenant holding every slot under several
// keys, with more calls waiting, leaves another key's call next in line.
func TestSlotsGoToTheKeyHoldingFewest(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := newSlots(4, 4)
		ctx := context.Background()
		var held []func()
		for _, key := range []string{"a", "a", "b", "b"} { // the tenant, under two keys
			release, err := s.acquire(ctx, key)
			if err != nil {
				t.Fatal(err)
			}
			held = append(held, release)
		}

		type grant struct {
			key     string
			release func()
		}
		granted := make(chan grant, 8)
		ask := func(key string) {
			go func() {
				release, err := s.acquire(ctx, key)
				if err != nil {
					t.Error(err)
					return
				}
				granted <- grant{key, release}
			}()
			synctest.Wait() // queued, in this order
		}
		// The tenant queues more calls first, then another key asks.
		for _, key := range []string{"a", "b", "a", "b", "other"} {
			ask(key)
		}
		if n := s.queued(); n != 5 {
			t.Fatalf("calls waiting = %d, want 5", n)
		}

		var given []grant
		next := func() string {
			synctest.Wait()
			select {
			case g := <-granted:
				given = append(given, g)
				return g.key
			default:
				return "(none)"
			}
		}
		held[0]() // one of the tenant's calls ends
		if got := next(); got != "other" {
			t.Fatalf("the freed slot went to %q, want the key holding none", got)
		}
		// a holds 1, b 2: a's waiting call comes next.
		held[1]()
		if got := next(); got != "a" {
			t.Errorf("next slot went to %q, want a (holding 0, waiting longest)", got)
		}
		// Both hold 1 now; b's call has waited longer than a's second.
		held[2]()
		if got := next(); got != "b" {
			t.Errorf("next slot went to %q, want b (waiting longer)", got)
		}
		held[3]()
		if got := next(); got != "a" {
			t.Errorf("next slot went to %q, want a (holding 1 to b's 2)", got)
		}
		given[0].release() // other's call ends: b's last call gets its slot
		if got := next(); got != "b" {
			t.Errorf("next slot went to %q, want b", got)
		}
		for _, g := range given[1:] {
			g.release()
		}
		if s.inUse != 0 || len(s.keys) != 0 {
			t.Errorf("after every release: %d slots taken, %d keys kept; want none", s.inUse, len(s.keys))
		}
	})
}

// TestSlotsKeepAReserve: an eighth of the process-wide slots is kept for
// keys holding none, so a tenant that takes every slot it can still leaves
// another key's first call a slot at once.
func TestSlotsKeepAReserve(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := newSlots(16, 16) // a reserve of 2
		ctx := context.Background()
		take := func(key string) (func(), bool) {
			var release func()
			done := make(chan struct{})
			go func() {
				defer close(done)
				var err error
				if release, err = s.acquire(ctx, key); err != nil {
					t.Error(err)
				}
			}()
			synctest.Wait()
			select {
			case <-done:
				return release, true
			default:
				return nil, false // waiting; released at the end
			}
		}
		var releases []func()
		for i := range 14 {
			release, ok := take("tenant")
			if !ok {
				t.Fatalf("the tenant's call %d waited with %d slots taken", i, s.inUse)
			}
			releases = append(releases, release)
		}
		if _, ok := take("tenant"); ok {
			t.Errorf("the tenant took a reserved slot")
		}
		for _, key := range []string{"other", "third"} {
			release, ok := take(key)
			if !ok {
				t.Errorf("%s's first call waited: the reserve was not kept for it", key)
				continue
			}
			releases = append(releases, release)
		}
		if _, ok := take("other"); ok {
			t.Errorf("other's second call took a slot past the bound")
		}
		for _, release := range releases {
			release()
		}
		synctest.Wait()
	})
}

// queued counts the calls waiting for a slot.
func (s *slots) queued() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for ks := range s.waiting {
		n += len(ks.queue)
	}
	return n
}

// TestNoRedirectsKeepsTheCallersClient: the client the relay uses is a
// copy; the caller's own client keeps its redirect policy.
func TestNoRedirectsKeepsTheCallersClient(t *testing.T) {
	follow := func(*http.Request, []*http.Request) error { return nil }
	mine := &http.Client{CheckRedirect: follow}
	used := noRedirects(mine)
	if used == mine {
		t.Fatal("noRedirects returned the caller's client")
	}
	if mine.CheckRedirect == nil || used.CheckRedirect(nil, nil) != http.ErrUseLastResponse {
		t.Error("the copy must refuse redirects and the original keep its policy")
	}
	if noRedirects(nil).CheckRedirect(nil, nil) != http.ErrUseLastResponse {
		t.Error("the default client must refuse redirects")
	}
}
