package relay

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/pulsedive-relay/relay/cache"
	"github.com/pulsedive-relay/relay/cluster"
	"github.com/pulsedive-relay/relay/limiter"
	"github.com/pulsedive-relay/relay/metrics"
	"github.com/pulsedive-relay/relay/pipeline"
	"github.com/pulsedive-relay/relay/pulsedive"
	"github.com/pulsedive-relay/relay/transport"
	"github.com/pulsedive-relay/relay/transport/auth"
)

func serveCommand(ctx context.Context, args []string, env environment) error {
	fs := newFlagSet("serve", "Serve the relay. Configuration comes from the environment (see check-config).", env)
	if done, err := parseFlags(fs, args, env); done {
		return err
	}
	return Serve(ctx, env.getenv, env.environ(), Deps{Stderr: env.stderr})
}

// Serve loads the configuration through getenv as the serve command does
// and serves until ctx ends (see serve). environ is the whole environment,
// NAME=value, looked through for misspelt settings, which are warned
// about. The demo calls it with its overrides in getenv.
func Serve(ctx context.Context, getenv func(string) string, environ []string, d Deps) error {
	cfg, err := loadConfig(getenv)
	if err != nil {
		warnStrays(d.Stderr, environ)
		return err
	}
	d.strays = strays(environ)
	return serve(ctx, cfg, d)
}

// Deps are what Serve takes from its caller beyond the environment: the
// demo passes a trusting HTTP client for its loopback JWKS, the clock its
// fixtures need and what to print once ready.
type Deps struct {
	// Stderr receives the logs.
	Stderr io.Writer
	// JWKSClient fetches JWKS documents; nil uses auth's default.
	JWKSClient *http.Client
	// Now is the clock of the mapping; time.Now when nil.
	Now func() time.Time
	// Ready, when non-nil, is called once the relay serves, with its
	// logger and the bound addresses (metricsAddr empty when /metrics is
	// served on addr).
	Ready func(log *slog.Logger, addr, metricsAddr string)
	// Listen says where the main listen address came from and how to
	// choose another, for the error when it cannot be bound; empty:
	// RELAY_ADDR.
	Listen ListenSource

	// pulsedive carries the calls to Pulsedive; nil uses
	// pulsediveTransport. Tests serve a fake Pulsedive in memory.
	pulsedive http.RoundTripper
	// strays are the environment's variables that look like misspelt
	// settings, logged as warnings at start.
	strays []stray
}

// ListenSource names the origin of a listen address in errors.
type ListenSource struct {
	Name string // what set the address: RELAY_ADDR, -addr
	Fix  string // how to give another
}

// listenError is an address the relay cannot listen on.
type listenError struct {
	source ListenSource
	addr   string
	err    error
}

func (e *listenError) Error() string {
	var why string
	switch {
	case errors.Is(e.err, syscall.EADDRINUSE):
		why = "address already in use (another process listens there, perhaps another relay)"
	case errors.Is(e.err, syscall.EACCES):
		why = "permission denied (ports below 1024 need privileges)"
	case errors.Is(e.err, syscall.EADDRNOTAVAIL):
		why = "no interface of this machine has that address"
	default:
		why = e.err.Error()
	}
	return fmt.Sprintf("cannot listen on %s %s: %s; %s", e.source.Name, e.addr, why, e.source.Fix)
}

func (e *listenError) Unwrap() error { return e.err }

func newLogger(w io.Writer, cfg config) *slog.Logger {
	opts := &slog.HandlerOptions{Level: cfg.LogLevel}
	if cfg.LogFormat == "text" {
		return slog.New(slog.NewTextHandler(w, opts))
	}
	return slog.New(slog.NewJSONHandler(w, opts))
}

// wiring is the wired application: its handlers, the bound on their
// connections, and what must be closed.
type wiring struct {
	handler        http.Handler
	metricsHandler http.Handler
	conns          *transport.ConnLimit
	metrics        *metrics.Metrics
	close          func()
}

