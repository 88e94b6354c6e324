package relay

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/pulsedive-relay/relay/cache"
	"github.com/pulsedive-relay/relay/cluster"
	"github.com/pulsedive-relay/relay/limiter"
	"github.com/pulsedive-relay/relay/pipeline"
	"github.com/pulsedive-relay/relay/pulsedive"
	"github.com/pulsedive-relay/relay/transport"
	"github.com/pulsedive-relay/relay/transport/auth"
)

// config is the relay's configuration (CONTRACT.md section 7), read from the
// environment once at start-up.
type config struct {
	Addr             string
	MetricsAddr      string
	TLSCertFile      string
	TLSKeyFile       string
	PulsediveURL     string
	RateLimit        float64
	Burst            int
	PulsediveTimeout time.Duration
	RequestTimeout   time.Duration
	LinksMaxWait     time.Duration
	Workers          int
	MaxInflight      int
	MaxInflightKey   int
	BreakerFailures  int
	BreakerOpenFor   time.Duration
	MaxObservables   int
	MaxBodyBytes     int64
	CacheMaxBytes    int64
	CacheTTL         time.Duration
	NegativeTTL      time.Duration
	StaleTTL         time.Duration
	JWKSHosts        []string
	JWKSTTL          time.Duration
	JWKSMaxKeyAge    time.Duration
	Audiences        []string
	EntitiesLimit    int
	DrainDelay       time.Duration
	ShutdownTimeout  time.Duration
	LogLevel         slog.Level
	LogFormat        string
	RedisURL         string
	RedisTimeout     time.Duration
	Replicas         int

	// The memory plan and the bounds it derives (budget.go).
	MemoryLimit         int64
	MaxConnections      int
	MaxRequests         int
	BodyBudget          int64
	ObservablesInFlight int
}

// setting is one environment variable: its name, its default (as text, the
// way an operator would write it), what it means, and how to read it into
// the config. A default that a package applies to a zero field is that
// package's Default constant, written out here, so that it has one source. The settings of redacted are shown through their function
// wherever a value is printed. A derived setting (one in derivations) has a
// default that follows from other settings; its def only says how (the
// README's default column).
type setting struct {
	name    string
	def     string
	meaning string
	parse   func(c *config, v string) error
}

