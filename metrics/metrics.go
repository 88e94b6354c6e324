// Package metrics holds every pulsedive_relay_* Prometheus family the relay
// exports at /metrics (CONTRACT.md section 8).
//
// Label values come only from small, fixed sets (Labels): route templates,
// HTTP status codes, Pulsedive document kinds and call outcomes, cache
// results, observable types, breaker states, the envelope's error codes.
// Each set is listed once, by the package that reports its values, and
// handed to New by the relay's wiring; New creates its series at zero, and
// a value outside its set is counted under "other" instead of opening a new
// series, so a caller bug cannot explode the series count. No label ever
// carries an API key, a token, an observable value or any other unbounded
// or secret string; do not add one.
//
// This package imports no other package of the relay; consumers declare the
// small interfaces they need (pulsedive.Observer, for one) and *Metrics
// satisfies them structurally.
package metrics

import (
	"errors"
	"fmt"
	"maps"
	"net/http"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

const namespace = "pulsedive_relay"

// other is the label value that stands in for any value outside its set.
const other = "other"

// The families' constructors: every name is under namespace.

func counterVec(name, help string, labels ...string) *prometheus.CounterVec {
	return prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Name: name, Help: help}, labels)
}

func gaugeVec(name, help string, labels ...string) *prometheus.GaugeVec {
	return prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: namespace, Name: name, Help: help}, labels)
}

func histogramVec(name, help string, buckets []float64, labels ...string) *prometheus.HistogramVec {
	return prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: namespace, Name: name, Help: help, Buckets: buckets}, labels)
}

func counter(name, help string) prometheus.Counter {
	return prometheus.NewCounter(prometheus.CounterOpts{Namespace: namespace, Name: name, Help: help})
}

func gauge(name, help string) prometheus.Gauge {
	return prometheus.NewGauge(prometheus.GaugeOpts{Namespace: namespace, Name: name, Help: help})
}

func histogram(name, help string, buckets []float64) prometheus.Histogram {
	return prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: namespace, Name: name, Help: help, Buckets: buckets})
}

// Histogram buckets, in seconds. The boundaries sit on the thresholds the
// alerting rules in deploy/prometheus/rules.yml ask about (10s HTTP p99, 5s
// limiter p90) so histogram_quantile interpolates within a narrow bucket
// there, and extend past the largest configured deadline (HTTP: the 25s
// request timeout; Pulsedive: the 10s call timeout; limiter: a paused key
// waits up to a minute).
func httpBuckets() []float64 {
	return []float64{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 15, 20, 25, 30}
}

func pulsediveBuckets() []float64 {
	return []float64{0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 7.5, 10, 15, 20}
}

func limiterBuckets() []float64 {
	return []float64{0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 2.5, 5, 10, 20, 30, 60}
}

// Metrics records the relay's measurements. Its methods are safe for
// concurrent use, never block on I/O and never fail. A nil *Metrics discards
// every measurement, so tests and optional wiring may pass nil.
type Metrics struct {
	labels labelSets

	httpRequests      *prometheus.CounterVec
	httpDuration      *prometheus.HistogramVec
	pulsediveRequests *prometheus.CounterVec
	pulsediveDuration *prometheus.HistogramVec
	pulsediveInFlight prometheus.Gauge
	cacheRequests     *prometheus.CounterVec
	limiterWait       prometheus.Histogram
	observables       *prometheus.CounterVec
	jwksFetches       *prometheus.CounterVec
	sharedCalls       *prometheus.CounterVec
	panics            *prometheus.CounterVec
	breakers          *prometheus.GaugeVec
	admissionRefused  *prometheus.CounterVec
	admissionInUse    *prometheus.GaugeVec
	admissionLimit    *prometheus.GaugeVec
	connReplaced      prometheus.Counter
	tlsHandshakes     prometheus.Counter
	buildInfo         *prometheus.GaugeVec
	authFailures      *prometheus.CounterVec // see AuthFailure

	// inUse holds admissionInUse's series by bound, resolved once: they
	// change twice per request on the hot path.
	inUse map[string]prometheus.Gauge
	// The series every request touches, resolved once at New (a lookup
	// of a vector's label values hashes them under a lock each time):
	// by route, by kind and result or outcome, by observable type. Values
	// outside these maps go to their family as before, counted as "other".
	http               map[string]*httpSeries
	cacheSeries        map[[2]string]prometheus.Counter
	pulsediveSeries    map[[2]string]prometheus.Counter
	pulsediveDurations map[string]prometheus.Observer
	observableSeries   map[string]prometheus.Counter
	sharedSeries       map[string]prometheus.Counter

	// Scale-out over Redis (the cluster package): one group, kept together.
	redisDuration   *prometheus.HistogramVec
	redisErrors     *prometheus.CounterVec
	clusterState    prometheus.Gauge
	clusterFallback prometheus.Counter
	l2Requests      *prometheus.CounterVec
	collapseWaits   *prometheus.CounterVec

	// The errors the relay answers in the contract's envelope (see
	// EnvelopeError): one group, kept together.
	envelopeErrors *prometheus.CounterVec
}

