package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"time"

	"github.com/pulsedive-relay/relay/pulsedive/pulsedivetest"
)

// fakeIdleTimeout closes the relay's idle keep-alive connections to the
// fake Pulsedive soon after use, so that the relay's connection goroutines
// are gone when its goroutine count is compared with the baseline; busy
// connections are never cut.
const fakeIdleTimeout = time.Second

// stackConfig is what one scenario needs running.
type stackConfig struct {
	// name names the relay's log file, and the scenario in its report
	// unless scenario does.
	name, scenario string
	// title heads the report; fakeText says how the fake Pulsedive is set.
	title, fakeText string
	// fake configures the fake Pulsedive; synthetic mode is forced on.
	fake pulsedivetest.Config
	// env is the scenario's relay settings, over relaybench's base ones.
	env map[string]string
	// clients and timeout size the load client: its keep-alive
	// connections, and how long one request may take.
	clients int
	timeout time.Duration
}

// stack is one scenario's running system: the fake Pulsedive, and the
// relay it launched or the one -relay-url names.
type stack struct {
	b        *bench
	name     string
	env      map[string]string
	fake     *pulsedivetest.Fake
	fakeSrv  *http.Server
	fakeURL  string
	fakeDone chan struct{}

	relay   *relayProcess // nil for an external relay
	r       *report       // the scenario's, its settings written
	lc      *loadClient   // to the relay, warmed up
	url     string
	pid     int // 0 when unknown
	rss     *rssSampler
	scraper *http.Client

	goroutinesBefore int // -1 until baseline
	stopped          bool
	exitCode         int
}

// start runs the fake Pulsedive and the relay for one scenario, waits
// until the relay is ready, and warms it up through its load client.
func (b *bench) start(ctx context.Context, cfg stackConfig) (_ *stack, err error) {
	cfg.fake.Synthetic = true
	fake, err := pulsedivetest.New(cfg.fake)
	if err != nil {
		return nil, err
	}
	addr := b.opts.PulsediveAddr
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("fake Pulsedive: %w", err)
	}
	st := &stack{
		b:        b,
		name:     cfg.name,
		env:      cfg.env,
		fake:     fake,
		fakeURL:  "http://" + ln.Addr().String() + "/api/",
		fakeDone: make(chan struct{}),
		scraper:  &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}},

		goroutinesBefore: -1,
	}
	st.fakeSrv = &http.Server{
		Handler:           fake,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       fakeIdleTimeout,
		ErrorLog:          log.New(io.Discard, "", 0),
	}
	go func() {
		defer close(st.fakeDone)
		_ = st.fakeSrv.Serve(ln)
	}()
	defer func() {
		if err != nil {
			st.close()
		}
	}()

	if b.opts.RelayURL != "" {
		st.url = strings.TrimSuffix(b.opts.RelayURL, "/")
		st.pid = b.opts.RelayPID
		b.progress("%s: the relay at %s must run with PULSEDIVE_API_URL=%s %s", cfg.name, st.url, st.fakeURL, envText(cfg.env))
		if err := waitOK(ctx, st.url+"/readyz", 10*time.Second, nil); err != nil {
			return nil, fmt.Errorf("the relay at %s: %w", st.url, err)
		}
	} else {
		b.progress("%s: starting the relay with %s", cfg.name, envText(cfg.env))
		if st.relay, err = st.launch(ctx, cfg.name); err != nil {
			return nil, err
		}
		st.url, st.pid = st.relay.url(), st.relay.pid()
	}
	if st.pid > 0 {
		st.rss = startRSS(st.pid, 100*time.Millisecond)
	}
	st.r = newReport(cmp.Or(cfg.scenario, cfg.name), cfg.title)
	st.describe(st.r, cfg.fakeText)
	st.lc = newLoadClient(st.url, cfg.clients, cfg.timeout)
	return st, st.warmUp(ctx, st.lc)
}

// launch starts a relay of the stack's configuration, logging to
// relay-<name>.log.
func (st *stack) launch(ctx context.Context, name string) (*relayProcess, error) {
	bin, err := st.b.binary(ctx)
	if err != nil {
		return nil, err
	}
	base := map[string]string{
		"PULSEDIVE_API_URL": st.fakeURL,
		"RELAY_JWKS_HOSTS":  st.b.jwks.Host(),
		"SSL_CERT_FILE":     st.b.caFile,
		"RELAY_AUDIENCE":    st.b.opts.Audience,
		"LOG_LEVEL":         "warn",
		"RELAY_DRAIN_DELAY": "0s",
	}
	return startRelay(ctx, bin, relayEnv(base, st.env, st.b.opts.RelayEnv), filepath.Join(st.b.dir, "relay-"+name+".log"))
}

func envText(env map[string]string) string {
	var parts []string
	for _, k := range sortedKeys(env) {
		parts = append(parts, k+"="+env[k])
	}
	if len(parts) == 0 {
		return "its defaults"
	}
	return strings.Join(parts, " ")
}

