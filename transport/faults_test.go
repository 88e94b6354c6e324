package transport_test

import (
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/pulsedive-relay/relay/pulsedive"
	"github.com/pulsedive-relay/relay/pulsedive/pulsedivetest"
)

// The batch of the fault tests: two observables the fake fails in the same
// way, with a healthy one between them. Both faulty ones are known to
// Pulsedive and have Active DNS links, so that a links-only fault shows.
var (
	faultyA = observable{"domain", "parkingcrew.net"}
	healthy = observable{"url", "http://51jianli.cn/images"}
	faultyB = observable{"ip", "185.141.25.242"}
)

// faultOutcome says what a faulty observable contributes to the batch answer.
type faultOutcome int

const (
	dataKept  faultOutcome = iota // its whole answer, no error (the fault was survived)
	errorOnly                     // the error, no data
	linksLost                     // its answer without the Active DNS sighting, and the error
)

// TestFaultsInABatch injects every fault the fake knows into the calls of
// two observables of a batch and checks the whole answer: HTTP 200, the
// exact error once, the healthy observable's data intact (partial results),
// and then that the same relay serves the next request normally.
func TestFaultsInABatch(t *testing.T) {
	const (
		apiError    = "The Pulsedive API error."
		invalidJSON = "Pulsedive answered with invalid JSON"
	)
	tests := []struct {
		name            string
		opts            options
		fault           pulsedivetest.Fault // of both faulty observables
		latency, jitter time.Duration       // of every call instead of a fault, healthy ones too
		outcome         faultOutcome
		code, message   string
	}{
		{name: "fixed latency within the deadline", latency: 30 * time.Millisecond, outcome: dataKept},
		{name: "random latency within the deadline", jitter: 60 * time.Millisecond, outcome: dataKept},
		{name: "hang beyond the call timeout", opts: options{callLimit: 400 * time.Millisecond}, fault: pulsedivetest.Fault{Mode: pulsedivetest.ModeHang},
			outcome: errorOnly, code: "service unavailable", message: "Pulsedive is unavailable: timeout"},
		{name: "slow drip beyond the call timeout", opts: options{callLimit: 400 * time.Millisecond},
			fault:   pulsedivetest.Fault{Mode: pulsedivetest.ModeDrip, DripEvery: 20 * time.Millisecond},
			outcome: errorOnly, code: "service unavailable", message: "Pulsedive is unavailable: timeout"},
		{name: "429 with Pulsedive's message", fault: pulsedivetest.Fault{Status: 429}, outcome: errorOnly, code: "too many requests",
			message: "API rate limit exceeded: 30 requests per minute. Requests disabled for 1 minute. Please visit pulsedive.com/api to increase your limit."},
		{name: "401", fault: pulsedivetest.Fault{Status: 401}, outcome: errorOnly, code: "unauthorized", message: "Invalid API key."},
		{name: "403", fault: pulsedivetest.Fault{Status: 403}, outcome: errorOnly, code: "forbidden", message: "Access denied for this API key."},
		{name: "500", fault: pulsedivetest.Fault{Status: 500}, outcome: errorOnly, code: "internal server error",
			message: "An unexpected error occurred. Please try again later."},
		{name: "502 proxy page", fault: pulsedivetest.Fault{Status: 502}, outcome: errorOnly, code: "bad gateway", message: apiError},
		{name: "503 proxy page", fault: pulsedivetest.Fault{Status: 503}, outcome: errorOnly, code: "service unavailable", message: apiError},
		{name: "503 twice, then recovers within the retries", fault: pulsedivetest.Fault{Status: 503, FirstN: 2}, outcome: dataKept},
		{name: "503 flapping", fault: pulsedivetest.Fault{Status: 503, Every: 2}, outcome: dataKept},
		{name: "reset once, then recovers", fault: pulsedivetest.Fault{Mode: pulsedivetest.ModeReset, FirstN: 1}, outcome: dataKept},
		{name: "reset mid-body", fault: pulsedivetest.Fault{Mode: pulsedivetest.ModeReset}, outcome: errorOnly,
			code: "service unavailable", message: "Pulsedive is unavailable: connection reset"},
		{name: "disconnect mid-body", fault: pulsedivetest.Fault{Mode: pulsedivetest.ModeDisconnect}, outcome: errorOnly,
			code: "service unavailable", message: "Pulsedive is unavailable: connection reset"},
		{name: "truncated", fault: pulsedivetest.Fault{Mode: pulsedivetest.ModeTruncate}, outcome: errorOnly, code: "unknown", message: invalidJSON},
		{name: "not JSON", fault: pulsedivetest.Fault{Mode: pulsedivetest.ModeNotJSON}, outcome: errorOnly, code: "unknown", message: invalidJSON},
		{name: "200 with only an error field", fault: pulsedivetest.Fault{Mode: pulsedivetest.ModeErrorField, Message: "Something broke."},
			outcome: errorOnly, code: "unknown", message: "Something broke."},
		{name: "huge body", opts: options{maxDoc: 64 << 10}, fault: pulsedivetest.Fault{Mode: pulsedivetest.ModeHuge, Size: 1 << 20},
			outcome: errorOnly, code: "unknown", message: "Pulsedive answered with a document over the size limit"},
		{name: "links 503", fault: pulsedivetest.Fault{Kind: pulsedivetest.KindLinks, Status: 503}, outcome: linksLost,
			code: "service unavailable", message: apiError},
		{name: "links truncated", fault: pulsedivetest.Fault{Kind: pulsedivetest.KindLinks, Mode: pulsedivetest.ModeTruncate}, outcome: linksLost,
			code: "unknown", message: invalidJSON},
		{name: "links hang", opts: options{callLimit: 400 * time.Millisecond}, fault: pulsedivetest.Fault{Kind: pulsedivetest.KindLinks, Mode: pulsedivetest.ModeHang},
			outcome: linksLost, code: "service unavailable", message: "Pulsedive is unavailable: timeout"},
		{name: "redirect", fault: pulsedivetest.Fault{Status: 302, Header: http.Header{"Location": {"http://elsewhere.example/"}}},
			outcome: errorOnly, code: "unknown", message: "Pulsedive answered with a redirect"},
		{name: "404 web page", fault: pulsedivetest.Fault{Status: 404, Body: []byte("<html>Not Found</html>")},
			outcome: errorOnly, code: "unknown", message: "Pulsedive answered unexpectedly (HTTP 404); check PULSEDIVE_API_URL"},
		{name: "links 404 web page", fault: pulsedivetest.Fault{Kind: pulsedivetest.KindLinks, Status: 404, Body: []byte("<html>Not Found</html>")},
			outcome: linksLost, code: "unknown", message: "Pulsedive answered unexpectedly (HTTP 404); check PULSEDIVE_API_URL"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, tt.opts)
			h.fake.SetLatency(tt.latency, tt.jitter)
			if tt.latency == 0 && tt.jitter == 0 {
				h.fake.SetFault(faultyA.Value, tt.fault)
				h.fake.SetFault(faultyB.Value, tt.fault)
			}

			status, got := h.post("/observe/observables", bearer(h.freshToken()), []observable{faultyA, healthy, faultyB})
			if status != http.StatusOK {
				t.Errorf("HTTP status %d, want 200", status)
			}
			faulty := func(o observable) map[string]any {
				switch tt.outcome {
				case errorOnly:
					return errorAnswer(tt.code, tt.message)
				case linksLost:
					a := withoutActiveDNS(t, golden(t, o))
					a["errors"] = errorAnswer(tt.code, tt.message)["errors"]
					return a
				}
				return golden(t, o)
			}
			want := concatenate(t, "observe", []map[string]any{faulty(faultyA), golden(t, healthy), faulty(faultyB)})
			compareGolden(t, want, got)

			// The relay still serves: nothing of the fault lingers (no
			// cached error, no stuck connection or call).
			h.fake.ClearFaults()
			h.fake.SetLatency(0, 0)
			status, got = h.post("/observe/observables", bearer(h.freshToken()), []observable{faultyA, faultyB})
			if status != http.StatusOK {
				t.Errorf("after the fault: HTTP status %d, want 200", status)
			}
			compareGolden(t, concatenate(t, "observe", []map[string]any{golden(t, faultyA), golden(t, faultyB)}), got)
		})
	}
}

