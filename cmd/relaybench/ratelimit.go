package main

import (
	"cmp"
	"context"
	"flag"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/pulsedive-relay/relay/pulsedive/pulsedivetest"
)

// rateLimitConfig is the per-key budget scenario: the fake Pulsedive
// enforces PerMinute with Burst per key, the relay budgets the same, and
// batches of Observables new values are sent under one key, then under two
// keys at once.
type rateLimitConfig struct {
	PerMinute int
	Burst     int
	// PulsediveBurst is the fake's burst when it should differ from the
	// relay's (zero: the same), to tell a relay that spends its budget to
	// the last millisecond from one that overspends.
	PulsediveBurst int
	Observables    int
	Latency        time.Duration
}

func defaultRateLimit() rateLimitConfig {
	return rateLimitConfig{PerMinute: 120, Burst: 5, Observables: 20}
}

func registerRateLimit(fs *flag.FlagSet) func(context.Context, *bench) ([]*report, error) {
	c := defaultRateLimit()
	fs.IntVar(&c.PerMinute, "per-minute", c.PerMinute, "Pulsedive budget per key per minute, at the fake and in the relay (PULSEDIVE_RATE_LIMIT)")
	fs.IntVar(&c.Burst, "burst", c.Burst, "token-bucket burst, at the fake and in the relay (PULSEDIVE_BURST)")
	fs.IntVar(&c.PulsediveBurst, "pulsedive-burst", c.PulsediveBurst, "the fake Pulsedive's burst when it should differ from -burst (0: the same)")
	fs.IntVar(&c.Observables, "observables", c.Observables, "new observables in each key's batch")
	fs.DurationVar(&c.Latency, "latency", c.Latency, "latency of every Pulsedive call")
	return func(ctx context.Context, b *bench) ([]*report, error) {
		r, err := runRateLimit(ctx, b, c)
		return reports(r), err
	}
}

// callRecorder notes when each key's info and links calls reached the
// fake; the fake calls record from its handlers.
type callRecorder struct {
	mu    sync.Mutex
	times map[string][]time.Time // by key fingerprint
}

func (c *callRecorder) record(r pulsedivetest.Request) {
	if r.Kind != pulsedivetest.KindInfo && r.Kind != pulsedivetest.KindLinks {
		return
	}
	now := time.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	fp := pulsedivetest.KeyFingerprint(r.Key)
	c.times[fp] = append(c.times[fp], now)
}

// span returns the number of calls made with key and the time from the
// first to the last.
func (c *callRecorder) span(key string) (int, time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	ts := c.times[pulsedivetest.KeyFingerprint(key)]
	if len(ts) < 2 {
		return len(ts), 0
	}
	first, last := ts[0], ts[0]
	for _, t := range ts {
		first, last = minTime(first, t), maxTime(last, t)
	}
	return len(ts), last.Sub(first)
}

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