// describe writes the stack's settings at the head of the report.
func (st *stack) describe(r *report, fake string) {
	if st.relay != nil {
		r.setting("relay", fmt.Sprintf("%s (pid %d) at %s", st.relayBinName(), st.pid, st.url))
		r.setting("relay env", envText(st.env))
		if len(st.b.opts.RelayEnv) > 0 {
			r.setting("relay env overrides", strings.Join(st.b.opts.RelayEnv, " "))
		}
	} else {
		r.setting("relay", "external at "+st.url)
		r.setting("relay env expected", envText(st.env))
		r.note("The relay was not launched by relaybench: its configuration is the operator's, and targets assume the expected environment above.")
		if st.pid == 0 {
			r.note("No -relay-pid: no RSS figures.")
		}
	}
	r.setting("fake Pulsedive", fake)
}

func (st *stack) relayBinName() string {
	if st.b.opts.RelayBin != "" {
		return st.b.opts.RelayBin
	}
	return "go build " + relayPackage
}

// unknown returns a new domain observable that the fake answers 404
// "Indicator not found." (Pulsedive's "no data").
func (st *stack) unknown() (observable, error) {
	o := st.b.values.unknown()
	nf := pulsedivetest.Answer{Status: http.StatusNotFound, Body: []byte(`{"error":"Indicator not found."}`)}
	if err := st.fake.SetIndicator(o.Value, pulsedivetest.Entry{Info: nf, Links: nf}); err != nil {
		return observable{}, err
	}
	return o, nil
}

// goroutines reads go_goroutines from the relay's /metrics.
func (st *stack) goroutines(ctx context.Context) (int, error) {
	m, err := st.scrape(ctx)
	if err != nil {
		return 0, err
	}
	n, ok := m.value("go_goroutines")
	if !ok {
		return 0, errors.New("scrape /metrics: no go_goroutines")
	}
	return int(n), nil
}

// baseline records the relay's goroutines at rest before the load: the
// fewest seen over two seconds, after lc's idle connections are closed and
// the fake has closed the relay's idle ones. A relay whose /metrics cannot
// be read has no goroutine figures.
func (st *stack) baseline(ctx context.Context, lc *loadClient) {
	if lc != nil {
		lc.closeIdle()
	}
	least := -1
	for i := range 9 {
		if i > 0 {
			if !pause(ctx, 250*time.Millisecond) {
				return
			}
		}
		n, err := st.goroutines(ctx)
		if err != nil {
			st.b.progress("%s: no goroutine figures: %v", st.name, err)
			return
		}
		if least < 0 || n < least {
			least = n
		}
	}
	st.goroutinesBefore = least
}

// settled polls the relay's goroutines after the load, closing lc's idle
// connections first, until they are at most limit or wait has passed, and
// returns the last count.
func (st *stack) settled(ctx context.Context, lc *loadClient, limit int, wait time.Duration) (int, error) {
	if lc != nil {
		lc.closeIdle()
	}
	deadline := time.Now().Add(wait)
	for {
		n, err := st.goroutines(ctx)
		if err != nil || n <= limit || time.Now().After(deadline) {
			return n, err
		}
		if !pause(ctx, 250*time.Millisecond) {
			return n, ctx.Err()
		}
	}
}