// settings lists every variable; the README's table and check-config follow
// this order.
var settings = []setting{
	{"RELAY_ADDR", ":9090", "listen address", func(c *config, v string) error { return hostPort(&c.Addr, v, false) }},
	{"METRICS_ADDR", "", "separate listen address for /metrics, plain HTTP even with TLS; empty serves /metrics on RELAY_ADDR", metricsAddr},
	{"RELAY_TLS_CERT_FILE", "", "PEM certificate chain to serve HTTPS on RELAY_ADDR with (TLS 1.2 or newer), reloaded when the file changes; empty: plain HTTP", tlsCertFile},
	{"RELAY_TLS_KEY_FILE", "", "PEM private key (unencrypted) of RELAY_TLS_CERT_FILE's certificate, reloaded with it; set both or neither", tlsKeyFile},
	{"PULSEDIVE_API_URL", pulsedive.DefaultBaseURL, "Pulsedive API base URL", func(c *config, v string) error { return baseURL(&c.PulsediveURL, v) }},
	{"PULSEDIVE_RATE_LIMIT", "30", "Pulsedive requests per minute per API key (0: no limit)", func(c *config, v string) error { return number(&c.RateLimit, v, 0) }},
	{"PULSEDIVE_BURST", strconv.Itoa(limiter.DefaultBurst), "calls a rested API key may make at once (at most half of PULSEDIVE_RATE_LIMIT)", func(c *config, v string) error { return integer(&c.Burst, v, 1, 1_000_000) }},
	{"PULSEDIVE_TIMEOUT", durationText(pulsedive.DefaultTimeout), "timeout of one Pulsedive call", func(c *config, v string) error { return duration(&c.PulsediveTimeout, v, time.Millisecond) }},
	{"RELAY_REQUEST_TIMEOUT", durationText(pipeline.DefaultRequestTimeout), "whole request deadline; partial results after it", func(c *config, v string) error { return duration(&c.RequestTimeout, v, time.Millisecond) }},
	{"RELAY_LINKS_MAX_WAIT", durationText(pipeline.DefaultLinksMaxWait), "how long Active DNS (links) calls wait for the key's budget once a request's verdicts are in (0: only budget free at once)", func(c *config, v string) error { return duration(&c.LinksMaxWait, v, 0) }},
	{"RELAY_WORKERS", strconv.Itoa(pipeline.DefaultWorkers), "concurrent Pulsedive documents per request", func(c *config, v string) error { return integer(&c.Workers, v, 1, 4096) }},
	{"RELAY_MAX_INFLIGHT", "256", "concurrent Pulsedive calls for the whole process", func(c *config, v string) error { return integer(&c.MaxInflight, v, 1, 1_000_000) }},
	{"RELAY_MAX_INFLIGHT_PER_KEY", "", "concurrent Pulsedive calls one API key may hold, at most RELAY_MAX_INFLIGHT; empty: a quarter of RELAY_MAX_INFLIGHT (at least 1)", perKeyShare},
	{"BREAKER_FAILURES", "10", "consecutive Pulsedive outage failures (5xx, timeouts, refused) that open the circuit breaker (0: no breaker)", func(c *config, v string) error { return integer(&c.BreakerFailures, v, 0, 1_000_000) }},
	{"BREAKER_OPEN_FOR", durationText(pulsedive.DefaultBreakerOpenFor), "how long the open breaker answers at once before probing Pulsedive again", func(c *config, v string) error { return duration(&c.BreakerOpenFor, v, time.Second) }},
	{"RELAY_MAX_OBSERVABLES", strconv.Itoa(transport.DefaultMaxObservables), "observables per request", func(c *config, v string) error { return integer(&c.MaxObservables, v, 1, 1_000_000) }},
	{"RELAY_MAX_BODY_BYTES", strconv.Itoa(transport.DefaultMaxBodyBytes), "request body size limit in bytes", func(c *config, v string) error { return integer(&c.MaxBodyBytes, v, 2, 1<<30) }},
	{"CACHE_MAX_BYTES", strconv.Itoa(cache.DefaultMaxBytes), "in-memory cache budget in bytes: the Pulsedive documents, and a sixteenth of it (at most 4 MiB) for observe answers mapped from them (0: no cache)", func(c *config, v string) error { return integer(&c.CacheMaxBytes, v, 0, 1<<40) }},
	{"CACHE_TTL", durationText(pipeline.DefaultCacheTTL), "how long a Pulsedive document is fresh", func(c *config, v string) error { return duration(&c.CacheTTL, v, time.Second) }},
	{"CACHE_NEGATIVE_TTL", durationText(pipeline.DefaultNegativeTTL), "how long a \"no data\" answer is fresh", func(c *config, v string) error { return duration(&c.NegativeTTL, v, time.Second) }},
	{"CACHE_STALE_TTL", durationText(pipeline.DefaultStaleTTL), "how long an expired document is kept to answer when Pulsedive fails", func(c *config, v string) error { return duration(&c.StaleTTL, v, 0) }},
	{"RELAY_MEMORY_LIMIT", "GOMEMLIMIT, else CACHE_MAX_BYTES + max(64 MiB, CACHE_MAX_BYTES/2)", "memory the relay plans for, in bytes (or 200MiB, 1GiB); the four bounds below follow from it, and it is Go's soft memory limit when GOMEMLIMIT is unset", func(c *config, v string) error { return byteSize(&c.MemoryLimit, v, 32<<20) }},
	{"RELAY_MAX_CONNECTIONS", "from RELAY_MEMORY_LIMIT", "open client connections; at the limit a new one replaces an idle one (callers with a valid token last), or is refused with HTTP 503", func(c *config, v string) error { return integer(&c.MaxConnections, v, 1, 1_000_000) }},
	{"RELAY_MAX_REQUESTS", "from RELAY_MEMORY_LIMIT", "requests served at once (observable endpoints and /health); one API key gets at most half", func(c *config, v string) error { return integer(&c.MaxRequests, v, 1, 1_000_000) }},
	{"RELAY_BODY_BUDGET", "from RELAY_MEMORY_LIMIT", "request body bytes held in memory at once; one API key gets at most half, callers without a valid token a quarter", func(c *config, v string) error {
		return atLeast(&c.BodyBudget, v, c.MaxBodyBytes, "RELAY_MAX_BODY_BYTES")
	}},
	{"RELAY_OBSERVABLES_IN_FLIGHT", "from RELAY_MEMORY_LIMIT", "observables being answered at once; one API key gets at most half", func(c *config, v string) error {
		return atLeast(&c.ObservablesInFlight, v, c.MaxObservables, "RELAY_MAX_OBSERVABLES")
	}},
	{"RELAY_JWKS_HOSTS", strings.Join(auth.DefaultJWKSHosts(), ","), "allow-list of jwks_host values (host[:port], comma-separated)", func(c *config, v string) error { return hostList(&c.JWKSHosts, v) }},
	{"RELAY_JWKS_TTL", durationText(auth.DefaultJWKSTTL), "how long a JWKS host's keys are used before they are fetched again", func(c *config, v string) error { return duration(&c.JWKSTTL, v, time.Second) }},
	{"RELAY_JWKS_MAX_KEY_AGE", durationText(auth.DefaultMaxKeyAge), "how long, after the last good fetch, a JWKS host's keys keep verifying while the host fails (at least RELAY_JWKS_TTL)", func(c *config, v string) error {
		if err := duration(&c.JWKSMaxKeyAge, v, time.Second); err != nil {
			return err
		}
		if c.JWKSTTL > 0 && c.JWKSMaxKeyAge < c.JWKSTTL {
			return fmt.Errorf("must be at least RELAY_JWKS_TTL (%s)", c.JWKSTTL)
		}
		return nil
	}},
	{"RELAY_AUDIENCE", "", "accepted token audiences, comma-separated, each scheme://host[:port] as Threat Response's module URL; empty: the request's own root URL", audiences},
	{"SSL_CERT_FILE", "", "PEM file of CA certificates for HTTPS to Pulsedive, JWKS hosts and rediss://, read by Go in place of the system's bundle file (the system's certificate directories still count); empty: the system's", caFile},
	{"SSL_CERT_DIR", "", "directories (colon-separated) of PEM CA certificates, read by Go in place of the system's certificate directories; empty: the system's", caDirs},
	{"CTR_ENTITIES_LIMIT", strconv.Itoa(auth.DefaultEntitiesLimit), "entities per observable when the token sets none", func(c *config, v string) error { return integer(&c.EntitiesLimit, v, 1, 1_000_000) }},
	{"RELAY_DRAIN_DELAY", "5s", "on SIGTERM, how long /readyz answers 503 before the listener closes", func(c *config, v string) error { return duration(&c.DrainDelay, v, 0) }},
	{"RELAY_SHUTDOWN_TIMEOUT", "RELAY_REQUEST_TIMEOUT + 20s", "how long in-flight requests may take to finish after that; at least RELAY_REQUEST_TIMEOUT, and the default covers a request accepted just before the listener closed", func(c *config, v string) error { return shutdownTimeout(&c.ShutdownTimeout, v, c.RequestTimeout) }},
	{"LOG_LEVEL", "info", "debug, info, warn or error", logLevel},
	{"LOG_FORMAT", "json", "json or text", func(c *config, v string) error { return oneOf(&c.LogFormat, v, "json", "text") }},
	{"REDIS_URL", "", "Redis the replicas share the Pulsedive budget, a cache and calls through: redis://[user:password@]host:port/db, rediss:// for TLS; empty: each replica on its own", func(c *config, v string) error { return redisURL(&c.RedisURL, v) }},
	{"REDIS_TIMEOUT", durationText(cluster.DefaultTimeout), "timeout of one Redis command; a replica whose Redis fails falls back to its own share of the budget and its own cache", func(c *config, v string) error { return duration(&c.RedisTimeout, v, time.Millisecond) }},
	{"RELAY_REPLICAS", "1", "most replicas running at once (the HPA maximum): with Redis away each spends PULSEDIVE_RATE_LIMIT / RELAY_REPLICAS", func(c *config, v string) error { return integer(&c.Replicas, v, 1, 10_000) }},
}

