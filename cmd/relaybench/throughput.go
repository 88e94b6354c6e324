package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync/atomic"
	"time"
)

// throughputConfig is the cached-path scenario: one cached observe
// request, sent to the relay and to the bare server in turn, Rounds times
// Duration each, by Clients closed-loop clients or, with Rate set, on an
// open-loop schedule.
type throughputConfig struct {
	Clients  int
	Duration time.Duration
	Rounds   int
	Rate     float64
	Conns    int
	LogLevel string
}

func defaultThroughput() throughputConfig {
	return throughputConfig{Clients: 64, Duration: 5 * time.Second, Rounds: 3, Conns: 256, LogLevel: "info"}
}

func registerThroughput(fs *flag.FlagSet) func(context.Context, *bench) ([]*report, error) {
	c := defaultThroughput()
	c.register(fs)
	return one(runThroughput, &c)
}

func (c *throughputConfig) register(fs *flag.FlagSet) {
	fs.IntVar(&c.Clients, "clients", c.Clients, "concurrent keep-alive clients (closed loop: each sends when its last answer is in)")
	fs.DurationVar(&c.Duration, "duration", c.Duration, "load duration of each turn, on the relay or on the bare server")
	fs.IntVar(&c.Rounds, "rounds", c.Rounds, "rounds of one turn on each server, in alternating order; figures are the median of the rounds")
	fs.Float64Var(&c.Rate, "rate", c.Rate, "open loop: requests per second on a fixed schedule, latency counted from each request's scheduled time (0: closed loop)")
	fs.IntVar(&c.Conns, "conns", c.Conns, "open loop: most connections (and requests in flight) at once")
	fs.StringVar(&c.LogLevel, "log-level", c.LogLevel, "the relay's LOG_LEVEL: info, its default, writes an access line per request")
}

func (c throughputConfig) validate() error {
	switch {
	case c.Clients < 1 || c.Duration <= 0 || c.Rounds < 1:
		return usageError("throughput: -clients and -rounds must be at least 1, -duration positive")
	case c.Rate < 0 || (c.Rate > 0 && c.Conns < 1):
		return usageError("throughput: -rate must not be negative, -conns at least 1")
	}
	return nil
}

// cachedPathObservable is the fixtures' busiest IP document (threats,
// feeds, risk factors, Active DNS): a 6 KB answer.
var cachedPathObservable = observable{Type: "ip", Value: "185.141.25.242"}

// cachedPath is the relay and the bare server, both answering the same
// cached observe request.
type cachedPath struct {
	st      *stack
	bare    *bareServer
	req     request
	answer  answer
	relayLC *loadClient
	bareLC  *loadClient
	bad     atomic.Int64 // relay answers that are not the cached answer, nor a refusal
	busy    atomic.Int64 // relay answers refusing the request: the relay is busy
}

// startCachedPath launches the relay (no Pulsedive latency, no rate
// limit, LOG_LEVEL logLevel), warms its cache with one observe, and starts
// the bare server with the relay's answer; conns is the connections each
// load client keeps.
func startCachedPath(ctx context.Context, b *bench, name, title, logLevel string, conns int) (_ *cachedPath, err error) {
	st, err := b.start(ctx, stackConfig{
		name: name, title: title, fakeText: "synthetic, no latency, no rate limit",
		env:     map[string]string{"PULSEDIVE_RATE_LIMIT": "0", "LOG_LEVEL": logLevel},
		clients: conns, timeout: time.Minute,
	})
	if err != nil {
		return nil, err
	}
	cp := &cachedPath{st: st, relayLC: st.lc}
	defer func() {
		if err != nil {
			cp.close()
		}
	}()
	// A fixture's document, not a synthetic one made up from a fresh
	// value: every run answers the same bytes, so runs compare.
	if cp.req, err = b.observeRequest(b.apiKey(name), []observable{cachedPathObservable}); err != nil {
		return nil, err
	}
	ra, first, err := post(ctx, cp.relayLC, cp.req)
	if err != nil {
		return nil, err
	}
	if ra.judgements() != 1 || len(ra.Errors) > 0 {
		return nil, fmt.Errorf("%s: warming the cache: %d judgements, errors %q", name, ra.judgements(), ra.errorText())
	}
	cp.answer = first
	st.baseline(ctx, cp.relayLC)
	st.fake.Reset()
	if cp.bare, err = startBare(ctx, b.dir, first.Body, first.Header.Get("Content-Type")); err != nil {
		return nil, err
	}
	cp.bareLC = newLoadClient(cp.bare.url, conns, time.Minute)
	return cp, nil
}

func (cp *cachedPath) close() {
	if cp.bareLC != nil {
		cp.bareLC.closeIdle()
	}
	if cp.bare != nil {
		cp.bare.close()
	}
	cp.st.close()
}

