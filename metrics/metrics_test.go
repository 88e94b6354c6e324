package metrics_test

import (
	"fmt"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
	"go.uber.org/goleak"

	"github.com/pulsedive-relay/relay/metrics"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// The consumers' hook interfaces, copied here (metrics may not import them)
// so a change of signature on either side breaks this build.
var (
	_ interface {
		PulsediveCall(kind, outcome string, d time.Duration)
		PulsediveRefused(kind, outcome string)
		PulsediveInFlight(delta int)
		LimiterWait(d time.Duration)
		BreakerKeys(state string, n int)
	} = (*metrics.Metrics)(nil)
	_ interface {
		HTTPRequest(route string, status int, d time.Duration)
		PanicRecovered(route string)
		AdmissionRefused(bound string)
		AdmissionInUse(bound string, delta int64)
		EnvelopeError(route, code string)
	} = (*metrics.Metrics)(nil)
	_ interface {
		AdmissionRefused(bound string)
		AdmissionInUse(bound string, delta int64)
		AdmissionLimit(bound string, limit int64)
	} = (*metrics.Metrics)(nil)
	_ interface {
		CacheLookup(kind, result string)
		Observable(typ string)
		SharedCall(kind string)
		PanicRecovered(route string)
	} = (*metrics.Metrics)(nil)
	_ interface{ JWKSFetch(outcome string) }  = (*metrics.Metrics)(nil)
	_ interface{ AuthFailure(reason string) } = (*metrics.Metrics)(nil)
	_ interface {
		RedisCommand(class string, d time.Duration, failed bool)
		ClusterShared(shared bool)
		L2Lookup(result string)
		CollapseWait(result string)
	} = (*metrics.Metrics)(nil)
)

// testConfig is the configuration of New with version and the label values
// the relay's wiring passes, as these tests know them (internal/relay's
// tests check the families with the values the relay really passes).
func testConfig(version string) metrics.Config {
	jwtCodes := []string{"authorization error", "invalid argument", "too many requests", "unknown", "key error", "service unavailable"}
	return metrics.Config{Version: version, Labels: metrics.Labels{
		Routes: []string{
			"/health", "/observe/observables", "/deliberate/observables", "/refer/observables",
			"/version", "/watchdog", "/metrics", "/healthz", "/readyz", "unmatched",
		},
		PanicRoutes: []string{"pipeline"},
		ErrorCodes: map[string][]string{
			"/health": jwtCodes, "/observe/observables": jwtCodes, "/deliberate/observables": jwtCodes, "/refer/observables": jwtCodes,
			"/watchdog": {"health check failed"},
		},
		Kinds:       []string{"info", "links", "health"},
		CachedKinds: []string{"info", "links"},
		Outcomes: []string{
			"ok", "not_found", "rate_limited", "client_error", "server_error",
			"timeout", "unavailable", "bad_answer", "refused", "breaker_open",
		},
		BreakerStates:   []string{"closed", "half_open", "open"},
		CacheResults:    []string{"hit", "miss", "stale"},
		ObservableTypes: []string{"ip", "ipv6", "domain", "url"},
		Bounds:          []string{"connections", "requests", "body_bytes", "observables"},
		JWKSOutcomes:    []string{"ok", "error"},
		AuthFailures:    authReasons(),
		RedisCommands:   []string{"budget", "pause", "cache_get", "cache_set", "lock", "ping"},
		L2Results:       []string{"hit", "stale", "miss", "error"},
		CollapseResults: []string{"won", "waited", "timed_out", "abandoned"},
	}}
}

// newMetrics returns Metrics registered on a fresh pedantic registry, which
// also checks that every collected metric matches its description.
func newMetrics(t *testing.T) (*metrics.Metrics, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	m, err := metrics.New(reg, testConfig("1.2.3"))
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return m, reg
}

// gather returns the families in g by name.
func gather(t *testing.T, g prometheus.Gatherer) map[string]*dto.MetricFamily {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatalf("Gather: %v", err)
	}
	byName := make(map[string]*dto.MetricFamily, len(mfs))
	for _, mf := range mfs {
		byName[mf.GetName()] = mf
	}
	return byName
}

// labelKey renders a metric's labels as "a=x,b=y", sorted by name.
func labelKey(m *dto.Metric) string {
	parts := make([]string, 0, len(m.GetLabel()))
	for _, lp := range m.GetLabel() {
		parts = append(parts, lp.GetName()+"="+lp.GetValue())
	}
	sort.Strings(parts)
	return strings.Join(parts, ",")
}

// values returns the series of family name keyed by labelKey: the value of
// a counter or gauge, the sample count of a histogram. An absent family
// gives an empty map.
func values(t *testing.T, g prometheus.Gatherer, name string) map[string]float64 {
	t.Helper()
	got := map[string]float64{}
	mf, ok := gather(t, g)[name]
	if !ok {
		return got
	}
	for _, m := range mf.GetMetric() {
		switch mf.GetType() {
		case dto.MetricType_COUNTER:
			got[labelKey(m)] = m.GetCounter().GetValue()
		case dto.MetricType_GAUGE:
			got[labelKey(m)] = m.GetGauge().GetValue()
		case dto.MetricType_HISTOGRAM:
			got[labelKey(m)] = float64(m.GetHistogram().GetSampleCount())
		default:
			t.Fatalf("%s: unexpected type %v", name, mf.GetType())
		}
	}
	return got
}

