package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pulsedive-relay/relay/cluster/redistest"
	"github.com/pulsedive-relay/relay/pulsedive/pulsedivetest"
)

// scaleOutConfig is the scale-out scenario: Replicas relays share one
// redis-server (Debian's, started by relaybench on loopback) and one fake
// Pulsedive enforcing PerMinute calls per key.
type scaleOutConfig struct {
	Replicas    int
	PerMinute   int
	Burst       int
	Observables int // per batch, split over the replicas
	Cached      int // values looked up through A, then B, then C
	Collapse    int // concurrent identical requests
	Latency     time.Duration
}

func defaultScaleOut() scaleOutConfig {
	return scaleOutConfig{Replicas: 3, PerMinute: 300, Burst: 5, Observables: 30, Cached: 50, Collapse: 20, Latency: 20 * time.Millisecond}
}

func registerScaleOut(fs *flag.FlagSet) func(context.Context, *bench) ([]*report, error) {
	c := defaultScaleOut()
	fs.IntVar(&c.Replicas, "replicas", c.Replicas, "relay processes sharing one Redis (RELAY_REPLICAS)")
	fs.IntVar(&c.PerMinute, "per-minute", c.PerMinute, "Pulsedive budget per key per minute, at the fake and across the relays (PULSEDIVE_RATE_LIMIT)")
	fs.IntVar(&c.Burst, "burst", c.Burst, "the relays' burst (PULSEDIVE_BURST); the fake's is one more, for the arrival jitter of several processes")
	fs.IntVar(&c.Observables, "observables", c.Observables, "new observables in a budget batch, split over the replicas")
	fs.IntVar(&c.Cached, "cached", c.Cached, "observables looked up through the first replica, then through the others")
	fs.IntVar(&c.Collapse, "requests", c.Collapse, "concurrent identical observe requests spread over the replicas")
	fs.DurationVar(&c.Latency, "latency", c.Latency, "latency of every Pulsedive call")
	return one(runScaleOut, &c)
}

// callTimes notes when each key's info and links calls reached the fake,
// and tells a key's watcher each new count.
type callTimes struct {
	mu      sync.Mutex
	times   map[string][]time.Time // by key fingerprint
	watches map[string]func(n int)
}

func (c *callTimes) record(r pulsedivetest.Request) {
	if r.Kind != pulsedivetest.KindInfo && r.Kind != pulsedivetest.KindLinks {
		return
	}
	now, fp := time.Now(), pulsedivetest.KeyFingerprint(r.Key)
	c.mu.Lock()
	c.times[fp] = append(c.times[fp], now)
	n, w := len(c.times[fp]), c.watches[fp]
	c.mu.Unlock()
	if w != nil {
		w(n)
	}
}

// span returns the number of key's calls and the time from the first to
// the last.
func (c *callTimes) span(key string) (int, time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	ts := c.times[pulsedivetest.KeyFingerprint(key)]
	if len(ts) < 2 {
		return len(ts), 0
	}
	return len(ts), slices.MaxFunc(ts, time.Time.Compare).Sub(slices.MinFunc(ts, time.Time.Compare))
}

// since lists the times of key's calls relative to t, for a report.
func (c *callTimes) since(key string, t time.Time) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var parts []string
	for _, at := range c.times[pulsedivetest.KeyFingerprint(key)] {
		parts = append(parts, fmt.Sprintf("%.2f", at.Sub(t).Seconds()))
	}
	return strings.Join(parts, " ")
}

func (c *callTimes) watch(key string, f func(n int)) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.watches[pulsedivetest.KeyFingerprint(key)] = f
}

// replicaSet is the relays of the scenario: the stack's own and the
// others launched beside it with the same environment.
type replicaSet struct {
	st     *stack
	others []*relayProcess
	lcs    []*loadClient
}

func (rs *replicaSet) urls() []string {
	out := []string{rs.st.url}
	for _, p := range rs.others {
		out = append(out, p.url())
	}
	return out
}

