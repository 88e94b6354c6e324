package relay

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/pulsedive-relay/relay/pipeline"
	"github.com/pulsedive-relay/relay/pulsedive/pulsedivetest"
)

// metricsKey is a Pulsedive API key with characters that URL encoding, JSON
// and label escaping all change, so that a leak in any form is caught.
const metricsKey = "MKs3cr3tMK/9+Q&key=x?y#z%20 ü\\"

// fixtureObservables are fixture indicators of every supported type, one of
// them unknown to Pulsedive (23.23.23.23): four found, one "no data".
var fixtureObservables = []string{
	"domain", "parkingcrew.net",
	"ip", "185.141.25.242",
	"url", "http://51jianli.cn/images",
	"ipv6", "2001:420:1101:1::185",
	"ip", "23.23.23.23",
}

// relayFamilies are the families CONTRACT.md section 8 and package metrics
// promise, with their types.
var relayFamilies = map[string]dto.MetricType{
	"pulsedive_relay_http_requests_total":                dto.MetricType_COUNTER,
	"pulsedive_relay_http_request_duration_seconds":      dto.MetricType_HISTOGRAM,
	"pulsedive_relay_pulsedive_requests_total":           dto.MetricType_COUNTER,
	"pulsedive_relay_pulsedive_request_duration_seconds": dto.MetricType_HISTOGRAM,
	"pulsedive_relay_pulsedive_in_flight":                dto.MetricType_GAUGE,
	"pulsedive_relay_cache_requests_total":               dto.MetricType_COUNTER,
	"pulsedive_relay_limiter_wait_seconds":               dto.MetricType_HISTOGRAM,
	"pulsedive_relay_observables_total":                  dto.MetricType_COUNTER,
	"pulsedive_relay_jwks_fetches_total":                 dto.MetricType_COUNTER,
	"pulsedive_relay_auth_failures_total":                dto.MetricType_COUNTER,
	"pulsedive_relay_shared_calls_total":                 dto.MetricType_COUNTER,
	"pulsedive_relay_panics_total":                       dto.MetricType_COUNTER,
	"pulsedive_relay_breakers":                           dto.MetricType_GAUGE,
	"pulsedive_relay_admission_refusals_total":           dto.MetricType_COUNTER,
	"pulsedive_relay_admission_in_use":                   dto.MetricType_GAUGE,
	"pulsedive_relay_admission_limit":                    dto.MetricType_GAUGE,
	"pulsedive_relay_connections_replaced_total":         dto.MetricType_COUNTER,
	"pulsedive_relay_tls_handshake_failures_total":       dto.MetricType_COUNTER,
	"pulsedive_relay_build_info":                         dto.MetricType_GAUGE,
	"pulsedive_relay_redis_command_duration_seconds":     dto.MetricType_HISTOGRAM,
	"pulsedive_relay_redis_errors_total":                 dto.MetricType_COUNTER,
	"pulsedive_relay_cluster_state":                      dto.MetricType_GAUGE,
	"pulsedive_relay_cluster_fallbacks_total":            dto.MetricType_COUNTER,
	"pulsedive_relay_l2_cache_requests_total":            dto.MetricType_COUNTER,
	"pulsedive_relay_collapse_waits_total":               dto.MetricType_COUNTER,
	"pulsedive_relay_errors_total":                       dto.MetricType_COUNTER,
	// Read from the cache at each scrape.
	"pulsedive_relay_cache_bytes":            dto.MetricType_GAUGE,
	"pulsedive_relay_cache_max_bytes":        dto.MetricType_GAUGE,
	"pulsedive_relay_cache_entries":          dto.MetricType_GAUGE,
	"pulsedive_relay_cache_evictions_total":  dto.MetricType_COUNTER,
	"pulsedive_relay_cache_rejections_total": dto.MetricType_COUNTER,
	// The Go runtime and process collectors.
	"go_goroutines":                 dto.MetricType_GAUGE,
	"go_memstats_heap_alloc_bytes":  dto.MetricType_GAUGE,
	"go_gc_duration_seconds":        dto.MetricType_SUMMARY,
	"process_cpu_seconds_total":     dto.MetricType_COUNTER,
	"process_resident_memory_bytes": dto.MetricType_GAUGE,
	"process_open_fds":              dto.MetricType_GAUGE,
}