// nonZero drops the zero-valued series.
func nonZero(in map[string]float64) map[string]float64 {
	out := map[string]float64{}
	for k, v := range in {
		if v != 0 {
			out[k] = v
		}
	}
	return out
}

func TestFamilies(t *testing.T) {
	_, reg := newMetrics(t)

	got := map[string]string{}
	for name, mf := range gather(t, reg) {
		switch {
		case strings.HasPrefix(name, "pulsedive_relay_"):
			got[name] = mf.GetType().String()
		case strings.HasPrefix(name, "go_"), strings.HasPrefix(name, "process_"):
			// The Go and process collectors.
		default:
			t.Errorf("family %q is neither pulsedive_relay_* nor from the Go or process collector", name)
		}
	}
	want := map[string]string{
		"pulsedive_relay_http_requests_total":                "COUNTER",
		"pulsedive_relay_http_request_duration_seconds":      "HISTOGRAM",
		"pulsedive_relay_pulsedive_requests_total":           "COUNTER",
		"pulsedive_relay_pulsedive_request_duration_seconds": "HISTOGRAM",
		"pulsedive_relay_pulsedive_in_flight":                "GAUGE",
		"pulsedive_relay_cache_requests_total":               "COUNTER",
		"pulsedive_relay_limiter_wait_seconds":               "HISTOGRAM",
		"pulsedive_relay_observables_total":                  "COUNTER",
		"pulsedive_relay_jwks_fetches_total":                 "COUNTER",
		"pulsedive_relay_auth_failures_total":                "COUNTER",
		"pulsedive_relay_shared_calls_total":                 "COUNTER",
		"pulsedive_relay_panics_total":                       "COUNTER",
		"pulsedive_relay_breakers":                           "GAUGE",
		"pulsedive_relay_admission_refusals_total":           "COUNTER",
		"pulsedive_relay_admission_in_use":                   "GAUGE",
		"pulsedive_relay_admission_limit":                    "GAUGE",
		"pulsedive_relay_connections_replaced_total":         "COUNTER",
		"pulsedive_relay_tls_handshake_failures_total":       "COUNTER",
		"pulsedive_relay_build_info":                         "GAUGE",
		"pulsedive_relay_redis_command_duration_seconds":     "HISTOGRAM",
		"pulsedive_relay_redis_errors_total":                 "COUNTER",
		"pulsedive_relay_cluster_state":                      "GAUGE",
		"pulsedive_relay_cluster_fallbacks_total":            "COUNTER",
		"pulsedive_relay_l2_cache_requests_total":            "COUNTER",
		"pulsedive_relay_collapse_waits_total":               "COUNTER",
		"pulsedive_relay_errors_total":                       "COUNTER",
	}
	// http_requests_total has no pre-initialised series (status codes are
	// open-ended), so it appears only once a request is counted.
	delete(want, "pulsedive_relay_http_requests_total")
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("families (-want +got):\n%s", diff)
	}

	all := gather(t, reg)
	for _, name := range []string{"go_goroutines", "process_cpu_seconds_total"} {
		if _, ok := all[name]; !ok && (runtime.GOOS == "linux" || !strings.HasPrefix(name, "process_")) {
			t.Errorf("family %s missing: Go or process collector not registered", name)
		}
	}
}

func TestLint(t *testing.T) {
	m, reg := newMetrics(t)
	// Put a sample in every family, so the linter sees all of them.
	m.HTTPRequest("/observe/observables", 200, time.Second)
	m.PulsediveCall("info", "ok", time.Second)
	m.PulsediveInFlight(1)
	m.LimiterWait(time.Millisecond)
	m.CacheLookup("info", "hit")
	m.Observable("ip")
	m.JWKSFetch("ok")
	m.AuthFailure("wrong_audience")
	m.SharedCall("info")
	m.PanicRecovered("/observe/observables")
	m.BreakerKeys("open", 1)
	m.RedisCommand("budget", time.Millisecond, true)
	m.ClusterShared(false)
	m.L2Lookup("hit")
	m.CollapseWait("won")
	m.EnvelopeError("/observe/observables", "authorization error")

	problems, err := testutil.GatherAndLint(reg)
	if err != nil {
		t.Fatalf("GatherAndLint: %v", err)
	}
	for _, p := range problems {
		t.Errorf("promlint: %s: %s", p.Metric, p.Text)
	}
	if n, err := testutil.GatherAndCount(reg); err != nil || n == 0 {
		t.Errorf("GatherAndCount = %d, %v; want series", n, err)
	}
}

