package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"runtime"
	"sync"
	"sync/atomic"
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
	cfg, err := loadConfig(env.getenv)
	if err != nil {
		return err
	}
	return serve(ctx, cfg, deps{stderr: env.stderr})
}

// deps are what serve takes from its caller beyond the configuration: the
// demo passes a trusting HTTP client for its loopback JWKS, tests a clock.
type deps struct {
	stderr io.Writer
	// jwksClient fetches JWKS documents; nil uses auth's default.
	jwksClient *http.Client
	// now is the clock of the mapping; time.Now when nil.
	now func() time.Time
	// pulsedive carries the calls to Pulsedive; nil uses
	// pulsediveTransport. Tests serve a fake Pulsedive in memory.
	pulsedive http.RoundTripper
	// ready, when non-nil, receives the bound addresses once serving.
	ready func(addr, metricsAddr string)
	// drained, when non-nil, is called once the drain delay is over, just
	// before the listeners close: a test sends its last request then.
	drained func()
}

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
	close          func()
}

// wire builds every part from the configuration. ready reports readiness
// for /readyz.
func wire(cfg config, d deps, log *slog.Logger, ready func() bool) (*wiring, error) {
	reg := prometheus.NewRegistry()
	m, err := metrics.New(reg, version)
	if err != nil {
		return nil, fmt.Errorf("metrics: %w", err)
	}
	now := d.now
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
			return nil, fmt.Errorf("limiter: %w", err)
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
	if cfg.CacheMaxBytes > 0 {
		c, err := cache.New[pipeline.Document](cache.Config{MaxBytes: cfg.CacheMaxBytes})
		if err != nil {
			return fail(fmt.Errorf("cache: %w", err))
		}
		store = c
		closeCluster := closeAll
		closeAll = func() { closeCluster(); c.Close() }
		if err := reg.Register(metrics.NewCacheCollector(cacheFigures(c, cfg.CacheMaxBytes))); err != nil {
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
		HTTPClient:           d.jwksClient,
		JWKSTTL:              cfg.JWKSTTL,
		MaxKeyAge:            cfg.JWKSMaxKeyAge,
		DefaultEntitiesLimit: cfg.EntitiesLimit,
		Observer:             m,
		Logger:               log,
	})
	if err != nil {
		return fail(fmt.Errorf("auth: %w", err))
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
		Enricher:          pipe,
		Auth:              authn,
		Version:           version,
		MaxBodyBytes:      cfg.MaxBodyBytes,
		MaxObservables:    cfg.MaxObservables,
		Admission:         admission,
		ChunkWriteTimeout: chunkWriteTimeout,
		WriteTimeout:      writeTimeout(cfg.RequestTimeout),
		Ready:             ready,
		Observer:          m,
		Logger:            log,
	}
	if cfg.MetricsAddr == "" {
		tcfg.Metrics = metricsHandler
	}
	h, err := transport.NewHandler(tcfg)
	if err != nil {
		return fail(err)
	}
	conns := transport.NewConnLimit(transport.ConnLimitConfig{Max: cfg.MaxConnections, Observer: m})
	return &wiring{handler: h, metricsHandler: metricsHandler, conns: conns, close: closeAll}, nil
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
// finish. It returns nil after a clean shutdown.
func serve(ctx context.Context, cfg config, d deps) error {
	log := newLogger(d.stderr, cfg)
	var ready atomic.Bool
	app, err := wire(cfg, d, log, ready.Load)
	if err != nil {
		return err
	}
	defer app.close()

	servers := []*http.Server{newServer(cfg, app.handler, app.conns, log)}
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return fmt.Errorf("listen on RELAY_ADDR %s: %w", cfg.Addr, err)
	}
	listeners := []net.Listener{app.conns.Listener(ln)}
	metricsAddr := ""
	if cfg.MetricsAddr != "" {
		mln, err := net.Listen("tcp", cfg.MetricsAddr)
		if err != nil {
			ln.Close()
			return fmt.Errorf("listen on METRICS_ADDR %s: %w", cfg.MetricsAddr, err)
		}
		mux := http.NewServeMux()
		mux.Handle("GET /metrics", app.metricsHandler)
		// Scrapers are few; their listener has a small bound of its own.
		mconns := transport.NewConnLimit(transport.ConnLimitConfig{Max: metricsConnections})
		servers = append(servers, newServer(cfg, mux, mconns, log))
		listeners = append(listeners, mconns.Listener(mln))
		metricsAddr = mln.Addr().String()
	}

	errc := make(chan error, len(servers))
	var wg sync.WaitGroup
	for i, srv := range servers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := srv.Serve(listeners[i]); !errors.Is(err, http.ErrServerClosed) {
				errc <- err
			}
		}()
	}
	ready.Store(true)
	log.Info("relay listening", "addr", ln.Addr().String(), "metrics_addr", metricsAddr, "version", version)
	if d.ready != nil {
		d.ready(ln.Addr().String(), metricsAddr)
	}

	var serveErr error
	select {
	case <-ctx.Done():
	case serveErr = <-errc:
		log.Error("server failed", "error", serveErr.Error())
	}

	ready.Store(false)
	if serveErr == nil {
		log.Info("shutting down: draining", "drain_delay", cfg.DrainDelay.String(), "shutdown_timeout", cfg.ShutdownTimeout.String())
		drain := time.NewTimer(cfg.DrainDelay)
		select {
		case <-drain.C:
		case serveErr = <-errc:
			drain.Stop()
		}
	}
	if d.drained != nil {
		d.drained()
	}
	shutdownCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cfg.ShutdownTimeout)
	defer cancel()
	for _, srv := range servers {
		if err := srv.Shutdown(shutdownCtx); err != nil {
			log.Warn("shutdown incomplete: closing remaining connections", "error", err.Error())
			srv.Close()
		}
	}
	wg.Wait()
	log.Info("relay stopped")
	return serveErr
}

// metricsConnections bounds the connections of the METRICS_ADDR listener.
const metricsConnections = 32

// newServer bounds every phase of a client connection (budget.go sizes
// them): its headers, its body, its answer, its idleness, and through
// conns the number of connections open at once.
func newServer(cfg config, h http.Handler, conns *transport.ConnLimit, log *slog.Logger) *http.Server {
	return &http.Server{
		Handler:           conns.Handler(h),
		ConnContext:       conns.ConnContext,
		ReadHeaderTimeout: readHeaderTimeout,
		ReadTimeout:       readTimeout,
		WriteTimeout:      writeTimeout(cfg.RequestTimeout),
		IdleTimeout:       idleTimeout,
		MaxHeaderBytes:    maxHeaderBytes,
		ConnState:         conns.ConnState,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
}