// TestStaleIfError fetches an observable with the cache on, lets its
// entries expire on a clock the test controls, makes Pulsedive fail, and
// checks what the next request answers: the expired documents without an
// error while they are within CACHE_STALE_TTL and the failure is
// Pulsedive's, the error otherwise.
func TestStaleIfError(t *testing.T) {
	const (
		cacheTTL = time.Hour      // the pipeline's default CACHE_TTL
		staleTTL = 24 * time.Hour // and CACHE_STALE_TTL
	)
	other := observable{"ip", "110.174.93.63"}
	tests := []struct {
		name  string
		opts  options
		after time.Duration // clock advance after the first request
		// fail makes Pulsedive fail; it may send requests of its own, with
		// the test's token tok.
		fail          func(t *testing.T, h *harness, tok string)
		wantCalls     bool   // whether the second request reaches the fake
		code, message string // the error; none when the stale answer stands
	}{
		{name: "503", after: cacheTTL + time.Minute, wantCalls: true,
			fail: func(t *testing.T, h *harness, tok string) {
				h.fake.SetFault(pulsedivetest.AnyValue, pulsedivetest.Fault{Status: 503})
			}},
		{name: "hang", opts: options{callLimit: 300 * time.Millisecond}, after: cacheTTL + time.Minute, wantCalls: true,
			fail: func(t *testing.T, h *harness, tok string) {
				h.fake.SetFault(pulsedivetest.AnyValue, pulsedivetest.Fault{Mode: pulsedivetest.ModeHang})
			}},
		{name: "breaker open", opts: options{breaker: pulsedive.BreakerConfig{Failures: 1, OpenFor: time.Hour}}, after: cacheTTL + time.Minute,
			fail: func(t *testing.T, h *harness, tok string) {
				h.fake.SetFault(pulsedivetest.AnyValue, pulsedivetest.Fault{Status: 503})
				// Breakers are per API key: trip this key's.
				_, got := h.post("/observe/observables", tok, []observable{other})
				// The first 503 opens the breaker; its retry is refused.
				wantSingleError(t, got, "service unavailable", "Pulsedive is unavailable: circuit breaker open")
				// Pulsedive is back, but the open breaker must not ask it.
				h.fake.ClearFaults()
			}},
		{name: "401 is not served stale", after: cacheTTL + time.Minute, wantCalls: true,
			fail: func(t *testing.T, h *harness, tok string) {
				h.fake.SetFault(pulsedivetest.AnyValue, pulsedivetest.Fault{Status: 401})
			},
			code: "unauthorized", message: "Invalid API key."},
		{name: "past the stale window", after: cacheTTL + staleTTL + time.Minute, wantCalls: true,
			fail: func(t *testing.T, h *harness, tok string) {
				h.fake.SetFault(pulsedivetest.AnyValue, pulsedivetest.Fault{Status: 503})
			},
			code: "service unavailable", message: "The Pulsedive API error."},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clock := &testClock{now: fixedNow}
			lookups := &cacheLookups{}
			tt.opts.cache, tt.opts.clock, tt.opts.pipeObs = true, clock.Now, lookups
			h := newHarness(t, tt.opts)
			tok := bearer(h.token("stale-key", nil))
			want := golden(t, faultyA)

			_, got := h.post("/observe/observables", tok, []observable{faultyA})
			compareGolden(t, want, got)
			h.cache.Wait() // the documents are in the cache

			clock.Advance(tt.after)
			tt.fail(t, h, tok)
			before := h.fake.Stats().ByDocument
			lookups.reset()

			status, got := h.post("/observe/observables", tok, []observable{faultyA})
			if status != http.StatusOK {
				t.Errorf("HTTP status %d, want 200", status)
			}
			if tt.code != "" {
				wantSingleError(t, got, tt.code, tt.message)
				return
			}
			compareGolden(t, want, got)
			if diff := cmp.Diff(map[string]int{"info/stale": 1, "links/stale": 1}, lookups.counts()); diff != "" {
				t.Errorf("cache lookups (-want +got):\n%s", diff)
			}
			if n := h.cache.Stats().StaleHits; n < 2 {
				t.Errorf("cache stale hits = %d, want at least 2", n)
			}
			after := h.fake.Stats().ByDocument
			for _, kind := range []string{pulsedivetest.KindInfo, pulsedivetest.KindLinks} {
				doc := pulsedivetest.Document{Kind: kind, Value: faultyA.Value}
				if called := after[doc] > before[doc]; called != tt.wantCalls {
					t.Errorf("%s call made: %v, want %v", kind, called, tt.wantCalls)
				}
			}
		})
	}
}

