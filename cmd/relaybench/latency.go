package main

import (
	"context"
	"flag"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// latencyConfig is the latency curve of the cached path: the throughput
// scenario's request sent open loop at each of Rates in turn, to the relay
// and then to the bare server, until the relay is past its knee.
type latencyConfig struct {
	Rates    numbers[float64]
	Duration time.Duration
	Conns    int
	MaxP99   time.Duration
	Bare     bool
	LogLevel string
}

func defaultLatency() latencyConfig {
	return latencyConfig{
		Rates:    numbers[float64]{1000, 2000, 4000, 8000, 12000, 16000, 20000, 24000, 28000, 32000, 36000, 40000},
		Duration: 5 * time.Second,
		Conns:    256,
		MaxP99:   50 * time.Millisecond,
		Bare:     true,
		LogLevel: "info",
	}
}

func registerLatency(fs *flag.FlagSet) func(context.Context, *bench) ([]*report, error) {
	c := defaultLatency()
	fs.Var(&c.Rates, "rates", "comma-separated request rates to try, lowest first")
	fs.DurationVar(&c.Duration, "duration", c.Duration, "load duration at each rate")
	fs.IntVar(&c.Conns, "conns", c.Conns, "most connections (and requests in flight) at once")
	fs.DurationVar(&c.MaxP99, "max-p99", c.MaxP99, "past the knee: a p99 above this, or fewer answers than 95% of the rate, twice running at one rate; the curve stops there")
	fs.BoolVar(&c.Bare, "bare", c.Bare, "also send each rate to the bare server, for reference")
	fs.StringVar(&c.LogLevel, "log-level", c.LogLevel, "the relay's LOG_LEVEL")
	return one(runLatency, &c)
}

// pastKnee says whether a run at rate missed its schedule or its p99, or
// had more than 1 % of its requests refused as busy (busy: refusals
// during the run), which are answered fast and would hide the queue.
func pastKnee(res *loadResult, rate float64, maxP99 time.Duration, busy int64) bool {
	return res.rate() < 0.95*rate || res.percentile(0.99) > maxP99 || res.lost() > 0 || busy*100 > int64(res.Sent)
}

// runLatency walks the rates up, each open loop from the scheduled send
// time, until the relay is past its knee.
func runLatency(ctx context.Context, b *bench, c latencyConfig) (*report, error) {
	if len(c.Rates) == 0 || c.Duration <= 0 || c.Conns < 1 || c.MaxP99 <= 0 {
		return nil, usageError("latency: -rates, a positive -duration and -max-p99, and -conns of at least 1 are needed")
	}
	cp, err := startCachedPath(ctx, b, "latency", fmt.Sprintf("cached path, open loop: latency from each request's scheduled time against the rate, %s a rate, up to the knee", c.Duration), c.LogLevel, c.Conns)
	if err != nil {
		return nil, err
	}
	defer cp.close()
	r := cp.st.r
	r.setting("load", fmt.Sprintf("one cached observe on a fixed schedule, at most %d connections; past the knee: p99 above %s or fewer than 95%% of the rate answered", c.Conns, c.MaxP99))
	if c.Bare {
		r.setting("bare server", fmt.Sprintf("net/http in a process of its own (pid %d), the relay's %d bytes and headers", cp.bare.pid(), len(cp.answer.Body)))
	}
	tc := throughputConfig{Duration: c.Duration, Conns: c.Conns}
	knee := 0.0
	var rows []string
	var busyPast int64
	for _, rate := range c.Rates {
		b.progress("latency: %.0f requests/s on the relay", rate)
		before := cp.busy.Load()
		relay, err := cp.turn(ctx, true, tc, rate)
		if err == nil && pastKnee(relay.loadResult, rate, c.MaxP99, cp.busy.Load()-before) {
			// A shared machine has hiccups: the knee is where the relay
			// misses twice running.
			b.progress("latency: %.0f requests/s on the relay again", rate)
			before = cp.busy.Load()
			relay, err = cp.turn(ctx, true, tc, rate)
		}
		if err != nil {
			return nil, err
		}
		busy := cp.busy.Load() - before
		key := strconv.FormatFloat(rate, 'f', -1, 64)
		addCurve(r, "relay", key, relay)
		row := fmt.Sprintf("%s/s: relay %s", key, curveText(relay))
		if c.Bare {
			b.progress("latency: %.0f requests/s on the bare server", rate)
			bare, err := cp.turn(ctx, false, tc, rate)
			if err != nil {
				return nil, err
			}
			addCurve(r, "bare", key, bare)
			row += ", bare " + curveText(bare)
		}
		if busy > 0 {
			row += fmt.Sprintf(" (relay: %d refused as busy)", busy)
		}
		rows = append(rows, row)
		if pastKnee(relay.loadResult, rate, c.MaxP99, busy) {
			busyPast = busy
			break
		}
		knee = rate
	}
	f := r.add("knee_rps", "relay: highest rate answered on schedule within the p99 bound", knee, unitRPS).headline()
	if knee == 0 {
		f.aim(opAtLeast, c.Rates[0])
	}
	r.add("relay_bad", "relay: answers not 200 with judgements and no errors, nor a refusal", float64(cp.bad.Load()), unitCount).want(opEqual, 0)
	r.add("relay_busy_past_knee", "relay: requests refused as busy at the rate past the knee (one API key holds at most half of RELAY_MAX_REQUESTS)", float64(busyPast), unitCount)
	r.note("Curve: %s.", strings.Join(rows, "; "))
	r.note("Latency counts from when each request was due, so a server falling behind shows as latency (queueing included), not as a slower schedule. The load generator shares the machine: near the knee its own CPU is part of what is measured.")
	cp.st.finish(ctx, r, cp.relayLC, finishOptions{leakMargin: -1})
	return r, nil
}

// addCurve adds one server's figures at one rate.
func addCurve(r *report, who, rate string, t turnResult) {
	r.add(who+"_"+rate+"_rps", fmt.Sprintf("%s at %s/s: answered per second", who, rate), t.rate(), unitRPS)
	r.addDuration(who+"_"+rate+"_p50_ms", fmt.Sprintf("%s at %s/s: latency p50", who, rate), t.percentile(0.5))
	r.addDuration(who+"_"+rate+"_p99_ms", fmt.Sprintf("%s at %s/s: latency p99", who, rate), t.percentile(0.99))
	r.addDuration(who+"_"+rate+"_p999_ms", fmt.Sprintf("%s at %s/s: latency p99.9", who, rate), t.percentile(0.999))
	if c := t.cpuPerRequest(); c > 0 {
		r.add(who+"_"+rate+"_cpu_us", fmt.Sprintf("%s at %s/s: CPU time per request", who, rate), float64(c)/float64(time.Microsecond), unitUs)
	}
}

// curveText is one server's figures at one rate, in a few words.
func curveText(t turnResult) string {
	ms := func(d time.Duration) string {
		return strconv.FormatFloat(float64(d)/float64(time.Millisecond), 'f', 1, 64)
	}
	return fmt.Sprintf("%.0f/s p50 %s p99 %s p99.9 %s ms", t.rate(), ms(t.percentile(0.5)), ms(t.percentile(0.99)), ms(t.percentile(0.999)))
}