// wire builds every part from the configuration. ready reports readiness
// for /readyz.
func wire(cfg config, d Deps, log *slog.Logger, ready func() bool) (*wiring, error) {
	reg := prometheus.NewRegistry()
	m, err := metrics.New(reg, metrics.Config{Version: version, Labels: metricLabels()})
	if err != nil {
		return nil, err
	}
	now := d.Now
	if now == nil {
		now = time.Now
	}

	// With REDIS_URL the replicas share the budget, a cache and calls;
	// without it each replica is on its own, as before.
	var cl *cluster.Cluster
	closeAll := func() {}
	if cfg.RedisURL != "" {
		cl, err = cluster.New(cluster.Config{URL: cfg.RedisURL, Timeout: cfg.RedisTimeout, Observer: m, Logger: log})
		if err != nil {
			return nil, fmt.Errorf("REDIS_URL: %w", err)
		}
		closeAll = cl.Close
	}
	fail := func(err error) (*wiring, error) {
		closeAll()
		return nil, err
	}

	// PULSEDIVE_RATE_LIMIT is the key's budget per minute; the bucket that
	// never spends more than that in any minute refills a little slower.
	// The pipeline learns the same refill and burst, to tell a caller whose
	// Active DNS was skipped when the budget allows the rest.
	refill, burst := limiter.Budget(cfg.RateLimit, cfg.Burst)
	budget := pipeline.Budget{Burst: burst}
	if refill > 0 {
		budget.Every = time.Duration(float64(time.Minute) / refill)
	}
	linksMaxWait := cfg.LinksMaxWait
	if linksMaxWait == 0 {
		linksMaxWait = -1 // the pipeline's "never wait"; its zero is the default
	}
	var lim pulsedive.Limiter
	if cl != nil {
		b, err := cl.NewBudget(cluster.BudgetConfig{PerMinute: cfg.RateLimit, Burst: cfg.Burst, Replicas: cfg.Replicas})
		if err != nil {
			return fail(err)
		}
		lim = b
	} else {
		l, err := limiter.New(limiter.Config{PerMinute: refill, Burst: burst})
		if err != nil {
			return fail(err)
		}
		lim = l
	}
	pulsediveRT := d.pulsedive
	if pulsediveRT == nil {
		pulsediveRT = pulsediveTransport(cfg)
	}
	client, err := pulsedive.New(pulsedive.Config{
		BaseURL:           cfg.PulsediveURL,
		HTTPClient:        &http.Client{Transport: pulsediveRT},
		Timeout:           cfg.PulsediveTimeout,
		UserAgent:         "pulsedive-relay/" + version + " (+https://github.com/pulsedive-relay/relay)",
		Limiter:           lim,
		Observer:          m,
		MaxInFlight:       cfg.MaxInflight,
		MaxInFlightPerKey: cfg.MaxInflightKey,
		Breaker: pulsedive.BreakerConfig{
			Failures:      cfg.BreakerFailures,
			OpenFor:       cfg.BreakerOpenFor,
			OnStateChange: breakerLogger(log),
		},
	})
	if err != nil {
		return fail(err)
	}

	var store pipeline.Store
	var collapser pipeline.Collapser
	docBytes, mappingBytes := cacheShares(cfg.CacheMaxBytes)
	if cfg.CacheMaxBytes > 0 {
		c, err := cache.New[pipeline.Document](cache.Config{MaxBytes: docBytes})
		if err != nil {
			return fail(err)
		}
		store = c
		closeCluster := closeAll
		closeAll = func() { closeCluster(); c.Close() }
		if err := reg.Register(metrics.NewCacheCollector(cacheFigures(c, docBytes))); err != nil {
			return fail(fmt.Errorf("metrics: %w", err))
		}
		if cl != nil {
			shared := cl.NewStore(c)
			store, collapser = shared, cl.NewCollapser(shared)
		}
	}

	pipe, err := pipeline.New(pipeline.Config{
		Fetcher:        client,
		Pinger:         client,
		Store:          store,
		Collapser:      collapser,
		MappingBytes:   mappingBytes,
		Workers:        cfg.Workers,
		RequestTimeout: cfg.RequestTimeout,
		LinksMaxWait:   linksMaxWait,
		Budget:         budget,
		CacheTTL:       cfg.CacheTTL,
		NegativeTTL:    cfg.NegativeTTL,
		StaleTTL:       cfg.StaleTTL,
		Now:            now,
		Observer:       m,
		Logger:         log,
	})
	if err != nil {
		return fail(err)
	}

	authn, err := auth.New(auth.Config{
		JWKSHosts:            cfg.JWKSHosts,
		Audiences:            cfg.Audiences,
		HTTPClient:           d.JWKSClient,
		JWKSTTL:              cfg.JWKSTTL,
		MaxKeyAge:            cfg.JWKSMaxKeyAge,
		DefaultEntitiesLimit: cfg.EntitiesLimit,
		Observer:             m,
		Logger:               log,
	})
	if err != nil {
		return fail(err)
	}

	// OpenMetrics when the scraper asks for it (Prometheus does), the text
	// format otherwise.
	metricsHandler := promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg, EnableOpenMetrics: true})
	admission := transport.Admission{
		Requests:    cfg.MaxRequests,
		BodyBytes:   cfg.BodyBudget,
		Observables: cfg.ObservablesInFlight,
	}
	m.AdmissionLimit(transport.BoundConnections, int64(cfg.MaxConnections))
	m.AdmissionLimit(transport.BoundRequests, int64(admission.Requests))
	m.AdmissionLimit(transport.BoundBodyBytes, admission.BodyBytes)
	m.AdmissionLimit(transport.BoundObservables, int64(admission.Observables))
	tcfg := transport.Config{
		Enricher:       pipe,
		Auth:           authn,
		Version:        version,
		MaxBodyBytes:   cfg.MaxBodyBytes,
		MaxObservables: cfg.MaxObservables,
		Admission:      admission,
		WriteTimeout:   writeTimeout(cfg.RequestTimeout),
		Ready:          ready,
		Observer:       m,
		Logger:         log,
	}
	if cfg.MetricsAddr == "" {
		tcfg.Metrics = metricsHandler
	}
	h, err := transport.NewHandler(tcfg)
	if err != nil {
		return fail(err)
	}
	conns := transport.NewConnLimit(transport.ConnLimitConfig{Max: cfg.MaxConnections, Observer: m})
	return &wiring{handler: h, metricsHandler: metricsHandler, conns: conns, metrics: m, close: closeAll}, nil
}