// routeTemplates are the only route label values the relay may export.
var routeTemplates = []string{
	"/health", "/observe/observables", "/deliberate/observables", "/refer/observables",
	"/version", "/watchdog", "/metrics", "/healthz", "/readyz", "unmatched",
	pipeline.PanicRoute, // a panic inside a shared Pulsedive call
}

func TestMetricsAfterTraffic(t *testing.T) {
	fake := startFake(t, pulsedivetest.Config{})
	env := relayEnv(fake.URL(), nil)
	cfg, err := loadConfig(func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	r := startRelay(t, env)
	c := newClient(t)
	tok := r.token(t, metricsKey)
	body := observables(t, fixtureObservables...)
	missingPath := "/no/such/path-7f3a9"

	observe := func() {
		t.Helper()
		got := send(t, c, r.URL(), request{method: http.MethodPost, path: "/observe/observables", auth: "Bearer " + tok, body: body}).object(t)
		if errs, ok := got["errors"]; ok {
			t.Fatalf("observe answered errors %v", errs)
		}
		// Judgements, not verdicts: at the relay's real clock every
		// fixture's verdict has expired and is left out (CONTRACT.md section 4b).
		judgements, _ := got["data"].(map[string]any)["judgements"].(map[string]any)
		if n, _ := judgements["count"].(float64); n != 4 {
			t.Fatalf("observe: %v judgements, want 4 (one per known fixture)\n%v", judgements["count"], got)
		}
	}

	// Traffic: observes (the first fills the cache), an auth failure, a bad
	// body, a 404, a 405 and a health check.
	observe()
	valid := 1
	for _, rq := range []struct {
		req      request
		status   int
		wantCode string // the envelope's error code, "" for none
	}{
		{request{method: http.MethodPost, path: "/observe/observables", body: body}, http.StatusOK, "authorization error"},
		{request{method: http.MethodPost, path: "/observe/observables", auth: "Bearer " + tok, body: "not json"}, http.StatusOK, "invalid argument"},
		{request{method: http.MethodGet, path: missingPath}, http.StatusNotFound, ""},
		{request{method: http.MethodGet, path: "/observe/observables"}, http.StatusMethodNotAllowed, ""},
		{request{method: http.MethodPost, path: "/health", auth: "Bearer " + tok}, http.StatusOK, ""},
	} {
		got := send(t, c, r.URL(), rq.req)
		if got.status != rq.status {
			t.Fatalf("%s %s: status %d, want %d\n%s", rq.req.method, rq.req.path, got.status, rq.status, got.body)
		}
		if rq.wantCode != "" && !bytes.Contains(got.body, []byte(`"code":"`+rq.wantCode+`"`)) {
			t.Fatalf("%s %s: answer %s, want error code %q", rq.req.method, rq.req.path, got.body, rq.wantCode)
		}
	}

	// Observe again until the cache has served a request's worth of each
	// document kind (five info, four links): its writes land shortly after
	// the answer (ristretto buffers them), so the second request may still
	// miss some.
	scrapes := 0
	var m scrape
	eventually(t, 10*time.Second, "cache hits for info and links", func() (bool, error) {
		observe()
		valid++
		m = scrapeMetrics(t, c, r.URL()+"/metrics")
		scrapes++
		hi, hl := m.value("pulsedive_relay_cache_requests_total", "kind", "info", "result", "hit"), m.value("pulsedive_relay_cache_requests_total", "kind", "links", "result", "hit")
		return hi >= 5 && hl >= 4, fmt.Errorf("info hits %v, links hits %v", hi, hl)
	})
	m = scrapeMetrics(t, c, r.URL()+"/metrics")

	t.Run("families", func(t *testing.T) {
		for name, typ := range relayFamilies {
			mf, ok := m[name]
			if !ok {
				t.Errorf("family %s missing", name)
				continue
			}
			if mf.GetType() != typ {
				t.Errorf("family %s has type %v, want %v", name, mf.GetType(), typ)
			}
		}
		for name := range m {
			if strings.HasPrefix(name, "pulsedive_relay_") {
				if _, ok := relayFamilies[name]; !ok {
					t.Errorf("family %s is not in the test's list: add it with its type", name)
				}
			}
		}
		got := m.labels("pulsedive_relay_build_info")
		want := []map[string]string{{"version": version, "goversion": runtime.Version()}}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("build_info labels (-want +got):\n%s", diff)
		}
	})

	t.Run("counters", func(t *testing.T) {
		got := m.counts("pulsedive_relay_")
		k := float64(valid)
		hi := got[`pulsedive_relay_cache_requests_total{kind="info",result="hit"}`]
		hl := got[`pulsedive_relay_cache_requests_total{kind="links",result="hit"}`]
		notFound := got[`pulsedive_relay_pulsedive_requests_total{kind="info",outcome="not_found"}`]
		if notFound < 1 || notFound > k {
			t.Errorf("info not_found calls = %v, want 1..%v (23.23.23.23 is unknown; later lookups may hit the negative cache)", notFound, k)
		}
		infoCalls, linksCalls := 5*k-hi, 4*k-hl // every miss is a call
		// The connections open as /metrics is read: its own, and this
		// test's idle keep-alive ones. Nothing else is held between requests.
		openKey := `pulsedive_relay_admission_in_use{bound="connections"}`
		if open := got[openKey]; open < 1 || open > 4 {
			t.Errorf("%s = %v, want 1 to 4", openKey, open)
		}
		delete(got, openKey)
		// The cache holds the documents fetched: five indicators (one
		// of them "no data") and four links, once their buffered writes
		// are applied.
		entries, held := got["pulsedive_relay_cache_entries"], got["pulsedive_relay_cache_bytes"]
		if entries < 1 || entries > 9 {
			t.Errorf("cache_entries = %v, want 1 to 9", entries)
		}
		if held <= 0 || held > float64(cfg.CacheMaxBytes) {
			t.Errorf("cache_bytes = %v, want above 0 and at most CACHE_MAX_BYTES %d", held, cfg.CacheMaxBytes)
		}
		delete(got, "pulsedive_relay_cache_entries")
		delete(got, "pulsedive_relay_cache_bytes")
		want := map[string]float64{
			`pulsedive_relay_cache_max_bytes`: float64(cfg.CacheMaxBytes - 4<<20), // all but the mapped answers' share
			`pulsedive_relay_errors_total{code="authorization error",route="/observe/observables"}`:       1,
			`pulsedive_relay_errors_total{code="invalid argument",route="/observe/observables"}`:          1,
			`pulsedive_relay_admission_limit{bound="connections"}`:                                        float64(cfg.MaxConnections),
			`pulsedive_relay_admission_limit{bound="requests"}`:                                           float64(cfg.MaxRequests),
			`pulsedive_relay_admission_limit{bound="body_bytes"}`:                                         float64(cfg.BodyBudget),
			`pulsedive_relay_admission_limit{bound="observables"}`:                                        float64(cfg.ObservablesInFlight),
			`pulsedive_relay_http_requests_total{code="200",route="/observe/observables"}`:                k + 2,
			`pulsedive_relay_http_requests_total{code="200",route="/health"}`:                             1,
			`pulsedive_relay_http_requests_total{code="200",route="/metrics"}`:                            float64(scrapes),
			`pulsedive_relay_http_requests_total{code="404",route="unmatched"}`:                           1,
			`pulsedive_relay_http_requests_total{code="405",route="unmatched"}`:                           1,
			`pulsedive_relay_http_request_duration_seconds_count{route="/observe/observables"}`:           k + 2,
			`pulsedive_relay_http_request_duration_seconds_count{route="/health"}`:                        1,
			`pulsedive_relay_http_request_duration_seconds_count{route="/metrics"}`:                       float64(scrapes),
			`pulsedive_relay_http_request_duration_seconds_count{route="unmatched"}`:                      2,
			`pulsedive_relay_observables_total{type="domain"}`:                                            k,
			`pulsedive_relay_observables_total{type="ip"}`:                                                2 * k,
			`pulsedive_relay_observables_total{type="url"}`:                                               k,
			`pulsedive_relay_observables_total{type="ipv6"}`:                                              k,
			`pulsedive_relay_cache_requests_total{kind="info",result="hit"}`:                              hi,
			`pulsedive_relay_cache_requests_total{kind="info",result="miss"}`:                             infoCalls,
			`pulsedive_relay_cache_requests_total{kind="links",result="hit"}`:                             hl,
			`pulsedive_relay_cache_requests_total{kind="links",result="miss"}`:                            linksCalls,
			`pulsedive_relay_pulsedive_requests_total{kind="info",outcome="ok"}`:                          infoCalls - notFound,
			`pulsedive_relay_pulsedive_requests_total{kind="info",outcome="not_found"}`:                   notFound,
			`pulsedive_relay_pulsedive_requests_total{kind="links",outcome="ok"}`:                         linksCalls,
			`pulsedive_relay_pulsedive_requests_total{kind="health",outcome="ok"}`:                        1,
			`pulsedive_relay_pulsedive_request_duration_seconds_count{kind="info"}`:                       infoCalls,
			`pulsedive_relay_pulsedive_request_duration_seconds_count{kind="links"}`:                      linksCalls,
			`pulsedive_relay_pulsedive_request_duration_seconds_count{kind="health"}`:                     1,
			`pulsedive_relay_limiter_wait_seconds_count`:                                                  infoCalls + linksCalls + 1,
			`pulsedive_relay_jwks_fetches_total{outcome="ok"}`:                                            1,
			`pulsedive_relay_auth_failures_total{reason="missing_header"}`:                                1,
			`pulsedive_relay_build_info{goversion="` + runtime.Version() + `",version="` + version + `"}`: 1,
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("non-zero pulsedive_relay_* series after %d valid observes (-want +got):\n%s", valid, diff)
		}
		if calls := float64(fake.Calls()); calls != infoCalls+linksCalls+1 {
			t.Errorf("the fake saw %v calls, the metrics count %v", calls, infoCalls+linksCalls+1)
		}
	})

	t.Run("no secrets or values in labels", func(t *testing.T) {
		secrets := secretForms(metricsKey, tok)
		for i := 1; i < len(fixtureObservables); i += 2 {
			secrets = append(secrets, secret{"an observable value", fixtureObservables[i]})
		}
		for _, lv := range m.allLabelValues() {
			for _, s := range secrets {
				if strings.Contains(lv.value, s.text) {
					t.Errorf("%s label %s=%q contains %s", lv.family, lv.name, lv.value, s.what)
				}
			}
			if lv.name == "route" && !slices.Contains(routeTemplates, lv.value) {
				t.Errorf("%s has route label %q, want a route template or \"unmatched\"", lv.family, lv.value)
			}
		}
		raw := string(send(t, c, r.URL(), request{method: http.MethodGet, path: "/metrics"}).body)
		for _, s := range append(secrets, secret{"the 404's raw path", missingPath}) {
			if strings.Contains(raw, s.text) {
				t.Errorf("the exposition contains %s (%q)", s.what, s.text)
			}
		}
	})
}

