package pulsedive_test

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/pulsedive-relay/relay/pulsedive"
	"github.com/pulsedive-relay/relay/pulsedive/pulsedivetest"
)

// gate tells the test when the fake receives chosen calls and, when it
// holds them, keeps them at the fake until the test lets them go: the
// test then knows exactly which calls are in flight, without sleeping.
type gate struct {
	match   func(pulsedivetest.Request) bool
	hold    bool
	arrived chan string // the value of each matching call, as it arrives
	release chan struct{}
	once    sync.Once
}

// newGate returns a gate for the calls match selects; hold keeps them at
// the fake until release.
func newGate(match func(pulsedivetest.Request) bool, hold bool) *gate {
	return &gate{match: match, hold: hold, arrived: make(chan string, 256), release: make(chan struct{})}
}

// onCall is the fake's Config.OnCall.
func (g *gate) onCall(r pulsedivetest.Request) {
	if !g.match(r) {
		return
	}
	g.arrived <- r.Value
	if g.hold {
		<-g.release
	}
}

// start lets every held call go when the test ends, before the fake's
// server is closed (which waits for its calls): call it after the fake is
// made.
func (g *gate) start(t *testing.T) {
	t.Helper()
	t.Cleanup(g.openAll)
}

// releaseOne lets one held call go.
func (g *gate) releaseOne() { g.release <- struct{}{} }

// openAll lets every held call go, now and later.
func (g *gate) openAll() { g.once.Do(func() { close(g.release) }) }

// tinyEntries are indicators with one-line documents: a held call's
// answer then leaves the fake only when its handler has returned, so the
// fake's in-flight count is exact.
func tinyEntries(values []string) map[string]pulsedivetest.Entry {
	m := make(map[string]pulsedivetest.Entry, len(values))
	for _, v := range values {
		m[v] = pulsedivetest.Entry{Info: pulsedivetest.Answer{Body: json.RawMessage(`{"iid":1}`)}}
	}
	return m
}

// TestMaxInFlight holds Pulsedive's calls at the fake and lets them go one
// at a time while many callers, on two keys, wait: the fake never serves
// more than MaxInFlight at once, and every caller is served in the end.
func TestMaxInFlight(t *testing.T) {
	tests := []struct{ max, callers int }{
		{max: 1, callers: 6},
		{max: 3, callers: 12},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("max %d, %d callers", tt.max, tt.callers), func(t *testing.T) {
			values := make([]string, tt.callers)
			for i := range values {
				values[i] = fmt.Sprintf("v%d.example", i)
			}
			g := newGate(func(r pulsedivetest.Request) bool { return r.Kind == pulsedivetest.KindInfo }, true)
			srv := newFake(t, pulsedivetest.Config{Indicators: tinyEntries(values), OnCall: g.onCall})
			g.start(t)
			obs := &recObserver{}
			c := newClient(t, srv.URL(), func(cfg *pulsedive.Config) {
				cfg.MaxInFlight = tt.max
				cfg.Observer = obs
			})

			errs := make(chan error, tt.callers)
			for i, v := range values {
				key := testKey
				if i%2 == 1 {
					key = pulsedive.APIKey("another key")
				}
				go func() {
					_, err := c.Indicator(context.Background(), key, v)
					errs <- err
				}()
			}
			// Keep the fake full: each call let go frees one slot, which
			// exactly one waiting caller takes.
			for range tt.max {
				<-g.arrived
			}
			for i := range tt.callers {
				g.releaseOne()
				if i+tt.max < tt.callers {
					<-g.arrived
				}
			}
			for range tt.callers {
				if err := <-errs; err != nil {
					t.Errorf("Indicator: %v", err)
				}
			}
			if got := srv.MaxInFlight(); got != tt.max {
				t.Errorf("most calls at the fake at once = %d, want %d", got, tt.max)
			}
			if got := srv.Calls(); got != tt.callers {
				t.Errorf("calls = %d, want %d", got, tt.callers)
			}
			obs.mu.Lock()
			defer obs.mu.Unlock()
			if obs.maxIn > tt.max || obs.inFlight != 0 {
				t.Errorf("observed in flight: max %d, now %d; want at most %d, now 0", obs.maxIn, obs.inFlight, tt.max)
			}
		})
	}
}