func TestPreinitialised(t *testing.T) {
	_, reg := newMetrics(t)

	zeros := func(keys ...string) map[string]float64 {
		out := make(map[string]float64, len(keys))
		for _, k := range keys {
			out[k] = 0
		}
		return out
	}
	var pulsedive []string
	for _, kind := range []string{"info", "links", "health"} {
		for _, outcome := range []string{"ok", "not_found", "rate_limited", "client_error", "server_error", "timeout", "unavailable", "bad_answer", "refused", "breaker_open"} {
			pulsedive = append(pulsedive, "kind="+kind+",outcome="+outcome)
		}
	}
	routes := []string{
		"/health", "/observe/observables", "/deliberate/observables", "/refer/observables",
		"/version", "/watchdog", "/metrics", "/healthz", "/readyz", "unmatched",
	}
	var routeKeys []string
	for _, r := range routes {
		routeKeys = append(routeKeys, "route="+r)
	}
	boundKeys := []string{"bound=connections", "bound=requests", "bound=body_bytes", "bound=observables"}

	tests := []struct {
		family string
		want   map[string]float64
	}{
		{"pulsedive_relay_pulsedive_requests_total", zeros(pulsedive...)},
		{"pulsedive_relay_pulsedive_request_duration_seconds", zeros("kind=info", "kind=links", "kind=health")},
		{"pulsedive_relay_cache_requests_total", zeros(
			"kind=info,result=hit", "kind=info,result=miss", "kind=info,result=stale",
			"kind=links,result=hit", "kind=links,result=miss", "kind=links,result=stale")},
		{"pulsedive_relay_shared_calls_total", zeros("kind=info", "kind=links")},
		{"pulsedive_relay_observables_total", zeros("type=ip", "type=ipv6", "type=domain", "type=url")},
		{"pulsedive_relay_jwks_fetches_total", zeros("outcome=ok", "outcome=error")},
		{"pulsedive_relay_auth_failures_total", zeros(authReasonKeys...)},
		{"pulsedive_relay_panics_total", zeros(append(routeKeys, "route=pipeline")...)},
		{"pulsedive_relay_http_request_duration_seconds", zeros(routeKeys...)},
		{"pulsedive_relay_http_requests_total", zeros()},
		{"pulsedive_relay_limiter_wait_seconds", zeros("")},
		{"pulsedive_relay_pulsedive_in_flight", zeros("")},
		{"pulsedive_relay_breakers", zeros("state=closed", "state=half_open", "state=open")},
		{"pulsedive_relay_redis_command_duration_seconds", zeros("command=budget", "command=pause", "command=cache_get", "command=cache_set", "command=lock", "command=ping")},
		{"pulsedive_relay_redis_errors_total", zeros("command=budget", "command=pause", "command=cache_get", "command=cache_set", "command=lock", "command=ping")},
		{"pulsedive_relay_cluster_state", zeros("")},
		{"pulsedive_relay_cluster_fallbacks_total", zeros("")},
		{"pulsedive_relay_l2_cache_requests_total", zeros("result=hit", "result=stale", "result=miss", "result=error")},
		{"pulsedive_relay_collapse_waits_total", zeros("result=won", "result=waited", "result=timed_out", "result=abandoned")},
		{"pulsedive_relay_admission_refusals_total", zeros(boundKeys...)},
		{"pulsedive_relay_admission_in_use", zeros(boundKeys...)},
		{"pulsedive_relay_admission_limit", zeros(boundKeys...)},
		{"pulsedive_relay_connections_replaced_total", zeros("")},
		{"pulsedive_relay_tls_handshake_failures_total", zeros("")},
		{"pulsedive_relay_errors_total", zeros(envelopeErrorKeys()...)},
	}
	for _, tt := range tests {
		t.Run(tt.family, func(t *testing.T) {
			got := values(t, reg, tt.family)
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("series before any measurement (-want +got):\n%s", diff)
			}
		})
	}
}

func TestBuildInfo(t *testing.T) {
	tests := []struct {
		version string
		want    string
	}{
		{"1.2.3", "1.2.3"},
		{"", "unknown"},
	}
	for _, tt := range tests {
		t.Run(tt.want, func(t *testing.T) {
			reg := prometheus.NewRegistry()
			if _, err := metrics.New(reg, testConfig(tt.version)); err != nil {
				t.Fatalf("New: %v", err)
			}
			want := fmt.Sprintf(`# HELP pulsedive_relay_build_info Always 1; labels name the relay version and the Go version that built it.
# TYPE pulsedive_relay_build_info gauge
pulsedive_relay_build_info{goversion=%q,version=%q} 1
`, runtime.Version(), tt.want)
			if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "pulsedive_relay_build_info"); err != nil {
				t.Error(err)
			}
		})
	}
}

