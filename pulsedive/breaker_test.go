package pulsedive_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/pulsedive-relay/relay/pulsedive"
	"github.com/pulsedive-relay/relay/pulsedive/pulsedivetest"
)

// errBreakerOpen is what a call gets while the breaker refuses it.
var errBreakerOpen = &pulsedive.UnavailableError{Reason: "circuit breaker open"}

// Values of the breaker tests: downValue always fails with 503, hangValue
// hangs; the others are fixtures Pulsedive knows.
const (
	downValue = "down.example"
	hangValue = "hang.example"
)

// manualClock is a clock the test moves by hand.
type manualClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *manualClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *manualClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// stateLog records the breaker's transitions.
type stateLog struct {
	mu     sync.Mutex
	states []int
}

func (l *stateLog) record(state int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.states = append(l.states, state)
}

func (l *stateLog) get() []int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]int(nil), l.states...)
}

// checkStates compares the transitions seen so far with want.
func checkStates(t *testing.T, log *stateLog, want ...int) {
	t.Helper()
	if diff := cmp.Diff(want, log.get(), cmpopts.EquateEmpty()); diff != "" {
		t.Errorf("breaker transitions (-want +got):\n%s", diff)
	}
}

func (l *recLimiter) setRefuse(err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.refuse = err
}

// breakerRig is a client with a breaker on a clock the test moves, over a
// fake where downValue answers 503 and hangValue hangs.
type breakerRig struct {
	srv    *pulsedivetest.Server
	c      *pulsedive.Client
	clock  *manualClock
	states *stateLog
	lim    *recLimiter
	obs    *recObserver
}

// newBreakerRig builds a breakerRig; fake is the fake's configuration and
// edit changes the client's (after the rig's settings) when not nil.
// Retries are off unless edit turns them on, so that one call is one
// attempt.
func newBreakerRig(t *testing.T, fake pulsedivetest.Config, bc pulsedive.BreakerConfig, edit func(*pulsedive.Config)) *breakerRig {
	t.Helper()
	r := &breakerRig{clock: &manualClock{now: fixedNow}, states: &stateLog{}, lim: &recLimiter{}, obs: &recObserver{}}
	r.srv = newFake(t, fake)
	r.srv.SetFault(downValue, pulsedivetest.Fault{Status: 503})
	r.srv.SetFault(hangValue, pulsedivetest.Fault{Mode: pulsedivetest.ModeHang})
	bc.OnStateChange = r.states.record
	r.c = newClient(t, r.srv.URL(), func(cfg *pulsedive.Config) {
		cfg.Now = r.clock.Now
		cfg.Breaker = bc
		cfg.MaxRetries = -1
		cfg.Limiter = r.lim
		cfg.Observer = r.obs
		if edit != nil {
			edit(cfg)
		}
	})
	return r
}

// call fetches value's indicator and checks the error.
func (r *breakerRig) call(t *testing.T, value string, want error) {
	t.Helper()
	_, err := r.c.Indicator(context.Background(), testKey, value)
	checkErr(t, err, want)
}