// Config configures New.
type Config struct {
	// Version is the relay's version for pulsedive_relay_build_info; empty
	// means "unknown".
	Version string
	// Labels are the values each label may take.
	Labels Labels
}

// Labels are the values of each bounded label, each listed by the package
// that reports them (the relay's wiring gathers them): New creates their
// series at zero, and the recording methods count a value outside its list
// as "other". No value may be empty, "other", or listed twice.
type Labels struct {
	// Routes are the route templates of the HTTP families, panics_total
	// and errors_total, with the label of requests no route matched;
	// PanicRoutes the routes of panics_total beyond them (the pipeline's,
	// for a panic in a call shared by several requests).
	Routes, PanicRoutes []string
	// ErrorCodes lists, by route, the envelope's codes created at zero in
	// errors_total. Any of them, or an HTTP status's lower-case reason
	// phrase (Pulsedive's statuses), is counted on any route.
	ErrorCodes map[string][]string
	// Kinds are Pulsedive's document kinds; CachedKinds those of them that
	// go through the cache and the in-flight collapse.
	Kinds, CachedKinds []string
	// Outcomes are the outcomes of one Pulsedive call.
	Outcomes []string
	// BreakerStates are the states of a key's circuit breaker.
	BreakerStates []string
	// CacheResults are the results of a cache lookup.
	CacheResults []string
	// ObservableTypes are the supported observable types.
	ObservableTypes []string
	// Bounds are the admission bounds.
	Bounds []string
	// JWKSOutcomes are the outcomes of a JWKS fetch; AuthFailures the
	// kinds of refused configuration tokens.
	JWKSOutcomes, AuthFailures []string
	// RedisCommands are the classes of Redis commands; L2Results the
	// results of a lookup in the shared cache; CollapseResults those of a
	// cross-replica collapse.
	RedisCommands, L2Results, CollapseResults []string
}