func TestMetricsOnTheirOwnListener(t *testing.T) {
	fake := startFake(t, pulsedivetest.Config{})
	r := startRelay(t, relayEnv(fake.URL(), map[string]string{"METRICS_ADDR": "127.0.0.1:0"}))
	if r.metricsAddr == "" || r.metricsAddr == r.addr {
		t.Fatalf("listening line names metrics_addr %q (addr %q), want a listener of its own", r.metricsAddr, r.addr)
	}
	c := newClient(t)

	main := send(t, c, r.URL(), request{method: http.MethodGet, path: "/metrics"})
	if main.status != http.StatusNotFound {
		t.Errorf("GET /metrics on RELAY_ADDR: status %d, want 404", main.status)
	}
	if got := main.object(t)["code"]; got != float64(404) {
		t.Errorf("GET /metrics on RELAY_ADDR: code %v, want 404 in the relay's 404 body", got)
	}

	m := scrapeMetrics(t, c, "http://"+r.metricsAddr+"/metrics")
	if got := m.value("pulsedive_relay_build_info", "version", version, "goversion", runtime.Version()); got != 1 {
		t.Errorf("build_info on METRICS_ADDR = %v, want 1", got)
	}
	// The 404 above was counted by the main listener and shows here.
	if got := m.value("pulsedive_relay_http_requests_total", "route", "unmatched", "code", "404"); got != 1 {
		t.Errorf("http_requests_total{route=unmatched,code=404} on METRICS_ADDR = %v, want 1", got)
	}
	// The metrics listener serves nothing else.
	if got := send(t, c, "http://"+r.metricsAddr, request{method: http.MethodPost, path: "/version"}); got.status != http.StatusNotFound && got.status != http.StatusMethodNotAllowed {
		t.Errorf("POST /version on METRICS_ADDR: status %d, want 404 or 405", got.status)
	}
}