// TestBreakerOpens makes Pulsedive fail in every outage-like way and
// checks that Failures consecutive failures open the breaker, after which
// every kind of call fails fast without reaching Pulsedive.
func TestBreakerOpens(t *testing.T) {
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadURL := "http://" + closed.Addr().String() + "/api/"
	closed.Close()

	const failures = 3
	tests := []struct {
		name    string
		fault   pulsedivetest.Fault
		edit    func(*pulsedive.Config)
		want    error
		outcome string // the observer's outcome of the failed calls
	}{
		{name: "500", fault: pulsedivetest.Fault{Status: 500}, want: &pulsedive.StatusError{StatusCode: 500, Message: "An unexpected error occurred. Please try again later."}, outcome: "server_error"},
		{name: "502", fault: pulsedivetest.Fault{Status: 502}, want: &pulsedive.StatusError{StatusCode: 502}, outcome: "server_error"},
		{name: "503", fault: pulsedivetest.Fault{Status: 503}, want: &pulsedive.StatusError{StatusCode: 503}, outcome: "server_error"},
		{name: "504", fault: pulsedivetest.Fault{Status: 504}, want: &pulsedive.StatusError{StatusCode: 504}, outcome: "server_error"},
		{name: "call timeout", fault: pulsedivetest.Fault{Mode: pulsedivetest.ModeHang},
			edit: func(cfg *pulsedive.Config) { cfg.Timeout = 30 * time.Millisecond },
			want: &pulsedive.UnavailableError{Reason: "timeout"}, outcome: "timeout"},
		{name: "reset", fault: pulsedivetest.Fault{Mode: pulsedivetest.ModeReset}, want: &pulsedive.UnavailableError{Reason: "connection reset"}, outcome: "unavailable"},
		{name: "disconnect", fault: pulsedivetest.Fault{Mode: pulsedivetest.ModeDisconnect}, want: &pulsedive.UnavailableError{Reason: "connection reset"}, outcome: "unavailable"},
		{name: "connection refused", edit: func(cfg *pulsedive.Config) { cfg.BaseURL = deadURL },
			want: &pulsedive.UnavailableError{Reason: "connection refused"}, outcome: "unavailable"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newBreakerRig(t, pulsedivetest.Config{}, pulsedive.BreakerConfig{Failures: failures, OpenFor: time.Minute}, tt.edit)
			r.srv.SetFault(pulsedivetest.AnyValue, tt.fault)
			for i := range failures {
				r.call(t, fmt.Sprintf("v%d.example", i), tt.want)
				if i < failures-1 {
					checkStates(t, r.states)
				}
			}
			checkStates(t, r.states, pulsedive.BreakerOpen)

			// Open: every call fails at once, Pulsedive hears nothing, and
			// the limiter is not asked for budget.
			before := r.srv.Calls()
			ctx := context.Background()
			_, err := r.c.Indicator(ctx, testKey, "parkingcrew.net")
			checkErr(t, err, errBreakerOpen)
			_, err = r.c.Links(ctx, testKey, "parkingcrew.net")
			checkErr(t, err, errBreakerOpen)
			checkErr(t, r.c.Health(ctx, testKey), errBreakerOpen)
			if n := r.srv.Calls() - before; n != 0 {
				t.Errorf("Pulsedive got %d calls while the breaker was open", n)
			}
			if n := r.lim.Waits(); n != failures {
				t.Errorf("limiter waits = %d, want %d: a refused call spends no budget", n, failures)
			}
			var want []string
			for range failures {
				want = append(want, "info/"+tt.outcome)
			}
			want = append(want, "info/"+pulsedive.OutcomeBreakerOpen, "links/"+pulsedive.OutcomeBreakerOpen, "health/"+pulsedive.OutcomeBreakerOpen)
			r.obs.mu.Lock()
			got := append([]string(nil), r.obs.calls...)
			r.obs.mu.Unlock()
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("observed calls (-want +got):\n%s", diff)
			}
		})
	}
}

