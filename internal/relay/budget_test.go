package relay

import (
	"fmt"
	"math"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/pulsedive-relay/relay/pulsedive/pulsedivetest"
)

// TestTightBudgetAcceptance is issue 15's acceptance, on a fake clock: with
// Pulsedive enforcing 30 calls a minute per key and the relay at its
// defaults, one request of 10 new domains answers their 10 verdicts within
// 10 s, Active DNS for what the budget allowed, and exactly one "too many
// requests" error; the same request after the retry time gets the rest of
// the Active DNS from Pulsedive and the verdicts from the cache; Pulsedive
// never answers 429.
func TestTightBudgetAcceptance(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const latency = 100 * time.Millisecond // of every Pulsedive answer
		r := startInMemory(t, pulsedivetest.Config{PerMinute: 30, Latency: latency}, nil)
		fake := r.fake
		// The ten synthetic documents below were seen from 3 January to 26
		// March 2020, so that every verdict (valid 91 days from
		// stamp_seen) is current on the mapping's 1 April.
		observe := func() (observed, time.Duration) {
			a := r.observe("a-free-plan-key", domains("new", 10))
			return a, a.took
		}
		calls := func(kind string) int {
			n := 0
			for doc, c := range fake.Stats().ByDocument {
				if doc.Kind == kind {
					n += c
				}
			}
			return n
		}

		// Ten verdicts at once (burst 10), then one token every 3 s (the
		// refill of 30 − 10 a minute): one Active DNS within the 5 s links
		// wait, nine skipped until nine tokens are back at 30 s.
		first, took := observe()
		if first.Data.Verdicts.Count != 10 || first.Data.Judgements.Count != 10 {
			t.Errorf("first request: %d verdicts, %d judgements; want 10 each", first.Data.Verdicts.Count, first.Data.Judgements.Count)
		}
		if want := 3*time.Second + latency; took != want {
			t.Errorf("first request answered after %v, want %v", took, want)
		}
		wantErrors := []map[string]string{{"type": "fatal", "code": "too many requests",
			"message": "Pulsedive rate limit for this API key reached: Active DNS skipped for 9 of 10 observables; retry in 27 s"}}
		if diff := cmp.Diff(wantErrors, first.Errors); diff != "" {
			t.Errorf("first request's errors (-want +got):\n%s", diff)
		}
		if info, links := calls(pulsedivetest.KindInfo), calls(pulsedivetest.KindLinks); info != 10 || links != 1 {
			t.Errorf("first request: %d indicator and %d links calls, want 10 and 1", info, links)
		}

		time.Sleep(27 * time.Second) // as the message says
		fake.Reset()
		second, took := observe()
		if second.Data.Verdicts.Count != 10 || len(second.Errors) != 0 {
			t.Errorf("second request: %d verdicts, errors %v; want 10 and none", second.Data.Verdicts.Count, second.Errors)
		}
		if info, links := calls(pulsedivetest.KindInfo), calls(pulsedivetest.KindLinks); info != 0 || links != 9 {
			t.Errorf("second request: %d indicator and %d links calls, want 0 (cached) and 9 (the rest)", info, links)
		}
		if took != latency {
			t.Errorf("second request answered after %v, want %v", took, latency)
		}
		if n := fake.RateLimited(); n != 0 {
			t.Errorf("Pulsedive answered 429 %d times", n)
		}
	})
}

