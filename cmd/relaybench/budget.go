package main

import (
	"context"
	"flag"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/pulsedive-relay/relay/pulsedive/pulsedivetest"
)

// budgetConfig is the tight-budget scenario (issue 15): Pulsedive enforces
// PerMinute per key, the relay runs at its defaults but for
// PULSEDIVE_RATE_LIMIT (PerMinute too; -relay-env changes the rest), and
// one batch of new domains per size is sent, each under a key of its own,
// then sent again once the retry time its answer gave has passed.
type budgetConfig struct {
	PerMinute int
	Batches   []int
	Latency   time.Duration
}

func defaultBudget() budgetConfig {
	return budgetConfig{PerMinute: 30, Batches: []int{1, 5, 10, 20}, Latency: 100 * time.Millisecond}
}

func registerBudget(fs *flag.FlagSet) func(context.Context, *bench) ([]*report, error) {
	c := defaultBudget()
	fs.IntVar(&c.PerMinute, "per-minute", c.PerMinute, "Pulsedive's budget per key per minute, and the relay's PULSEDIVE_RATE_LIMIT")
	fs.Func("batches", "comma-separated batch sizes, each under a key of its own (default 1,5,10,20)", func(v string) error {
		var sizes []int
		for _, part := range strings.Split(v, ",") {
			n, err := strconv.Atoi(strings.TrimSpace(part))
			if err != nil || n < 1 {
				return fmt.Errorf("%q is not a batch size", part)
			}
			sizes = append(sizes, n)
		}
		c.Batches = sizes
		return nil
	})
	fs.DurationVar(&c.Latency, "latency", c.Latency, "latency of every Pulsedive call")
	return func(ctx context.Context, b *bench) ([]*report, error) {
		r, err := runBudget(ctx, b, c)
		return reports(r), err
	}
}

// kindRecorder counts each key's calls by kind; the fake calls record from
// its handlers.
type kindRecorder struct {
	mu    sync.Mutex
	calls map[string]map[string]int // key fingerprint → kind → calls
}

func (k *kindRecorder) record(r pulsedivetest.Request) {
	k.mu.Lock()
	defer k.mu.Unlock()
	fp := pulsedivetest.KeyFingerprint(r.Key)
	if k.calls[fp] == nil {
		k.calls[fp] = map[string]int{}
	}
	k.calls[fp][r.Kind]++
}

// take returns key's calls of kind since the last take.
func (k *kindRecorder) take(key, kind string) int {
	k.mu.Lock()
	defer k.mu.Unlock()
	m := k.calls[pulsedivetest.KeyFingerprint(key)]
	n := m[kind]
	delete(m, kind)
	return n
}

// budgetRound is one request of a batch.
type budgetRound struct {
	wall       time.Duration
	judgements int
	info       int // indicator calls it made
	links      int // links calls it made: observables that got Active DNS from Pulsedive
	errors     string
	retry      time.Duration // from its "retry in N s", 0 when none
}

// retryIn reads the retry time of the relay's own rate-limit message.
var retryIn = regexp.MustCompile(`Pulsedive rate limit for this API key reached.*; retry in ([0-9]+) s`)