// cacheShares splits CACHE_MAX_BYTES between the cached documents and the
// observe answers mapped from them and kept for reuse (a sixteenth, at
// most 4 MiB), so that the one setting bounds both: the memory plan and
// the README's memory figure count on it.
func cacheShares(cacheBytes int64) (docs, mappings int64) {
	if cacheBytes <= 0 {
		return 0, 0
	}
	mappings = min(cacheBytes/16, 4<<20)
	if mappings == 0 {
		return cacheBytes, -1 // a budget too small to share: keep no mapping
	}
	return cacheBytes - mappings, mappings
}

// cacheFigures reads the cache's figures for a scrape.
func cacheFigures(c *cache.Cache[pipeline.Document], maxBytes int64) func() metrics.CacheFigures {
	return func() metrics.CacheFigures {
		st := c.Stats()
		return metrics.CacheFigures{
			Bytes: st.Bytes, MaxBytes: maxBytes, Entries: st.Entries,
			Evicted: st.Evicted, Expired: st.Expired, Rejected: st.Rejected, Dropped: st.Dropped,
		}
	}
}

// breakerLogger logs each change of one API key's circuit breaker: its
// opening as a warning, its closing as news, its probing for debugging.
// The key is not named (metrics count the keys per state).
func breakerLogger(log *slog.Logger) func(from, to pulsedive.BreakerState) {
	return func(from, to pulsedive.BreakerState) {
		level := slog.LevelDebug
		switch to {
		case pulsedive.BreakerOpen:
			level = slog.LevelWarn
		case pulsedive.BreakerClosed:
			level = slog.LevelInfo
		}
		log.Log(context.Background(), level, "pulsedive circuit breaker of an API key changed", "from", from.String(), "to", to.String())
	}
}

// pulsediveTransport keeps enough idle connections to Pulsedive for a full
// worker pool and bounds every phase of a connection.
func pulsediveTransport(cfg config) *http.Transport {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConns = max(100, cfg.Workers*4)
	t.MaxIdleConnsPerHost = max(cfg.Workers*2, runtime.GOMAXPROCS(0))
	t.TLSHandshakeTimeout = min(cfg.PulsediveTimeout, 10*time.Second)
	t.ResponseHeaderTimeout = cfg.PulsediveTimeout
	return t
}

// serve runs the relay until ctx ends, then drains as CONTRACT.md section 1 says:
// /readyz turns 503 at once, requests are still served for DrainDelay,
// then the listeners close and in-flight requests get ShutdownTimeout to
// finish. It returns nil after a clean shutdown, and the error of a
// listener that failed otherwise (after draining what it can).
func serve(ctx context.Context, cfg config, d Deps) error {
	s, err := start(cfg, d)
	if err != nil {
		return err
	}
	var failed error
	select {
	case <-ctx.Done():
		failed = s.drain()
	case failed = <-s.errc:
		// A listener failed: nothing to drain towards, and Run reports it.
	}
	s.shutdown(ctx)
	return failed
}

