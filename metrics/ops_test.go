package metrics_test

import (
	"net/http"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/pulsedive-relay/relay/metrics"
)

// The envelope's codes (CONTRACT.md section 2) other than Pulsedive's
// reason phrases, as the tests know them.
var envelopeCodes = []string{
	"authorization error", "invalid argument", "too many requests", "unknown",
	"key error", "service unavailable", "health check failed",
}

// isEnvelopeCode reports whether code may label errors_total: a code of
// the contract or the lower-case reason phrase of an HTTP status.
func isEnvelopeCode(code string) bool {
	if slices.Contains(envelopeCodes, code) {
		return true
	}
	for status := 100; status <= 599; status++ {
		if text := http.StatusText(status); text != "" && strings.ToLower(text) == code {
			return true
		}
	}
	return false
}

// envelopeErrorKeys are the series of errors_total created at zero: every
// code of the JWT routes, and the watchdog's own.
func envelopeErrorKeys() []string {
	var out []string
	for _, route := range []string{"/health", "/observe/observables", "/deliberate/observables", "/refer/observables"} {
		for _, code := range envelopeCodes {
			if code != "health check failed" {
				out = append(out, "code="+code+",route="+route)
			}
		}
	}
	return append(out, "code=health check failed,route=/watchdog")
}

func TestEnvelopeErrors(t *testing.T) {
	tests := []struct {
		name        string
		route, code string
		want        string // the series counted, as labelKey writes it
	}{
		{"authorization error", "/observe/observables", "authorization error", "code=authorization error,route=/observe/observables"},
		{"invalid argument", "/deliberate/observables", "invalid argument", "code=invalid argument,route=/deliberate/observables"},
		{"too many requests", "/refer/observables", "too many requests", "code=too many requests,route=/refer/observables"},
		{"unknown", "/health", "unknown", "code=unknown,route=/health"},
		{"key error", "/observe/observables", "key error", "code=key error,route=/observe/observables"},
		{"service unavailable", "/health", "service unavailable", "code=service unavailable,route=/health"},
		{"health check failed", "/watchdog", "health check failed", "code=health check failed,route=/watchdog"},
		{"a Pulsedive status's reason phrase", "/observe/observables", "bad request", "code=bad request,route=/observe/observables"},
		{"another reason phrase", "/health", "unauthorized", "code=unauthorized,route=/health"},
		{"a rare reason phrase", "/health", "i'm a teapot", "code=i'm a teapot,route=/health"},
		{"a panic on another route", "/version", "unknown", "code=unknown,route=/version"},
		{"a message is not a code", "/health", "Pulsedive answered unexpectedly (HTTP 404); check PULSEDIVE_API_URL", "code=other,route=/health"},
		{"codes are lower case", "/health", "Authorization Error", "code=other,route=/health"},
		{"a reason phrase as Go writes it", "/health", "Not Found", "code=other,route=/health"},
		{"empty code", "/health", "", "code=other,route=/health"},
		{"a raw path is not a route", "/observe/observables?key=secret", "unknown", "code=unknown,route=other"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, reg := newMetrics(t)
			m.EnvelopeError(tt.route, tt.code)
			m.EnvelopeError(tt.route, tt.code)
			got := nonZero(values(t, reg, "pulsedive_relay_errors_total"))
			if diff := cmp.Diff(map[string]float64{tt.want: 2}, got); diff != "" {
				t.Errorf("errors_total (-want +got):\n%s", diff)
			}
		})
	}
}

func TestCacheCollector(t *testing.T) {
	reads := 0
	figures := metrics.CacheFigures{
		Bytes: 12345, MaxBytes: 64 << 20, Entries: 42,
		Evicted: 7, Expired: 3, Rejected: 5, Dropped: 1,
	}
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(metrics.NewCacheCollector(func() metrics.CacheFigures {
		reads++
		return figures
	}))

	want := `# HELP pulsedive_relay_cache_bytes Bytes the relay's own cache holds, each entry's bookkeeping included; at most pulsedive_relay_cache_max_bytes.
# TYPE pulsedive_relay_cache_bytes gauge
pulsedive_relay_cache_bytes 12345
# HELP pulsedive_relay_cache_entries Documents the relay's own cache holds within their stale window.
# TYPE pulsedive_relay_cache_entries gauge
pulsedive_relay_cache_entries 42
# HELP pulsedive_relay_cache_evictions_total Cache entries removed: size (to make room for others), expired (reclaimed after their stale window).
# TYPE pulsedive_relay_cache_evictions_total counter
pulsedive_relay_cache_evictions_total{reason="expired"} 3
pulsedive_relay_cache_evictions_total{reason="size"} 7
# HELP pulsedive_relay_cache_max_bytes The budget in bytes of the documents the cache holds: CACHE_MAX_BYTES less the share kept for mapped answers (a sixteenth, at most 4 MiB).
# TYPE pulsedive_relay_cache_max_bytes gauge
pulsedive_relay_cache_max_bytes 6.7108864e+07
# HELP pulsedive_relay_cache_rejections_total Cache writes refused: admission (the policy kept the entries it would have evicted), dropped (before buffering: buffer full, over the budget, or closed).
# TYPE pulsedive_relay_cache_rejections_total counter
pulsedive_relay_cache_rejections_total{reason="admission"} 5
pulsedive_relay_cache_rejections_total{reason="dropped"} 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want)); err != nil {
		t.Error(err)
	}
	if reads != 1 {
		t.Errorf("one scrape read the cache %d times, want once", reads)
	}

	// Figures are read afresh at each scrape.
	figures.Entries, figures.Evicted = 40, 9
	got := map[string]float64{
		"entries": values(t, reg, "pulsedive_relay_cache_entries")[""],
		"size":    values(t, reg, "pulsedive_relay_cache_evictions_total")["reason=size"],
	}
	if diff := cmp.Diff(map[string]float64{"entries": 40, "size": 9}, got); diff != "" {
		t.Errorf("second scrape (-want +got):\n%s", diff)
	}

	problems, err := testutil.GatherAndLint(reg)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("promlint: %s: %s", p.Metric, p.Text)
	}

	// Beside New's families on one registry: no name clashes.
	if _, err := metrics.New(reg, testConfig("1")); err != nil {
		t.Errorf("New beside the cache collector: %v", err)
	}
}

// reREADMEMetric picks the family names of the README's metrics table.
var reREADMEMetric = regexp.MustCompile("(?m)^\\| `?(pulsedive_relay_[a-z0-9_]+)`? \\|")

// TestREADMEMetricsTable keeps the README's metrics table equal to the
// families the relay exports.
func TestREADMEMetricsTable(t *testing.T) {
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	var documented []string
	for _, m := range reREADMEMetric.FindAllSubmatch(readme, -1) {
		documented = append(documented, string(m[1]))
	}
	slices.Sort(documented)

	reg := prometheus.NewRegistry()
	m, err := metrics.New(reg, testConfig("1"))
	if err != nil {
		t.Fatal(err)
	}
	reg.MustRegister(metrics.NewCacheCollector(func() metrics.CacheFigures { return metrics.CacheFigures{} }))
	m.HTTPRequest("/version", 200, 0) // http_requests_total has no series before
	var exported []string
	for name := range gather(t, reg) {
		if strings.HasPrefix(name, "pulsedive_relay_") {
			exported = append(exported, name)
		}
	}
	slices.Sort(exported)
	if diff := cmp.Diff(exported, documented); diff != "" {
		t.Errorf("README metrics table (-exported +documented):\n%s", diff)
	}
}