// check counts a relay answer that is not the cached one: a refusal of
// its admission bounds (the relay is busy, as it says past its knee), or
// else a bad answer.
func (cp *cachedPath) check(_ request, a answer) {
	switch {
	case a.Status == http.StatusOK && bytes.Contains(a.Body, []byte(`"judgements"`)) && !bytes.Contains(a.Body, []byte(`"errors"`)):
	case bytes.Contains(a.Body, []byte(`"message":"The relay is busy`)):
		cp.busy.Add(1)
	default:
		cp.bad.Add(1)
	}
}

// turnResult is one turn's load, and the CPU time the server and the load
// generator (relaybench's own process) used for it.
type turnResult struct {
	*loadResult
	cpu, client time.Duration
}

// clientPerRequest is the load generator's CPU time per answered request.
func (t turnResult) clientPerRequest() time.Duration {
	if t.Answered == 0 {
		return 0
	}
	return t.client / time.Duration(t.Answered)
}

// cpuPerRequest is the server's CPU time per answered request, zero when
// unknown.
func (t turnResult) cpuPerRequest() time.Duration {
	if t.Answered == 0 {
		return 0
	}
	return t.cpu / time.Duration(t.Answered)
}

// turn loads the relay (relay true) or the bare server once.
func (cp *cachedPath) turn(ctx context.Context, relay bool, c throughputConfig, rate float64) (turnResult, error) {
	lc, onAnswer, pid := cp.bareLC, func(request, answer) {}, cp.bare.pid()
	if relay {
		lc, onAnswer, pid = cp.relayLC, cp.check, cp.st.pid
	}
	// A second to settle first: connections open, the collector at pace.
	warm := min(time.Second, c.Duration/4)
	var (
		res           *loadResult
		err           error
		cpu0, client0 time.Duration
	)
	if rate > 0 {
		next := func(int) (request, error) { return cp.req, nil }
		if _, err := lc.openLoop(ctx, openConfig{Rate: rate, Duration: warm, Conns: c.Conns, Next: next}); err != nil {
			return turnResult{}, err
		}
		cpu0, client0 = cpuTime(pid), cpuTime(os.Getpid())
		res, err = lc.openLoop(ctx, openConfig{Rate: rate, Duration: c.Duration, Conns: c.Conns, Next: next, OnAnswer: onAnswer})
	} else {
		next := func(int, int) (request, error) { return cp.req, nil }
		if _, err := lc.run(ctx, loadConfig{Clients: c.Clients, Duration: warm, Next: next}); err != nil {
			return turnResult{}, err
		}
		cpu0, client0 = cpuTime(pid), cpuTime(os.Getpid())
		res, err = lc.run(ctx, loadConfig{Clients: c.Clients, Duration: c.Duration, Next: next, OnAnswer: onAnswer})
	}
	if err != nil {
		return turnResult{}, err
	}
	return turnResult{loadResult: res, cpu: cpuTime(pid) - cpu0, client: cpuTime(os.Getpid()) - client0}, nil
}

// roundResult is one round: a turn on each server.
type roundResult struct {
	relay, bare turnResult
}

