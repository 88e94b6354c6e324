package main

import (
	"context"
	"flag"
	"fmt"
	"math/rand/v2"
	"net/http"
	"strconv"
	"time"

	"github.com/pulsedive-relay/relay/pulsedive/pulsedivetest"
)

// soakConfig is the soak: Clients clients send mixed traffic for Duration
// while the fake Pulsedive injects faults into a share of the values.
type soakConfig struct {
	Duration        time.Duration
	Clients         int
	Keys            int
	FaultShare      float64
	RateLimit       int
	MaxRSS          float64 // MiB
	GoroutineMargin int
	Settle          time.Duration
}

func defaultSoak() soakConfig {
	return soakConfig{
		Duration: 60 * time.Second, Clients: 100, Keys: 4, FaultShare: 0.2,
		MaxRSS: 150, GoroutineMargin: 10, Settle: 10 * time.Second,
	}
}

func registerSoak(fs *flag.FlagSet) func(context.Context, *bench) ([]*report, error) {
	c := defaultSoak()
	fs.DurationVar(&c.Duration, "duration", c.Duration, "load duration")
	fs.IntVar(&c.Clients, "clients", c.Clients, "concurrent clients")
	fs.IntVar(&c.Keys, "keys", c.Keys, "API keys with healthy traffic (one more key takes the 429 faults)")
	fs.Float64Var(&c.FaultShare, "fault-share", c.FaultShare, "share of observables with an injected fault, 0 to 1")
	fs.IntVar(&c.RateLimit, "rate-limit", c.RateLimit, "the relay's PULSEDIVE_RATE_LIMIT (0: none, so that Pulsedive and its faults are reached)")
	fs.Float64Var(&c.MaxRSS, "max-rss", c.MaxRSS, "relay peak RSS budget, MiB")
	fs.IntVar(&c.GoroutineMargin, "goroutine-margin", c.GoroutineMargin, "relay goroutines allowed above the baseline once idle")
	fs.DurationVar(&c.Settle, "settle", c.Settle, "how long to wait for the relay's goroutines to return to the baseline")
	return one(runSoak, &c)
}

// soakFault is one kind of Pulsedive failure the soak injects.
type soakFault struct {
	name  string
	fault pulsedivetest.Fault
}

// soakFaults are the failures of the soak, each given to fresh values so
// that none is cached away. PULSEDIVE_TIMEOUT is 1s: hang and drip outlast
// it. 429 goes only to the throttled key, which it pauses for a minute.
func soakFaults() []soakFault {
	return []soakFault{
		{"hang", pulsedivetest.Fault{Mode: pulsedivetest.ModeHang}},
		{"500-flapping", pulsedivetest.Fault{Status: http.StatusInternalServerError, Every: 2}},
		{"502-flapping", pulsedivetest.Fault{Status: http.StatusBadGateway, Every: 2}},
		{"503-flapping", pulsedivetest.Fault{Status: http.StatusServiceUnavailable, Every: 3}},
		{"503-always", pulsedivetest.Fault{Status: http.StatusServiceUnavailable}},
		{"reset", pulsedivetest.Fault{Mode: pulsedivetest.ModeReset}},
		{"disconnect", pulsedivetest.Fault{Mode: pulsedivetest.ModeDisconnect, Every: 2}},
		{"truncated", pulsedivetest.Fault{Mode: pulsedivetest.ModeTruncate}},
		{"not-json", pulsedivetest.Fault{Mode: pulsedivetest.ModeNotJSON}},
		{"error-field", pulsedivetest.Fault{Mode: pulsedivetest.ModeErrorField, Message: "Unexpected error."}},
		{"drip", pulsedivetest.Fault{Mode: pulsedivetest.ModeDrip, DripBytes: 16, DripEvery: 50 * time.Millisecond}},
		{"huge", pulsedivetest.Fault{Mode: pulsedivetest.ModeHuge, Size: 8 << 20}},
		{"links-500", pulsedivetest.Fault{Status: http.StatusInternalServerError, Kind: pulsedivetest.KindLinks}},
	}
}

// throttleFault is the 429 Pulsedive sends a key over its budget.
func throttleFault() soakFault {
	return soakFault{"429", pulsedivetest.Fault{Status: http.StatusTooManyRequests}}
}

// Shares of a soak observable that is not faulty, in percent.
const (
	soakCachedShare  = 50
	soakNewShare     = 35
	soakUnknownShare = 15
	soakHotPool      = 100
)

