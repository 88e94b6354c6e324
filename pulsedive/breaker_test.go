package pulsedive_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/pulsedive-relay/relay/pulsedive"
	"github.com/pulsedive-relay/relay/pulsedive/pulsedivetest"
)

// errBreakerOpen is what a call gets while the breaker refuses it.
var errBreakerOpen = unavailable(pulsedive.CauseBreakerOpen, "circuit breaker open")

// outage is what a call of downValue gets.
var outage = &pulsedive.StatusError{StatusCode: 503}

// Values of the breaker tests: downValue always fails with 503, hangValue
// hangs; the others are fixtures Pulsedive knows.
const (
	downValue = "down.example"
	hangValue = "hang.example"
)

// stateLog records the states the breakers move to.
type stateLog struct {
	mu     sync.Mutex
	states []pulsedive.BreakerState
}

func (l *stateLog) record(_, to pulsedive.BreakerState) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.states = append(l.states, to)
}

func (l *stateLog) get() []pulsedive.BreakerState {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]pulsedive.BreakerState(nil), l.states...)
}

// checkStates compares the transitions seen so far with want.
func checkStates(t *testing.T, log *stateLog, want ...pulsedive.BreakerState) {
	t.Helper()
	if diff := cmp.Diff(want, log.get(), cmpopts.EquateEmpty()); diff != "" {
		t.Errorf("breaker transitions (-want +got):\n%s", diff)
	}
}

// checkKeys compares the keys per breaker state last reported with want
// (closed, half-open, open).
func checkKeys(t *testing.T, obs *recObserver, closed, halfOpen, open int) {
	t.Helper()
	want := map[string]int{"closed": closed, "half_open": halfOpen, "open": open}
	got := obs.Breakers()
	for s := range want {
		if _, ok := got[s]; !ok {
			got[s] = 0 // never reported: no key ever was
		}
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("keys per breaker state (-want +got):\n%s", diff)
	}
}

func (l *recLimiter) setRefuse(err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.refuse = err
}

// breakerRig is a client with breakers over a fake where downValue answers
// 503 and hangValue hangs.
type breakerRig struct {
	fake   *pulsedivetest.Fake
	c      *pulsedive.Client
	states *stateLog
	lim    *recLimiter
	obs    *recObserver
}

// newBreakerRig builds a breakerRig over loopback HTTP, on the real clock;
// fake is the fake's configuration and edit changes the client's (after
// the rig's settings) when not nil. Retries are off unless edit turns them
// on, so that one call is one attempt.
func newBreakerRig(t *testing.T, fake pulsedivetest.Config, bc pulsedive.BreakerConfig, edit func(*pulsedive.Config)) *breakerRig {
	t.Helper()
	srv := newFake(t, fake)
	return rig(t, srv.Fake, srv.URL(), nil, bc, edit)
}

// newBubbleRig builds a breakerRig whose client calls the fake in
// process, for a test inside a testing/synctest bubble: time.Sleep then
// moves the clock gobreaker reads, at once.
func newBubbleRig(t *testing.T, fake pulsedivetest.Config, bc pulsedive.BreakerConfig, edit func(*pulsedive.Config)) *breakerRig {
	t.Helper()
	fk := newBubbleFake(t, fake)
	return rig(t, fk, "http://pulsedive.test/api/", &http.Client{Transport: fk.Transport()}, bc, edit)
}