// TestBreakerIgnoresAnswers: answers about one key or one indicator say
// Pulsedive is up, however often they come.
func TestBreakerIgnoresAnswers(t *testing.T) {
	const failures, calls = 2, 5
	tests := []struct {
		name  string
		fault pulsedivetest.Fault
		want  error
	}{
		{name: "400", fault: pulsedivetest.Fault{Status: 400}, want: pulsedive.ErrNotFound},
		{name: "404", fault: pulsedivetest.Fault{Status: 404}, want: pulsedive.ErrNotFound},
		{name: "406", fault: pulsedivetest.Fault{Status: 406}, want: pulsedive.ErrNotFound},
		{name: "200 not found", fault: pulsedivetest.Fault{Mode: pulsedivetest.ModeErrorField, Message: "Indicator not found."}, want: pulsedive.ErrNotFound},
		{name: "401", fault: pulsedivetest.Fault{Status: 401}, want: &pulsedive.StatusError{StatusCode: 401, Message: "Invalid API key."}},
		{name: "403", fault: pulsedivetest.Fault{Status: 403}, want: &pulsedive.StatusError{StatusCode: 403, Message: "Access denied for this API key."}},
		{name: "408", fault: pulsedivetest.Fault{Status: 408}, want: &pulsedive.StatusError{StatusCode: 408, Message: "Request(s) still processing."}},
		{name: "429", fault: pulsedivetest.Fault{Status: 429}, want: &pulsedive.StatusError{StatusCode: 429, Message: rateLimitText}},
		{name: "200 error text", fault: pulsedivetest.Fault{Mode: pulsedivetest.ModeErrorField, Message: "Bad."}, want: &pulsedive.APIError{Message: "Bad."}},
		{name: "not JSON", fault: pulsedivetest.Fault{Mode: pulsedivetest.ModeNotJSON}, want: pulsedive.ErrInvalidJSON},
		{name: "truncated", fault: pulsedivetest.Fault{Mode: pulsedivetest.ModeTruncate}, want: pulsedive.ErrInvalidJSON},
		{name: "changed document", fault: pulsedivetest.Fault{Status: 200, Body: []byte(`{"iid":1,"riskfactors":5}`)}, want: pulsedive.ErrSchema},
		{name: "huge", fault: pulsedivetest.Fault{Mode: pulsedivetest.ModeHuge, Size: 64 << 10}, want: pulsedive.ErrTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newBreakerRig(t, pulsedivetest.Config{}, pulsedive.BreakerConfig{Failures: failures}, func(cfg *pulsedive.Config) {
				cfg.MaxBodyBytes = 16 << 10
			})
			r.srv.SetFault(pulsedivetest.AnyValue, tt.fault)
			for range calls {
				r.call(t, "parkingcrew.net", tt.want)
			}
			checkStates(t, r.states)
			if n := r.srv.Calls(); n != calls {
				t.Errorf("Pulsedive got %d calls, want %d", n, calls)
			}
		})
	}

	t.Run("an answer between outages restarts the count", func(t *testing.T) {
		r := newBreakerRig(t, pulsedivetest.Config{}, pulsedive.BreakerConfig{Failures: failures}, nil)
		r.call(t, downValue, &pulsedive.StatusError{StatusCode: 503})
		r.call(t, "23.23.23.23", pulsedive.ErrNotFound)
		r.call(t, downValue, &pulsedive.StatusError{StatusCode: 503})
		checkStates(t, r.states)
		r.call(t, downValue, &pulsedive.StatusError{StatusCode: 503})
		checkStates(t, r.states, pulsedive.BreakerOpen)
	})
}