// New creates the relay's metric families and registers them, with the Go
// runtime and process collectors, on reg (never on the global default
// registry).
//
// Known label combinations are created at zero (every outcome of every
// Pulsedive document kind, every cache result, every observable type, ...)
// so rate() and increase() work from the first scrape and alerts need no
// absent() guards.
//
// New fails when reg is nil, a label list is invalid, or a registration
// fails (for instance, New called twice on one registry); it then
// unregisters whatever it had registered, leaving reg as it found it.
func New(reg prometheus.Registerer, cfg Config) (*Metrics, error) {
	if reg == nil {
		return nil, errors.New("metrics: nil registerer")
	}
	sets, err := newLabelSets(cfg.Labels)
	if err != nil {
		return nil, err
	}
	version := cfg.Version
	if version == "" {
		version = "unknown"
	}
	m := &Metrics{
		labels:       sets,
		authFailures: newAuthFailures(),
		httpRequests: counterVec("http_requests_total",
			"HTTP requests answered, by mux route template (\"unmatched\" for 404/405) and HTTP status code.",
			"route", "code"),
		httpDuration: histogramVec("http_request_duration_seconds",
			"Time to answer an HTTP request, by mux route template.",
			httpBuckets(), "route"),
		pulsediveRequests: counterVec("pulsedive_requests_total",
			"Pulsedive API calls, by document kind and outcome; refused counts calls the relay's own rate limiter did not make, breaker_open those an open circuit breaker did not make (neither is timed).",
			"kind", "outcome"),
		pulsediveDuration: histogramVec("pulsedive_request_duration_seconds",
			"Latency of Pulsedive API calls made, by document kind; calls refused by the limiter or a breaker are not observed.",
			pulsediveBuckets(), "kind"),
		pulsediveInFlight: gauge("pulsedive_in_flight", "Pulsedive API calls in progress."),
		cacheRequests: counterVec("cache_requests_total",
			"Cache lookups of Pulsedive documents, by kind and result; stale is an expired entry served because Pulsedive failed.",
			"kind", "result"),
		limiterWait: histogram("limiter_wait_seconds",
			"Time spent waiting for a per-API-key rate-limit token.",
			limiterBuckets()),
		observables: counterVec("observables_total", "Supported observables processed, by type.", "type"),
		jwksFetches: counterVec("jwks_fetches_total", "JWKS document fetches, by outcome.", "outcome"),
		sharedCalls: counterVec("shared_calls_total",
			"Pulsedive calls a request joined instead of making (in-flight collapse), by document kind.",
			"kind"),
		panics: counterVec("panics_total",
			"Panics recovered, by mux route template, or \"pipeline\" inside a Pulsedive call shared by several requests.",
			"route"),
		breakers: gaugeVec("breakers",
			"API keys whose circuit breaker to Pulsedive is in each state; closed counts only keys with a call in flight or a recent failure.",
			"state"),
		admissionRefused: counterVec("admission_refusals_total",
			"Requests (or, for connections, connections) refused at once because a bound of the relay was reached, by bound: connections, requests, body_bytes, observables.",
			"bound"),
		admissionInUse: gaugeVec("admission_in_use",
			"What is held of each bound: open connections, requests being served, request body bytes in memory, observables being answered.",
			"bound"),
		admissionLimit: gaugeVec("admission_limit", "Each bound as configured (0: unbounded).", "bound"),
		connReplaced: counter("connections_replaced_total",
			"Open connections closed to make room for a new one at the connection bound (RELAY_MAX_CONNECTIONS): idle ones first, callers with a valid token last."),
		tlsHandshakes: counter("tls_handshake_failures_total",
			"TLS handshakes with clients that failed, with the relay's own TLS (RELAY_TLS_CERT_FILE); clients closing before a handshake (TCP probes) are not counted. The warning log line \"TLS handshake failed\" names the cause."),
		buildInfo: gaugeVec("build_info",
			"Always 1; labels name the relay version and the Go version that built it.",
			"version", "goversion"),
	}
	m.newClusterFamilies()
	m.newEnvelopeFamilies()

	cs := []prometheus.Collector{
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		m.httpRequests, m.httpDuration,
		m.pulsediveRequests, m.pulsediveDuration, m.pulsediveInFlight,
		m.cacheRequests, m.limiterWait, m.observables, m.jwksFetches,
		m.sharedCalls, m.panics, m.breakers,
		m.admissionRefused, m.admissionInUse, m.admissionLimit, m.connReplaced, m.tlsHandshakes, m.buildInfo,
		m.authFailures,
	}
	cs = append(cs, m.clusterCollectors()...)
	cs = append(cs, m.envelopeCollectors()...)
	for i, c := range cs {
		if err := reg.Register(c); err != nil {
			for _, done := range cs[:i] {
				reg.Unregister(done)
			}
			return nil, fmt.Errorf("metrics: register: %w", err)
		}
	}

	m.buildInfo.WithLabelValues(version, runtime.Version()).Set(1)
	for _, route := range sets.panicRoutes.values {
		m.panics.WithLabelValues(route)
	}
	for _, outcome := range sets.jwksOutcomes.values {
		m.jwksFetches.WithLabelValues(outcome)
	}
	for _, state := range sets.breakerStates.values {
		m.breakers.WithLabelValues(state)
	}
	for _, reason := range sets.authFailures.values {
		m.authFailures.WithLabelValues(reason)
	}
	m.inUse = make(map[string]prometheus.Gauge, len(sets.bounds.values))
	for _, bound := range sets.bounds.values {
		m.inUse[bound] = m.admissionInUse.WithLabelValues(bound)
		m.admissionRefused.WithLabelValues(bound)
		m.admissionLimit.WithLabelValues(bound)
	}
	m.initClusterSeries()
	m.initEnvelopeSeries(cfg.Labels.ErrorCodes)
	m.resolveSeries()
	return m, nil
}