// TestMetricsOpenMetrics: a scraper asking for OpenMetrics (as Prometheus
// does) gets it, families and all; others get the text format.
func TestMetricsOpenMetrics(t *testing.T) {
	fake := startFake(t, pulsedivetest.Config{})
	r := startRelay(t, relayEnv(fake.URL(), nil))
	c := newClient(t)
	tests := []struct {
		name, accept, wantType string
	}{
		{"OpenMetrics", "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5", "application/openmetrics-text"},
		{"as Prometheus asks", "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1", "application/openmetrics-text"},
		{"text", "text/plain;version=0.0.4", "text/plain"},
		{"no preference", "", "text/plain"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := request{method: http.MethodGet, path: "/metrics"}
			if tt.accept != "" {
				req.header = map[string]string{"Accept": tt.accept}
			}
			got := send(t, c, r.URL(), req)
			if ct := got.header.Get("Content-Type"); !strings.HasPrefix(ct, tt.wantType) {
				t.Fatalf("Content-Type %q, want %s", ct, tt.wantType)
			}
			body := string(got.body)
			if om := tt.wantType == "application/openmetrics-text"; om != strings.HasSuffix(body, "# EOF\n") {
				t.Errorf("body ends %q; OpenMetrics ends with # EOF, text does not", body[max(0, len(body)-20):])
			}
			// OpenMetrics names a counter's family without _total and
			// writes floats as such.
			family, zero := "pulsedive_relay_errors_total", "0"
			if tt.wantType == "application/openmetrics-text" {
				family, zero = "pulsedive_relay_errors", "0.0"
			}
			for _, line := range []string{
				"# TYPE " + family + " counter",
				`pulsedive_relay_errors_total{code="authorization error",route="/observe/observables"} ` + zero,
				"# TYPE pulsedive_relay_cache_entries gauge",
			} {
				if !strings.Contains(body, line+"\n") {
					t.Errorf("exposition lacks the line %q", line)
				}
			}
		})
	}
}

