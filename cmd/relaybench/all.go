package main

import (
	"context"
	"flag"
	"time"
)

// registerAll runs scaling (cold batches, and warm), throughput and memory
// in sequence with their defaults, each on a relay of its own.
func registerAll(fs *flag.FlagSet) func(context.Context, *bench) ([]*report, error) {
	tc, mc := defaultThroughput(), defaultMemory()
	fs.DurationVar(&tc.Duration, "throughput-duration", tc.Duration, "duration of each turn of the throughput scenario (a turn on the relay and one on the bare server per round)")
	fs.DurationVar(&mc.Duration, "memory-duration", mc.Duration, "duration of the memory scenario")
	return func(ctx context.Context, b *bench) ([]*report, error) {
		steps := []func() (*report, error){
			func() (*report, error) { return runScaling(ctx, b, defaultScaling()) },
			func() (*report, error) { return runThroughput(ctx, b, tc) },
			func() (*report, error) { return runMemory(ctx, b, mc) },
		}
		var out []*report
		start := time.Now()
		for _, step := range steps {
			r, err := step()
			if err != nil {
				// What ran is still reported.
				return out, err
			}
			out = append(out, r)
		}
		b.progress("all: done in %s", time.Since(start).Round(time.Second))
		return out, nil
	}
}