// resolveSeries creates at zero the series every request touches and keeps
// them in the maps of series resolved once (see Metrics).
func (m *Metrics) resolveSeries() {
	sets := &m.labels
	m.http = make(map[string]*httpSeries, len(sets.routes.values))
	for _, route := range sets.routes.values {
		m.http[route] = &httpSeries{route: route, requests: m.httpRequests, duration: m.httpDuration.WithLabelValues(route)}
	}
	m.cacheSeries = map[[2]string]prometheus.Counter{}
	m.sharedSeries = map[string]prometheus.Counter{}
	for _, kind := range sets.cachedKinds.values {
		m.sharedSeries[kind] = m.sharedCalls.WithLabelValues(kind)
		for _, result := range sets.cacheResults.values {
			m.cacheSeries[[2]string{kind, result}] = m.cacheRequests.WithLabelValues(kind, result)
		}
	}
	m.pulsediveSeries = map[[2]string]prometheus.Counter{}
	m.pulsediveDurations = map[string]prometheus.Observer{}
	for _, kind := range sets.kinds.values {
		m.pulsediveDurations[kind] = m.pulsediveDuration.WithLabelValues(kind)
		for _, outcome := range sets.outcomes.values {
			m.pulsediveSeries[[2]string{kind, outcome}] = m.pulsediveRequests.WithLabelValues(kind, outcome)
		}
	}
	m.observableSeries = map[string]prometheus.Counter{}
	for _, typ := range sets.observableTypes.values {
		m.observableSeries[typ] = m.observables.WithLabelValues(typ)
	}
}

// httpSeries is one route's series: its latency, and its request counters
// by status code, resolved as each code first comes (http_requests_total
// has no series before a request, and a route answers a few codes).
type httpSeries struct {
	route    string
	duration prometheus.Observer
	requests *prometheus.CounterVec
	codes    atomic.Pointer[map[int]prometheus.Counter] // copied on write
	mu       sync.Mutex                                 // serialises the writes
}