func rig(t *testing.T, fk *pulsedivetest.Fake, baseURL string, hc *http.Client, bc pulsedive.BreakerConfig, edit func(*pulsedive.Config)) *breakerRig {
	t.Helper()
	r := &breakerRig{fake: fk, states: &stateLog{}, lim: &recLimiter{}, obs: &recObserver{}}
	fk.SetFault(downValue, pulsedivetest.Fault{Status: 503})
	fk.SetFault(hangValue, pulsedivetest.Fault{Mode: pulsedivetest.ModeHang})
	bc.OnStateChange = r.states.record
	r.c = newClient(t, baseURL, func(cfg *pulsedive.Config) {
		if hc != nil {
			cfg.HTTPClient = hc
		}
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

// call fetches value's indicator with testKey and checks the error.
func (r *breakerRig) call(t *testing.T, value string, want error) {
	t.Helper()
	r.callAs(t, testKey, value, want)
}

func (r *breakerRig) callAs(t *testing.T, key pulsedive.APIKey, value string, want error) {
	t.Helper()
	_, err := r.c.Indicator(context.Background(), key, value)
	checkErr(t, err, want)
}

// start fetches value's indicator in the background; the error arrives
// on the channel.
func (r *breakerRig) start(value string) <-chan error {
	done := make(chan error, 1)
	go func() {
		_, err := r.c.Indicator(context.Background(), testKey, value)
		done <- err
	}()
	return done
}

// TestBreakerOpens makes Pulsedive fail in every outage-like way and
// checks that Failures consecutive failures open the breaker, after which
// every kind of call fails fast without reaching Pulsedive, and is counted
// but not timed.
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
			want: unavailable(pulsedive.CauseTimeout, "timeout"), outcome: "timeout"},
		{name: "reset", fault: pulsedivetest.Fault{Mode: pulsedivetest.ModeReset}, want: unavailable(pulsedive.CauseReset, "connection reset"), outcome: "unavailable"},
		{name: "disconnect", fault: pulsedivetest.Fault{Mode: pulsedivetest.ModeDisconnect}, want: unavailable(pulsedive.CauseReset, "connection reset"), outcome: "unavailable"},
		{name: "connection refused", edit: func(cfg *pulsedive.Config) { cfg.BaseURL = deadURL },
			want: unavailable(pulsedive.CauseRefused, "connection refused"), outcome: "unavailable"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newBreakerRig(t, pulsedivetest.Config{}, pulsedive.BreakerConfig{Failures: failures, OpenFor: time.Minute}, tt.edit)
			r.fake.SetFault(pulsedivetest.AnyValue, tt.fault)
			for i := range failures {
				r.call(t, fmt.Sprintf("v%d.example", i), tt.want)
				if i < failures-1 {
					checkStates(t, r.states)
				}
			}
			checkStates(t, r.states, pulsedive.BreakerOpen)
			checkKeys(t, r.obs, 0, 0, 1)

			// Open: every call fails at once, Pulsedive hears nothing, and
			// the limiter is not asked for budget.
			before := r.fake.Calls()
			ctx := context.Background()
			_, err := r.c.Indicator(ctx, testKey, "parkingcrew.net")
			checkErr(t, err, errBreakerOpen)
			_, err = r.c.Links(ctx, testKey, "parkingcrew.net")
			checkErr(t, err, errBreakerOpen)
			checkErr(t, r.c.Health(ctx, testKey), errBreakerOpen)
			if !errors.Is(err, pulsedive.CauseBreakerOpen) {
				t.Errorf("errors.Is(%v, CauseBreakerOpen) = false", err)
			}
			if n := r.fake.Calls() - before; n != 0 {
				t.Errorf("Pulsedive got %d calls while the breaker was open", n)
			}
			if n := r.lim.Waits(); n != failures {
				t.Errorf("limiter waits = %d, want %d: a refused call spends no budget", n, failures)
			}
			var made []string
			for range failures {
				made = append(made, "info/"+tt.outcome)
			}
			all := append(append([]string(nil), made...), "info/"+pulsedive.OutcomeBreakerOpen, "links/"+pulsedive.OutcomeBreakerOpen, "health/"+pulsedive.OutcomeBreakerOpen)
			gotAll, gotTimed := r.obs.Calls()
			if diff := cmp.Diff(all, gotAll); diff != "" {
				t.Errorf("calls counted (-want +got):\n%s", diff)
			}
			// Refused calls have no latency: timing them as 0 s would drag
			// the latency quantiles toward 0 during an outage.
			if diff := cmp.Diff(made, gotTimed); diff != "" {
				t.Errorf("calls timed (-want +got):\n%s", diff)
			}
		})
	}
}