// TestBreakerHalfOpen: after OpenFor, Probes calls test Pulsedive while
// the others are still refused; the probes' result closes the breaker or
// opens it for another OpenFor.
func TestBreakerHalfOpen(t *testing.T) {
	const openFor = 30 * time.Second
	probeValues := []string{"parkingcrew.net", "185.141.25.242"}
	for _, probes := range []int{1, 2} {
		t.Run(fmt.Sprintf("%d probes succeed", probes), func(t *testing.T) {
			held := map[string]bool{}
			for _, v := range probeValues[:probes] {
				held[v] = true
			}
			g := newGate(func(r pulsedivetest.Request) bool { return held[r.Value] }, true)
			r := newBreakerRig(t, pulsedivetest.Config{OnCall: g.onCall}, pulsedive.BreakerConfig{Failures: 2, OpenFor: openFor, Probes: probes}, nil)
			g.start(t)
			r.call(t, downValue, &pulsedive.StatusError{StatusCode: 503})
			r.call(t, downValue, &pulsedive.StatusError{StatusCode: 503})
			checkStates(t, r.states, pulsedive.BreakerOpen)

			r.clock.Advance(openFor - time.Nanosecond)
			r.call(t, probeValues[0], errBreakerOpen)
			r.clock.Advance(time.Nanosecond)

			// The probes go through and are held at the fake; an extra
			// call meanwhile is refused without reaching Pulsedive.
			results := make(chan error, probes)
			for _, v := range probeValues[:probes] {
				go func() {
					_, err := r.c.Indicator(context.Background(), testKey, v)
					results <- err
				}()
			}
			for range probes {
				<-g.arrived
			}
			checkStates(t, r.states, pulsedive.BreakerOpen, pulsedive.BreakerHalfOpen)
			r.call(t, "http://51jianli.cn/images", errBreakerOpen)
			_, err := r.c.Links(context.Background(), testKey, probeValues[0])
			checkErr(t, err, errBreakerOpen)
			if n := r.srv.CallsFor(pulsedivetest.KindInfo, "http://51jianli.cn/images") + r.srv.CallsFor(pulsedivetest.KindLinks, probeValues[0]); n != 0 {
				t.Errorf("Pulsedive got %d calls beyond the probes", n)
			}

			g.openAll()
			for range probes {
				if err := <-results; err != nil {
					t.Errorf("probe: %v", err)
				}
			}
			checkStates(t, r.states, pulsedive.BreakerOpen, pulsedive.BreakerHalfOpen, pulsedive.BreakerClosed)
			r.call(t, "http://51jianli.cn/images", nil)
		})
	}

	t.Run("probe fails", func(t *testing.T) {
		r := newBreakerRig(t, pulsedivetest.Config{}, pulsedive.BreakerConfig{Failures: 1, OpenFor: openFor}, nil)
		r.call(t, downValue, &pulsedive.StatusError{StatusCode: 503})
		checkStates(t, r.states, pulsedive.BreakerOpen)

		r.clock.Advance(openFor)
		r.call(t, downValue, &pulsedive.StatusError{StatusCode: 503}) // the probe
		checkStates(t, r.states, pulsedive.BreakerOpen, pulsedive.BreakerHalfOpen, pulsedive.BreakerOpen)
		if n := r.srv.CallsFor(pulsedivetest.KindInfo, downValue); n != 2 {
			t.Errorf("calls = %d, want 2: the first failure and the probe", n)
		}

		// Open again for a whole OpenFor from the probe's failure.
		r.clock.Advance(openFor - time.Nanosecond)
		r.call(t, "parkingcrew.net", errBreakerOpen)
		r.clock.Advance(time.Nanosecond)
		r.call(t, "parkingcrew.net", nil)
		checkStates(t, r.states, pulsedive.BreakerOpen, pulsedive.BreakerHalfOpen, pulsedive.BreakerOpen,
			pulsedive.BreakerHalfOpen, pulsedive.BreakerClosed)
	})

	t.Run("probe answered 404 closes", func(t *testing.T) {
		r := newBreakerRig(t, pulsedivetest.Config{}, pulsedive.BreakerConfig{Failures: 1, OpenFor: openFor}, nil)
		r.call(t, downValue, &pulsedive.StatusError{StatusCode: 503})
		r.clock.Advance(openFor)
		r.call(t, "23.23.23.23", pulsedive.ErrNotFound) // Pulsedive answered: it is up
		checkStates(t, r.states, pulsedive.BreakerOpen, pulsedive.BreakerHalfOpen, pulsedive.BreakerClosed)
	})
}

// TestBreakerNeutralOutcomes: a call that ends for reasons of the caller
// or of the relay (the request's deadline, a cancelled request, the local
// rate limit) learns nothing about Pulsedive. It must neither count as an
// outage nor as a success: not open the breaker, not restart the count of
// consecutive outages, and not close a half-open breaker as a successful
// probe would (compare gobreaker's IsExcluded).
func TestBreakerNeutralOutcomes(t *testing.T) {
	neutrals := []struct {
		name string
		call func(t *testing.T, r *breakerRig, g *gate)
	}{
		{name: "caller deadline", call: func(t *testing.T, r *breakerRig, _ *gate) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
			defer cancel()
			_, err := r.c.Indicator(ctx, testKey, hangValue)
			checkErr(t, err, &pulsedive.UnavailableError{Reason: "request deadline exceeded"})
		}},
		{name: "caller cancel", call: func(t *testing.T, r *breakerRig, g *gate) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			done := make(chan struct{})
			defer close(done)
			go func() {
				select {
				case <-g.arrived: // the call hangs at the fake: its caller goes away
					cancel()
				case <-done:
				}
			}()
			_, err := r.c.Indicator(ctx, testKey, hangValue)
			checkErr(t, err, &pulsedive.UnavailableError{Reason: "request cancelled"})
		}},
		{name: "local rate limit", call: func(t *testing.T, r *breakerRig, _ *gate) {
			r.lim.setRefuse(retryAfterError{time.Second})
			defer r.lim.setRefuse(nil)
			r.call(t, "parkingcrew.net", &pulsedive.RateLimitError{RetryAfter: time.Second})
		}},
	}
	for _, n := range neutrals {
		t.Run(n.name+"/repeated", func(t *testing.T) {
			g := newGate(func(r pulsedivetest.Request) bool { return r.Value == hangValue }, false)
			r := newBreakerRig(t, pulsedivetest.Config{OnCall: g.onCall}, pulsedive.BreakerConfig{Failures: 2}, nil)
			g.start(t)
			for range 3 {
				n.call(t, r, g)
			}
			checkStates(t, r.states)
		})
		t.Run(n.name+"/between two outages", func(t *testing.T) {
			g := newGate(func(r pulsedivetest.Request) bool { return r.Value == hangValue }, false)
			r := newBreakerRig(t, pulsedivetest.Config{OnCall: g.onCall}, pulsedive.BreakerConfig{Failures: 2}, nil)
			g.start(t)
			r.call(t, downValue, &pulsedive.StatusError{StatusCode: 503})
			n.call(t, r, g)
			r.call(t, downValue, &pulsedive.StatusError{StatusCode: 503})
			checkStates(t, r.states, pulsedive.BreakerOpen)
		})
		t.Run(n.name+"/as the probe", func(t *testing.T) {
			g := newGate(func(r pulsedivetest.Request) bool { return r.Value == hangValue }, false)
			r := newBreakerRig(t, pulsedivetest.Config{OnCall: g.onCall}, pulsedive.BreakerConfig{Failures: 1, OpenFor: time.Minute}, nil)
			g.start(t)
			r.call(t, downValue, &pulsedive.StatusError{StatusCode: 503})
			r.clock.Advance(time.Minute)
			n.call(t, r, g) // the probe ends without news of Pulsedive
			// Still half-open: the next call is the probe, and its failure
			// opens the breaker again.
			r.call(t, downValue, &pulsedive.StatusError{StatusCode: 503})
			checkStates(t, r.states, pulsedive.BreakerOpen, pulsedive.BreakerHalfOpen, pulsedive.BreakerOpen)
			r.call(t, "parkingcrew.net", errBreakerOpen)
		})
	}
}

