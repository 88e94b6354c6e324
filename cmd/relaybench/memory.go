package main

import (
	"context"
	"flag"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/pulsedive-relay/relay/pulsedive/pulsedivetest"
)

// memoryConfig is the memory scenario: Clients clients send mixed batches
// for Duration, most values new so that the cache (default budget) fills.
type memoryConfig struct {
	Duration time.Duration
	Clients  int
	Batch    int
	Keys     int
	Latency  time.Duration
	MaxRSS   float64 // MiB
}

func defaultMemory() memoryConfig {
	return memoryConfig{Duration: 60 * time.Second, Clients: 48, Batch: 10, Keys: 4, Latency: 2 * time.Millisecond, MaxRSS: 150}
}

func registerMemory(fs *flag.FlagSet) func(context.Context, *bench) ([]*report, error) {
	c := defaultMemory()
	fs.DurationVar(&c.Duration, "duration", c.Duration, "load duration")
	fs.IntVar(&c.Clients, "clients", c.Clients, "concurrent clients (32 to 64 is the scenario)")
	fs.IntVar(&c.Batch, "batch", c.Batch, "observables per request")
	fs.IntVar(&c.Keys, "keys", c.Keys, "API keys the clients share")
	fs.DurationVar(&c.Latency, "latency", c.Latency, "latency of every Pulsedive call")
	fs.Float64Var(&c.MaxRSS, "max-rss", c.MaxRSS, "relay peak RSS budget, MiB")
	return one(runMemory, &c)
}

// Shares of a memory batch, in tenths: new values fill the cache, hot ones
// hit it, unknown ones fill the negative cache.
const (
	memoryNewShare     = 6
	memoryHotShare     = 3
	memoryUnknownShare = 1
	memoryHotPool      = 500
)

// runMemory loads the relay with ever new observables, some repeated and
// some unknown, under several keys, and checks its peak RSS against the
// budget with the default 64 MiB cache.
func runMemory(ctx context.Context, b *bench, c memoryConfig) (*report, error) {
	if c.Duration <= 0 || c.Clients < 1 || c.Batch < 1 || c.Keys < 1 || c.Latency < 0 || c.MaxRSS < 0 {
		return nil, usageError("memory: -duration must be positive, -clients, -batch and -keys at least 1")
	}
	st, err := b.start(ctx, stackConfig{
		name:     "memory",
		title:    fmt.Sprintf("%s of mixed load, %d clients, %d keys, new observables filling the default 64 MiB cache", c.Duration, c.Clients, c.Keys),
		fake:     pulsedivetest.Config{Latency: c.Latency, Jitter: c.Latency},
		fakeText: fmt.Sprintf("synthetic, latency %s + up to %s jitter, no rate limit", c.Latency, c.Latency),
		env:      map[string]string{"PULSEDIVE_RATE_LIMIT": "0"},
		clients:  c.Clients, timeout: time.Minute,
	})
	if err != nil {
		return nil, err
	}
	defer st.close()
	r, lc := st.r, st.lc
	st.baseline(ctx, lc)
	st.fake.Reset()

	hot := b.values.batch(memoryHotPool)
	keys := make([]string, c.Keys)
	for i := range keys {
		keys[i] = b.apiKey(fmt.Sprintf("memory-%d", i))
	}
	rngs := make([]*rand.Rand, c.Clients)
	for i := range rngs {
		rngs[i] = rand.New(rand.NewPCG(uint64(i), 0x6d656d6f7279))
	}
	kinds := []string{"observe", "observe", "observe", "observe", "observe", "observe", "observe", "deliberate", "deliberate", "refer"}
	next := func(client, seq int) (request, error) {
		rng := rngs[client]
		obs := make([]observable, 0, c.Batch)
		for range c.Batch {
			switch share := rng.IntN(10); {
			case share < memoryNewShare:
				obs = append(obs, b.values.next())
			case share < memoryNewShare+memoryHotShare:
				obs = append(obs, hot[rng.IntN(len(hot))])
			default:
				o, err := st.unknown()
				if err != nil {
					return request{}, err
				}
				obs = append(obs, o)
			}
		}
		return b.endpointRequest(kinds[rng.IntN(len(kinds))], keys[(client+seq)%len(keys)], obs)
	}
	t := newTally()
	b.progress("memory: %d clients for %s", c.Clients, c.Duration)
	res, err := lc.run(ctx, loadConfig{Clients: c.Clients, Duration: c.Duration, Next: next, OnAnswer: t.add})
	if err != nil {
		return nil, err
	}
	stats := st.fake.Stats()

	r.add("memory_requests", "requests sent", float64(res.Sent), unitCount)
	r.add("memory_lost", "requests without an answer", float64(res.lost()), unitCount).want(opEqual, 0)
	r.add("memory_5xx", "answers with a 5xx status", float64(res.fiveXX()), unitCount).want(opEqual, 0)
	r.add("memory_malformed", "answers that are not the relay's envelope", float64(t.malformed), unitCount).want(opEqual, 0)
	r.add("memory_rps", "requests/s", res.rate(), unitRPS).headline()
	r.addDuration("memory_p50_ms", "latency p50", res.percentile(0.5))
	r.addDuration("memory_p99_ms", "latency p99", res.percentile(0.99))
	r.add("memory_pulsedive_calls", "Pulsedive calls", float64(stats.Calls), unitCount)
	r.add("memory_pulsedive_mib", "Pulsedive answer bytes sent by the fake", mib(stats.BytesWritten), unitMiB)
	countMap(r, "HTTP status", res.Status)
	countMap(r, "error envelope codes", t.codes)
	if res.lost() > 0 {
		countMap(r, "lost requests by cause", res.Lost)
	}
	for _, e := range t.examples {
		r.note("unexpected answer: %s", e)
	}
	r.note("New observables fill the cache (%d in %d per batch), hot ones (a pool of %d) hit it, unknown ones (%d in %d) fill the negative cache.", memoryNewShare, 10, memoryHotPool, memoryUnknownShare, 10)

	st.finish(ctx, r, lc, finishOptions{leakMargin: 10, maxRSS: c.MaxRSS, settle: 10 * time.Second})
	return r, nil
}