// scrape is one parsed /metrics answer, by family name.
type scrape map[string]*dto.MetricFamily

// scrapeMetrics GETs the text exposition at u and parses it with
// Prometheus's own parser.
func scrapeMetrics(t *testing.T, c *http.Client, u string) scrape {
	t.Helper()
	base, err := url.Parse(u)
	if err != nil {
		t.Fatal(err)
	}
	got := send(t, c, base.Scheme+"://"+base.Host, request{method: http.MethodGet, path: base.Path})
	if got.status != http.StatusOK {
		t.Fatalf("GET %s: status %d\n%s", u, got.status, got.body)
	}
	if ct := got.header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
		t.Fatalf("GET %s: Content-Type %q, want the text exposition", u, ct)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(bytes.NewReader(got.body))
	if err != nil {
		t.Fatalf("GET %s: the exposition does not parse: %v", u, err)
	}
	return fams
}

// value is the value of the counter or gauge series of family name with
// exactly the given label pairs (name, value, name, value...); 0 when
// absent.
func (s scrape) value(name string, pairs ...string) float64 {
	mf, ok := s[name]
	if !ok {
		return 0
	}
	want := map[string]string{}
	for i := 0; i+1 < len(pairs); i += 2 {
		want[pairs[i]] = pairs[i+1]
	}
	for _, m := range mf.GetMetric() {
		if cmp.Equal(labelMap(m), want) {
			return sampleValue(mf.GetType(), m)
		}
	}
	return 0
}