// TestMaxInFlightDeadline: a call that waits for a slot until its
// request's deadline passes fails as the deadline, never reaches
// Pulsedive, and is no outage to the breaker.
func TestMaxInFlightDeadline(t *testing.T) {
	const held, excess = "held.example", "excess.example"
	g := newGate(func(r pulsedivetest.Request) bool { return r.Value == held }, true)
	srv := newFake(t, pulsedivetest.Config{Indicators: tinyEntries([]string{held, excess}), OnCall: g.onCall})
	g.start(t)
	states := &stateLog{}
	c := newClient(t, srv.URL(), func(cfg *pulsedive.Config) {
		cfg.MaxInFlight = 1
		cfg.Breaker = pulsedive.BreakerConfig{Failures: 1, OnStateChange: states.record}
	})

	done := make(chan error, 1)
	go func() {
		_, err := c.Indicator(context.Background(), testKey, held)
		done <- err
	}()
	<-g.arrived // the only slot is taken

	for _, name := range []string{"first", "second"} {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
		_, err := c.Indicator(ctx, testKey, excess)
		cancel()
		checkErr(t, err, unavailable(pulsedive.CauseDeadline, "request deadline exceeded"))
		if n := srv.CallsFor(pulsedivetest.KindInfo, excess); n != 0 {
			t.Errorf("%s excess call reached Pulsedive (%d calls)", name, n)
		}
	}
	checkStates(t, states)

	g.openAll()
	if err := <-done; err != nil {
		t.Errorf("held call: %v", err)
	}
	// The slot came back.
	if _, err := c.Indicator(context.Background(), testKey, excess); err != nil {
		t.Errorf("after the held call: %v", err)
	}
}

// TestMaxInFlightSlotsComeBack ends calls in every way a call can end and
// then fills every slot: none was kept by a call that failed. It runs in a
// synctest bubble, where the retries' backoff costs no time.
func TestMaxInFlightSlotsComeBack(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const slots = 2
		lim := &recLimiter{}
		g := newGate(func(r pulsedivetest.Request) bool { return r.Value == "parkingcrew.net" || r.Value == "185.141.25.242" }, true)
		fk := newBubbleFake(t, pulsedivetest.Config{OnCall: g.onCall})
		g.start(t)
		c := newBubbleClient(t, fk, func(cfg *pulsedive.Config) {
			cfg.MaxInFlight = slots
			cfg.Limiter = lim
			cfg.MaxBodyBytes = 16 << 10
		})
		ctx := context.Background()
		ends := []struct {
			name  string
			fault *pulsedivetest.Fault
			ctx   func() (context.Context, context.CancelFunc)
			limit error
			want  error
		}{
			{name: "503 and its retries", fault: &pulsedivetest.Fault{Status: 503}, want: &pulsedive.StatusError{StatusCode: 503}},
			{name: "request deadline", fault: &pulsedivetest.Fault{Mode: pulsedivetest.ModeHang}, ctx: func() (context.Context, context.CancelFunc) {
				return context.WithTimeout(ctx, 30*time.Millisecond)
			}, want: unavailable(pulsedive.CauseDeadline, "request deadline exceeded")},
			{name: "reset", fault: &pulsedivetest.Fault{Mode: pulsedivetest.ModeReset}, want: unavailable(pulsedive.CauseReset, "connection reset")},
			{name: "huge", fault: &pulsedivetest.Fault{Mode: pulsedivetest.ModeHuge, Size: 64 << 10}, want: pulsedive.ErrTooLarge},
			{name: "not JSON", fault: &pulsedivetest.Fault{Mode: pulsedivetest.ModeNotJSON}, want: pulsedive.ErrInvalidJSON},
			{name: "not found", want: pulsedive.ErrNotFound},
			{name: "local rate limit", limit: retryAfterError{time.Second}, want: &pulsedive.RateLimitError{RetryAfter: time.Second}},
			{name: "cancelled", ctx: func() (context.Context, context.CancelFunc) {
				ctx, cancel := context.WithCancel(ctx)
				cancel()
				return ctx, cancel
			}, want: unavailable(pulsedive.CauseCancelled, "request cancelled")},
		}
		for _, e := range ends {
			// No subtests in a bubble: the log names the case of a failure.
			t.Logf("ending calls with: %s", e.name)
			func() {
				fk.ClearFaults()
				if e.fault != nil {
					fk.SetFault(pulsedivetest.AnyValue, *e.fault)
				}
				lim.setRefuse(e.limit)
				defer lim.setRefuse(nil)
				callCtx, cancel := ctx, context.CancelFunc(func() {})
				if e.ctx != nil {
					callCtx, cancel = e.ctx()
				}
				defer cancel()
				var wg sync.WaitGroup
				for i := range 2 * slots {
					wg.Go(func() {
						_, err := c.Indicator(callCtx, testKey, fmt.Sprintf("end-%d.example", i))
						checkErr(t, err, e.want)
					})
				}
				wg.Wait()
			}()
		}
		fk.ClearFaults()

		// Every slot is free: as many calls as slots reach the fake together.
		// (Were one kept, the last call would wait for it until its generous
		// deadline and fail, instead of hanging the test.)
		waitCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		errs := make(chan error, slots)
		for _, v := range []string{"parkingcrew.net", "185.141.25.242"}[:slots] {
			go func() {
				_, err := c.Indicator(waitCtx, testKey, v)
				errs <- err
			}()
		}
		arrived := 0
		for arrived < slots {
			select {
			case <-g.arrived:
				arrived++
			case err := <-errs:
				t.Fatalf("a call ended before every slot was taken (a slot was kept): %v", err)
			}
		}
		g.openAll()
		for range slots {
			if err := <-errs; err != nil {
				t.Errorf("Indicator: %v", err)
			}
		}
	})
}