// server is the relay serving: its servers on their listeners, and what
// the drain and the shutdown need.
type server struct {
	cfg     config
	log     *slog.Logger
	logs    *logWriter // the log's buffer on its way to Deps.Stderr
	app     *wiring
	ready   *atomic.Bool
	servers []*http.Server
	// errc receives the error of a server that stopped serving for
	// another reason than its shutdown.
	errc chan error
	wg   sync.WaitGroup
	// addr and metricsAddr are the bound addresses; metricsAddr is empty
	// when /metrics is served on addr.
	addr, metricsAddr string
}

// start builds the relay from cfg, listens and serves in the background
// until shutdown. On error nothing is left running.
func start(cfg config, d Deps) (_ *server, err error) {
	logs := newLogWriter(d.Stderr, logFlushEvery)
	defer func() {
		if err != nil {
			logs.Close() // the lines before the failure, written
		}
	}()
	log := newLogger(logs, cfg)
	for _, s := range d.strays {
		attrs := []any{"variable", s.name}
		switch {
		case s.note != "":
			attrs = append(attrs, "note", s.note)
		case s.suggestion != "":
			attrs = append(attrs, "did_you_mean", s.suggestion)
		}
		log.Warn("environment variable ignored: not a setting of the relay", attrs...)
	}
	// The certificate is read before anything listens: a bad one stops
	// the relay at start, naming the setting.
	var certs *certReloader
	if cfg.TLSCertFile != "" {
		var err error
		certs, err = newCertReloader(cfg.TLSCertFile, cfg.TLSKeyFile, certCheckEvery, log)
		if err != nil {
			return nil, err
		}
	}
	s := &server{cfg: cfg, log: log, logs: logs, ready: new(atomic.Bool)}
	app, err := wire(cfg, d, log, s.ready.Load)
	if err != nil {
		return nil, err
	}
	s.app = app

	mainServer := newServer(cfg, app.handler, app.conns, log, app.metrics.TLSHandshakeFailed)
	source := d.Listen
	if source.Name == "" {
		source = ListenSource{"RELAY_ADDR", "set RELAY_ADDR to another address"}
	}
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		app.close()
		return nil, &listenError{source, cfg.Addr, err}
	}
	// With TLS the connection bound counts TLS connections, whose
	// handshakes run in the server's connection goroutines, bounded by its
	// timeouts; a connection refused at the bound is answered over TLS.
	counted := ln
	if certs != nil {
		counted = tls.NewListener(ln, serverTLSConfig(certs))
		mainServer.TLSNextProto = noHTTP2
	}
	s.servers = []*http.Server{mainServer}
	listeners := []net.Listener{app.conns.Listener(counted)}
	s.addr = ln.Addr().String()
	if cfg.MetricsAddr != "" {
		mln, err := net.Listen("tcp", cfg.MetricsAddr)
		if err != nil {
			ln.Close()
			app.close()
			return nil, &listenError{ListenSource{"METRICS_ADDR", "set METRICS_ADDR to another address, or leave it empty to serve /metrics on RELAY_ADDR"}, cfg.MetricsAddr, err}
		}
		mux := http.NewServeMux()
		mux.Handle("GET /metrics", app.metricsHandler)
		// Scrapers are few; their listener has a small bound of its own.
		// It serves plain HTTP, TLS or not: it is meant for the cluster's
		// scrapers, not the Internet.
		mconns := transport.NewConnLimit(transport.ConnLimitConfig{Max: metricsConnections})
		s.servers = append(s.servers, newServer(cfg, mux, mconns, log, nil))
		listeners = append(listeners, mconns.Listener(mln))
		s.metricsAddr = mln.Addr().String()
	}

	s.errc = make(chan error, len(s.servers))
	for i, srv := range s.servers {
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			if err := srv.Serve(listeners[i]); !errors.Is(err, http.ErrServerClosed) {
				s.errc <- fmt.Errorf("serve %s: %w", listeners[i].Addr(), err)
			}
		}()
	}
	s.ready.Store(true)
	log.Info("relay listening", startupAttrs(cfg, s.addr, s.metricsAddr)...)
	if certs != nil {
		cert, _ := certs.GetCertificate(nil)
		logCertificate(log, "TLS certificate loaded", cert, time.Now())
	}
	if d.Ready != nil {
		d.Ready(log, s.addr, s.metricsAddr)
	}
	return s, nil
}