// runBudget measures what a small key serves per request: verdicts,
// Active DNS and answer time by batch size, and what the same batch gets
// after the retry time its answer gave.
func runBudget(ctx context.Context, b *bench, c budgetConfig) (*report, error) {
	if c.PerMinute < 1 || len(c.Batches) == 0 || c.Latency < 0 {
		return nil, usageError{"budget: -per-minute must be at least 1, -batches not empty, -latency not negative"}
	}
	rec := &kindRecorder{calls: map[string]map[string]int{}}
	st, err := b.start(ctx, stackConfig{
		name: "budget",
		fake: pulsedivetest.Config{PerMinute: c.PerMinute, Latency: c.Latency, OnCall: rec.record},
		env:  map[string]string{"PULSEDIVE_RATE_LIMIT": strconv.Itoa(c.PerMinute)},
	})
	if err != nil {
		return nil, err
	}
	defer st.close()
	r := newReport("budget", fmt.Sprintf("batches of new domains under a %d/min key, the relay at its defaults", c.PerMinute))
	st.describe(r, fmt.Sprintf("synthetic, latency %s, %d/min per key, 429 and a one-minute pause beyond", c.Latency, c.PerMinute))

	lc := newLoadClient(st.url, 2*len(c.Batches), 2*time.Minute)
	defer lc.closeIdle()
	if err := st.warmUp(ctx, lc); err != nil {
		return nil, err
	}

	send := func(key string, obs []observable) (budgetRound, error) {
		req, err := b.observeRequest(key, obs)
		if err != nil {
			return budgetRound{}, err
		}
		ra, a, err := post(ctx, lc, req)
		if err != nil {
			return budgetRound{}, err
		}
		round := budgetRound{wall: a.Latency, judgements: ra.judgements(), errors: ra.errorText(),
			info: rec.take(key, pulsedivetest.KindInfo), links: rec.take(key, pulsedivetest.KindLinks)}
		if m := retryIn.FindStringSubmatch(round.errors); m != nil {
			secs, _ := strconv.Atoi(m[1])
			round.retry = time.Duration(secs) * time.Second
		}
		return round, nil
	}

	// Every batch at once, each under its own key: budgets are per key.
	b.progress("budget: batches of %v new domains at once, each under its own key, then again after their retry times", c.Batches)
	type result struct {
		first, again budgetRound
		err          error
	}
	results := make([]result, len(c.Batches))
	var wg sync.WaitGroup
	for i, n := range c.Batches {
		key := b.apiKey(fmt.Sprintf("budget-%d-%d", i, n))
		obs := make([]observable, n)
		for j := range obs {
			obs[j] = b.values.named("budget")
		}
		wg.Go(func() {
			res := &results[i]
			if res.first, res.err = send(key, obs); res.err != nil || res.first.retry == 0 {
				return
			}
			if !pause(ctx, res.first.retry) {
				res.err = ctx.Err()
				return
			}
			res.again, res.err = send(key, obs)
		})
	}
	wg.Wait()

	for i, n := range c.Batches {
		res := results[i]
		if res.err != nil {
			return nil, res.err
		}
		key := fmt.Sprintf("budget_%d", n)
		label := fmt.Sprintf("%d domains", n)
		r.add(key+"_verdicts", label+": verdicts (judgements)", float64(res.first.judgements), unitCount)
		r.add(key+"_active_dns", label+": Active DNS fetched", float64(res.first.links), unitCount)
		wall := r.addDuration(key+"_wall_ms", label+": answer time", res.first.wall).headline()
		if n <= 10 && c.PerMinute == 30 && len(b.opts.RelayEnv) == 0 && b.opts.RelayURL == "" {
			wall.aim(opAtMost, 10_000) // issue 15, at the defaults: ten verdicts within 10 s
		}
		if res.first.errors != "" {
			r.note("%s: %s", label, res.first.errors)
		}
		if res.first.retry > 0 {
			r.add(key+"_retry_s", label+": retry time the answer gave", res.first.retry.Seconds(), unitS)
			r.add(key+"_again_info", label+", again after it: indicator calls", float64(res.again.info), unitCount)
			r.add(key+"_again_active_dns", label+", again after it: Active DNS fetched", float64(res.again.links), unitCount)
			r.addDuration(key+"_again_wall_ms", label+", again after it: answer time", res.again.wall)
			if res.again.errors != "" {
				r.note("%s again: %s", label, res.again.errors)
			}
		}
	}
	r.add("budget_429", "429 answers sent by Pulsedive", float64(st.fake.RateLimited()), unitCount).want(opEqual, 0)
	r.note("A known observable costs two calls: its indicator (the verdict) and its links (Active DNS). Active DNS fetched counts the links calls; the synthetic Active DNS is dated 2020, so the relay's 90-day window drops it from the answers.")

	st.finish(ctx, r, lc, finishOptions{leakMargin: -1})
	return r, nil
}