func TestRecording(t *testing.T) {
	tests := []struct {
		name   string
		record func(m *metrics.Metrics)
		family string
		want   map[string]float64 // non-zero series after record
	}{
		{
			name:   "http request by route and code",
			record: func(m *metrics.Metrics) { m.HTTPRequest("/observe/observables", 200, time.Second) },
			family: "pulsedive_relay_http_requests_total",
			want:   map[string]float64{"code=200,route=/observe/observables": 1},
		},
		{
			name: "http unmatched routes",
			record: func(m *metrics.Metrics) {
				m.HTTPRequest("unmatched", 404, 0)
				m.HTTPRequest("unmatched", 405, 0)
				m.HTTPRequest("unmatched", 404, 0)
			},
			family: "pulsedive_relay_http_requests_total",
			want:   map[string]float64{"code=404,route=unmatched": 2, "code=405,route=unmatched": 1},
		},
		{
			name: "http raw path or unknown route is other",
			record: func(m *metrics.Metrics) {
				m.HTTPRequest("/observe/observables?key=secret", 200, 0)
				m.HTTPRequest("/no/such/route", 200, 0)
				m.HTTPRequest("", 200, 0)
			},
			family: "pulsedive_relay_http_requests_total",
			want:   map[string]float64{"code=200,route=other": 3},
		},
		{
			name: "http status outside 100..599 is other",
			record: func(m *metrics.Metrics) {
				m.HTTPRequest("/version", 0, 0)
				m.HTTPRequest("/version", 600, 0)
				m.HTTPRequest("/version", 599, 0)
			},
			family: "pulsedive_relay_http_requests_total",
			want:   map[string]float64{"code=other,route=/version": 2, "code=599,route=/version": 1},
		},
		{
			name: "http latency observed per route",
			record: func(m *metrics.Metrics) {
				m.HTTPRequest("/refer/observables", 200, time.Millisecond)
				m.HTTPRequest("/refer/observables", 200, -time.Second)
				m.HTTPRequest("/nope", 404, time.Millisecond)
			},
			family: "pulsedive_relay_http_request_duration_seconds",
			want:   map[string]float64{"route=/refer/observables": 2, "route=other": 1},
		},
		{
			name: "pulsedive calls by kind and outcome",
			record: func(m *metrics.Metrics) {
				m.PulsediveCall("info", "ok", time.Second)
				m.PulsediveCall("links", "rate_limited", time.Second)
				m.PulsediveCall("health", "refused", 0)
				m.PulsediveCall("info", "ok", time.Second)
			},
			family: "pulsedive_relay_pulsedive_requests_total",
			want: map[string]float64{
				"kind=info,outcome=ok":            2,
				"kind=links,outcome=rate_limited": 1,
				"kind=health,outcome=refused":     1,
			},
		},
		{
			name: "pulsedive unknown kind and outcome are other",
			record: func(m *metrics.Metrics) {
				m.PulsediveCall("indicator", "ok", 0)
				m.PulsediveCall("info", "exploded", 0)
				m.PulsediveCall("INFO", "OK", 0)
			},
			family: "pulsedive_relay_pulsedive_requests_total",
			want: map[string]float64{
				"kind=other,outcome=ok":    1,
				"kind=info,outcome=other":  1,
				"kind=other,outcome=other": 1,
			},
		},
		{
			name: "pulsedive latency per kind",
			record: func(m *metrics.Metrics) {
				m.PulsediveCall("info", "ok", 100*time.Millisecond)
				m.PulsediveCall("links", "timeout", 10*time.Second)
				m.PulsediveCall("links", "ok", time.Second)
			},
			family: "pulsedive_relay_pulsedive_request_duration_seconds",
			want:   map[string]float64{"kind=info": 1, "kind=links": 2},
		},
		{
			name: "in flight goes up and down",
			record: func(m *metrics.Metrics) {
				m.PulsediveInFlight(1)
				m.PulsediveInFlight(1)
				m.PulsediveInFlight(1)
				m.PulsediveInFlight(-1)
			},
			family: "pulsedive_relay_pulsedive_in_flight",
			want:   map[string]float64{"": 2},
		},
		{
			name: "limiter waits",
			record: func(m *metrics.Metrics) {
				m.LimiterWait(0)
				m.LimiterWait(2 * time.Second)
			},
			family: "pulsedive_relay_limiter_wait_seconds",
			want:   map[string]float64{"": 2},
		},
		{
			name: "cache lookups",
			record: func(m *metrics.Metrics) {
				m.CacheLookup("info", "hit")
				m.CacheLookup("info", "hit")
				m.CacheLookup("links", "miss")
				m.CacheLookup("info", "stale")
				m.CacheLookup("health", "miss")
				m.CacheLookup("info", "expired")
				m.CacheLookup("key:abc", "hit")
			},
			family: "pulsedive_relay_cache_requests_total",
			want: map[string]float64{
				"kind=info,result=hit":    2,
				"kind=links,result=miss":  1,
				"kind=info,result=stale":  1,
				"kind=health,result=miss": 1,
				"kind=info,result=other":  1,
				"kind=other,result=hit":   1,
			},
		},
		{
			name: "observables by type",
			record: func(m *metrics.Metrics) {
				for _, typ := range []string{"ip", "ipv6", "domain", "url", "url", "email", "IP", "8.8.8.8"} {
					m.Observable(typ)
				}
			},
			family: "pulsedive_relay_observables_total",
			want:   map[string]float64{"type=ip": 1, "type=ipv6": 1, "type=domain": 1, "type=url": 2, "type=other": 3},
		},
		{
			name: "jwks fetches",
			record: func(m *metrics.Metrics) {
				m.JWKSFetch("ok")
				m.JWKSFetch("error")
				m.JWKSFetch("error")
				m.JWKSFetch("visibility.amp.cisco.com")
			},
			family: "pulsedive_relay_jwks_fetches_total",
			want:   map[string]float64{"outcome=ok": 1, "outcome=error": 2, "outcome=other": 1},
		},
		{
			name: "auth failures",
			record: func(m *metrics.Metrics) {
				m.AuthFailure("jwks_unavailable")
				m.AuthFailure("jwks_unavailable")
				m.AuthFailure("wrong_audience")
				m.AuthFailure("Wrong configuration-token-audience")
			},
			family: "pulsedive_relay_auth_failures_total",
			want:   map[string]float64{"reason=jwks_unavailable": 2, "reason=wrong_audience": 1, "reason=other": 1},
		},
		{
			name: "shared calls",
			record: func(m *metrics.Metrics) {
				m.SharedCall("info")
				m.SharedCall("links")
				m.SharedCall("links")
				m.SharedCall("health")
				m.SharedCall("cisco.com")
			},
			family: "pulsedive_relay_shared_calls_total",
			want:   map[string]float64{"kind=info": 1, "kind=links": 2, "kind=health": 1, "kind=other": 1},
		},
		{
			name: "panics by route",
			record: func(m *metrics.Metrics) {
				m.PanicRecovered("/observe/observables")
				m.PanicRecovered("/observe/observables/extra")
				m.PanicRecovered("pipeline")
			},
			family: "pulsedive_relay_panics_total",
			want:   map[string]float64{"route=/observe/observables": 1, "route=other": 1, "route=pipeline": 1},
		},
		{
			name: "admission refusals by bound",
			record: func(m *metrics.Metrics) {
				m.AdmissionRefused("body_bytes")
				m.AdmissionRefused("body_bytes")
				m.AdmissionRefused("connections")
				m.AdmissionRefused("key:abc")
			},
			family: "pulsedive_relay_admission_refusals_total",
			want:   map[string]float64{"bound=body_bytes": 2, "bound=connections": 1, "bound=other": 1},
		},
		{
			name: "admission in use goes up and down",
			record: func(m *metrics.Metrics) {
				m.AdmissionInUse("observables", 1000)
				m.AdmissionInUse("observables", -400)
				m.AdmissionInUse("requests", 1)
				m.AdmissionInUse("requests", -1)
			},
			family: "pulsedive_relay_admission_in_use",
			want:   map[string]float64{"bound=observables": 600},
		},
		{
			name: "admission limits",
			record: func(m *metrics.Metrics) {
				m.AdmissionLimit("connections", 2048)
				m.AdmissionLimit("body_bytes", 1<<20)
			},
			family: "pulsedive_relay_admission_limit",
			want:   map[string]float64{"bound=connections": 2048, "bound=body_bytes": 1 << 20},
		},
		{
			name: "refused calls are counted",
			record: func(m *metrics.Metrics) {
				m.PulsediveRefused("info", "refused")
				m.PulsediveRefused("links", "breaker_open")
				m.PulsediveRefused("health", "breaker_open")
				m.PulsediveRefused("info", "exploded")
			},
			family: "pulsedive_relay_pulsedive_requests_total",
			want: map[string]float64{
				"kind=info,outcome=refused":        1,
				"kind=links,outcome=breaker_open":  1,
				"kind=health,outcome=breaker_open": 1,
				"kind=info,outcome=other":          1,
			},
		},
		{
			name: "refused calls are not timed",
			record: func(m *metrics.Metrics) {
				m.PulsediveRefused("info", "refused")
				m.PulsediveRefused("links", "breaker_open")
				m.PulsediveCall("links", "server_error", time.Second)
			},
			family: "pulsedive_relay_pulsedive_request_duration_seconds",
			want:   map[string]float64{"kind=links": 1},
		},
		{
			name: "breaker keys per state keep the last value",
			record: func(m *metrics.Metrics) {
				m.BreakerKeys("open", 2)
				m.BreakerKeys("half_open", 1)
				m.BreakerKeys("open", 1)
				m.BreakerKeys("closed", 3)
			},
			family: "pulsedive_relay_breakers",
			want:   map[string]float64{"state=open": 1, "state=half_open": 1, "state=closed": 3},
		},
		{
			name: "breaker keys back to none",
			record: func(m *metrics.Metrics) {
				m.BreakerKeys("open", 2)
				m.BreakerKeys("open", 0)
			},
			family: "pulsedive_relay_breakers",
			want:   map[string]float64{},
		},
		{
			name: "unknown breaker state is other",
			record: func(m *metrics.Metrics) {
				m.BreakerKeys("half-open", 1)
				m.BreakerKeys("OPEN", 2)
			},
			family: "pulsedive_relay_breakers",
			want:   map[string]float64{"state=other": 2},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, reg := newMetrics(t)
			tt.record(m)
			got := nonZero(values(t, reg, tt.family))
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("%s (-want +got):\n%s", tt.family, diff)
			}
		})
	}
}