// runThroughput measures the relay's cached path against the bare server,
// a turn on each per round, the order alternating so that both meet the
// same drift of the machine.
func runThroughput(ctx context.Context, b *bench, c throughputConfig) (*report, error) {
	if err := c.validate(); err != nil {
		return nil, err
	}
	conns := c.Clients
	mode := fmt.Sprintf("%d closed-loop clients", c.Clients)
	if c.Rate > 0 {
		conns = c.Conns
		mode = fmt.Sprintf("open loop at %.0f requests/s on at most %d connections", c.Rate, c.Conns)
	}
	cp, err := startCachedPath(ctx, b, "throughput", fmt.Sprintf("cached path: one cached observe, %s, %d rounds of %s on the relay and on a bare net/http server", mode, c.Rounds, c.Duration), c.LogLevel, conns)
	if err != nil {
		return nil, err
	}
	defer cp.close()
	r := cp.st.r
	r.setting("bare server", fmt.Sprintf("net/http in a process of its own (pid %d): reads the body, writes the relay's %d bytes with its headers", cp.bare.pid(), len(cp.answer.Body)))

	var rounds []roundResult
	for i := range c.Rounds {
		var rr roundResult
		order := []bool{true, false}
		if i%2 == 1 {
			order = []bool{false, true}
		}
		for _, relay := range order {
			name := "bare server"
			if relay {
				name = "relay"
			}
			b.progress("throughput: round %d of %d, %s, %s", i+1, c.Rounds, name, mode)
			res, err := cp.turn(ctx, relay, c, c.Rate)
			if err != nil {
				return nil, err
			}
			if relay {
				rr.relay = res
			} else {
				rr.bare = res
			}
		}
		rounds = append(rounds, rr)
	}
	calls := cp.st.fake.Calls()

	med := func(f func(roundResult) float64) float64 {
		v := make([]float64, len(rounds))
		for i, rr := range rounds {
			v[i] = f(rr)
		}
		return medianOf(v)
	}
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	relayRate := med(func(rr roundResult) float64 { return rr.relay.rate() })
	bareRate := med(func(rr roundResult) float64 { return rr.bare.rate() })
	relayP99 := med(func(rr roundResult) float64 { return ms(rr.relay.percentile(0.99)) })
	bareP99 := med(func(rr roundResult) float64 { return ms(rr.bare.percentile(0.99)) })
	var lost, answered int
	for _, rr := range rounds {
		lost += rr.relay.lost()
		answered += rr.relay.Answered
	}

	r.add("answer_bytes", "answer size", float64(len(cp.answer.Body)), unitBytes)
	r.add("relay_rps", "relay: requests/s (median of rounds)", relayRate, unitRPS).headline()
	r.add("relay_p50_ms", "relay: latency p50 (median of rounds)", med(func(rr roundResult) float64 { return ms(rr.relay.percentile(0.5)) }), unitMs).headline()
	r.add("relay_p99_ms", "relay: latency p99 (median of rounds)", relayP99, unitMs).headline()
	r.add("relay_requests", "relay: requests answered", float64(answered), unitCount)
	r.add("relay_bad", "relay: answers not 200 with judgements and no errors", float64(cp.bad.Load()+cp.busy.Load()), unitCount).want(opEqual, 0)
	r.add("relay_lost", "relay: requests without an answer", float64(lost), unitCount).want(opEqual, 0)
	r.add("relay_pulsedive_calls", "relay: Pulsedive calls during the load", float64(calls), unitCount).want(opEqual, 0)
	r.add("bare_rps", "bare server: requests/s (median of rounds)", bareRate, unitRPS).headline()
	r.add("bare_p50_ms", "bare server: latency p50 (median of rounds)", med(func(rr roundResult) float64 { return ms(rr.bare.percentile(0.5)) }), unitMs)
	r.add("bare_p99_ms", "bare server: latency p99 (median of rounds)", bareP99, unitMs)
	if c.Rate == 0 {
		r.add("relay_share", "relay requests/s / bare requests/s (median of rounds)", med(func(rr roundResult) float64 { return rr.relay.rate() / rr.bare.rate() }), unitRatio).aim(opAtLeast, 0.55).headline()
	}
	us := func(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }
	relayCPU := med(func(rr roundResult) float64 { return us(rr.relay.cpuPerRequest()) })
	bareCPU := med(func(rr roundResult) float64 { return us(rr.bare.cpuPerRequest()) })
	if relayCPU > 0 && bareCPU > 0 {
		r.add("relay_cpu_us", "relay: CPU time per request, user and system (median of rounds)", relayCPU, unitUs).headline()
		r.add("bare_cpu_us", "bare server: CPU time per request (median of rounds)", bareCPU, unitUs)
		r.add("cpu_share", "bare CPU per request / relay CPU per request (median of rounds)", med(func(rr roundResult) float64 {
			return float64(rr.bare.cpuPerRequest()) / float64(rr.relay.cpuPerRequest())
		}), unitRatio)
		r.add("client_cpu_us", "load generator: CPU time per request (median of rounds, both servers)", med(func(rr roundResult) float64 {
			return us((rr.relay.clientPerRequest() + rr.bare.clientPerRequest()) / 2)
		}), unitUs)
	}
	r.add("p99_ratio", "relay p99 / bare p99 (median of rounds)", med(func(rr roundResult) float64 { return ms(rr.relay.percentile(0.99)) / ms(rr.bare.percentile(0.99)) }), unitRatio).aim(opAtMost, 2)
	var perRound []string
	for i, rr := range rounds {
		perRound = append(perRound, fmt.Sprintf("%d: relay %.0f/s p99 %.1f ms %.0f µs CPU, bare %.0f/s p99 %.1f ms %.0f µs CPU", i+1,
			rr.relay.rate(), ms(rr.relay.percentile(0.99)), us(rr.relay.cpuPerRequest()),
			rr.bare.rate(), ms(rr.bare.percentile(0.99)), us(rr.bare.cpuPerRequest())))
	}
	r.note("Rounds: %s.", strings.Join(perRound, "; "))
	r.note("The relay and the bare server each run in a process of their own, on this machine with the load generator, each over its own %d keep-alive connections; the relay logs at %s. The share is what the relay's token check, cache lookup, CTIM answer, access line and metrics leave of what net/http alone serves on this machine. CPU time per request is each process's own (from /proc, 10 ms ticks), whatever else runs on the machine; when the machine is the limit, requests/s go roughly as 1 / (server's + load generator's CPU per request).", conns, c.LogLevel)

	cp.st.finish(ctx, r, cp.relayLC, finishOptions{leakMargin: -1})
	return r, nil
}

// medianOf is the median of v (the mean of the middle two for an even
// count); v is reordered.
func medianOf(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	slices.Sort(v)
	n := len(v)
	if n%2 == 1 {
		return v[n/2]
	}
	return (v[n/2-1] + v[n/2]) / 2
}