// TestBudgetByBatch is the README's table of what a 30/min key serves
// ("What a 30/min key serves"), on the bubble's clock: Pulsedive enforcing
// 30 calls a minute per key, 100 ms a call, the relay at its defaults;
// batches of new domains at once, each under a key of its own, each sent
// again once the retry time its answer gave has passed. Two more cases
// show the knobs the README weighs: a longer RELAY_LINKS_MAX_WAIT, a
// smaller PULSEDIVE_BURST. Run with -v for the table's rows.
//
// The 20-domain batch meets an edge: its eighth refill (at 24 s) falls due
// exactly at the limiter's deadline, the request timeout less a second for
// the call. The relay's own work before the first token, however short,
// puts it past on a real clock, and the token is refused; on the fake
// clock that work takes no time, and it is granted. The README's row is the
// real clock's, which RELAY_REQUEST_TIMEOUT=24.999s reproduces here.
//
// Sent again, the 20 domains race: the indicator calls of the verdicts
// refused and the Active DNS calls of the cached ones meet the bucket's
// ten free tokens at once, in whatever order the scheduler picks. When
// the indicator calls come first (most runs), 8 Active DNS come within the
// links wait in 3.1 s; each indicator call that finds the tokens taken
// waits a refill (3 s) and pushes the links wait out by as much, for one
// more Active DNS. Those rows assert that relation, not one order.
func TestBudgetByBatch(t *testing.T) {
	type round struct {
		verdicts, info, links int
		took                  time.Duration
		errors                string
	}
	type row struct {
		domains      int
		first, again round // again: zero when the first gave no retry time
		retry        time.Duration
		// raced: again is the order the indicator calls come first in;
		// others are checked against it (see above).
		raced bool
	}
	const (
		limited = "Pulsedive rate limit for this API key reached"
		ms      = time.Millisecond
	)
	tests := []struct {
		name string
		env  map[string]string
		want []row
	}{
		{"defaults", nil, []row{
			{domains: 1, first: round{1, 1, 1, 200 * ms, ""}},
			{domains: 5, first: round{5, 5, 5, 200 * ms, ""}},
			{domains: 10, retry: 27 * time.Second,
				first: round{10, 10, 1, 3100 * ms, limited + ": Active DNS skipped for 9 of 10 observables; retry in 27 s"},
				again: round{10, 0, 9, 100 * ms, ""}},
		}},
		{"20 domains, the relay's work before its first token (RELAY_REQUEST_TIMEOUT=24.999s)", map[string]string{"RELAY_REQUEST_TIMEOUT": "24.999s"}, []row{
			{domains: 20, retry: 30 * time.Second, raced: true,
				first: round{17, 17, 0, 21100 * ms, limited + "; retry in 30 s"},
				again: round{20, 3, 8, 3100 * ms, limited + ": Active DNS skipped for 12 of 20 observables; retry in 30 s"}},
		}},
		{"20 domains, no time for that work", nil, []row{
			{domains: 20, retry: 30 * time.Second, raced: true,
				first: round{18, 18, 0, 24100 * ms, limited + "; retry in 30 s"},
				again: round{20, 2, 9, 3100 * ms, limited + ": Active DNS skipped for 11 of 20 observables; retry in 30 s"}},
		}},
		{"RELAY_LINKS_MAX_WAIT=12s", map[string]string{"RELAY_LINKS_MAX_WAIT": "12s"}, []row{
			{domains: 10, retry: 18 * time.Second,
				first: round{10, 10, 4, 12100 * ms, limited + ": Active DNS skipped for 6 of 10 observables; retry in 18 s"},
				again: round{10, 0, 6, 100 * ms, ""}},
		}},
		{"PULSEDIVE_BURST=5", map[string]string{"PULSEDIVE_BURST": "5"}, []row{
			{domains: 10, retry: 12 * time.Second,
				first: round{10, 10, 2, 16900 * ms, limited + ": Active DNS skipped for 8 of 10 observables; retry in 12 s"},
				again: round{10, 0, 7, 4900 * ms, limited + ": Active DNS skipped for 1 of 10 observables; retry in 3 s"}},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				r := startInMemory(t, pulsedivetest.Config{PerMinute: 30, Latency: 100 * time.Millisecond}, tt.env)
				send := func(key string, values []string) round {
					a := r.observe(key, values)
					calls := r.calls.take(key)
					// To the millisecond: the limiter's refill times are floats.
					took := a.took.Round(time.Millisecond)
					return round{a.Data.Judgements.Count, count(calls, pulsedivetest.KindInfo), count(calls, pulsedivetest.KindLinks), took, a.errorText()}
				}
				got := make([]row, len(tt.want))
				var wg sync.WaitGroup
				for i, w := range tt.want {
					key := fmt.Sprintf("budget-%d", w.domains)
					values := domains(key, w.domains)
					wg.Go(func() {
						got[i].domains, got[i].raced = w.domains, w.raced
						got[i].first = send(key, values)
						if m := retryIn.FindStringSubmatch(got[i].first.errors); m != nil {
							secs, _ := strconv.Atoi(m[1])
							got[i].retry = time.Duration(secs) * time.Second
							time.Sleep(got[i].retry)
							got[i].again = send(key, values)
						}
					})
				}
				wg.Wait()
				t.Logf("| new domains | verdicts | Active DNS | answer time | error | again after the retry time |")
				for _, g := range got {
					again := "—"
					if g.retry > 0 {
						again = fmt.Sprintf("%d indicator calls, %d Active DNS, %.1f s; %s", g.again.info, g.again.links, g.again.took.Seconds(), orNone(g.again.errors))
					}
					t.Logf("| %d | %d | %d | %.1f s | %s | %s |", g.domains, g.first.verdicts, g.first.links, g.first.took.Seconds(), orNone(g.first.errors), again)
				}
				want := slices.Clone(tt.want)
				for i, w := range want {
					if late := got[i].again.links - w.again.links; w.raced && late > 0 {
						// late indicator calls waited a refill each: as many
						// more Active DNS, 3 s later each, the rest skipped.
						w.again.links += late
						w.again.took += time.Duration(late) * 3 * time.Second
						w.again.errors = fmt.Sprintf("%s: Active DNS skipped for %d of %d observables; retry in ", limited, w.domains-w.again.links, w.domains)
						if g := &got[i].again; strings.HasPrefix(g.errors, w.again.errors) {
							g.errors = w.again.errors // the retry time is the budget's then
						}
						want[i] = w
					}
				}
				if diff := cmp.Diff(want, got, cmp.AllowUnexported(row{}, round{})); diff != "" {
					t.Errorf("rows (-want +got):\n%s", diff)
				}
				if n := r.fake.RateLimited(); n != 0 {
					t.Errorf("Pulsedive answered 429 %d times", n)
				}
			})
		})
	}
}