// TestBreakerIgnoresAnswers: answers about one key or one indicator say
// Pulsedive is up, however often they come; so do answers that are no
// Pulsedive's at all (a redirect, a web server's 404 page), which a breaker
// cannot mend.
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
		{name: "redirect", fault: pulsedivetest.Fault{Status: 302, Header: http.Header{"Location": {"https://pulsedive.com/"}}}, want: &pulsedive.RedirectError{StatusCode: 302}},
		{name: "404 web page", fault: pulsedivetest.Fault{Status: 404, Body: []byte("<html>Not Found</html>")}, want: &pulsedive.UnexpectedAnswerError{StatusCode: 404}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newBreakerRig(t, pulsedivetest.Config{}, pulsedive.BreakerConfig{Failures: failures}, func(cfg *pulsedive.Config) {
				cfg.MaxBodyBytes = 16 << 10
			})
			r.fake.SetFault(pulsedivetest.AnyValue, tt.fault)
			for range calls {
				r.call(t, "parkingcrew.net", tt.want)
			}
			checkStates(t, r.states)
			if n := r.fake.Calls(); n != calls {
				t.Errorf("Pulsedive got %d calls, want %d", n, calls)
			}
		})
	}

	t.Run("an answer between outages restarts the count", func(t *testing.T) {
		r := newBreakerRig(t, pulsedivetest.Config{}, pulsedive.BreakerConfig{Failures: failures}, nil)
		r.call(t, downValue, outage)
		r.call(t, "23.23.23.23", pulsedive.ErrNotFound)
		r.call(t, downValue, outage)
		checkStates(t, r.states)
		r.call(t, downValue, outage)
		checkStates(t, r.states, pulsedive.BreakerOpen)
	})
}

