package main

import (
	"context"
	"flag"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/pulsedive-relay/relay/pulsedive/pulsedivetest"
)

// scalingConfig is the cold path: for each of Sizes, one observe request
// of that many new observables alone, then Concurrent such requests at
// once, each under a key of its own, every Pulsedive call taking Latency.
// The first batch alone is then sent again, warm: it must cost no call.
type scalingConfig struct {
	Sizes       numbers[int]
	Concurrent  int
	Workers     int
	MaxInFlight int
	Latency     time.Duration
}

func defaultScaling() scalingConfig {
	return scalingConfig{Sizes: numbers[int]{100, 500, 1000}, Concurrent: 10, Workers: 32, MaxInFlight: 256, Latency: 100 * time.Millisecond}
}

func registerScaling(fs *flag.FlagSet) func(context.Context, *bench) ([]*report, error) {
	c := defaultScaling()
	fs.Var(&c.Sizes, "sizes", "comma-separated batch sizes (observables per request)")
	fs.IntVar(&c.Concurrent, "concurrent", c.Concurrent, "batches sent at once after each batch alone")
	fs.IntVar(&c.Workers, "workers", c.Workers, "the relay's RELAY_WORKERS")
	fs.IntVar(&c.MaxInFlight, "max-inflight", c.MaxInFlight, "the relay's RELAY_MAX_INFLIGHT, the process-wide bound on Pulsedive calls")
	fs.DurationVar(&c.Latency, "latency", c.Latency, "latency of every Pulsedive call")
	return one(runScaling, &c)
}

// scalingTarget is the most a batch of size may take over its ideal: the
// issue's 1.2 for 100 observables, 1.3 for the larger ones, whose last
// round of calls is a larger share of nothing.
func scalingTarget(size int) float64 {
	if size <= 100 {
		return 1.2
	}
	return 1.3
}