// retryIn reads the retry time of the relay's own rate-limit message.
var retryIn = regexp.MustCompile(`Pulsedive rate limit for this API key reached.*; retry in ([0-9]+) s`)

func orNone(s string) string {
	if s == "" {
		return "no error"
	}
	return s
}

// TestRateLimitSpendsTheBudget is the README's rate-limit rows, on the
// bubble's clock: Pulsedive enforcing 120 calls a minute per key with a
// burst of 5, the relay budgeting the same (Active DNS waiting as long as
// the request), one key's batch of 20 new domains, then two keys' at once.
// Each gets every judgement, its 40 calls, no 429, at the rate the relay's
// bucket allows (115 a minute after the burst, 0.96 of the budget: a
// burst plus a minute of refill stays within 120), and the two keys do not
// slow each other.
func TestRateLimitSpendsTheBudget(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const perMinute, burst, batch = 120, 5, 20
		r := startInMemory(t, pulsedivetest.Config{PerMinute: perMinute, Burst: burst}, map[string]string{
			"PULSEDIVE_RATE_LIMIT":  strconv.Itoa(perMinute),
			"PULSEDIVE_BURST":       strconv.Itoa(burst),
			"RELAY_REQUEST_TIMEOUT": "60s",
			"RELAY_LINKS_MAX_WAIT":  "60s",
		})
		type run struct {
			judgements, calls int
			took              time.Duration
			share             float64 // the rate after the burst / the budget
		}
		send := func(key string) run {
			a := r.observe(key, domains(key, batch))
			calls := r.calls.take(key)
			got := run{judgements: a.Data.Judgements.Count, calls: len(calls), took: a.took.Round(time.Millisecond)}
			if len(calls) > burst {
				span := calls[len(calls)-1].at.Sub(calls[0].at)
				got.share = float64(len(calls)-burst) / span.Minutes() / perMinute
			}
			t.Logf("%s: %d/%d judgements, %d calls, %.1f s, rate after the burst %.2f of the budget, errors: %s",
				key, got.judgements, batch, got.calls, got.took.Seconds(), got.share, orNone(a.errorText()))
			return got
		}
		// 35 calls after the burst at 115 a minute: 18.26 s.
		want := run{judgements: batch, calls: 2 * batch, took: 18261 * time.Millisecond, share: 115.0 / 120}
		approx := cmp.Comparer(func(a, b float64) bool { return math.Abs(a-b) < 0.005 })
		one := send("ratelimit-one")
		if diff := cmp.Diff(want, one, cmp.AllowUnexported(run{}), approx); diff != "" {
			t.Errorf("one key (-want +got):\n%s", diff)
		}
		var two [2]run
		var wg sync.WaitGroup
		for i := range two {
			wg.Go(func() { two[i] = send(fmt.Sprintf("ratelimit-two-%d", i)) })
		}
		wg.Wait()
		for i, got := range two {
			if diff := cmp.Diff(want, got, cmp.AllowUnexported(run{}), approx); diff != "" {
				t.Errorf("two keys at once, key %d (-want +got):\n%s", i, diff)
			}
		}
		t.Logf("two keys: slower batch / one key's batch %.2f", max(two[0].took, two[1].took).Seconds()/one.took.Seconds())
		if n := r.fake.RateLimited(); n != 0 {
			t.Errorf("Pulsedive answered 429 %d times", n)
		}
	})
}

// TestCollapseSharesCalls is the README's collapse row, on the bubble's
// clock: 20 identical observe requests at once for 10 new domains, every
// Pulsedive call taking 100 ms, cost one call per document (20), the
// other 380 joined in flight, and every answer is whole.
func TestCollapseSharesCalls(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const requests, batch = 20, 10
		r := startInMemory(t, pulsedivetest.Config{Latency: 100 * time.Millisecond}, map[string]string{"PULSEDIVE_RATE_LIMIT": "0"})
		values := domains("collapse", batch)
		answers := make([]observed, requests)
		var wg sync.WaitGroup
		for i := range answers {
			wg.Go(func() { answers[i] = r.observe("collapse", values) })
		}
		wg.Wait()
		complete := 0
		for _, a := range answers {
			if a.Data.Judgements.Count == batch && len(a.Errors) == 0 {
				complete++
			}
		}
		calls := r.fake.Calls()
		joined := r.metric("pulsedive_relay_shared_calls_total", "kind", "info") + r.metric("pulsedive_relay_shared_calls_total", "kind", "links")
		t.Logf("%d requests for %d new domains: %d Pulsedive calls, %.0f joined in flight, %d answers whole", requests, batch, calls, joined, complete)
		if calls != 2*batch || joined != 2*batch*(requests-1) || complete != requests {
			t.Errorf("%d calls, %.0f joined, %d whole answers; want %d, %d, %d", calls, joined, complete, 2*batch, 2*batch*(requests-1), requests)
		}
	})
}