// TestBreakerHalfOpen: after OpenFor, Probes calls test Pulsedive while
// the others are still refused; the probes' result closes the breaker or
// opens it for another OpenFor. It runs on synctest's fake clock, which
// gobreaker reads.
func TestBreakerHalfOpen(t *testing.T) {
	const openFor = 30 * time.Second
	probeValues := []string{"parkingcrew.net", "185.141.25.242"}
	for _, probes := range []int{1, 2} {
		t.Run(fmt.Sprintf("%d probes succeed", probes), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				held := map[string]bool{}
				for _, v := range probeValues[:probes] {
					held[v] = true
				}
				g := newGate(func(r pulsedivetest.Request) bool { return held[r.Value] }, true)
				r := newBubbleRig(t, pulsedivetest.Config{OnCall: g.onCall}, pulsedive.BreakerConfig{Failures: 2, OpenFor: openFor, Probes: probes}, nil)
				g.start(t)
				r.call(t, downValue, outage)
				r.call(t, downValue, outage)
				checkStates(t, r.states, pulsedive.BreakerOpen)

				time.Sleep(openFor - time.Millisecond)
				r.call(t, probeValues[0], errBreakerOpen)
				time.Sleep(2 * time.Millisecond)

				// The probes go through and are held at the fake; an extra
				// call meanwhile is refused without reaching Pulsedive.
				var results []<-chan error
				for _, v := range probeValues[:probes] {
					results = append(results, r.start(v))
				}
				for range probes {
					<-g.arrived
				}
				checkStates(t, r.states, pulsedive.BreakerOpen, pulsedive.BreakerHalfOpen)
				checkKeys(t, r.obs, 0, 1, 0)
				r.call(t, "http://51jianli.cn/images", errBreakerOpen)
				_, err := r.c.Links(context.Background(), testKey, probeValues[0])
				checkErr(t, err, errBreakerOpen)
				if n := r.fake.CallsFor(pulsedivetest.KindInfo, "http://51jianli.cn/images") + r.fake.CallsFor(pulsedivetest.KindLinks, probeValues[0]); n != 0 {
					t.Errorf("Pulsedive got %d calls beyond the probes", n)
				}

				g.openAll()
				for _, res := range results {
					if err := <-res; err != nil {
						t.Errorf("probe: %v", err)
					}
				}
				checkStates(t, r.states, pulsedive.BreakerOpen, pulsedive.BreakerHalfOpen, pulsedive.BreakerClosed)
				r.call(t, "http://51jianli.cn/images", nil)
				checkKeys(t, r.obs, 0, 0, 0) // closed and clean: forgotten
			})
		})
	}

	t.Run("probe fails", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			r := newBubbleRig(t, pulsedivetest.Config{}, pulsedive.BreakerConfig{Failures: 1, OpenFor: openFor}, nil)
			r.call(t, downValue, outage)
			checkStates(t, r.states, pulsedive.BreakerOpen)

			time.Sleep(openFor + time.Millisecond)
			r.call(t, downValue, outage) // the probe
			checkStates(t, r.states, pulsedive.BreakerOpen, pulsedive.BreakerHalfOpen, pulsedive.BreakerOpen)
			if n := r.fake.CallsFor(pulsedivetest.KindInfo, downValue); n != 2 {
				t.Errorf("calls = %d, want 2: the first failure and the probe", n)
			}

			// Open again for a whole OpenFor from the probe's failure.
			time.Sleep(openFor - time.Millisecond)
			r.call(t, "parkingcrew.net", errBreakerOpen)
			time.Sleep(2 * time.Millisecond)
			r.call(t, "parkingcrew.net", nil)
			checkStates(t, r.states, pulsedive.BreakerOpen, pulsedive.BreakerHalfOpen, pulsedive.BreakerOpen,
				pulsedive.BreakerHalfOpen, pulsedive.BreakerClosed)
		})
	})

	t.Run("probe answered 404 closes", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			r := newBubbleRig(t, pulsedivetest.Config{}, pulsedive.BreakerConfig{Failures: 1, OpenFor: openFor}, nil)
			r.call(t, downValue, outage)
			time.Sleep(openFor + time.Millisecond)
			r.call(t, "23.23.23.23", pulsedive.ErrNotFound) // Pulsedive answered: it is up
			checkStates(t, r.states, pulsedive.BreakerOpen, pulsedive.BreakerHalfOpen, pulsedive.BreakerClosed)
		})
	})
}