func (s *httpSeries) counter(status int) prometheus.Counter {
	if status < 100 || status > 599 {
		return s.requests.WithLabelValues(s.route, other)
	}
	if codes := s.codes.Load(); codes != nil {
		if c, ok := (*codes)[status]; ok {
			return c
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	old := s.codes.Load()
	if old != nil {
		if c, ok := (*old)[status]; ok {
			return c
		}
	}
	codes := make(map[int]prometheus.Counter, 1)
	if old != nil {
		maps.Copy(codes, *old)
	}
	c := s.requests.WithLabelValues(s.route, strconv.Itoa(status))
	codes[status] = c
	s.codes.Store(&codes)
	return c
}

// HTTPRequest counts one answered HTTP request and observes its latency.
// route is one of Labels.Routes (a route template, "/observe/observables",
// never the raw request path); any other is counted as "other". A status
// outside 100..599 is counted as code "other". Negative durations count as
// zero.
func (m *Metrics) HTTPRequest(route string, status int, d time.Duration) {
	if m == nil {
		return
	}
	s, ok := m.http[route]
	if !ok {
		m.httpRequests.WithLabelValues(other, codeLabel(status)).Inc()
		m.httpDuration.WithLabelValues(other).Observe(seconds(d))
		return
	}
	s.counter(status).Inc()
	s.duration.Observe(seconds(d))
}

// PulsediveCall counts one Pulsedive API call and observes its latency.
// kind is one of Labels.Kinds, outcome one of Labels.Outcomes (the
// pulsedive package's Kind and Outcome constants); other values are
// counted as "other". Negative durations count as zero.
func (m *Metrics) PulsediveCall(kind, outcome string, d time.Duration) {
	if m == nil {
		return
	}
	m.pulsediveCounter(kind, outcome).Inc()
	if o, ok := m.pulsediveDurations[kind]; ok {
		o.Observe(seconds(d))
		return
	}
	m.pulsediveDuration.WithLabelValues(m.labels.kinds.label(kind)).Observe(seconds(d))
}

func (m *Metrics) pulsediveCounter(kind, outcome string) prometheus.Counter {
	if c, ok := m.pulsediveSeries[[2]string{kind, outcome}]; ok {
		return c
	}
	return m.pulsediveRequests.WithLabelValues(m.labels.kinds.label(kind), m.labels.outcomes.label(outcome))
}

// PulsediveRefused counts one Pulsedive call the relay did not make:
// outcome refused (its rate limiter said no) or breaker_open (the key's
// circuit breaker said no). It has no latency, so the latency histogram is
// not touched: refusals observed as 0 s would drag its quantiles toward 0
// during an outage. Labels are checked as for PulsediveCall.
func (m *Metrics) PulsediveRefused(kind, outcome string) {
	if m == nil {
		return
	}
	m.pulsediveCounter(kind, outcome).Inc()
}

// PulsediveInFlight adds delta (+1 when a call starts, -1 when it ends) to
// the number of Pulsedive calls in progress.
func (m *Metrics) PulsediveInFlight(delta int) {
	if m == nil {
		return
	}
	m.pulsediveInFlight.Add(float64(delta))
}

// LimiterWait observes the time one call waited for a rate-limit token,
// including calls that waited and were then refused. Negative durations
// count as zero.
func (m *Metrics) LimiterWait(d time.Duration) {
	if m == nil {
		return
	}
	m.limiterWait.Observe(seconds(d))
}

// CacheLookup counts one cache lookup. kind is one of Labels.Kinds;
// result one of Labels.CacheResults (hit, miss, or stale: an expired entry
// served because Pulsedive failed). Other values are counted as "other".
func (m *Metrics) CacheLookup(kind, result string) {
	if m == nil {
		return
	}
	if c, ok := m.cacheSeries[[2]string{kind, result}]; ok {
		c.Inc()
		return
	}
	m.cacheRequests.WithLabelValues(m.labels.kinds.label(kind), m.labels.cacheResults.label(result)).Inc()
}

// Observable counts one processed observable of type typ, one of
// Labels.ObservableTypes, lower-case as the pipeline reports them. Other
// types, including other spellings, are counted as "other". Never pass the
// value.
func (m *Metrics) Observable(typ string) {
	if m == nil {
		return
	}
	inc(m.observableSeries, m.observables, m.labels.observableTypes, typ)
}

// JWKSFetch counts one JWKS fetch; outcome is one of Labels.JWKSOutcomes,
// anything else is counted as "other". The host is deliberately not a
// label.
func (m *Metrics) JWKSFetch(outcome string) {
	if m == nil {
		return
	}
	m.jwksFetches.WithLabelValues(m.labels.jwksOutcomes.label(outcome)).Inc()
}

// SharedCall counts one Pulsedive call a request joined instead of making
// (in-flight collapse), by document kind (one of Labels.Kinds; others are
// counted as "other").
func (m *Metrics) SharedCall(kind string) {
	if m == nil {
		return
	}
	inc(m.sharedSeries, m.sharedCalls, m.labels.kinds, kind)
}

// PanicRecovered counts one recovered panic on route, a mux route template
// as for HTTPRequest, or one of Labels.PanicRoutes (a panic inside a
// shared Pulsedive call); other values are counted as "other".
func (m *Metrics) PanicRecovered(route string) {
	if m == nil {
		return
	}
	m.panics.WithLabelValues(m.labels.panicRoutes.label(route)).Inc()
}

// BreakerKeys sets how many API keys have their circuit breaker to
// Pulsedive in state, one of Labels.BreakerStates (the pulsedive package's
// BreakerState names); other states are counted as "other". A count per
// state, not the worst state of all keys, so one tenant's open breaker
// does not read as the fleet's.
func (m *Metrics) BreakerKeys(state string, n int) {
	if m == nil {
		return
	}
	m.breakers.WithLabelValues(m.labels.breakerStates.label(state)).Set(float64(n))
}

// AdmissionRefused counts one request refused, or for bound connections
// one connection, because bound (one of Labels.Bounds) was reached. Other
// values are counted as "other".
func (m *Metrics) AdmissionRefused(bound string) {
	if m == nil {
		return
	}
	m.admissionRefused.WithLabelValues(m.labels.bounds.label(bound)).Inc()
}

// AdmissionInUse adds delta to what is held of bound.
func (m *Metrics) AdmissionInUse(bound string, delta int64) {
	if m == nil {
		return
	}
	g, ok := m.inUse[bound]
	if !ok {
		g = m.admissionInUse.WithLabelValues(other)
	}
	g.Add(float64(delta))
}

// ConnectionReplaced counts an open connection closed to make room for a
// new one at the connection bound.
func (m *Metrics) ConnectionReplaced() {
	if m == nil {
		return
	}
	m.connReplaced.Inc()
}

// TLSHandshakeFailed counts a failed TLS handshake with a client.
func (m *Metrics) TLSHandshakeFailed() {
	if m == nil {
		return
	}
	m.tlsHandshakes.Inc()
}

// AdmissionLimit records the configured size of bound (0: unbounded).
func (m *Metrics) AdmissionLimit(bound string, limit int64) {
	if m == nil {
		return
	}
	m.admissionLimit.WithLabelValues(m.labels.bounds.label(bound)).Set(float64(limit))
}

// inc increments the series of v: the one resolved at New, else vec's
// series of v's label in set.
func inc(resolved map[string]prometheus.Counter, vec *prometheus.CounterVec, set labelSet, v string) {
	if c, ok := resolved[v]; ok {
		c.Inc()
		return
	}
	vec.WithLabelValues(set.label(v)).Inc()
}

func seconds(d time.Duration) float64 {
	if d < 0 {
		return 0
	}
	return d.Seconds()
}

func codeLabel(status int) string {
	if status < 100 || status > 599 {
		return other
	}
	return strconv.Itoa(status)
}

// labelSet is one label's values, in the order given; any other value is
// counted as "other".
type labelSet struct {
	values []string
	known  map[string]struct{}
}

// newLabelSet checks values and makes a set of them.
func newLabelSet(name string, values []string) (labelSet, error) {
	s := labelSet{values: values, known: make(map[string]struct{}, len(values))}
	for _, v := range values {
		if _, dup := s.known[v]; dup || v == "" || v == other {
			return labelSet{}, fmt.Errorf("metrics: label %s: value %q is empty, %q or listed twice", name, v, other)
		}
		s.known[v] = struct{}{}
	}
	return s, nil
}

// label is v when the set holds it, else "other".
func (s labelSet) label(v string) string {
	if _, ok := s.known[v]; ok {
		return v
	}
	return other
}

// labelSets are the sets of Labels, checked.
type labelSets struct {
	routes, panicRoutes, kinds, cachedKinds, outcomes, breakerStates labelSet
	cacheResults                                                     labelSet
	observableTypes, bounds, jwksOutcomes, authFailures              labelSet
	redisCommands, l2Results, collapseResults, errorCodes            labelSet
}

func newLabelSets(l Labels) (labelSets, error) {
	var sets labelSets
	var errs []error
	set := func(dst *labelSet, name string, values []string) {
		var err error
		if *dst, err = newLabelSet(name, values); err != nil {
			errs = append(errs, err)
		}
	}
	set(&sets.routes, "route", l.Routes)
	set(&sets.panicRoutes, "panic route", slices.Concat(l.Routes, l.PanicRoutes))
	set(&sets.kinds, "kind", l.Kinds)
	set(&sets.cachedKinds, "cached kind", l.CachedKinds)
	set(&sets.outcomes, "outcome", l.Outcomes)
	set(&sets.breakerStates, "state", l.BreakerStates)
	set(&sets.cacheResults, "cache result", l.CacheResults)
	set(&sets.observableTypes, "type", l.ObservableTypes)
	set(&sets.bounds, "bound", l.Bounds)
	set(&sets.jwksOutcomes, "JWKS outcome", l.JWKSOutcomes)
	set(&sets.authFailures, "reason", l.AuthFailures)
	set(&sets.redisCommands, "command", l.RedisCommands)
	set(&sets.l2Results, "L2 result", l.L2Results)
	set(&sets.collapseResults, "collapse result", l.CollapseResults)
	var codes []string
	for _, route := range slices.Sorted(maps.Keys(l.ErrorCodes)) {
		if sets.routes.label(route) == other {
			errs = append(errs, fmt.Errorf("metrics: error codes of route %q, which is not among the routes", route))
		}
		for _, code := range l.ErrorCodes[route] {
			if !slices.Contains(codes, code) {
				codes = append(codes, code)
			}
		}
	}
	set(&sets.errorCodes, "code", codes)
	for _, kind := range l.CachedKinds {
		if sets.kinds.label(kind) == other {
			errs = append(errs, fmt.Errorf("metrics: cached kind %q is not among the kinds", kind))
		}
	}
	return sets, errors.Join(errs...)
}

// errorCode is the label of an envelope's code: one of the codes, or the
// lower-case reason phrase of an HTTP status, else "other".
func (s *labelSets) errorCode(code string) string {
	if _, ok := reasonPhrases[code]; ok {
		return code
	}
	return s.errorCodes.label(code)
}

// Refused configuration tokens (transport/auth), by kind of refusal. Kept
// in one block: the family, its method and its label set.

func newAuthFailures() *prometheus.CounterVec {
	return counterVec("auth_failures_total",
		"Configuration tokens refused, by reason; jwks_unavailable is an allow-listed JWKS host whose keys could not be had (a login outage), jwks_host_not_allowed a host outside the allow-list.",
		"reason")
}

// AuthFailure counts one refused configuration token. reason is one of
// Labels.AuthFailures (auth.FailureKinds); other values are counted as
// "other".
func (m *Metrics) AuthFailure(reason string) {
	if m == nil {
		return
	}
	m.authFailures.WithLabelValues(m.labels.authFailures.label(reason)).Inc()
}

// The families of the state replicas share over Redis (REDIS_URL): the
// Redis commands, shared or fallback mode, the L2 cache and the
// cross-replica collapse.

func redisBuckets() []float64 {
	return []float64{0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1}
}

func (m *Metrics) newClusterFamilies() {
	m.redisDuration = histogramVec("redis_command_duration_seconds",
		"Latency of Redis commands, by class: budget, pause, cache_get, cache_set, lock, ping.",
		redisBuckets(), "command")
	m.redisErrors = counterVec("redis_errors_total",
		"Redis commands that failed (unreachable, timed out, refused), by class.",
		"command")
	m.clusterState = gauge("cluster_state",
		"How this replica shares state: 0 no Redis configured, 1 shared over Redis, 2 fallback (Redis away: its share of the budget and its own cache only).")
	m.clusterFallback = counter("cluster_fallbacks_total",
		"Times this replica lost Redis and fell back to its own share of the budget and its own cache.")
	m.l2Requests = counterVec("l2_cache_requests_total",
		"Lookups in the Redis cache shared by the replicas, after a miss in the replica's own: hit, stale, miss, error.",
		"result")
	m.collapseWaits = counterVec("collapse_waits_total",
		"Cross-replica collapse of a document's call: won (this replica called), waited (another replica's answer was used), timed_out (waited, then called itself), abandoned (the other replica's call failed; called itself).",
		"result")
}

func (m *Metrics) clusterCollectors() []prometheus.Collector {
	return []prometheus.Collector{m.redisDuration, m.redisErrors, m.clusterState, m.clusterFallback, m.l2Requests, m.collapseWaits}
}

func (m *Metrics) initClusterSeries() {
	for _, c := range m.labels.redisCommands.values {
		m.redisDuration.WithLabelValues(c)
		m.redisErrors.WithLabelValues(c)
	}
	for _, r := range m.labels.l2Results.values {
		m.l2Requests.WithLabelValues(r)
	}
	for _, r := range m.labels.collapseResults.values {
		m.collapseWaits.WithLabelValues(r)
	}
}

// RedisCommand observes one Redis command of class (one of
// Labels.RedisCommands; others are counted as "other") and counts it as an
// error when failed is true.
func (m *Metrics) RedisCommand(class string, d time.Duration, failed bool) {
	if m == nil {
		return
	}
	class = m.labels.redisCommands.label(class)
	m.redisDuration.WithLabelValues(class).Observe(seconds(d))
	if failed {
		m.redisErrors.WithLabelValues(class).Inc()
	}
}

// ClusterShared records whether the replica shares state over Redis (true)
// or has fallen back to its own (false); each switch to false counts one
// fallback.
func (m *Metrics) ClusterShared(shared bool) {
	if m == nil {
		return
	}
	if shared {
		m.clusterState.Set(1)
		return
	}
	m.clusterState.Set(2)
	m.clusterFallback.Inc()
}

// L2Lookup counts one lookup in the shared Redis cache by result, one of
// Labels.L2Results; others are counted as "other".
func (m *Metrics) L2Lookup(result string) {
	if m == nil {
		return
	}
	m.l2Requests.WithLabelValues(m.labels.l2Results.label(result)).Inc()
}

// CollapseWait counts one cross-replica collapse by result, one of
// Labels.CollapseResults; others are counted as "other".
func (m *Metrics) CollapseWait(result string) {
	if m == nil {
		return
	}
	m.collapseWaits.WithLabelValues(m.labels.collapseResults.label(result)).Inc()
}

// The errors the relay answers in the contract's envelope (transport), by
// route and code: every answer is HTTP 200, so without them a login outage
// or a misconfigured Pulsedive URL would read as success.

func (m *Metrics) newEnvelopeFamilies() {
	m.envelopeErrors = counterVec("errors_total",
		"Errors answered in the contract's envelope (each entry of an answer's errors), by mux route template and code: authorization error, invalid argument, too many requests, unknown, key error, service unavailable, health check failed, or a Pulsedive HTTP status's reason phrase in lower case.",
		"route", "code")
}

func (m *Metrics) envelopeCollectors() []prometheus.Collector {
	return []prometheus.Collector{m.envelopeErrors}
}

// initEnvelopeSeries creates the codes each route can answer at zero, so
// that the authentication alert's ratio exists before the first refusal.
func (m *Metrics) initEnvelopeSeries(codes map[string][]string) {
	for route, cs := range codes {
		for _, code := range cs {
			m.envelopeErrors.WithLabelValues(route, code)
		}
	}
}

// EnvelopeError counts one error answered in the envelope on route (a mux
// route template as for HTTPRequest). code is the envelope's code: one of
// Labels.ErrorCodes, or the lower-case reason phrase of an HTTP status
// ("not found", "bad gateway"), which Pulsedive's statuses become; any
// other text is counted as "other", so a code can never carry a message.
func (m *Metrics) EnvelopeError(route, code string) {
	if m == nil {
		return
	}
	m.envelopeErrors.WithLabelValues(m.labels.routes.label(route), m.labels.errorCode(code)).Inc()
}

// reasonPhrases are the lower-case reason phrases of the HTTP statuses Go
// knows: a set bounded by the status table, made once and only read.
var reasonPhrases = func() map[string]struct{} {
	out := make(map[string]struct{}, 64)
	for status := 100; status <= 599; status++ {
		if text := http.StatusText(status); text != "" {
			out[strings.ToLower(text)] = struct{}{}
		}
	}
	return out
}()

// CacheFigures are the relay's own cache's figures at one instant, as its
// Stats reports them.
type CacheFigures struct {
	Bytes    int64 // held, each entry's bookkeeping included
	MaxBytes int64 // the documents' budget (CACHE_MAX_BYTES less the mapped answers' share)
	Entries  int
	Evicted  uint64 // entries removed to make room for others
	Expired  uint64 // entries reclaimed after their stale window
	Rejected uint64 // writes the admission policy refused
	Dropped  uint64 // writes refused before buffering (buffer full, over the budget, closed)
}

// NewCacheCollector returns a collector of the cache's figures, which
// calls read once per scrape (never on a request's path): the families
// pulsedive_relay_cache_bytes, _cache_max_bytes, _cache_entries,
// _cache_evictions_total{reason="size"|"expired"} and
// _cache_rejections_total{reason="admission"|"dropped"}. Register it
// beside New's families when the relay has a cache.
func NewCacheCollector(read func() CacheFigures) prometheus.Collector {
	desc := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc(prometheus.BuildFQName(namespace, "", name), help, labels, nil)
	}
	return &cacheCollector{
		read:       read,
		bytes:      desc("cache_bytes", "Bytes the relay's own cache holds, each entry's bookkeeping included; at most pulsedive_relay_cache_max_bytes."),
		maxBytes:   desc("cache_max_bytes", "The budget in bytes of the documents the cache holds: CACHE_MAX_BYTES less the share kept for mapped answers (a sixteenth, at most 4 MiB)."),
		entries:    desc("cache_entries", "Documents the relay's own cache holds within their stale window."),
		evictions:  desc("cache_evictions_total", "Cache entries removed: size (to make room for others), expired (reclaimed after their stale window).", "reason"),
		rejections: desc("cache_rejections_total", "Cache writes refused: admission (the policy kept the entries it would have evicted), dropped (before buffering: buffer full, over the budget, or closed).", "reason"),
	}
}

type cacheCollector struct {
	read                                            func() CacheFigures
	bytes, maxBytes, entries, evictions, rejections *prometheus.Desc
}

func (c *cacheCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.bytes, c.maxBytes, c.entries, c.evictions, c.rejections} {
		ch <- d
	}
}

func (c *cacheCollector) Collect(ch chan<- prometheus.Metric) {
	f := c.read()
	ch <- prometheus.MustNewConstMetric(c.bytes, prometheus.GaugeValue, float64(f.Bytes))
	ch <- prometheus.MustNewConstMetric(c.maxBytes, prometheus.GaugeValue, float64(f.MaxBytes))
	ch <- prometheus.MustNewConstMetric(c.entries, prometheus.GaugeValue, float64(f.Entries))
	ch <- prometheus.MustNewConstMetric(c.evictions, prometheus.CounterValue, float64(f.Evicted), "size")
	ch <- prometheus.MustNewConstMetric(c.evictions, prometheus.CounterValue, float64(f.Expired), "expired")
	ch <- prometheus.MustNewConstMetric(c.rejections, prometheus.CounterValue, float64(f.Rejected), "admission")
	ch <- prometheus.MustNewConstMetric(c.rejections, prometheus.CounterValue, float64(f.Dropped), "dropped")
}