// runScaling sends each size alone, then Concurrent at once, and compares
// each wall time with the ideal of the relay's bounds: ⌈calls/workers⌉
// rounds of Latency for one request, and no fewer than ⌈all calls /
// RELAY_MAX_INFLIGHT⌉ rounds for several.
func runScaling(ctx context.Context, b *bench, c scalingConfig) (*report, error) {
	if len(c.Sizes) == 0 || c.Concurrent < 1 || c.Workers < 1 || c.MaxInFlight < 1 || c.Latency <= 0 {
		return nil, usageError("scaling: -sizes, a positive -latency, and -concurrent, -workers and -max-inflight of at least 1 are needed")
	}
	largest := slices.Max(c.Sizes)
	maxObservables := max(1000, largest) // RELAY_OBSERVABLES_IN_FLIGHT must hold as many
	// The admission bounds are raised so that the figure measures the
	// pipeline, not them: every batch at once fits the observables in
	// flight, and under a key of its own no batch meets the per-key half
	// of a bound or the per-key share of RELAY_MAX_INFLIGHT (a quarter,
	// above RELAY_WORKERS). The memory limit leaves the collector room
	// for Concurrent answers of the largest size.
	env := map[string]string{
		"PULSEDIVE_RATE_LIMIT":        "0",
		"RELAY_WORKERS":               strconv.Itoa(c.Workers),
		"RELAY_MAX_INFLIGHT":          strconv.Itoa(c.MaxInFlight),
		"RELAY_OBSERVABLES_IN_FLIGHT": strconv.Itoa(max(2*largest, c.Concurrent*largest, maxObservables)),
		"RELAY_MAX_OBSERVABLES":       strconv.Itoa(maxObservables),
		"RELAY_MEMORY_LIMIT":          "512MiB",
	}
	st, err := b.start(ctx, stackConfig{
		name:     "scaling",
		title:    fmt.Sprintf("cold batches of %s new observables at %s Pulsedive latency, alone and %d at once", c.Sizes.String(), c.Latency, c.Concurrent),
		fake:     pulsedivetest.Config{Latency: c.Latency},
		fakeText: fmt.Sprintf("synthetic, latency %s, no rate limit", c.Latency),
		env:      env,
		clients:  c.Concurrent, timeout: 5 * time.Minute,
	})
	if err != nil {
		return nil, err
	}
	defer st.close()
	r, lc := st.r, st.lc
	st.baseline(ctx, lc)

	for _, size := range c.Sizes {
		// Alone.
		st.fake.Reset()
		req, err := b.observeRequest(b.apiKey(fmt.Sprintf("scaling-%d", size)), b.values.batch(size))
		if err != nil {
			return nil, err
		}
		b.progress("scaling: one batch of %d", size)
		ra, a, err := post(ctx, lc, req)
		if err != nil {
			return nil, err
		}
		stats := st.fake.Stats()
		calls := 2 * size
		ideal := time.Duration((calls+c.Workers-1)/c.Workers) * c.Latency
		prefix := fmt.Sprintf("alone_%d", size)
		r.addDuration(prefix+"_wall_ms", fmt.Sprintf("%d alone: wall time (ideal ⌈%d/%d⌉ × %s = %s)", size, calls, c.Workers, c.Latency, ideal), a.Latency)
		r.add(prefix+"_ratio", fmt.Sprintf("%d alone: wall time / ideal", size), float64(a.Latency)/float64(ideal), unitRatio).aim(opAtMost, scalingTarget(size)).headline()
		if len(ra.Errors) > 0 {
			r.note("%d alone: answer errors: %s", size, truncate(ra.errorText(), 300))
		}
		r.add(prefix+"_calls", fmt.Sprintf("%d alone: Pulsedive calls", size), float64(stats.Calls), unitCount).want(opEqual, float64(calls))
		r.add(prefix+"_judgements", fmt.Sprintf("%d alone: judgements, errors", size), float64(ra.judgements()-len(ra.Errors)), unitCount).want(opEqual, float64(size))
		r.add(prefix+"_max_in_flight", fmt.Sprintf("%d alone: most Pulsedive calls at once", size), float64(stats.MaxInFlight), unitCount).want(opAtMost, float64(c.Workers))
		if size == c.Sizes[0] {
			b.progress("scaling: the batch of %d again, warm", size)
			warm, wa, err := post(ctx, lc, req)
			if err != nil {
				return nil, err
			}
			r.add("warm_calls", fmt.Sprintf("%d again, warm: Pulsedive calls", size), float64(st.fake.Stats().Calls-stats.Calls), unitCount).want(opEqual, 0)
			r.addDuration("warm_wall_ms", fmt.Sprintf("%d again, warm: wall time", size), wa.Latency).aim(opAtMost, 20).headline()
			r.add("warm_judgements", fmt.Sprintf("%d again, warm: judgements", size), float64(warm.judgements()), unitCount).want(opEqual, float64(size))
			r.add("answer_bytes", fmt.Sprintf("%d again, warm: answer size", size), float64(len(wa.Body)), unitBytes)
		}

		// Concurrent batches, each under its own key.
		st.fake.Reset()
		reqs := make([]request, c.Concurrent)
		for i := range reqs {
			if reqs[i], err = b.observeRequest(b.apiKey(fmt.Sprintf("scaling-%d-%d", size, i)), b.values.batch(size)); err != nil {
				return nil, err
			}
		}
		b.progress("scaling: %d batches of %d at once", c.Concurrent, size)
		wall, good, err := concurrentBatches(ctx, lc, reqs, size)
		if err != nil {
			return nil, err
		}
		stats = st.fake.Stats()
		total := c.Concurrent * calls
		rounds := max((calls+c.Workers-1)/c.Workers, (total+c.MaxInFlight-1)/c.MaxInFlight)
		ideal = time.Duration(rounds) * c.Latency
		prefix = fmt.Sprintf("concurrent_%d", size)
		r.addDuration(prefix+"_wall_ms", fmt.Sprintf("%d × %d at once: wall time to the last answer (ideal %d rounds × %s = %s)", c.Concurrent, size, rounds, c.Latency, ideal), wall)
		r.add(prefix+"_ratio", fmt.Sprintf("%d × %d at once: wall time / ideal", c.Concurrent, size), float64(wall)/float64(ideal), unitRatio).headline()
		r.add(prefix+"_calls", fmt.Sprintf("%d × %d at once: Pulsedive calls", c.Concurrent, size), float64(stats.Calls), unitCount).want(opEqual, float64(total))
		r.add(prefix+"_complete", fmt.Sprintf("%d × %d at once: answers with every judgement and no error", c.Concurrent, size), float64(good), unitCount).want(opEqual, float64(c.Concurrent))
		r.add(prefix+"_max_in_flight", fmt.Sprintf("%d × %d at once: most Pulsedive calls at once (RELAY_MAX_INFLIGHT %d)", c.Concurrent, size, c.MaxInFlight), float64(stats.MaxInFlight), unitCount).want(opAtMost, float64(c.MaxInFlight))
	}
	r.note("Each batch is ⌈2n/RELAY_WORKERS⌉ rounds of calls at best (an info and a links call per observable, every indicator before any links); batches at once share RELAY_MAX_INFLIGHT. The admission bounds are raised for the run (RELAY_OBSERVABLES_IN_FLIGHT, RELAY_MEMORY_LIMIT) and each concurrent batch has a key of its own, so that the bounds on observables in flight and the per-key shares do not decide the figure: it measures the pipeline's scheduling and the process-wide call bound.")
	st.finish(ctx, r, lc, finishOptions{leakMargin: -1})
	return r, nil
}

// concurrentBatches sends reqs at once and returns the time from their
// start to the last answer, and how many answers hold every judgement of
// their size and no error.
func concurrentBatches(ctx context.Context, lc *loadClient, reqs []request, size int) (time.Duration, int, error) {
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		good  int
		first error
	)
	start := time.Now()
	for _, req := range reqs {
		wg.Go(func() {
			ra, _, err := post(ctx, lc, req)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err != nil:
				first = cmpError(first, err)
			case ra.judgements() == size && len(ra.Errors) == 0:
				good++
			}
		})
	}
	wg.Wait()
	return time.Since(start), good, first
}

// cmpError keeps the first error.
func cmpError(first, err error) error {
	if first != nil {
		return first
	}
	return err
}
