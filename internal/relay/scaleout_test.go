package relay

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pulsedive-relay/relay/cluster/redistest"
	"github.com/pulsedive-relay/relay/pulsedive/pulsedivetest"
)

// The scale-out figures: Pulsedive (the fake) enforces scaleRate calls a
// minute per key, and the three relays budget the same across them, with
// burst scaleBurst. 300/min keeps each batch to about ten seconds.
//
// The fake's bucket holds one token more than the relays' burst. The
// relays' bucket refills at 295/min, one token every 203 ms where the
// fake's comes every 200 ms: the first call after the burst has 3 ms to
// spare, and the calls of three processes reach the fake with more jitter
// than that. One token (200 ms) absorbs the jitter; a relay overspending
// by a burst, or by a replica's budget, still meets 429s within seconds.
const (
	scaleRate     = 300
	scaleBurst    = 5
	scaleReplicas = 3
	scaleBatch    = 30 // observables per batch, split over the replicas
)

// callClock notes when each key's info and links calls reached the fake.
type callClock struct {
	mu    sync.Mutex
	times map[string][]time.Time // by key fingerprint
	// watch, when set, is told each call's key fingerprint.
	watch func(fp string)
}

func (c *callClock) record(r pulsedivetest.Request) {
	if r.Kind != pulsedivetest.KindInfo && r.Kind != pulsedivetest.KindLinks {
		return
	}
	fp := pulsedivetest.KeyFingerprint(r.Key)
	c.mu.Lock()
	c.times[fp] = append(c.times[fp], time.Now())
	watch := c.watch
	c.mu.Unlock()
	if watch != nil {
		watch(fp)
	}
}

func (c *callClock) setWatch(f func(fp string)) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.watch = f
}

// timeline lists the times of key's calls from the first, for a failure
// report.
func (c *callClock) timeline(key string) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	ts := c.times[pulsedivetest.KeyFingerprint(key)]
	var b strings.Builder
	for _, t := range ts {
		fmt.Fprintf(&b, "%.3f ", t.Sub(ts[0]).Seconds())
	}
	return b.String()
}

// rate returns the calls made with key and their rate per minute after the
// burst: (calls − burst) over the time from the first to the last.
func (c *callClock) rate(key string) (int, float64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	ts := c.times[pulsedivetest.KeyFingerprint(key)]
	if len(ts) < scaleBurst+2 {
		return len(ts), 0
	}
	first, last := ts[0], ts[0]
	for _, t := range ts {
		if t.Before(first) {
			first = t
		}
		if t.After(last) {
			last = t
		}
	}
	return len(ts), float64(len(ts)-scaleBurst) / last.Sub(first).Minutes()
}