// TestMaxInFlightPerKey: one key holds at most its share of the
// process-wide slots. A tenant that fills its share with slow calls leaves
// the other slots free, and another key's call gets one at once; the
// greedy key's excess calls wait, without holding a process-wide slot,
// and are served in the end. It runs in a synctest bubble: "at once" means
// before any time passes.
func TestMaxInFlightPerKey(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const total, perKey, greedyCalls = 4, 2, 6
		greedy, modest := testKey, pulsedive.APIKey("modest tenant")
		var values []string
		for i := range greedyCalls + 3 {
			values = append(values, fmt.Sprintf("slow-%d.example", i))
		}
		g := newGate(func(pulsedivetest.Request) bool { return true }, true)
		fk := newBubbleFake(t, pulsedivetest.Config{Indicators: tinyEntries(values), OnCall: g.onCall})
		g.start(t)
		c := newBubbleClient(t, fk, func(cfg *pulsedive.Config) {
			cfg.MaxInFlight = total
			cfg.MaxInFlightPerKey = perKey
		})
		errs := make(chan error, len(values))
		call := func(key pulsedive.APIKey, value string) {
			go func() {
				_, err := c.Indicator(context.Background(), key, value)
				errs <- err
			}()
		}
		inFlight := func(want int, when string) {
			t.Helper()
			synctest.Wait() // every call is at the fake or waiting for a slot
			if got := fk.Stats().InFlight; got != want {
				t.Errorf("%s: %d calls at Pulsedive, want %d", when, got, want)
			}
		}
		start := time.Now()

		for _, v := range values[:greedyCalls] {
			call(greedy, v)
		}
		inFlight(perKey, "the greedy key's calls")

		call(modest, values[greedyCalls])
		inFlight(perKey+1, "another key's first call")
		call(modest, values[greedyCalls+1])
		inFlight(perKey+2, "another key's second call")
		call(modest, values[greedyCalls+2]) // over its share: waits
		inFlight(perKey+2, "another key's third call")
		if waited := time.Since(start); waited != 0 {
			t.Errorf("the other key waited %v for its slots, want none", waited)
		}

		g.openAll()
		for range values {
			if err := <-errs; err != nil {
				t.Errorf("Indicator: %v", err)
			}
		}
		if got := fk.MaxInFlight(); got != total {
			t.Errorf("most calls at Pulsedive at once = %d, want %d", got, total)
		}
	})
}

// TestMaxInFlightPerKeyDeadline: a call that waits for its key's share
// until its deadline fails as the deadline and never reaches Pulsedive.
func TestMaxInFlightPerKeyDeadline(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const held, excess = "held.example", "excess.example"
		g := newGate(func(r pulsedivetest.Request) bool { return r.Value == held }, true)
		fk := newBubbleFake(t, pulsedivetest.Config{Indicators: tinyEntries([]string{held, excess}), OnCall: g.onCall})
		g.start(t)
		c := newBubbleClient(t, fk, func(cfg *pulsedive.Config) {
			cfg.MaxInFlight = 8
			cfg.MaxInFlightPerKey = 1
		})
		done := make(chan error, 1)
		go func() {
			_, err := c.Indicator(context.Background(), testKey, held)
			done <- err
		}()
		<-g.arrived

		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_, err := c.Indicator(ctx, testKey, excess)
		checkErr(t, err, unavailable(pulsedive.CauseDeadline, "request deadline exceeded"))
		if n := fk.CallsFor(pulsedivetest.KindInfo, excess); n != 0 {
			t.Errorf("the excess call reached Pulsedive (%d calls)", n)
		}
		// Another key is not held up by it.
		if _, err := c.Indicator(context.Background(), "another key", excess); err != nil {
			t.Errorf("another key: %v", err)
		}
		g.openAll()
		if err := <-done; err != nil {
			t.Errorf("held call: %v", err)
		}
	})
}