func maxTime(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// keyRun is one key's batch: how long it took and what came back.
type keyRun struct {
	key        string
	wall       time.Duration
	judgements int
	errors     string
	err        error
}

// runRateLimit checks that the relay spends a key's budget fully but never
// beyond it (no 429 from Pulsedive), and that keys do not share a budget.
func runRateLimit(ctx context.Context, b *bench, c rateLimitConfig) (*report, error) {
	if c.PerMinute < 1 || c.Burst < 1 || c.Observables < 1 || c.Latency < 0 || c.PulsediveBurst < 0 {
		return nil, usageError{"ratelimit: -per-minute, -burst and -observables must be at least 1, -latency and -pulsedive-burst not negative"}
	}
	fakeBurst := cmp.Or(c.PulsediveBurst, c.Burst)
	rec := &callRecorder{times: map[string][]time.Time{}}
	calls := 2 * c.Observables
	budget := float64(c.PerMinute) / 60
	// Time the batch needs at the budget, with slack for a loaded machine.
	need := time.Duration(float64(max(calls-c.Burst, 0))/budget*float64(time.Second)) + c.Latency*time.Duration(calls)
	timeout := max(60*time.Second, 2*need)
	st, err := b.start(ctx, stackConfig{
		name: "ratelimit",
		fake: pulsedivetest.Config{PerMinute: c.PerMinute, Burst: fakeBurst, Latency: c.Latency, OnCall: rec.record},
		env: map[string]string{
			"PULSEDIVE_RATE_LIMIT":  strconv.Itoa(c.PerMinute),
			"PULSEDIVE_BURST":       strconv.Itoa(c.Burst),
			"RELAY_REQUEST_TIMEOUT": timeout.String(),
			// Links wait as long as the request: this measures how fully
			// the limiter spends the budget, not how the relay trades
			// Active DNS for a fast answer (see the budget scenario).
			"RELAY_LINKS_MAX_WAIT": timeout.String(),
		},
	})
	if err != nil {
		return nil, err
	}
	defer st.close()
	r := newReport("ratelimit", fmt.Sprintf("%d-observable batches under a %d/min budget per key (burst %d)", c.Observables, c.PerMinute, c.Burst))
	st.describe(r, fmt.Sprintf("synthetic, latency %s, %d/min per key with burst %d, 429 and a one-minute pause beyond", c.Latency, c.PerMinute, fakeBurst))

	lc := newLoadClient(st.url, 2, timeout+30*time.Second)
	defer lc.closeIdle()
	if err := st.warmUp(ctx, lc); err != nil {
		return nil, err
	}
	st.baseline(ctx, lc)
	st.fake.Reset()

	send := func(name string) keyRun {
		k := keyRun{key: b.apiKey("ratelimit-" + name)}
		req, err := b.observeRequest(k.key, b.values.batch(c.Observables))
		if err != nil {
			k.err = err
			return k
		}
		ra, a, err := post(ctx, lc, req)
		k.wall, k.judgements, k.errors, k.err = a.Latency, ra.judgements(), ra.errorText(), err
		return k
	}
	rates := func(slug, label string, k keyRun) {
		n, span := rec.span(k.key)
		key := "ratelimit_" + slug
		r.addDuration(key+"_wall_ms", label+": batch wall time", k.wall).inSummary = true
		r.add(key+"_judgements", label+": judgements", float64(k.judgements), unitCount).want(opEqual, float64(c.Observables))
		r.add(key+"_calls", label+": Pulsedive calls", float64(n), unitCount).want(opEqual, float64(calls))
		if span > 0 {
			raw := float64(n) / span.Seconds()
			fair := float64(n-c.Burst) / span.Seconds()
			r.add(key+"_rate_raw", fmt.Sprintf("%s: call rate, %d calls / %.1f s", label, n, span.Seconds()), raw, unitCPS)
			r.add(key+"_rate_fair", fmt.Sprintf("%s: call rate without the burst, %d calls / %.1f s", label, n-c.Burst, span.Seconds()), fair, unitCPS)
			r.add(key+"_rate_share", label+": rate without the burst / budget", fair/budget, unitRatio).aim(opAtLeast, 0.9)
		}
		if k.errors != "" {
			r.note("%s answer errors: %s", label, truncate(k.errors, 300))
		}
	}

	b.progress("ratelimit: one key, %d observables (%d calls at %.2f calls/s after a burst of %d: about %s)", c.Observables, calls, budget, c.Burst, need.Round(time.Second))
	one := send("one")
	if one.err != nil {
		return nil, one.err
	}
	r.add("ratelimit_budget", "budget per key", budget, unitCPS)
	rates("one", "one key", one)

	b.progress("ratelimit: two keys at once")
	var two [2]keyRun
	var wg sync.WaitGroup
	for i, name := range []string{"a", "b"} {
		wg.Go(func() { two[i] = send(name) })
	}
	wg.Wait()
	for _, k := range two {
		if k.err != nil {
			return nil, k.err
		}
	}
	rates("two_a", "two keys, key A", two[0])
	rates("two_b", "two keys, key B", two[1])
	slower := max(two[0].wall, two[1].wall)
	if one.wall > 0 {
		r.add("ratelimit_two_vs_one", "two keys: slower batch / one key's batch", float64(slower)/float64(one.wall), unitRatio).aim(opAtMost, 1.25)
	}
	r.add("ratelimit_429", "429 answers sent by Pulsedive", float64(st.fake.RateLimited()), unitCount).want(opEqual, 0)
	r.note("The rate without the burst counts the calls after the first %d (the bucket's initial tokens) over the time from the first call to the last: at a budget of r calls/s it is r when the relay spends every token as it arrives.", c.Burst)

	st.finish(ctx, r, lc, finishOptions{leakMargin: -1})
	return r, nil
}