// runSoak runs mixed traffic with faults and checks the relay's promises:
// every request answered, never a 5xx, goroutines back to the baseline,
// RSS within budget.
func runSoak(ctx context.Context, b *bench, c soakConfig) (*report, error) {
	if c.Duration <= 0 || c.Clients < 1 || c.Keys < 1 || c.FaultShare < 0 || c.FaultShare > 1 || c.RateLimit < 0 || c.GoroutineMargin < 0 || c.MaxRSS < 0 {
		return nil, usageError("soak: -duration must be positive, -clients and -keys at least 1, -fault-share within 0 to 1, the rest not negative")
	}
	const pulsediveTimeout, requestTimeout = time.Second, 3 * time.Second
	faults := soakFaults()
	st, err := b.start(ctx, stackConfig{
		name:     "soak",
		title:    fmt.Sprintf("%s of mixed traffic, %d clients, %.0f%% of observables faulty", c.Duration, c.Clients, 100*c.FaultShare),
		fake:     pulsedivetest.Config{Latency: 5 * time.Millisecond, Jitter: 45 * time.Millisecond},
		fakeText: "synthetic, latency 5-50ms, faults on fresh values: " + faultNames(faults) + ", 429 (throttled key only)",
		env: map[string]string{
			"PULSEDIVE_TIMEOUT":     pulsediveTimeout.String(),
			"RELAY_REQUEST_TIMEOUT": requestTimeout.String(),
			"PULSEDIVE_RATE_LIMIT":  strconv.Itoa(c.RateLimit),
		},
		// The client waits well past the relay's own deadline: an answer
		// that does not come by then is lost.
		clients: c.Clients, timeout: requestTimeout + 10*time.Second,
	})
	if err != nil {
		return nil, err
	}
	defer st.close()
	r, lc := st.r, st.lc

	keys := make([]string, c.Keys)
	for i := range keys {
		keys[i] = b.apiKey(fmt.Sprintf("soak-%d", i))
	}
	throttled := b.apiKey("soak-throttled")
	hot := b.values.batch(soakHotPool)
	b.progress("soak: warming %d values under %d keys", len(hot), len(keys)+1)
	for _, k := range append(keys, throttled) {
		req, err := b.observeRequest(k, hot)
		if err != nil {
			return nil, err
		}
		ra, _, err := post(ctx, lc, req)
		if err != nil {
			return nil, err
		}
		if ra.judgements() != len(hot) {
			return nil, fmt.Errorf("soak: warming the cache: %d judgements of %d (%s)", ra.judgements(), len(hot), truncate(ra.errorText(), 200))
		}
	}
	st.baseline(ctx, lc)
	st.fake.Reset()

	// Faults go to fresh values: SetFault as the request is built.
	faulty := func(rng *rand.Rand, key string) observable {
		f := faults[rng.IntN(len(faults))]
		if key == throttled && rng.IntN(2) == 0 {
			f = throttleFault()
		}
		o := b.values.named("fault-" + f.name)
		st.fake.SetFault(o.Value, f.fault)
		return o
	}
	rngs := make([]*rand.Rand, c.Clients)
	for i := range rngs {
		rngs[i] = rand.New(rand.NewPCG(uint64(i), 0x736f616b))
	}
	// Endpoints by weight: observe 45%, deliberate 20%, refer 25%, health 10%.
	kinds := []string{"observe", "observe", "observe", "observe", "observe", "observe", "observe", "observe", "observe",
		"deliberate", "deliberate", "deliberate", "deliberate", "refer", "refer", "refer", "refer", "refer", "health", "health"}
	next := func(client, _ int) (request, error) {
		rng := rngs[client]
		key := keys[rng.IntN(len(keys))]
		if rng.IntN(len(keys)+1) == 0 {
			key = throttled
		}
		n := 1 + rng.IntN(5)
		obs := make([]observable, 0, n)
		for range n {
			if rng.Float64() < c.FaultShare {
				obs = append(obs, faulty(rng, key))
				continue
			}
			switch p := rng.IntN(100); {
			case p < soakCachedShare:
				obs = append(obs, hot[rng.IntN(len(hot))])
			case p < soakCachedShare+soakNewShare:
				obs = append(obs, b.values.next())
			default:
				o, err := st.unknown()
				if err != nil {
					return request{}, err
				}
				obs = append(obs, o)
			}
		}
		return b.endpointRequest(kinds[rng.IntN(len(kinds))], key, obs)
	}

	t := newTally()
	b.progress("soak: %d clients for %s", c.Clients, c.Duration)
	res, err := lc.run(ctx, loadConfig{Clients: c.Clients, Duration: c.Duration, Next: next, OnAnswer: t.add})
	if err != nil {
		return nil, err
	}
	stats := st.fake.Stats()

	r.add("soak_sent", "requests sent", float64(res.Sent), unitCount).headline()
	r.add("soak_answered", "answers received", float64(res.Answered), unitCount)
	r.add("soak_lost", "lost (sent - answered)", float64(res.lost()), unitCount).want(opEqual, 0)
	r.add("soak_5xx", "answers with a 5xx status", float64(res.fiveXX()), unitCount).want(opEqual, 0)
	r.add("soak_malformed", "answers that are not the relay's envelope", float64(t.malformed), unitCount).want(opEqual, 0)
	r.add("soak_partial", "answers with data and errors side by side", float64(t.partial), unitCount)
	r.add("soak_rps", "requests/s", res.rate(), unitRPS)
	r.addDuration("soak_p50_ms", "latency p50", res.percentile(0.5)).headline()
	r.addDuration("soak_p99_ms", "latency p99", res.percentile(0.99)).headline()
	r.addDuration("soak_max_ms", "latency max", res.percentile(1))
	r.add("soak_pulsedive_calls", "Pulsedive calls", float64(stats.Calls), unitCount)
	countMap(r, "HTTP status", res.Status)
	countMap(r, "requests by endpoint", t.byKind)
	countMap(r, "error envelope codes", t.codes)
	r.count("commonest error messages", topCounts(t.messages, 12))
	countMap(r, "Pulsedive answers by status", stats.ByStatus)
	if res.lost() > 0 {
		countMap(r, "lost requests by cause", res.Lost)
	}
	for _, e := range t.examples {
		r.note("unexpected answer: %s", e)
	}
	r.note("Observables: %.0f%% faulty (fresh values, so no fault is cached away), then of the rest %d%% cached, %d%% new, %d%% unknown. The 429 fault goes only to the throttled key, which Pulsedive then pauses for a minute.",
		100*c.FaultShare, soakCachedShare, soakNewShare, soakUnknownShare)

	st.finish(ctx, r, lc, finishOptions{leakMargin: c.GoroutineMargin, maxRSS: c.MaxRSS, settle: c.Settle})
	return r, nil
}

func faultNames(fs []soakFault) string {
	s := ""
	for i, f := range fs {
		if i > 0 {
			s += ", "
		}
		s += f.name
	}
	return s
}
