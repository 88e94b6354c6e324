package main

import (
	"context"
	"flag"
	"fmt"
	"sync"
	"time"

	"github.com/pulsedive-relay/relay/pulsedive/pulsedivetest"
)

// collapseConfig is the in-flight collapse scenario: Requests identical
// observe requests at once for Observables new values, under one key.
type collapseConfig struct {
	Requests    int
	Observables int
	Latency     time.Duration
}

func defaultCollapse() collapseConfig {
	return collapseConfig{Requests: 20, Observables: 10, Latency: 100 * time.Millisecond}
}

func registerCollapse(fs *flag.FlagSet) func(context.Context, *bench) ([]*report, error) {
	c := defaultCollapse()
	fs.IntVar(&c.Requests, "requests", c.Requests, "concurrent identical observe requests")
	fs.IntVar(&c.Observables, "observables", c.Observables, "new observables in each")
	fs.DurationVar(&c.Latency, "latency", c.Latency, "latency of every Pulsedive call")
	return func(ctx context.Context, b *bench) ([]*report, error) {
		r, err := runCollapse(ctx, b, c)
		return reports(r), err
	}
}

// runCollapse checks that concurrent requests for the same documents share
// one Pulsedive call each: 2×Observables calls whatever Requests is.
func runCollapse(ctx context.Context, b *bench, c collapseConfig) (*report, error) {
	if c.Requests < 1 || c.Observables < 1 || c.Latency < 0 {
		return nil, usageError{"collapse: -requests and -observables must be at least 1, -latency not negative"}
	}
	st, err := b.start(ctx, stackConfig{
		name: "collapse",
		fake: pulsedivetest.Config{Latency: c.Latency},
		env:  map[string]string{"PULSEDIVE_RATE_LIMIT": "0"},
	})
	if err != nil {
		return nil, err
	}
	defer st.close()
	r := newReport("collapse", fmt.Sprintf("%d concurrent identical observe requests for %d new observables", c.Requests, c.Observables))
	st.describe(r, fmt.Sprintf("synthetic, latency %s, no rate limit", c.Latency))

	lc := newLoadClient(st.url, c.Requests, time.Minute)
	defer lc.closeIdle()
	if err := st.warmUp(ctx, lc); err != nil {
		return nil, err
	}
	st.baseline(ctx, lc)
	st.fake.Reset()

	req, err := b.observeRequest(b.apiKey("collapse"), b.values.batch(c.Observables))
	if err != nil {
		return nil, err
	}
	var mu sync.Mutex
	complete, slowest := 0, time.Duration(0)
	var problems []string
	b.progress("collapse: %d concurrent observe requests", c.Requests)
	res, err := lc.run(ctx, loadConfig{
		Clients:   c.Requests,
		PerClient: 1,
		Next:      func(int, int) (request, error) { return req, nil },
		OnAnswer: func(_ request, a answer) {
			ra, perr := parseAnswer(a.Body)
			mu.Lock()
			defer mu.Unlock()
			slowest = max(slowest, a.Latency)
			switch {
			case perr != nil:
				problems = append(problems, perr.Error())
			case len(ra.Errors) > 0:
				problems = append(problems, ra.errorText())
			case ra.judgements() == c.Observables:
				complete++
			}
		},
	})
	if err != nil {
		return nil, err
	}
	stats := st.fake.Stats()
	info, links := callsByKind(stats)
	r.add("collapse_calls", fmt.Sprintf("Pulsedive calls (%d info + %d links)", info, links), float64(stats.Calls), unitCount).want(opEqual, float64(2*c.Observables))
	r.add("collapse_complete", "answers with every judgement and no error", float64(complete), unitCount).want(opEqual, float64(c.Requests))
	r.add("collapse_lost", "requests without an answer", float64(res.lost()), unitCount).want(opEqual, 0)
	r.add("collapse_max_in_flight", "most Pulsedive calls at once", float64(stats.MaxInFlight), unitCount)
	r.addDuration("collapse_p50_ms", "request wall time, median", res.percentile(0.5))
	r.addDuration("collapse_slowest_ms", "request wall time, slowest", slowest)
	for i, p := range problems {
		if i == 3 {
			r.note("… %d more answers with problems", len(problems)-3)
			break
		}
		r.note("answer problem: %s", truncate(p, 300))
	}
	if res.lost() > 0 {
		countMap(r, "lost requests by cause", res.Lost)
	}
	st.finish(ctx, r, lc, finishOptions{leakMargin: -1})
	return r, nil
}