func (rs *replicaSet) close() {
	for _, p := range rs.others {
		p.stop(30 * time.Second)
	}
	for _, lc := range rs.lcs {
		lc.closeIdle()
	}
}

// scrapeAll reads one gauge or counter (summed) from every replica.
func (rs *replicaSet) scrapeAll(ctx context.Context, family string) ([]float64, error) {
	var out []float64
	for _, u := range rs.urls() {
		st := &stack{url: u, scraper: rs.st.scraper}
		m, err := st.scrape(ctx)
		if err != nil {
			return nil, err
		}
		v, _ := m.value(family)
		out = append(out, v)
	}
	return out, nil
}

// byLabelAll sums a family by one label over every replica.
func (rs *replicaSet) byLabelAll(ctx context.Context, family, label string) (map[string]int, error) {
	out := map[string]int{}
	for _, u := range rs.urls() {
		st := &stack{url: u, scraper: rs.st.scraper}
		m, err := st.scrape(ctx)
		if err != nil {
			return nil, err
		}
		for k, v := range m.byLabel(family, label) {
			out[k] += v
		}
	}
	return out, nil
}

// waitState polls every replica's cluster_state until all show want.
func (rs *replicaSet) waitState(ctx context.Context, want float64, limit time.Duration) (time.Duration, error) {
	start := time.Now()
	for {
		got, err := rs.scrapeAll(ctx, "pulsedive_relay_cluster_state")
		if err == nil && !slices.ContainsFunc(got, func(v float64) bool { return v != want }) {
			return time.Since(start), nil
		}
		if time.Since(start) > limit {
			return 0, fmt.Errorf("cluster_state %v after %s, want all %v (err %v)", got, limit, want, err)
		}
		if !pause(ctx, 50*time.Millisecond) {
			return 0, ctx.Err()
		}
	}
}