// TestBreakerStaleResults: a call that started before the breaker last
// changed state ends late. Its result is stale: it must not decide the
// state the breaker is in now (gobreaker counts generations and drops
// results of an older one). Each case holds the stale call at the fake
// while the breaker changes, then lets it end.
func TestBreakerStaleResults(t *testing.T) {
	const (
		openFor   = 30 * time.Second
		okValue   = "late-ok.example"   // a held call that then succeeds
		failValue = "late-fail.example" // a held call that then fails with 503
	)
	tests := []struct {
		name string
		run  func(t *testing.T, r *breakerRig, g *gate)
		want []pulsedive.BreakerState
	}{
		{
			name: "stale success does not close an open breaker",
			run: func(t *testing.T, r *breakerRig, g *gate) {
				late := r.start(okValue)
				<-g.arrived
				r.call(t, downValue, outage)
				r.call(t, downValue, outage) // opens
				g.openAll()
				checkErr(t, <-late, nil)
				// Still open: no call reaches Pulsedive until OpenFor has
				// passed and a probe has answered.
				r.call(t, "parkingcrew.net", errBreakerOpen)
				time.Sleep(openFor + time.Millisecond)
				r.call(t, downValue, outage) // the probe fails: open again
			},
			want: []pulsedive.BreakerState{pulsedive.BreakerOpen, pulsedive.BreakerHalfOpen, pulsedive.BreakerOpen},
		},
		{
			name: "stale success does not close a half-open breaker",
			run: func(t *testing.T, r *breakerRig, g *gate) {
				late := r.start(okValue)
				<-g.arrived
				r.call(t, downValue, outage)
				r.call(t, downValue, outage) // opens
				time.Sleep(openFor + time.Millisecond)
				probe := r.start(failValue) // half-open: the probe, held too
				<-g.arrived
				g.openAll() // both end, in either order
				checkErr(t, <-late, nil)
				checkErr(t, <-probe, outage)
			},
			// The probe's failure decides, whatever the stale success did.
			want: []pulsedive.BreakerState{pulsedive.BreakerOpen, pulsedive.BreakerHalfOpen, pulsedive.BreakerOpen},
		},
		{
			name: "stale failure does not re-open over a successful probe",
			run: func(t *testing.T, r *breakerRig, g *gate) {
				late := r.start(failValue)
				<-g.arrived
				r.call(t, downValue, outage)
				r.call(t, downValue, outage) // opens
				time.Sleep(openFor + time.Millisecond)
				r.call(t, "parkingcrew.net", nil) // the probe closes it
				g.openAll()
				checkErr(t, <-late, outage)
				// Closed, and the stale failure is not counted towards the
				// next opening either: one more failure does not open.
				r.call(t, downValue, outage)
				r.call(t, "185.141.25.242", nil)
			},
			want: []pulsedive.BreakerState{pulsedive.BreakerOpen, pulsedive.BreakerHalfOpen, pulsedive.BreakerClosed},
		},
		{
			name: "stale failure does not re-open a half-open breaker",
			run: func(t *testing.T, r *breakerRig, g *gate) {
				late := r.start(failValue)
				<-g.arrived
				r.call(t, downValue, outage)
				r.call(t, downValue, outage) // opens
				time.Sleep(openFor + time.Millisecond)
				probe := r.start(okValue) // half-open: the probe, held too
				<-g.arrived
				g.openAll()
				checkErr(t, <-late, outage)
				checkErr(t, <-probe, nil)
			},
			want: []pulsedive.BreakerState{pulsedive.BreakerOpen, pulsedive.BreakerHalfOpen, pulsedive.BreakerClosed},
		},
		{
			name: "stale failure does not prolong the open period",
			run: func(t *testing.T, r *breakerRig, g *gate) {
				late := r.start(failValue)
				<-g.arrived
				r.call(t, downValue, outage)
				r.call(t, downValue, outage) // opens
				time.Sleep(openFor / 2)
				g.openAll()
				checkErr(t, <-late, outage)
				time.Sleep(openFor/2 + time.Millisecond)
				r.call(t, "parkingcrew.net", nil) // OpenFor after the opening: the probe
			},
			want: []pulsedive.BreakerState{pulsedive.BreakerOpen, pulsedive.BreakerHalfOpen, pulsedive.BreakerClosed},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				g := newGate(func(r pulsedivetest.Request) bool { return r.Value == okValue || r.Value == failValue }, true)
				r := newBubbleRig(t, pulsedivetest.Config{
					Indicators: tinyEntries([]string{okValue, failValue}),
					OnCall:     g.onCall,
				}, pulsedive.BreakerConfig{Failures: 2, OpenFor: openFor}, func(cfg *pulsedive.Config) {
					cfg.Timeout = time.Hour // held calls outlive the open period
				})
				r.fake.SetFault(failValue, pulsedivetest.Fault{Status: 503})
				g.start(t)
				tt.run(t, r, g)
				checkStates(t, r.states, tt.want...)
			})
		})
	}
}