// startRedis runs a redis-server of the test's own on loopback, killed when
// the test ends. .ci/redis-check.sh makes sure the Redis tests ran in CI.
func startRedis(t *testing.T) *redistest.Server {
	t.Helper()
	srv, err := redistest.Start(t.TempDir())
	if errors.Is(err, redistest.ErrNoServer) {
		t.Skip("redis-server is not on PATH: apt-get install redis-server to run the scale-out test; CI installs it and checks it ran")
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	return srv
}

// batchAnswer is what one relay answered for its share of a batch.
type batchAnswer struct {
	status int
	found  int // judgements: observables Pulsedive knows
	errors []string
	err    error
}

// observeAt posts an observe request for values (domains) under apiKey to
// relay r and counts the judgements: one per observable Pulsedive knows
// (the synthetic documents date from 2020, so under the real clock their
// verdicts have expired and are left out, CONTRACT.md section 4b).
func observeAt(t *testing.T, c *http.Client, r *process, apiKey string, values []string) batchAnswer {
	var pairs []string
	for _, v := range values {
		pairs = append(pairs, "domain", v)
	}
	got, err := trySend(c, r.URL(), request{method: http.MethodPost, path: "/observe/observables", auth: "Bearer " + r.token(t, apiKey), body: observables(t, pairs...)})
	if err != nil {
		return batchAnswer{err: err}
	}
	var doc struct {
		Data struct {
			Judgements struct {
				Count int `json:"count"`
			} `json:"judgements"`
		} `json:"data"`
		Errors []struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"errors"`
	}
	a := batchAnswer{status: got.status}
	if err := json.Unmarshal(got.body, &doc); err != nil {
		a.err = fmt.Errorf("answer is not JSON: %v: %s", err, got.body)
		return a
	}
	a.found = doc.Data.Judgements.Count
	for _, e := range doc.Errors {
		a.errors = append(a.errors, e.Code+": "+e.Message)
	}
	return a
}

// sendBatch splits scaleBatch new values over the relays, one request each,
// all at once, and checks every answer: HTTP 200, a verdict per value, no
// error.
func sendBatch(t *testing.T, c *http.Client, relays []*process, apiKey, prefix string) {
	t.Helper()
	per := scaleBatch / len(relays)
	answers := make([]batchAnswer, len(relays))
	var wg sync.WaitGroup
	for i, r := range relays {
		var values []string
		for j := range per {
			values = append(values, fmt.Sprintf("%s-%d-%d.example", prefix, i, j))
		}
		wg.Go(func() { answers[i] = observeAt(t, c, r, apiKey, values) })
	}
	wg.Wait()
	for i, a := range answers {
		if a.err != nil || a.status != http.StatusOK || a.found != per || len(a.errors) > 0 {
			t.Errorf("replica %d: status %d, %d judgements of %d, errors %v, %v", i, a.status, a.found, per, a.errors, a.err)
		}
	}
}

// clusterState reads pulsedive_relay_cluster_state from a relay's /metrics.
func clusterState(t *testing.T, c *http.Client, r *process) float64 {
	t.Helper()
	return scrapeMetrics(t, c, r.URL()+"/metrics").value("pulsedive_relay_cluster_state")
}

// TestScaleOut is the acceptance test of running several replicas (issue
// "scale out"): three relay processes share one Redis and one fake
// Pulsedive that enforces scaleRate calls a minute per key.
//   - A batch split over the three never makes Pulsedive answer 429 and
//     spends at least 0.9 of the budget.
//   - An observable looked up through one replica is answered by the
//     others without a Pulsedive call.
//   - Twenty concurrent identical requests spread over the three cost one
//     call per document.
//   - Redis killed in the middle of a batch: no 5xx, no lost answer, no
//     429, the combined rate within the budget, and the relays back in
//     shared mode after Redis restarts.
func TestScaleOut(t *testing.T) {
	if testing.Short() {
		t.Skip("runs for about half a minute")
	}
	redis := startRedis(t)
	calls := &callClock{times: map[string][]time.Time{}}
	fake := startFake(t, pulsedivetest.Config{Synthetic: true, PerMinute: scaleRate, Burst: scaleBurst + 1, Latency: 20 * time.Millisecond, OnCall: calls.record})
	env := relayEnv(fake.URL(), map[string]string{
		"REDIS_URL":             redis.URL(),
		"REDIS_TIMEOUT":         "2s", // a loaded CI machine must not look like a Redis outage
		"RELAY_REPLICAS":        strconv.Itoa(scaleReplicas),
		"PULSEDIVE_RATE_LIMIT":  strconv.Itoa(scaleRate),
		"PULSEDIVE_BURST":       strconv.Itoa(scaleBurst),
		"RELAY_REQUEST_TIMEOUT": "50s", // within the test client's minute
		// The test environment's 25s is shorter than the request timeout,
		// which the relay refuses.
		"RELAY_SHUTDOWN_TIMEOUT": "50s",
		// Measure how fully the replicas spend the budget: Active DNS may
		// wait for it as long as the request may.
		"RELAY_LINKS_MAX_WAIT": "50s",
		"LOG_LEVEL":            "info",
	})
	var relays []*process
	for range scaleReplicas {
		relays = append(relays, startProcess(t, env))
	}
	c := newClient(t)
	for i, r := range relays {
		if s := clusterState(t, c, r); s != 1 {
			t.Fatalf("replica %d: cluster_state %v at start, want 1 (shared)\nlogs:\n%s", i, s, r.logs)
		}
	}

	t.Run("one budget", func(t *testing.T) {
		const key = "scaleout-budget-key"
		sendBatch(t, c, relays, key, "budget")
		n, rate := calls.rate(key)
		if n != 2*scaleBatch {
			t.Errorf("Pulsedive calls = %d, want %d (info and links of each value)", n, 2*scaleBatch)
		}
		if got := fake.RateLimited(); got != 0 {
			t.Errorf("Pulsedive answered %d × 429, want none", got)
		}
		if rate < 0.9*scaleRate || rate > scaleRate {
			t.Errorf("rate after the burst %.1f/min, want between 0.9 × %d and %d", rate, scaleRate, scaleRate)
		}
		t.Logf("%d calls, %.1f/min after the burst (budget %d/min)", n, rate, scaleRate)
	})

	t.Run("one cache", func(t *testing.T) {
		const key = "scaleout-cache-key"
		const value = "parkingcrew.net" // a fixture
		first := observeAt(t, c, relays[0], key, []string{value})
		if first.found != 1 || len(first.errors) > 0 {
			t.Fatalf("through replica A: %+v", first)
		}
		before := fake.Calls()
		for i, r := range relays[1:] {
			a := observeAt(t, c, r, key, []string{value})
			if a.status != http.StatusOK || a.found != 1 || len(a.errors) > 0 {
				t.Errorf("replica %c: %+v", 'B'+i, a)
			}
		}
		if got := fake.Calls() - before; got != 0 {
			t.Errorf("replicas B and C made %d Pulsedive calls for what A looked up, want 0", got)
		}
	})

	t.Run("one call per document", func(t *testing.T) {
		const key = "scaleout-collapse-key"
		fake.SetLatency(200*time.Millisecond, 0) // the calls overlap
		defer fake.SetLatency(20*time.Millisecond, 0)
		values := []string{"collapse-1.example", "collapse-2.example"}
		before := fake.Stats()
		var wg sync.WaitGroup
		answers := make([]batchAnswer, 20)
		for i := range answers {
			wg.Go(func() { answers[i] = observeAt(t, c, relays[i%len(relays)], key, values) })
		}
		wg.Wait()
		for i, a := range answers {
			if a.status != http.StatusOK || a.found != len(values) || len(a.errors) > 0 {
				t.Errorf("request %d: %+v", i, a)
			}
		}
		after := fake.Stats()
		for _, v := range values {
			for _, kind := range []string{pulsedivetest.KindInfo, pulsedivetest.KindLinks} {
				d := pulsedivetest.Document{Kind: kind, Value: v}
				if got := after.ByDocument[d] - before.ByDocument[d]; got != 1 {
					t.Errorf("%s %s: %d Pulsedive calls, want 1", kind, v, got)
				}
			}
		}
	})

	t.Run("Redis killed mid-run", func(t *testing.T) {
		const key = "scaleout-fallback-key"
		fp := pulsedivetest.KeyFingerprint(key)
		third := make(chan struct{})
		var once sync.Once
		var seen atomic.Int64
		calls.setWatch(func(got string) {
			if got == fp && seen.Add(1) >= 2*scaleBatch/3 {
				once.Do(func() { close(third) })
			}
		})
		defer calls.setWatch(nil)

		done := make(chan struct{})
		go func() {
			defer close(done)
			sendBatch(t, c, relays, key, "fallback")
		}()
		<-third
		redis.Kill()
		for i, r := range relays {
			eventually(t, 30*time.Second, fmt.Sprintf("replica %d in fallback mode", i), func() (bool, error) {
				s := clusterState(t, c, r)
				return s == 2, fmt.Errorf("cluster_state %v", s)
			})
		}
		if err := redis.Restart(); err != nil {
			t.Fatal(err)
		}
		for i, r := range relays {
			eventually(t, 30*time.Second, fmt.Sprintf("replica %d back in shared mode", i), func() (bool, error) {
				s := clusterState(t, c, r)
				return s == 1, fmt.Errorf("cluster_state %v", s)
			})
		}
		<-done

		n, rate := calls.rate(key)
		if n != 2*scaleBatch {
			t.Errorf("Pulsedive calls = %d, want %d", n, 2*scaleBatch)
		}
		if got := fake.RateLimited(); got != 0 {
			t.Errorf("Pulsedive answered %d × 429, want none", got)
		}
		if rate > scaleRate {
			t.Errorf("combined rate %.1f/min, want at most %d", rate, scaleRate)
		}
		for i, r := range relays {
			m := scrapeMetrics(t, c, r.URL()+"/metrics")
			if got := m.value("pulsedive_relay_cluster_fallbacks_total"); got < 1 {
				t.Errorf("replica %d: %v fallbacks counted, want at least 1", i, got)
			}
			for code := 500; code < 600; code++ {
				if got := m.value("pulsedive_relay_http_requests_total", "route", "/observe/observables", "code", strconv.Itoa(code)); got != 0 {
					t.Errorf("replica %d: %v answers with status %d", i, got, code)
				}
			}
		}
		t.Logf("%d calls, %.1f/min after the burst (budget %d/min) across a Redis outage", n, rate, scaleRate)
		if t.Failed() {
			t.Logf("calls of the key (s from the first): %s", calls.timeline(key))
			for i, r := range relays {
				for _, l := range r.logs.lines() {
					if strings.Contains(l, "redis") {
						t.Logf("replica %d: %s", i, l)
					}
				}
			}
		}
	})
}

// TestRedisAwayAtStart: a relay whose Redis does not answer starts all the
// same, serves in fallback mode, logs the cause once without the URL's
// password, and reports the state in its metrics.
func TestRedisAwayAtStart(t *testing.T) {
	const secret = "s3cret-redis-password"
	fake := startFake(t, pulsedivetest.Config{})
	r := startRelay(t, relayEnv(fake.URL(), map[string]string{
		"REDIS_URL":     "redis://relay:" + secret + "@" + freePort(t) + "/0",
		"REDIS_TIMEOUT": "200ms",
	}))
	c := newClient(t)
	a := observeAt(t, c, &process{relay: r}, "redis-away-key", []string{"parkingcrew.net"})
	if a.status != http.StatusOK || a.found != 1 || len(a.errors) > 0 {
		t.Errorf("observe without Redis: %+v", a)
	}
	if got := scrapeMetrics(t, c, r.URL()+"/metrics").value("pulsedive_relay_cluster_state"); got != 2 {
		t.Errorf("cluster_state = %v, want 2 (fallback)", got)
	}
	logs := r.logs.String()
	if n := strings.Count(logs, "redis unreachable at start"); n != 1 {
		t.Errorf("%d \"redis unreachable at start\" lines, want 1:\n%s", n, logs)
	}
	if strings.Contains(logs, secret) {
		t.Errorf("the logs hold the Redis password:\n%s", logs)
	}
	if !strings.Contains(logs, "redis://relay:xxxxx@") {
		t.Errorf("the logs do not name the Redis URL, redacted:\n%s", logs)
	}
}