// runScaleOut checks what replicas share over Redis: one budget per key,
// one cache, one call per document, and a fallback that keeps the budget
// when Redis goes away and ends when it comes back.
func runScaleOut(ctx context.Context, b *bench, c scaleOutConfig) (*report, error) {
	if c.Replicas < 2 || c.PerMinute < 1 || c.Burst < 1 || c.Observables < c.Replicas || c.Cached < 1 || c.Collapse < 1 || c.Latency < 0 {
		return nil, usageError("scaleout: -replicas at least 2, -per-minute, -burst, -cached and -requests at least 1, -observables at least -replicas, -latency not negative")
	}
	if b.opts.RelayURL != "" {
		return nil, usageError("scaleout launches its own relays and Redis: -relay-url does not apply")
	}
	redis, err := redistest.Start(b.dir)
	if errors.Is(err, redistest.ErrNoServer) {
		return nil, fmt.Errorf("scaleout needs redis-server on PATH (apt-get install redis-server): %w", err)
	}
	if err != nil {
		return nil, err
	}
	defer redis.Close()

	calls := &callTimes{times: map[string][]time.Time{}, watches: map[string]func(int){}}
	env := map[string]string{
		"REDIS_URL":             redis.URL(),
		"RELAY_REPLICAS":        strconv.Itoa(c.Replicas),
		"PULSEDIVE_RATE_LIMIT":  strconv.Itoa(c.PerMinute),
		"PULSEDIVE_BURST":       strconv.Itoa(c.Burst),
		"RELAY_REQUEST_TIMEOUT": "60s",
		// Measure how fully the replicas spend the budget: Active DNS may
		// wait for it as long as the request may.
		"RELAY_LINKS_MAX_WAIT": "60s",
	}
	st, err := b.start(ctx, stackConfig{
		name:     "scaleout",
		title:    fmt.Sprintf("%d relays sharing one Redis and a %d/min budget per key (burst %d)", c.Replicas, c.PerMinute, c.Burst),
		fake:     pulsedivetest.Config{PerMinute: c.PerMinute, Burst: c.Burst + 1, Latency: c.Latency, OnCall: calls.record},
		fakeText: fmt.Sprintf("synthetic, latency %s, %d/min per key with burst %d, 429 and a one-minute pause beyond", c.Latency, c.PerMinute, c.Burst+1),
		env:      env,
		clients:  c.Collapse, timeout: 90 * time.Second,
	})
	if err != nil {
		return nil, err
	}
	defer st.close()
	r := st.r
	rs := &replicaSet{st: st, lcs: []*loadClient{st.lc}}
	defer rs.close()
	for i := 1; i < c.Replicas; i++ {
		p, err := st.launch(ctx, fmt.Sprintf("scaleout-%d", i))
		if err != nil {
			return nil, err
		}
		rs.others = append(rs.others, p)
		lc := newLoadClient(p.url(), c.Collapse, 90*time.Second)
		rs.lcs = append(rs.lcs, lc)
		if err := st.warmUp(ctx, lc); err != nil {
			return nil, err
		}
	}
	r.setting("relays", fmt.Sprintf("%d, at %v", c.Replicas, rs.urls()))
	r.setting("redis", "redis-server (Debian) on loopback, started by relaybench, no persistence")
	if _, err := rs.waitState(ctx, 1, 10*time.Second); err != nil {
		return nil, fmt.Errorf("relays not in shared mode at start: %w", err)
	}

	// batch sends n new observables under key, split over the replicas at
	// once, and returns the verdicts, the errors and the HTTP failures.
	batch := func(key string, n int) (verdicts int, errs []string, failures int) {
		obs := b.values.batch(n)
		var mu sync.Mutex
		var wg sync.WaitGroup
		for i, lc := range rs.lcs {
			part := obs[i*n/len(rs.lcs) : (i+1)*n/len(rs.lcs)]
			req, err := b.observeRequest(b.apiKey(key), part)
			if err != nil {
				return 0, []string{err.Error()}, 1
			}
			wg.Go(func() {
				ra, _, err := post(ctx, lc, req)
				mu.Lock()
				defer mu.Unlock()
				if err != nil {
					failures++
					errs = append(errs, err.Error())
					return
				}
				verdicts += ra.judgements()
				if len(ra.Errors) > 0 {
					errs = append(errs, ra.errorText())
				}
			})
		}
		wg.Wait()
		return verdicts, errs, failures
	}
	budget := float64(c.PerMinute) / 60
	rateFigures := func(slug, label, key string) (fair float64) {
		n, span := calls.span(b.apiKey(key))
		r.add(slug+"_calls", label+": Pulsedive calls", float64(n), unitCount).want(opEqual, float64(2*c.Observables))
		if span > 0 && n > c.Burst {
			fair = float64(n-c.Burst) / span.Seconds()
			r.add(slug+"_rate", fmt.Sprintf("%s: call rate without the burst, %d calls / %.1f s", label, n-c.Burst, span.Seconds()), fair, unitCPS)
		}
		return fair
	}

	// One budget.
	b.progress("scaleout: one key's %d-observable batch over %d relays at %d/min", c.Observables, c.Replicas, c.PerMinute)
	v, errs, fails := batch("budget", c.Observables)
	r.add("scaleout_budget_verdicts", "budget batch: verdicts", float64(v), unitCount).want(opEqual, float64(c.Observables))
	r.add("scaleout_budget_failures", "budget batch: HTTP failures", float64(fails), unitCount).want(opEqual, 0)
	fair := rateFigures("scaleout_budget", "budget batch", "budget")
	r.add("scaleout_budget_share", "budget batch: rate without the burst / budget", fair/budget, unitRatio).want(opAtMost, 1).headline()
	r.add("scaleout_budget_use", "budget batch: at least 0.9 of the budget", fair/budget, unitRatio).aim(opAtLeast, 0.9)
	for _, e := range errs {
		r.note("budget batch: %s", truncate(e, 300))
	}

	// One cache: through the first replica, then each other one.
	b.progress("scaleout: %d observables through relay A, then through the others", c.Cached)
	cached := b.values.batch(c.Cached)
	key := b.apiKey("cache")
	// lookups looks each cached value up through lcs, one request each,
	// and returns the latencies.
	lookups := func(lcs []*loadClient) ([]time.Duration, error) {
		var out []time.Duration
		for _, lc := range lcs {
			for _, o := range cached {
				req, err := b.observeRequest(key, []observable{o})
				if err != nil {
					return nil, err
				}
				ra, a, err := post(ctx, lc, req)
				if err == nil && ra.judgements() != 1 {
					err = fmt.Errorf("%s: %d judgements (%s)", o.Value, ra.judgements(), ra.errorText())
				}
				if err != nil {
					return nil, err
				}
				out = append(out, a.Latency)
			}
		}
		return out, nil
	}
	if _, err := lookups(rs.lcs[:1]); err != nil {
		return nil, err
	}
	before := st.fake.Calls()
	l2Lat, err := lookups(rs.lcs[1:])
	if err != nil {
		return nil, err
	}
	r.add("scaleout_cross_calls", fmt.Sprintf("Pulsedive calls for %d observables looked up through A, then asked of the %d others", c.Cached, c.Replicas-1), float64(st.fake.Calls()-before), unitCount).want(opEqual, 0).headline()
	// Ristretto admits its writes shortly after: the L1 hits come after
	// every L2 hit has been served.
	pause(ctx, 200*time.Millisecond)
	l1Lat, err := lookups(rs.lcs[1:])
	if err != nil {
		return nil, err
	}
	l2, l1 := median(l2Lat), median(l1Lat)
	r.addDuration("scaleout_l2_hit_ms", "observe of one cached observable, answered from Redis (L2 hit), median", l2)
	r.addDuration("scaleout_l1_hit_ms", "the same again, answered from the relay's own cache (L1 hit), median", l1)
	r.addDuration("scaleout_l2_added_ms", "added latency of an L2 hit (two documents: info and links)", l2-l1).headline()

	// One call per document.
	b.progress("scaleout: %d concurrent identical requests over %d relays", c.Collapse, c.Replicas)
	st.fake.SetLatency(200*time.Millisecond, 0)
	same := b.values.batch(2)
	req, err := b.observeRequest(b.apiKey("collapse"), same)
	if err != nil {
		return nil, err
	}
	before = st.fake.Calls()
	var complete atomic.Int64
	var wg sync.WaitGroup
	for i := range c.Collapse {
		wg.Go(func() {
			ra, _, err := post(ctx, rs.lcs[i%len(rs.lcs)], req)
			if err == nil && ra.judgements() == len(same) && len(ra.Errors) == 0 {
				complete.Add(1)
			}
		})
	}
	wg.Wait()
	st.fake.SetLatency(c.Latency, 0)
	r.add("scaleout_collapse_calls", fmt.Sprintf("%d identical requests for %d new observables over %d relays: Pulsedive calls", c.Collapse, len(same), c.Replicas), float64(st.fake.Calls()-before), unitCount).want(opEqual, float64(2*len(same))).headline()
	r.add("scaleout_collapse_complete", "answers with every verdict and no error", float64(complete.Load()), unitCount).want(opEqual, float64(c.Collapse))

	// Redis killed in the middle of a batch, then restarted.
	b.progress("scaleout: a batch with Redis killed after a third of its calls, then restarted")
	third := make(chan struct{})
	var once sync.Once
	calls.watch(b.apiKey("fallback"), func(n int) {
		if n >= 2*c.Observables/3 {
			once.Do(func() { close(third) })
		}
	})
	type result struct {
		verdicts, failures int
		errs               []string
	}
	done := make(chan result, 1)
	go func() {
		v, errs, f := batch("fallback", c.Observables)
		done <- result{v, f, errs}
	}()
	var res result
	select {
	case <-third:
	case res = <-done:
		return nil, fmt.Errorf("the fallback batch ended before a third of its calls: %v", res.errs)
	}
	redis.Kill()
	killed := time.Now()
	toFallback, err := rs.waitState(ctx, 2, 30*time.Second)
	if err != nil {
		return nil, err
	}
	// Stay away long enough for the relays to spend their own shares.
	atKill, _ := calls.span(b.apiKey("fallback"))
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); {
		if n, _ := calls.span(b.apiKey("fallback")); n >= atKill+2*c.Replicas {
			break
		}
		if !pause(ctx, 20*time.Millisecond) {
			return nil, ctx.Err()
		}
	}
	away, _ := calls.span(b.apiKey("fallback"))
	if err := redis.Restart(); err != nil {
		return nil, err
	}
	outage := time.Since(killed)
	back, err := rs.waitState(ctx, 1, 30*time.Second)
	if err != nil {
		return nil, err
	}
	res = <-done
	r.add("scaleout_fallback_verdicts", "Redis killed mid-batch: verdicts", float64(res.verdicts), unitCount).want(opEqual, float64(c.Observables))
	r.add("scaleout_fallback_failures", "Redis killed mid-batch: HTTP failures (5xx, lost)", float64(res.failures), unitCount).want(opEqual, 0)
	fair = rateFigures("scaleout_fallback", "Redis killed mid-batch", "fallback")
	r.add("scaleout_fallback_share", "Redis killed mid-batch: rate without the burst / budget", fair/budget, unitRatio).want(opAtMost, 1).headline()
	r.addDuration("scaleout_to_fallback_ms", "from the kill until every relay reported fallback mode (cluster_state 2)", toFallback)
	r.addDuration("scaleout_outage_ms", "Redis away", outage)
	r.add("scaleout_fallback_local_calls", "Pulsedive calls made while Redis was away (each relay on its own share)", float64(away-atKill), unitCount)
	r.addDuration("scaleout_back_ms", "from the restart until every relay was back in shared mode (cluster_state 1)", back).want(opAtMost, 10_000)
	for _, e := range res.errs {
		r.note("fallback batch: %s", truncate(e, 300))
	}
	if len(res.errs) > 0 || fair > budget {
		r.note("fallback batch calls, seconds from the kill: %s", calls.since(b.apiKey("fallback"), killed))
	}
	if fb, err := rs.scrapeAll(ctx, "pulsedive_relay_cluster_fallbacks_total"); err == nil {
		var sum float64
		for _, f := range fb {
			sum += f
		}
		r.add("scaleout_fallbacks", "fallbacks counted by the relays", sum, unitCount).want(opAtLeast, float64(c.Replicas))
	}
	r.add("scaleout_429", "429 answers sent by Pulsedive, whole run", float64(st.fake.RateLimited()), unitCount).want(opEqual, 0).headline()
	if m, err := rs.byLabelAll(ctx, "pulsedive_relay_l2_cache_requests_total", "result"); err == nil {
		countMap(r, "relays: L2 cache lookups by result, whole run", m)
	}
	if m, err := rs.byLabelAll(ctx, "pulsedive_relay_collapse_waits_total", "result"); err == nil {
		countMap(r, "relays: cross-replica collapse by result, whole run", m)
	}
	if m, err := rs.byLabelAll(ctx, "pulsedive_relay_redis_errors_total", "command"); err == nil {
		countMap(r, "relays: failed Redis commands by class, whole run", m)
	}
	r.note("Rates count the calls after the first %d (the burst) over the time from a key's first call to its last. The fake holds one token more than the relays' burst: with %d processes calling, arrival jitter exceeds the 3 ms a 295/min bucket keeps over a 300/min one on its first token.", c.Burst, c.Replicas)
	r.note("Latencies are whole observe requests of one observable (an info and a links document) on loopback; an L2 hit costs two Redis GETs and fills the relay's own cache.")

	st.finish(ctx, r, rs.lcs[0], finishOptions{leakMargin: -1})
	return r, nil
}

func median(ds []time.Duration) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2]
}