// labels lists the label sets of family name's series.
func (s scrape) labels(name string) []map[string]string {
	var out []map[string]string
	for _, m := range s[name].GetMetric() {
		out = append(out, labelMap(m))
	}
	return out
}

// counts flattens the families whose name starts with prefix into
// `name{l="v",...}` → value for every non-zero counter, gauge and
// untyped series, and `name_count{...}` for histograms and summaries.
func (s scrape) counts(prefix string) map[string]float64 {
	out := map[string]float64{}
	for name, mf := range s {
		if !strings.HasPrefix(name, prefix) {
			continue
		}
		for _, m := range mf.GetMetric() {
			key := name
			switch mf.GetType() {
			case dto.MetricType_HISTOGRAM, dto.MetricType_SUMMARY:
				key += "_count"
			}
			if v := sampleValue(mf.GetType(), m); v != 0 {
				out[key+labelText(m)] = v
			}
		}
	}
	return out
}

type labelValue struct{ family, name, value string }

// allLabelValues is every label of every series of every family.
func (s scrape) allLabelValues() []labelValue {
	var out []labelValue
	for name, mf := range s {
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				out = append(out, labelValue{name, lp.GetName(), lp.GetValue()})
			}
		}
	}
	return out
}

func sampleValue(typ dto.MetricType, m *dto.Metric) float64 {
	switch typ {
	case dto.MetricType_COUNTER:
		return m.GetCounter().GetValue()
	case dto.MetricType_GAUGE:
		return m.GetGauge().GetValue()
	case dto.MetricType_HISTOGRAM:
		return float64(m.GetHistogram().GetSampleCount())
	case dto.MetricType_SUMMARY:
		return float64(m.GetSummary().GetSampleCount())
	default:
		return m.GetUntyped().GetValue()
	}
}

func labelMap(m *dto.Metric) map[string]string {
	out := map[string]string{}
	for _, lp := range m.GetLabel() {
		out[lp.GetName()] = lp.GetValue()
	}
	return out
}

// labelText is `{a="1",b="2"}` with labels sorted by name; empty without
// labels.
func labelText(m *dto.Metric) string {
	lm := labelMap(m)
	if len(lm) == 0 {
		return ""
	}
	names := make([]string, 0, len(lm))
	for n := range lm {
		names = append(names, n)
	}
	sort.Strings(names)
	parts := make([]string, len(names))
	for i, n := range names {
		parts[i] = fmt.Sprintf("%s=%q", n, lm[n])
	}
	return "{" + strings.Join(parts, ",") + "}"
}

// secret is one form in which a secret could leak, and what it is.
type secret struct{ what, text string }

// secretForms are the ways an API key or a token could leak: the key as
// is, query-escaped (as it travels to Pulsedive), path-escaped, JSON-escaped
// and Go-quoted (as slog's handlers write strings), and its leading letters
// and digits alone, which survive any escaping; the token, its payload
// (which carries the key) and its signature.
func secretForms(apiKey, token string) []secret {
	jsonKey, _ := json.Marshal(apiKey)
	forms := []secret{
		{"the API key", apiKey},
		{"the query-escaped API key", url.QueryEscape(apiKey)},
		{"the path-escaped API key", url.PathEscape(apiKey)},
		{"the JSON-escaped API key", strings.Trim(string(jsonKey), `"`)},
		{"the Go-quoted API key", strings.Trim(strconv.Quote(apiKey), `"`)},
	}
	stem := apiKey
	if i := strings.IndexFunc(apiKey, isSpecial); i >= 0 {
		stem = apiKey[:i]
	}
	if len(stem) >= 8 {
		forms = append(forms, secret{"the API key's leading characters", stem})
	}
	forms = append(forms, secret{"a token", token})
	if parts := strings.Split(token, "."); len(parts) == 3 {
		forms = append(forms, secret{"a token's payload", parts[1]}, secret{"a token's signature", parts[2]})
	}
	return forms
}

func isSpecial(r rune) bool {
	return !('a' <= r && r <= 'z' || 'A' <= r && r <= 'Z' || '0' <= r && r <= '9')
}