// golden is the expected observe answer of one observable alone.
func golden(t *testing.T, o observable) map[string]any {
	t.Helper()
	want, ok := expectedFile(t, "observe", o.Value)
	if !ok {
		t.Fatalf("no expected observe answer for %s", o.Value)
	}
	return want
}

func errorAnswer(code, message string) map[string]any {
	return map[string]any{"errors": []any{map[string]any{"type": "fatal", "code": code, "message": message}}}
}

// withoutActiveDNS removes the Active DNS sighting from an expected answer:
// what is left when the links call fails. It is the last sighting and no
// relationship points at it.
func withoutActiveDNS(t *testing.T, answer map[string]any) map[string]any {
	t.Helper()
	data := answer["data"].(map[string]any)
	group := data["sightings"].(map[string]any)
	docs := group["docs"].([]any)
	kept := docs[:0:0]
	for _, d := range docs {
		if d.(map[string]any)["description"] != "Active DNS" {
			kept = append(kept, d)
		}
	}
	if len(kept) != len(docs)-1 {
		t.Fatalf("expected answer holds %d Active DNS sightings, want 1", len(docs)-len(kept))
	}
	group["docs"], group["count"] = kept, float64(len(kept))
	return answer
}

// testClock is a clock the test moves by hand.
type testClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *testClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *testClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// cacheLookups is a pipeline.Observer counting cache lookups by
// kind/result.
type cacheLookups struct {
	mu sync.Mutex
	n  map[string]int
}

func (c *cacheLookups) CacheLookup(kind, result string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.n == nil {
		c.n = map[string]int{}
	}
	c.n[kind+"/"+result]++
}

func (c *cacheLookups) Observable(string)     {}
func (c *cacheLookups) SharedCall(string)     {}
func (c *cacheLookups) PanicRecovered(string) {}

func (c *cacheLookups) reset() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.n = nil
}

// counts returns the stale lookups only: hits and misses depend on the
// order the pipeline takes, stale answers on the fault.
func (c *cacheLookups) counts() map[string]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := map[string]int{}
	for k, v := range c.n {
		if strings.HasSuffix(k, "/stale") {
			out[k] = v
		}
	}
	return out
}