// TestBreakerNeutralOutcomes: a call that ends for reasons of the caller
// or of the relay (the request's deadline, a cancelled request, the local
// rate limit) learns nothing about Pulsedive. It must neither count as an
// outage nor as a success: not open the breaker, not restart the count of
// consecutive outages, and not close a half-open breaker as a successful
// probe would (gobreaker's IsExcluded).
func TestBreakerNeutralOutcomes(t *testing.T) {
	neutrals := []struct {
		name string
		call func(t *testing.T, r *breakerRig, g *gate)
	}{
		{name: "caller deadline", call: func(t *testing.T, r *breakerRig, _ *gate) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
			defer cancel()
			_, err := r.c.Indicator(ctx, testKey, hangValue)
			checkErr(t, err, unavailable(pulsedive.CauseDeadline, "request deadline exceeded"))
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
			checkErr(t, err, unavailable(pulsedive.CauseCancelled, "request cancelled"))
		}},
		{name: "local rate limit", call: func(t *testing.T, r *breakerRig, _ *gate) {
			r.lim.setRefuse(retryAfterError{time.Second})
			defer r.lim.setRefuse(nil)
			r.call(t, "parkingcrew.net", &pulsedive.RateLimitError{RetryAfter: time.Second})
		}},
		{name: "limiter failure", call: func(t *testing.T, r *breakerRig, _ *gate) {
			r.lim.setRefuse(errors.New("limiter broke"))
			defer r.lim.setRefuse(nil)
			r.call(t, "parkingcrew.net", unavailable(pulsedive.CauseLimiterFailed, "rate limiter failed"))
		}},
	}
	bubble := func(t *testing.T, bc pulsedive.BreakerConfig, f func(t *testing.T, r *breakerRig, g *gate)) {
		synctest.Test(t, func(t *testing.T) {
			g := newGate(func(r pulsedivetest.Request) bool { return r.Value == hangValue }, false)
			r := newBubbleRig(t, pulsedivetest.Config{OnCall: g.onCall}, bc, nil)
			g.start(t)
			f(t, r, g)
		})
	}
	for _, n := range neutrals {
		t.Run(n.name+"/repeated", func(t *testing.T) {
			bubble(t, pulsedive.BreakerConfig{Failures: 2}, func(t *testing.T, r *breakerRig, g *gate) {
				for range 3 {
					n.call(t, r, g)
				}
				checkStates(t, r.states)
			})
		})
		t.Run(n.name+"/between two outages", func(t *testing.T) {
			bubble(t, pulsedive.BreakerConfig{Failures: 2}, func(t *testing.T, r *breakerRig, g *gate) {
				r.call(t, downValue, outage)
				n.call(t, r, g)
				r.call(t, downValue, outage)
				checkStates(t, r.states, pulsedive.BreakerOpen)
			})
		})
		t.Run(n.name+"/as the probe", func(t *testing.T) {
			bubble(t, pulsedive.BreakerConfig{Failures: 1, OpenFor: time.Minute}, func(t *testing.T, r *breakerRig, g *gate) {
				r.call(t, downValue, outage)
				time.Sleep(time.Minute + time.Millisecond)
				n.call(t, r, g) // the probe ends without news of Pulsedive
				// Still half-open: the next call is the probe, and its
				// failure opens the breaker again.
				r.call(t, downValue, outage)
				checkStates(t, r.states, pulsedive.BreakerOpen, pulsedive.BreakerHalfOpen, pulsedive.BreakerOpen)
				r.call(t, "parkingcrew.net", errBreakerOpen)
			})
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
			// In a bubble: the retries' backoff costs no time.
			synctest.Test(t, func(t *testing.T) {
				fk := newBubbleFake(t, pulsedivetest.Config{})
				fk.SetFault(pulsedivetest.AnyValue, pulsedivetest.Fault{Status: 503})
				c := newBubbleClient(t, fk, func(cfg *pulsedive.Config) {
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
					switch {
					case errors.As(err, &se) && se.StatusCode == 503:
					case errors.Is(err, pulsedive.CauseBreakerOpen):
					default:
						t.Errorf("error = %v, want the 503 or the open breaker", err)
					}
				}
				if n := fk.Calls(); n > tt.maxCalls {
					t.Errorf("the outage cost %d calls, want at most %d", n, tt.maxCalls)
				}
				if tt.failures > 0 && fk.Calls() < tt.keys*tt.failures {
					t.Errorf("the outage cost %d calls; the breakers need %d each to open", fk.Calls(), tt.failures)
				}
			})
		})
	}
}