// drain turns /readyz to 503 and keeps serving for DrainDelay, so that
// load balancers stop sending before the listeners close. It returns
// early with the error of a server that fails meanwhile.
func (s *server) drain() error {
	s.ready.Store(false)
	s.log.Info("shutting down: draining", "drain_delay", s.cfg.DrainDelay.String(), "shutdown_timeout", s.cfg.ShutdownTimeout.String())
	t := time.NewTimer(s.cfg.DrainDelay)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case err := <-s.errc:
		return err
	}
}

// shutdown closes the listeners, gives the requests in flight
// ShutdownTimeout to finish (closing what remains after it), and releases
// every part. ctx's values reach the shutdown; its end does not cut it.
func (s *server) shutdown(ctx context.Context) {
	s.ready.Store(false)
	shutdownCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.ShutdownTimeout)
	defer cancel()
	for _, srv := range s.servers {
		if err := srv.Shutdown(shutdownCtx); err != nil {
			s.log.Warn("shutdown incomplete: closing remaining connections", "error", err.Error())
			srv.Close()
		}
	}
	s.wg.Wait()
	s.app.close()
	s.log.Info("relay stopped")
	// Last: every line, those of the drain and the closing included, is
	// written before the relay returns.
	s.logs.Close()
}

// metricsConnections bounds the connections of the METRICS_ADDR listener.
const metricsConnections = 32

// newServer bounds every phase of a client connection (budget.go sizes
// them): its headers, its body, its answer, its idleness, and through
// conns the number of connections open at once.
func newServer(cfg config, h http.Handler, conns *transport.ConnLimit, log *slog.Logger, handshakeFailed func()) *http.Server {
	return &http.Server{
		Handler:           conns.Handler(h),
		ConnContext:       conns.ConnContext,
		ReadHeaderTimeout: readHeaderTimeout,
		ReadTimeout:       readTimeout,
		WriteTimeout:      writeTimeout(cfg.RequestTimeout),
		IdleTimeout:       idleTimeout,
		MaxHeaderBytes:    maxHeaderBytes,
		ConnState:         conns.ConnState,
		ErrorLog:          newServerErrorLog(log, handshakeFailed),
	}
}

// startupAttrs are the fields of the "relay listening" line: the
// addresses bound and the effective configuration an operator checks
// first, with no secret (a Pulsedive key is never configured; a Redis
// password is redacted; a query of PULSEDIVE_API_URL is left out).
func startupAttrs(cfg config, addr, metricsAddr string) []any {
	pulsediveURL := cfg.PulsediveURL
	if u, err := url.Parse(cfg.PulsediveURL); err == nil {
		pulsediveURL = u.Scheme + "://" + u.Host + u.EscapedPath()
	}
	audience := []any{"audience", "derived from the request"}
	if len(cfg.Audiences) > 0 {
		audience = []any{"audience", "fixed", "audiences", cfg.Audiences}
	}
	redis := "none"
	if cfg.RedisURL != "" {
		redis = cluster.RedactURL(cfg.RedisURL)
	}
	_, burst := limiter.Budget(cfg.RateLimit, cfg.Burst)
	attrs := []any{
		"addr", addr,
		"metrics_addr", metricsAddr,
		"version", version,
		"tls", cfg.TLSCertFile != "",
		"pulsedive_url", pulsediveURL,
		"jwks_hosts", cfg.JWKSHosts,
	}
	attrs = append(attrs, audience...)
	return append(attrs,
		"rate_limit_per_minute", cfg.RateLimit,
		"burst", burst,
		"workers", cfg.Workers,
		"max_inflight", cfg.MaxInflight,
		"max_inflight_per_key", cfg.MaxInflightKey,
		"memory_limit", cfg.MemoryLimit,
		"max_connections", cfg.MaxConnections,
		"max_requests", cfg.MaxRequests,
		"body_budget", cfg.BodyBudget,
		"observables_in_flight", cfg.ObservablesInFlight,
		"cache_max_bytes", cfg.CacheMaxBytes,
		"redis", redis,
		"replicas", cfg.Replicas,
	)
}
