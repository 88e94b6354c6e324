package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"strconv"
	"time"

	"github.com/pulsedive-relay/relay/pulsedive/pulsedivetest"
)

// coldConfig is the cold/warm batch scenario: one observe request with
// Observables new values (Unknown of them unknown to Pulsedive) at Latency
// per Pulsedive call and Workers in the relay, then the same request again.
type coldConfig struct {
	Observables int
	Unknown     int
	Workers     int
	Latency     time.Duration
}

func defaultCold() coldConfig {
	return coldConfig{Observables: 100, Unknown: 0, Workers: 32, Latency: 100 * time.Millisecond}
}

func registerCold(fs *flag.FlagSet) func(context.Context, *bench) ([]*report, error) {
	c := defaultCold()
	fs.IntVar(&c.Observables, "observables", c.Observables, "observables in the batch")
	fs.IntVar(&c.Unknown, "unknown", c.Unknown, "how many of them Pulsedive does not know")
	fs.IntVar(&c.Workers, "workers", c.Workers, "the relay's RELAY_WORKERS")
	fs.DurationVar(&c.Latency, "latency", c.Latency, "latency of every Pulsedive call")
	return func(ctx context.Context, b *bench) ([]*report, error) {
		r, err := runCold(ctx, b, c)
		return reports(r), err
	}
}

// reports wraps one report, if any, as a list.
func reports(r *report) []*report {
	if r == nil {
		return nil
	}
	return []*report{r}
}

func (c coldConfig) validate() error {
	switch {
	case c.Observables < 1:
		return errors.New("cold: -observables must be at least 1")
	case c.Unknown < 0 || c.Unknown > c.Observables:
		return errors.New("cold: -unknown must be between 0 and -observables")
	case c.Workers < 1:
		return errors.New("cold: -workers must be at least 1")
	case c.Latency < 0:
		return errors.New("cold: -latency must not be negative")
	}
	return nil
}

// runCold sends the batch cold, checks the Pulsedive calls it cost and the
// wall time against the ideal of the worker pool, then sends it warm.
func runCold(ctx context.Context, b *bench, c coldConfig) (*report, error) {
	if err := c.validate(); err != nil {
		return nil, usageError{err.Error()}
	}
	st, err := b.start(ctx, stackConfig{
		name: "cold",
		fake: pulsedivetest.Config{Latency: c.Latency},
		env:  map[string]string{"PULSEDIVE_RATE_LIMIT": "0", "RELAY_WORKERS": strconv.Itoa(c.Workers)},
	})
	if err != nil {
		return nil, err
	}
	defer st.close()
	r := newReport("cold", fmt.Sprintf("%d new observables in one observe request, then the same batch warm", c.Observables))
	st.describe(r, fmt.Sprintf("synthetic, latency %s, no rate limit", c.Latency))

	lc := newLoadClient(st.url, 2, 5*time.Minute)
	defer lc.closeIdle()
	if err := st.warmUp(ctx, lc); err != nil {
		return nil, err
	}
	st.baseline(ctx, lc)
	st.fake.Reset()

	obs := b.values.batch(c.Observables - c.Unknown)
	for range c.Unknown {
		o, err := st.unknown()
		if err != nil {
			return nil, err
		}
		obs = append(obs, o)
	}
	req, err := b.observeRequest(b.apiKey("cold"), obs)
	if err != nil {
		return nil, err
	}

	b.progress("cold: one observe request of %d observables", len(obs))
	cold, coldAns, err := post(ctx, lc, req)
	if err != nil {
		return nil, err
	}
	stats := st.fake.Stats()
	info, links := callsByKind(stats)
	unknown := stats.ByStatus[404]
	calls := stats.Calls
	want := 2*c.Observables - unknown
	ideal := time.Duration((want+c.Workers-1)/c.Workers) * c.Latency

	r.addDuration("cold_wall_ms", "cold: wall time", coldAns.Latency).inSummary = true
	r.addDuration("cold_ideal_ms", fmt.Sprintf("cold: ideal ⌈%d/%d⌉×%s", want, c.Workers, c.Latency), ideal)
	if ideal > 0 {
		r.add("cold_ratio", "cold: wall time / ideal", float64(coldAns.Latency)/float64(ideal), unitRatio).aim(opAtMost, 1.2)
	}
	r.add("cold_calls", fmt.Sprintf("cold: Pulsedive calls (%d info + %d links)", info, links), float64(calls), unitCount).want(opEqual, float64(want))
	r.add("cold_unknown", "cold: observables unknown to Pulsedive", float64(unknown), unitCount).want(opEqual, float64(c.Unknown))
	r.add("cold_judgements", "cold: judgements in the answer", float64(cold.judgements()), unitCount).want(opEqual, float64(c.Observables-c.Unknown))
	r.add("cold_errors", "cold: errors in the answer", float64(len(cold.Errors)), unitCount).want(opEqual, 0)
	r.add("cold_max_in_flight", "cold: most Pulsedive calls at once", float64(stats.MaxInFlight), unitCount)
	if len(cold.Errors) > 0 {
		r.note("cold answer errors: %s", truncate(cold.errorText(), 300))
	}

	b.progress("cold: the same request warm")
	warm, warmAns, err := post(ctx, lc, req)
	if err != nil {
		return nil, err
	}
	warmCalls := st.fake.Stats().Calls - calls
	r.add("warm_calls", "warm: Pulsedive calls", float64(warmCalls), unitCount).want(opEqual, 0)
	r.addDuration("warm_wall_ms", "warm: wall time", warmAns.Latency).aim(opAtMost, 20)
	r.add("warm_judgements", "warm: judgements in the answer", float64(warm.judgements()), unitCount).want(opEqual, float64(c.Observables-c.Unknown))
	r.add("answer_bytes", "answer size", float64(len(warmAns.Body)), unitBytes)

	st.finish(ctx, r, lc, finishOptions{leakMargin: -1})
	return r, nil
}

// callsByKind sums the fake's calls for info and for links documents.
func callsByKind(s pulsedivetest.Stats) (info, links int) {
	for d, n := range s.ByDocument {
		switch d.Kind {
		case pulsedivetest.KindInfo:
			info += n
		case pulsedivetest.KindLinks:
			links += n
		}
	}
	return info, links
}