// TestBreakerPerKey: each API key has its own breaker, so one tenant's
// failures never shut out another; the observer is told how many keys are
// in each state, not the worst state of all.
func TestBreakerPerKey(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const openFor = 30 * time.Second
		other := pulsedive.APIKey("another tenant")
		r := newBubbleRig(t, pulsedivetest.Config{}, pulsedive.BreakerConfig{Failures: 2, OpenFor: openFor}, nil)

		// testKey's breaker opens at t0; the other key is not affected.
		r.callAs(t, testKey, downValue, outage)
		checkKeys(t, r.obs, 1, 0, 0) // one failure counted: tracked, closed
		r.callAs(t, testKey, downValue, outage)
		r.callAs(t, testKey, "parkingcrew.net", errBreakerOpen)
		r.callAs(t, other, "parkingcrew.net", nil)
		checkStates(t, r.states, pulsedive.BreakerOpen)
		checkKeys(t, r.obs, 0, 0, 1)

		// The other key's opens at t0+10s: two keys open.
		time.Sleep(10 * time.Second)
		r.callAs(t, other, downValue, outage)
		r.callAs(t, other, downValue, outage)
		r.callAs(t, other, "parkingcrew.net", errBreakerOpen)
		checkStates(t, r.states, pulsedive.BreakerOpen, pulsedive.BreakerOpen)
		checkKeys(t, r.obs, 0, 0, 2)

		// Just after t0+30s testKey's probe closes its breaker; the other
		// key's is still open.
		time.Sleep(openFor - 10*time.Second + time.Millisecond)
		r.callAs(t, testKey, "parkingcrew.net", nil)
		r.callAs(t, other, "parkingcrew.net", errBreakerOpen)
		checkStates(t, r.states, pulsedive.BreakerOpen, pulsedive.BreakerOpen, pulsedive.BreakerHalfOpen, pulsedive.BreakerClosed)
		checkKeys(t, r.obs, 0, 0, 1)

		// At t0+40s the other key probes too: half-open, then closed.
		time.Sleep(10 * time.Second)
		r.callAs(t, other, "parkingcrew.net", nil)
		checkStates(t, r.states, pulsedive.BreakerOpen, pulsedive.BreakerOpen, pulsedive.BreakerHalfOpen, pulsedive.BreakerClosed,
			pulsedive.BreakerHalfOpen, pulsedive.BreakerClosed)
		checkKeys(t, r.obs, 0, 0, 0)
		if n := r.fake.CallsByKey(string(other)); n != 4 {
			t.Errorf("calls with the other key = %d, want 4 (two answers, two failures)", n)
		}
	})
}

// TestBreakerForgetsQuietKeys: a key that opened its breaker and then made
// no call for two open periods is forgotten, so it does not stay counted
// as open for good; the key starts afresh, closed. Keys that only
// succeed are never kept.
func TestBreakerForgetsQuietKeys(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const openFor = 30 * time.Second
		other := pulsedive.APIKey("a busy tenant")
		r := newBubbleRig(t, pulsedivetest.Config{}, pulsedive.BreakerConfig{Failures: 2, OpenFor: openFor}, nil)
		for i := range 50 {
			r.callAs(t, pulsedive.APIKey(fmt.Sprintf("tenant-%d", i)), "parkingcrew.net", nil)
		}
		checkKeys(t, r.obs, 0, 0, 0)

		r.call(t, downValue, outage)
		r.call(t, downValue, outage)
		checkStates(t, r.states, pulsedive.BreakerOpen)

		time.Sleep(openFor) // over, but the key is not quiet long enough
		r.callAs(t, other, "parkingcrew.net", nil)
		checkKeys(t, r.obs, 0, 0, 1)

		time.Sleep(openFor) // two open periods without a call from testKey
		r.callAs(t, other, "parkingcrew.net", nil)
		checkKeys(t, r.obs, 0, 0, 0)

		// Forgotten means fresh: one failure does not reopen it.
		r.call(t, downValue, outage)
		r.call(t, "parkingcrew.net", nil)
		checkKeys(t, r.obs, 0, 0, 0)
	})
}