// redacted lists the settings whose values may hold a secret, with how to
// show them: a Redis URL may carry a password.
var redacted = map[string]func(string) string{"REDIS_URL": cluster.RedactURL}

// shown is v as it may be printed or logged for setting name.
func shown(name, v string) string {
	if f := redacted[name]; f != nil && v != "" {
		return f(v)
	}
	return v
}

// perKeyShare reads RELAY_MAX_INFLIGHT_PER_KEY. It follows
// RELAY_MAX_INFLIGHT in the settings, so c.MaxInflight is read already
// (0 when it was invalid, and reported as such).
func perKeyShare(c *config, v string) error {
	if v == "" {
		c.MaxInflightKey = max(1, c.MaxInflight/4)
		return nil
	}
	if err := integer(&c.MaxInflightKey, v, 1, 1_000_000); err != nil {
		return err
	}
	if c.MaxInflight > 0 && c.MaxInflightKey > c.MaxInflight {
		return fmt.Errorf("must be at most RELAY_MAX_INFLIGHT (%d)", c.MaxInflight)
	}
	return nil
}

// loadConfig reads every setting from getenv, defaults first. It reports
// every bad value, each naming its variable, so an operator fixes them in
// one round; the relay never starts half-configured.
func loadConfig(getenv func(string) string) (config, error) {
	c, _, err := resolve(getenv)
	return c, err
}