// pause waits d, or less when ctx ends; it reports whether d passed.
func pause(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// finishOptions says which relay figures are targets.
type finishOptions struct {
	// leakMargin, when at least zero, makes "goroutines after ≤ before +
	// leakMargin" a target; otherwise the counts are only reported.
	leakMargin int
	// maxRSS, when positive, makes "peak RSS < maxRSS" (MiB) a target.
	maxRSS float64
	// hwmTarget puts that target on the kernel's high-water mark (VmHWM),
	// which no sampling misses, instead of the sampled peak.
	hwmTarget bool
	// settle is how long to wait for the goroutines to return to baseline.
	settle time.Duration
}

// finish adds the relay's figures to r: goroutines after the load, RSS
// (peak, at the end, and the kernel's high-water mark), then stops a
// launched relay and adds its exit code and a summary of its log.
func (st *stack) finish(ctx context.Context, r *report, lc *loadClient, o finishOptions) {
	leaked := false
	if st.goroutinesBefore >= 0 {
		limit := st.goroutinesBefore + max(o.leakMargin, 0)
		after, err := st.settled(ctx, lc, limit, max(o.settle, 3*time.Second))
		if err != nil {
			r.note("goroutines after the load: %v", err)
		} else {
			r.add("goroutines_before", "relay goroutines before", float64(st.goroutinesBefore), unitCount)
			f := r.add("goroutines_after", "relay goroutines after (settled)", float64(after), unitCount)
			if o.leakMargin >= 0 {
				f.want(opAtMost, float64(limit))
				leaked = after > limit
			}
		}
	}
	st.relayMetrics(ctx, r)
	if st.rss != nil {
		peak, last, hwm, err := st.rss.finish()
		if err != nil {
			r.note("RSS: %v", err)
		}
		if peak > 0 {
			f := r.add("rss_peak_mib", "relay peak RSS (VmRSS, 100 ms samples)", mib(peak), unitMiB)
			if !o.hwmTarget {
				f.headline()
			}
			if o.maxRSS > 0 && !o.hwmTarget {
				f.want(opBelow, o.maxRSS)
			}
			r.add("rss_end_mib", "relay RSS at the end", mib(last), unitMiB)
		}
		if hwm > 0 {
			f := r.add("rss_hwm_mib", "relay VmHWM at the end", mib(hwm), unitMiB)
			if o.maxRSS > 0 && o.hwmTarget {
				f.want(opBelow, o.maxRSS).headline()
			}
		}
	}
	if st.relay == nil {
		return
	}
	if leaked {
		// The goroutines did not come back: their stacks say where they
		// wait. SIGQUIT ends the relay, so no clean-exit figure.
		st.logSummary(r)
		st.stopped = true
		stacks, err := st.relay.dumpGoroutines(10 * time.Second)
		if err != nil {
			r.note("goroutine dump: %v", err)
			return
		}
		r.count("relay goroutines at the end by [state] frame (SIGQUIT dump)", topCounts(stacks, 15))
		r.note("The relay's goroutines stayed above the baseline; it was sent SIGQUIT for the stack dump above (the whole dump is in %s, kept with -keep).", st.relay.logPath)
		return
	}
	code := st.stopRelay()
	r.add("relay_exit_code", "relay exit code after SIGTERM", float64(code), unitCount).want(opEqual, 0).everyScenario()
	st.logSummary(r)
}

// relayMetrics adds what the relay's own metrics say at the end: its heap,
// its recovered panics (each one a bug), and its tallies of Pulsedive
// calls, shared calls and cache lookups.
func (st *stack) relayMetrics(ctx context.Context, r *report) {
	if st.relay != nil {
		select {
		case <-st.relay.done:
			return // it has exited: nothing to scrape
		default:
		}
	}
	m, err := st.scrape(ctx)
	if err != nil {
		r.note("relay metrics at the end: %v", err)
		return
	}
	if v, ok := m.value("pulsedive_relay_panics_total"); ok {
		r.add("relay_panics", "relay handler panics recovered", v, unitCount).want(opEqual, 0).everyScenario()
	}
	if v, ok := m.value("go_memstats_heap_inuse_bytes"); ok {
		r.add("heap_inuse_mib", "relay heap in use at the end (go_memstats_heap_inuse_bytes)", v/(1<<20), unitMiB)
	}
	if v, ok := m.value("go_memstats_sys_bytes"); ok {
		r.add("go_sys_mib", "relay memory from the OS at the end (go_memstats_sys_bytes)", v/(1<<20), unitMiB)
	}
	for _, t := range []struct{ title, family, label string }{
		{"relay: Pulsedive calls by outcome", "pulsedive_relay_pulsedive_requests_total", "outcome"},
		{"relay: cache lookups by result", "pulsedive_relay_cache_requests_total", "result"},
		{"relay: calls joined in flight, by kind", "pulsedive_relay_shared_calls_total", "kind"},
	} {
		if _, ok := m[t.family]; ok {
			countMap(r, t.title, m.byLabel(t.family, t.label))
		}
	}
}

// logSummary adds the launched relay's log lines by level and its
// commonest messages.
func (st *stack) logSummary(r *report) {
	levels, top := st.relay.logs().summary(8)
	var lines []countEntry
	for _, lv := range sortedKeys(levels) {
		lines = append(lines, countEntry{lv, levels[lv]})
	}
	r.count("relay log lines by level (LOG_LEVEL="+cmp.Or(st.env["LOG_LEVEL"], "warn")+")", lines)
	if len(top) > 0 {
		r.count("relay log, commonest messages", top)
	}
	if st.b.opts.Keep {
		r.setting("relay log", st.relay.logPath)
	}
}

// stopRelay stops a launched relay once and returns its exit code.
func (st *stack) stopRelay() int {
	if st.relay == nil {
		return 0
	}
	if !st.stopped {
		st.stopped = true
		st.exitCode = st.relay.stop(30 * time.Second)
	}
	return st.exitCode
}

// close stops the relay (if launched and still running), the RSS sampler
// and the fake Pulsedive, releasing its hanging and dripping calls. It is
// idempotent.
func (st *stack) close() {
	if st.rss != nil {
		_, _, _, _ = st.rss.finish()
	}
	st.stopRelay()
	if st.lc != nil {
		st.lc.closeIdle()
	}
	st.fake.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := st.fakeSrv.Shutdown(ctx); err != nil {
		_ = st.fakeSrv.Close()
	}
	<-st.fakeDone
	st.scraper.CloseIdleConnections()
}

func mib(bytes int64) float64 { return float64(bytes) / (1 << 20) }