// TestBreakerBoundsTheCostOfAnOutage: with Pulsedive down, a batch of
// observables costs about Failures calls per API key instead of three (the
// call and its two retries) per observable.
func TestBreakerBoundsTheCostOfAnOutage(t *testing.T) {
	const observables, retries = 20, 2
	tests := []struct {
		name     string
		failures int
		workers  int // concurrent callers
		keys     int // API keys the observables are spread over
		maxCalls int
	}{
		{name: "no breaker", failures: 0, workers: 1, keys: 1, maxCalls: observables * (1 + retries)},
		{name: "sequential", failures: 4, workers: 1, keys: 1, maxCalls: 4},
		// Calls let through before the breaker opens may each finish their
		// attempt: at most Failures-1 recorded, plus one per worker.
		{name: "concurrent", failures: 4, workers: 4, keys: 1, maxCalls: 4 + 4 - 1},
		// Breakers are per key: each key pays for its own.
		{name: "sequential, three keys", failures: 4, workers: 1, keys: 3, maxCalls: 3 * 4},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := newFake(t, pulsedivetest.Config{})
			srv.SetFault(pulsedivetest.AnyValue, pulsedivetest.Fault{Status: 503})
			c := newClient(t, srv.URL(), func(cfg *pulsedive.Config) {
				cfg.Breaker = pulsedive.BreakerConfig{Failures: tt.failures, OpenFor: time.Minute}
				cfg.MaxRetries = retries
			})
			type job struct {
				key   pulsedive.APIKey
				value string
			}
			jobs := make(chan job, observables)
			for i := range observables {
				jobs <- job{pulsedive.APIKey(fmt.Sprintf("key-%d", i%tt.keys)), fmt.Sprintf("v%d.example", i)}
			}
			close(jobs)
			var (
				mu   sync.Mutex
				errs []error
				wg   sync.WaitGroup
			)
			for range tt.workers {
				wg.Go(func() {
					for j := range jobs {
						_, err := c.Indicator(context.Background(), j.key, j.value)
						mu.Lock()
						errs = append(errs, err)
						mu.Unlock()
					}
				})
			}
			wg.Wait()
			for _, err := range errs {
				var se *pulsedive.StatusError
				var ue *pulsedive.UnavailableError
				switch {
				case errors.As(err, &se) && se.StatusCode == 503:
				case errors.As(err, &ue) && ue.Reason == "circuit breaker open":
				default:
					t.Errorf("error = %v, want the 503 or the open breaker", err)
				}
			}
			if n := srv.Calls(); n > tt.maxCalls {
				t.Errorf("the outage cost %d calls, want at most %d", n, tt.maxCalls)
			}
			if tt.failures > 0 && srv.Calls() < tt.keys*tt.failures {
				t.Errorf("the outage cost %d calls; the breakers need %d each to open", srv.Calls(), tt.failures)
			}
		})
	}
}