// resolved is one setting's effective text and where it came from: env,
// default or derived.
type resolved struct {
	name, value, origin string
}

// resolve reads the settings in two rounds: those an operator set or that
// have a plain default, in table order, then the derived ones, in table
// order, each from what is read before it.
func resolve(getenv func(string) string) (config, []resolved, error) {
	var c config
	var errs []error
	out := make([]resolved, len(settings))
	for round := range 2 {
		for i, s := range settings {
			v, origin := strings.TrimSpace(getenv(s.name)), "env"
			derive := derivations[s.name]
			derived := v == "" && derive != nil
			if derived != (round == 1) {
				continue
			}
			switch {
			case derived:
				v, origin = derive(&c, getenv), "derived"
			case v == "":
				v, origin = s.def, "default"
			}
			out[i] = resolved{s.name, v, origin}
			if err := s.parse(&c, v); err != nil {
				errs = append(errs, fmt.Errorf("%s=%q: %w", s.name, shown(s.name, v), err))
			}
		}
	}
	if err := errors.Join(errs...); err != nil {
		return config{}, out, fmt.Errorf("invalid configuration:\n%w", err)
	}
	return c, out, nil
}

// printConfig writes the effective configuration c, resolved into values,
// one variable a line, as check-config shows it: derived values included,
// and a note where the relay uses less than the value says. API keys
// arrive inside each request's token, never here; the one secret a
// setting may hold, a Redis password, is redacted.
func printConfig(w io.Writer, c config, values []resolved) {
	for _, r := range values {
		origin := r.origin
		if note := notes[r.name]; note != nil {
			if n := note(c); n != "" {
				origin += "; " + n
			}
		}
		fmt.Fprintf(w, "%s=%s\t(%s)\n", r.name, shown(r.name, r.value), origin)
	}
}

// notes say where a setting's effective value differs from its text.
var notes = map[string]func(c config) string{
	"PULSEDIVE_BURST": func(c config) string {
		if _, burst := limiter.Budget(c.RateLimit, c.Burst); burst != c.Burst {
			return fmt.Sprintf("effective %d: at most half of PULSEDIVE_RATE_LIMIT", burst)
		}
		return ""
	},
}

// durationText writes d as an operator would: 10m, 24h, 1h30m.
func durationText(d time.Duration) string {
	t := d.String()
	if strings.HasSuffix(t, "m0s") {
		t = strings.TrimSuffix(t, "0s")
	}
	if strings.HasSuffix(t, "h0m") {
		t = strings.TrimSuffix(t, "0m")
	}
	return t
}