// TestLimiterWaitHistogram pins the exposition of one histogram, buckets
// and sum included, and that a negative wait counts as zero.
func TestLimiterWaitHistogram(t *testing.T) {
	m, reg := newMetrics(t)
	m.LimiterWait(3 * time.Millisecond)
	m.LimiterWait(7 * time.Second)
	m.LimiterWait(-time.Second)
	m.LimiterWait(2 * time.Minute)

	want := `# HELP pulsedive_relay_limiter_wait_seconds Time spent waiting for a per-API-key rate-limit token.
# TYPE pulsedive_relay_limiter_wait_seconds histogram
pulsedive_relay_limiter_wait_seconds_bucket{le="0.001"} 1
pulsedive_relay_limiter_wait_seconds_bucket{le="0.005"} 2
pulsedive_relay_limiter_wait_seconds_bucket{le="0.01"} 2
pulsedive_relay_limiter_wait_seconds_bucket{le="0.05"} 2
pulsedive_relay_limiter_wait_seconds_bucket{le="0.1"} 2
pulsedive_relay_limiter_wait_seconds_bucket{le="0.5"} 2
pulsedive_relay_limiter_wait_seconds_bucket{le="1"} 2
pulsedive_relay_limiter_wait_seconds_bucket{le="2.5"} 2
pulsedive_relay_limiter_wait_seconds_bucket{le="5"} 2
pulsedive_relay_limiter_wait_seconds_bucket{le="10"} 3
pulsedive_relay_limiter_wait_seconds_bucket{le="20"} 3
pulsedive_relay_limiter_wait_seconds_bucket{le="30"} 3
pulsedive_relay_limiter_wait_seconds_bucket{le="60"} 3
pulsedive_relay_limiter_wait_seconds_bucket{le="+Inf"} 4
pulsedive_relay_limiter_wait_seconds_sum 127.003
pulsedive_relay_limiter_wait_seconds_count 4
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "pulsedive_relay_limiter_wait_seconds"); err != nil {
		t.Error(err)
	}
}

// TestBuckets checks each histogram's range and that the thresholds the
// alerting rules use (deploy/prometheus/rules.yml) are bucket boundaries.
func TestBuckets(t *testing.T) {
	tests := []struct {
		family        string
		first, last   float64
		mustHaveBound []float64
	}{
		{"pulsedive_relay_http_request_duration_seconds", 0.005, 30, []float64{10, 25}},
		{"pulsedive_relay_pulsedive_request_duration_seconds", 0.025, 20, []float64{10}},
		{"pulsedive_relay_limiter_wait_seconds", 0.001, 60, []float64{5}},
	}
	_, reg := newMetrics(t)
	families := gather(t, reg)
	for _, tt := range tests {
		t.Run(tt.family, func(t *testing.T) {
			mf, ok := families[tt.family]
			if !ok || len(mf.GetMetric()) == 0 {
				t.Fatalf("no series of %s", tt.family)
			}
			var bounds []float64
			for _, b := range mf.GetMetric()[0].GetHistogram().GetBucket() {
				bounds = append(bounds, b.GetUpperBound())
			}
			if !slices.IsSorted(bounds) {
				t.Errorf("bounds %v not sorted", bounds)
			}
			if got := []float64{bounds[0], bounds[len(bounds)-1]}; !slices.Equal(got, []float64{tt.first, tt.last}) {
				t.Errorf("first, last bound = %v, want %v", got, []float64{tt.first, tt.last})
			}
			for _, b := range tt.mustHaveBound {
				if !slices.Contains(bounds, b) {
					t.Errorf("bounds %v lack %v", bounds, b)
				}
			}
		})
	}
}

func TestNewErrors(t *testing.T) {
	t.Run("nil registerer", func(t *testing.T) {
		if _, err := metrics.New(nil, testConfig("1")); err == nil {
			t.Error("New(nil) succeeded, want error")
		}
	})

	t.Run("twice on one registry", func(t *testing.T) {
		m, reg := newMetrics(t)
		if _, err := metrics.New(reg, testConfig("2")); err == nil {
			t.Fatal("second New on one registry succeeded, want error")
		}
		// The first Metrics still records into the registry.
		m.Observable("ip")
		if got := values(t, reg, "pulsedive_relay_observables_total")["type=ip"]; got != 1 {
			t.Errorf("observables{type=ip} = %v after failed second New, want 1", got)
		}
	})

	t.Run("bad labels", func(t *testing.T) {
		for name, change := range map[string]func(l *metrics.Labels){
			"empty value":              func(l *metrics.Labels) { l.Outcomes = append(l.Outcomes, "") },
			"other as a value":         func(l *metrics.Labels) { l.Routes = append(l.Routes, "other") },
			"a value twice":            func(l *metrics.Labels) { l.Bounds = append(l.Bounds, l.Bounds[0]) },
			"a cached kind not a kind": func(l *metrics.Labels) { l.CachedKinds = append(l.CachedKinds, "whois") },
			"codes of an unknown route": func(l *metrics.Labels) {
				l.ErrorCodes = map[string][]string{"/nowhere": {"unknown"}}
			},
		} {
			t.Run(name, func(t *testing.T) {
				cfg := testConfig("1")
				change(&cfg.Labels)
				reg := prometheus.NewRegistry()
				if _, err := metrics.New(reg, cfg); err == nil {
					t.Fatal("New succeeded, want an error")
				}
				if fams := gather(t, reg); len(fams) != 0 {
					t.Errorf("%d families registered by a failed New, want none", len(fams))
				}
			})
		}
	})

	t.Run("conflict rolls back", func(t *testing.T) {
		reg := prometheus.NewRegistry()
		reg.MustRegister(prometheus.NewGauge(prometheus.GaugeOpts{Name: "pulsedive_relay_panics_total", Help: "in the way"}))
		if _, err := metrics.New(reg, testConfig("1")); err == nil {
			t.Fatal("New succeeded despite a conflicting family")
		}
		var got []string
		for name := range gather(t, reg) {
			got = append(got, name)
		}
		if diff := cmp.Diff([]string{"pulsedive_relay_panics_total"}, got); diff != "" {
			t.Errorf("families left after failed New (-want +got):\n%s", diff)
		}
		// The collectors registered before the conflict are gone too (the Go
		// collector has no samples to gather until registered again).
		if err := reg.Register(collectors.NewGoCollector()); err != nil {
			t.Errorf("Go collector still registered after failed New: %v", err)
		}
	})
}

func TestNilMetricsDiscards(t *testing.T) {
	var m *metrics.Metrics
	m.HTTPRequest("/version", 200, time.Second)
	m.PulsediveCall("info", "ok", time.Second)
	m.PulsediveInFlight(1)
	m.LimiterWait(time.Second)
	m.CacheLookup("info", "hit")
	m.Observable("ip")
	m.JWKSFetch("ok")
	m.AuthFailure("expired")
	m.SharedCall("info")
	m.PanicRecovered("/version")
	m.PulsediveRefused("info", "refused")
	m.BreakerKeys("open", 2)
	m.EnvelopeError("/health", "unknown")
}

func TestConcurrentUse(t *testing.T) {
	m, reg := newMetrics(t)
	const workers, each = 8, 50
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range each {
				m.PulsediveInFlight(1)
				m.PulsediveCall("info", "ok", time.Millisecond)
				m.HTTPRequest("/observe/observables", 200, time.Millisecond)
				m.PulsediveInFlight(-1)
			}
		}()
	}
	wg.Wait()

	got := map[string]float64{
		"pulsedive":  values(t, reg, "pulsedive_relay_pulsedive_requests_total")["kind=info,outcome=ok"],
		"http":       values(t, reg, "pulsedive_relay_http_requests_total")["code=200,route=/observe/observables"],
		"in flight":  values(t, reg, "pulsedive_relay_pulsedive_in_flight")[""],
		"http count": values(t, reg, "pulsedive_relay_http_request_duration_seconds")["route=/observe/observables"],
	}
	want := map[string]float64{"pulsedive": workers * each, "http": workers * each, "in flight": 0, "http count": workers * each}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("after concurrent use (-want +got):\n%s", diff)
	}
}

// allowedLabelValues is the whole label vocabulary of the relay's families
// (build_info aside): anything outside it would be a cardinality leak.
func allowedLabelValues(name, value string) bool {
	sets := map[string][]string{
		"route": {"/health", "/observe/observables", "/deliberate/observables", "/refer/observables",
			"/version", "/watchdog", "/metrics", "/healthz", "/readyz", "unmatched", "pipeline", "other"},
		"kind": {"info", "links", "health", "other"},
		"outcome": {"ok", "not_found", "rate_limited", "client_error", "server_error", "timeout",
			"unavailable", "bad_answer", "refused", "breaker_open", "error", "other"},
		"result":  {"hit", "miss", "stale", "error", "won", "waited", "timed_out", "abandoned", "other"},
		"type":    {"ip", "ipv6", "domain", "url", "other"},
		"reason":  append(authReasons(), "other"),
		"state":   {"closed", "half_open", "open", "other"},
		"command": {"budget", "pause", "cache_get", "cache_set", "lock", "ping", "other"},
		"bound":   {"connections", "requests", "body_bytes", "observables", "other"},
	}
	if name == "code" {
		// An HTTP status (http_requests_total) or an envelope code
		// (errors_total).
		n, err := strconv.Atoi(value)
		return value == "other" || (err == nil && n >= 100 && n <= 599) || isEnvelopeCode(value)
	}
	return slices.Contains(sets[name], value)
}

// FuzzLabelsStayBounded feeds arbitrary strings (API keys, tokens,
// observable values, garbage) to every label-taking method and checks that
// only the fixed vocabulary reaches the exposition.
func FuzzLabelsStayBounded(f *testing.F) {
	for _, seed := range []string{
		"", "info", "ok", "/observe/observables", "8.8.8.8", "cisco.com",
		"eyJhbGciOiJSUzI1NiJ9.eyJrZXkiOiJzZWNyZXQifQ.sig", "0123456789abcdef0123456789abcdef",
		"/observe/observables?key=0123456789abcdef", "other", "\xff\xfe", "info\n",
	} {
		f.Add(seed, 200)
	}
	f.Fuzz(func(t *testing.T, s string, status int) {
		reg := prometheus.NewRegistry()
		m, err := metrics.New(reg, testConfig("fuzz"))
		if err != nil {
			t.Fatalf("New: %v", err)
		}
		m.HTTPRequest(s, status, time.Millisecond)
		m.PulsediveCall(s, s, time.Millisecond)
		m.PulsediveCall("info", s, time.Millisecond)
		m.PulsediveCall(s, "ok", time.Millisecond)
		m.PulsediveRefused(s, s)
		m.BreakerKeys(s, 1)
		m.CacheLookup(s, s)
		m.Observable(s)
		m.JWKSFetch(s)
		m.AuthFailure(s)
		m.SharedCall(s)
		m.PanicRecovered(s)
		m.RedisCommand(s, time.Millisecond, true)
		m.L2Lookup(s)
		m.CollapseWait(s)
		m.AdmissionRefused(s)
		m.AdmissionInUse(s, 1)
		m.AdmissionLimit(s, 1)
		m.EnvelopeError(s, s)
		m.EnvelopeError("/health", s)

		mfs, err := reg.Gather()
		if err != nil {
			t.Fatalf("Gather: %v", err)
		}
		for _, mf := range mfs {
			if !strings.HasPrefix(mf.GetName(), "pulsedive_relay_") || mf.GetName() == "pulsedive_relay_build_info" {
				continue
			}
			for _, metric := range mf.GetMetric() {
				for _, lp := range metric.GetLabel() {
					if !allowedLabelValues(lp.GetName(), lp.GetValue()) {
						t.Errorf("%s{%s=%q}: label value outside the fixed set", mf.GetName(), lp.GetName(), lp.GetValue())
					}
				}
			}
		}
	})
}

// authReasons are the kinds of refused token (auth.FailureKinds; the auth
// package's tests hold the two lists equal).
func authReasons() []string {
	return []string{
		"missing_header", "wrong_type", "wrong_structure", "missing_jwks_host",
		"jwks_host_not_allowed", "jwks_unavailable", "wrong_key", "kid_not_found",
		"expired", "not_yet_valid", "wrong_audience", "wrong_payload",
	}
}

var authReasonKeys = func() []string {
	var out []string
	for _, r := range authReasons() {
		out = append(out, "reason="+r)
	}
	return out
}()

// TestClusterRecording: the scale-out families count what the cluster
// reports, unknown label values folded into "other".
func TestClusterRecording(t *testing.T) {
	m, reg := newMetrics(t)
	m.RedisCommand("budget", time.Millisecond, false)
	m.RedisCommand("budget", time.Millisecond, true)
	m.RedisCommand("FLUSHALL", time.Millisecond, true)
	m.L2Lookup("hit")
	m.L2Lookup("hit")
	m.L2Lookup("bogus")
	m.CollapseWait("waited")
	m.CollapseWait("timed_out")

	tests := []struct {
		family string
		want   map[string]float64
	}{
		{"pulsedive_relay_redis_command_duration_seconds", map[string]float64{"command=budget": 2, "command=other": 1}},
		{"pulsedive_relay_redis_errors_total", map[string]float64{"command=budget": 1, "command=other": 1}},
		{"pulsedive_relay_l2_cache_requests_total", map[string]float64{"result=hit": 2, "result=other": 1}},
		{"pulsedive_relay_collapse_waits_total", map[string]float64{"result=waited": 1, "result=timed_out": 1}},
	}
	for _, tt := range tests {
		t.Run(tt.family, func(t *testing.T) {
			if diff := cmp.Diff(tt.want, nonZero(values(t, reg, tt.family))); diff != "" {
				t.Errorf("series (-want +got):\n%s", diff)
			}
		})
	}

	t.Run("state and fallbacks", func(t *testing.T) {
		var got [][2]float64
		for _, shared := range []bool{true, false, true, false} {
			m.ClusterShared(shared)
			got = append(got, [2]float64{
				values(t, reg, "pulsedive_relay_cluster_state")[""],
				values(t, reg, "pulsedive_relay_cluster_fallbacks_total")[""],
			})
		}
		want := [][2]float64{{1, 0}, {2, 1}, {1, 1}, {2, 2}}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("(state, fallbacks) after each switch (-want +got):\n%s", diff)
		}
	})
}