// TestBreakerPerKey: each API key has its own breaker, so one tenant's
// failures never shut out another; OnStateChange follows the worst state
// over all keys.
func TestBreakerPerKey(t *testing.T) {
	const openFor = 30 * time.Second
	other := pulsedive.APIKey("another tenant")
	r := newBreakerRig(t, pulsedivetest.Config{}, pulsedive.BreakerConfig{Failures: 2, OpenFor: openFor}, nil)
	callAs := func(key pulsedive.APIKey, value string, want error) {
		t.Helper()
		_, err := r.c.Indicator(context.Background(), key, value)
		checkErr(t, err, want)
	}
	outage := &pulsedive.StatusError{StatusCode: 503}

	// testKey's breaker opens at t0; the other key is not affected.
	callAs(testKey, downValue, outage)
	callAs(testKey, downValue, outage)
	callAs(testKey, "parkingcrew.net", errBreakerOpen)
	callAs(other, "parkingcrew.net", nil)
	checkStates(t, r.states, pulsedive.BreakerOpen)

	// The other key's opens at t0+10s: the worst state stays open.
	r.clock.Advance(10 * time.Second)
	callAs(other, downValue, outage)
	callAs(other, downValue, outage)
	callAs(other, "parkingcrew.net", errBreakerOpen)
	checkStates(t, r.states, pulsedive.BreakerOpen)

	// At t0+30s testKey's probe closes its breaker; the other key's is
	// still open, and so is the worst state.
	r.clock.Advance(openFor - 10*time.Second)
	callAs(testKey, "parkingcrew.net", nil)
	callAs(other, "parkingcrew.net", errBreakerOpen)
	checkStates(t, r.states, pulsedive.BreakerOpen)

	// At t0+40s the other key probes too: half-open, then closed.
	r.clock.Advance(10 * time.Second)
	callAs(other, "parkingcrew.net", nil)
	checkStates(t, r.states, pulsedive.BreakerOpen, pulsedive.BreakerHalfOpen, pulsedive.BreakerClosed)
	if n := r.srv.CallsByKey(string(other)); n != 4 {
		t.Errorf("calls with the other key = %d, want 4 (two answers, two failures)", n)
	}
}

// TestBreakerForgetsQuietKeys: a key that opened its breaker and then made
// no call for two open periods is forgotten, so the worst state (and the
// gauge) does not stay open for good; the key starts afresh, closed.
func TestBreakerForgetsQuietKeys(t *testing.T) {
	const openFor = 30 * time.Second
	other := pulsedive.APIKey("a busy tenant")
	r := newBreakerRig(t, pulsedivetest.Config{}, pulsedive.BreakerConfig{Failures: 2, OpenFor: openFor}, nil)
	outage := &pulsedive.StatusError{StatusCode: 503}
	for range 2 {
		_, err := r.c.Indicator(context.Background(), testKey, downValue)
		checkErr(t, err, outage)
	}
	checkStates(t, r.states, pulsedive.BreakerOpen)

	r.clock.Advance(openFor) // over, but the key is not quiet long enough
	if _, err := r.c.Indicator(context.Background(), other, "parkingcrew.net"); err != nil {
		t.Fatal(err)
	}
	checkStates(t, r.states, pulsedive.BreakerOpen)

	r.clock.Advance(openFor) // two open periods without a call from testKey
	if _, err := r.c.Indicator(context.Background(), other, "parkingcrew.net"); err != nil {
		t.Fatal(err)
	}
	checkStates(t, r.states, pulsedive.BreakerOpen, pulsedive.BreakerClosed)

	// Forgotten means fresh: one failure does not reopen it.
	_, err := r.c.Indicator(context.Background(), testKey, downValue)
	checkErr(t, err, outage)
	checkStates(t, r.states, pulsedive.BreakerOpen, pulsedive.BreakerClosed)
}