func duration(dst *time.Duration, v string, least time.Duration) error {
	d, err := time.ParseDuration(v)
	if err != nil {
		return errors.New("not a duration (use Go syntax: 250ms, 10s, 1h)")
	}
	if d < least {
		return fmt.Errorf("must be at least %s", least)
	}
	*dst = d
	return nil
}

func integer[T int | int64](dst *T, v string, least, most T) error {
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		return errors.New("not an integer")
	}
	if T(n) < least || T(n) > most || int64(T(n)) != n {
		return fmt.Errorf("must be between %d and %d", least, most)
	}
	*dst = T(n)
	return nil
}

// atLeast reads a count or byte size that must hold one request's worth,
// least, which the variable named floorName sets.
func atLeast[T int | int64](dst *T, v string, least T, floorName string) error {
	if err := integer(dst, v, 1, T(1)<<40); err != nil {
		return err
	}
	if *dst < least {
		return fmt.Errorf("must be at least %s (%d)", floorName, least)
	}
	return nil
}

// shutdownTimeout reads RELAY_SHUTDOWN_TIMEOUT, which must let a request
// run its whole RELAY_REQUEST_TIMEOUT.
func shutdownTimeout(dst *time.Duration, v string, requestTimeout time.Duration) error {
	if err := duration(dst, v, 0); err != nil {
		return err
	}
	if *dst < requestTimeout {
		return fmt.Errorf("must be at least RELAY_REQUEST_TIMEOUT (%s), or requests accepted during the drain are cut off", requestTimeout)
	}
	return nil
}

// byteSize reads a size in bytes, plain or with a unit as GOMEMLIMIT takes
// them (B, KiB, MiB, GiB, TiB).
func byteSize(dst *int64, v string, least int64) error {
	n, ok := parseByteSize(v)
	if !ok {
		return errors.New("not a size (bytes, or a number with B, KiB, MiB, GiB or TiB)")
	}
	if n < least {
		return fmt.Errorf("must be at least %d", least)
	}
	*dst = n
	return nil
}

func parseByteSize(v string) (int64, bool) {
	units := []struct {
		suffix string
		shift  uint
	}{{"TiB", 40}, {"GiB", 30}, {"MiB", 20}, {"KiB", 10}, {"B", 0}}
	shift := uint(0)
	for _, u := range units {
		if num, ok := strings.CutSuffix(v, u.suffix); ok {
			v, shift = num, u.shift
			break
		}
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < 0 || n > (1<<62)>>shift {
		return 0, false
	}
	return n << shift, true
}

func number(dst *float64, v string, least float64) error {
	f, err := strconv.ParseFloat(v, 64)
	if err != nil || math.IsNaN(f) || f > 1e9 {
		return errors.New("not a number")
	}
	if f < least {
		return fmt.Errorf("must be at least %g", least)
	}
	*dst = f
	return nil
}

func oneOf(dst *string, v string, allowed ...string) error {
	for _, a := range allowed {
		if strings.EqualFold(v, a) {
			*dst = a
			return nil
		}
	}
	return fmt.Errorf("must be one of %s", strings.Join(allowed, ", "))
}

func hostPort(dst *string, v string, optional bool) error {
	if v == "" && optional {
		*dst = ""
		return nil
	}
	_, port, err := net.SplitHostPort(v)
	if err != nil || port == "" {
		return errors.New("not a listen address (host:port or :port)")
	}
	if n, err := strconv.ParseUint(port, 10, 16); err != nil || strconv.FormatUint(n, 10) != port {
		return fmt.Errorf("port %q is not a number from 0 to 65535 (host:port or :port; 0 picks a free port)", port)
	}
	*dst = v
	return nil
}

// metricsAddr reads METRICS_ADDR, which follows RELAY_ADDR in the settings:
// the two listeners cannot share an address.
func metricsAddr(c *config, v string) error {
	if err := hostPort(&c.MetricsAddr, v, true); err != nil || v == "" || c.Addr == "" {
		return err
	}
	if sameListenAddr(c.Addr, v) {
		return fmt.Errorf("must differ from RELAY_ADDR (%s), or the second listener cannot bind; give another port, or leave it empty to serve /metrics on RELAY_ADDR", c.Addr)
	}
	return nil
}

// sameListenAddr says whether two valid listen addresses would collide:
// the same port, other than 0, on the same host or with either on every
// interface.
func sameListenAddr(a, b string) bool {
	ha, pa, _ := net.SplitHostPort(a)
	hb, pb, _ := net.SplitHostPort(b)
	if pa != pb || pa == "0" {
		return false
	}
	wildcard := func(h string) bool {
		ip := net.ParseIP(h)
		return h == "" || (ip != nil && ip.IsUnspecified())
	}
	if wildcard(ha) || wildcard(hb) || strings.EqualFold(ha, hb) {
		return true
	}
	ia, ib := net.ParseIP(ha), net.ParseIP(hb)
	return ia != nil && ia.Equal(ib)
}

// audienceForm is what an audience looks like, for error messages.
const audienceForm = "an audience is scheme://host[:port] with no path or trailing slash, e.g. https://relay.example.com, the form the relay derives from a request"

// audiences reads RELAY_AUDIENCE. Audiences are compared exactly with the
// token's aud, so an entry that cannot be a relay's root URL would refuse
// every token; it is refused here instead. Case is kept as written.
func audiences(c *config, v string) error {
	c.Audiences = list(v)
	for _, a := range c.Audiences {
		if err := checkAudience(a); err != nil {
			return fmt.Errorf("%q %s: %s", a, err, audienceForm)
		}
	}
	return nil
}

func checkAudience(a string) error {
	scheme, rest, ok := strings.Cut(a, "://")
	if !ok || scheme == "" {
		return errors.New("has no scheme")
	}
	if s := strings.ToLower(scheme); s != "http" && s != "https" {
		return fmt.Errorf("has scheme %q, not http or https", scheme)
	}
	u, err := url.Parse(a)
	switch {
	case err != nil || u.Host == "" || u.Opaque != "":
		return errors.New("is not a URL with a host")
	case u.User != nil:
		return errors.New("carries user information")
	case rest != "" && strings.HasSuffix(rest, "/") && strings.Count(rest, "/") == 1:
		return errors.New("ends in a slash")
	case u.Path != "" || u.RawPath != "":
		return errors.New("has a path")
	case u.RawQuery != "" || u.ForceQuery || u.Fragment != "" || strings.Contains(a, "#"):
		return errors.New("has a query or fragment")
	case rest != u.Host:
		return errors.New("has an escaped host") // a Host header never has one
	}
	if port := u.Port(); port != "" {
		if n, err := strconv.ParseUint(port, 10, 16); err != nil || n == 0 {
			return fmt.Errorf("has port %q, not a number from 1 to 65535", port)
		}
	} else if strings.HasSuffix(u.Host, ":") {
		return errors.New("has an empty port")
	}
	return nil
}

// logLevel reads LOG_LEVEL: the four levels by name, in any case.
func logLevel(c *config, v string) error {
	levels := map[string]slog.Level{"debug": slog.LevelDebug, "info": slog.LevelInfo, "warn": slog.LevelWarn, "error": slog.LevelError}
	l, ok := levels[strings.ToLower(v)]
	if !ok {
		return errors.New("must be one of debug, info, warn, error")
	}
	c.LogLevel = l
	return nil
}

func baseURL(dst *string, v string) error {
	u, err := url.Parse(v)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil {
		return errors.New("not an http(s) URL")
	}
	*dst = v
	return nil
}

func redisURL(dst *string, v string) error {
	if v == "" {
		*dst = ""
		return nil
	}
	if _, err := cluster.ParseURL(v); err != nil {
		return err
	}
	*dst = v
	return nil
}

func hostList(dst *[]string, v string) error {
	hosts := list(strings.ToLower(v))
	if len(hosts) == 0 {
		return errors.New("must name at least one host")
	}
	for _, h := range hosts {
		if !auth.ValidJWKSHost(h) {
			return fmt.Errorf("%q is not a host or host:port", h)
		}
	}
	*dst = hosts
	return nil
}

func list(v string) []string {
	var out []string
	for _, part := range strings.Split(v, ",") {
		if p := strings.TrimSpace(part); p != "" {
			out = append(out, p)
		}
	}
	return out
}
