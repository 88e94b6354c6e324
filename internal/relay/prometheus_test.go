package relay

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"sigs.k8s.io/yaml"

	"github.com/pulsedive-relay/relay/pulsedive/pulsedivetest"
)

// deployPrometheus is the directory of the Prometheus files the relay ships.
const deployPrometheus = "../../deploy/prometheus"

// relayJob is the scrape job of deploy/prometheus/prometheus.yml; the
// PulsediveRelayDown alert selects it.
const relayJob = "pulsedive-relay"

// TestPrometheusScrapesTheRelay runs a real Prometheus (Debian's package,
// 2.42) with a configuration derived from deploy/prometheus/prometheus.yml
// against an in-process relay: the target comes up, the relay's families
// are stored (build info and a counter the test drove), and every alert of
// deploy/prometheus/rules.yml loads and evaluates without error.
func TestPrometheusScrapesTheRelay(t *testing.T) {
	promBin, err := exec.LookPath("prometheus")
	if err != nil {
		t.Skip("prometheus is not on PATH: install Debian's prometheus package (apt-get install prometheus) to run this test; CI installs it")
	}
	fake := startFake(t, pulsedivetest.Config{})
	r := startRelay(t, relayEnv(fake.URL(), nil))
	c := newClient(t)
	got := send(t, c, r.URL(), request{method: http.MethodPost, path: "/observe/observables", auth: "Bearer " + r.token(t, "prometheus-key"), body: observables(t, "domain", "parkingcrew.net")})
	if got.status != http.StatusOK {
		t.Fatalf("observe: status %d\n%s", got.status, got.body)
	}
	// A request without a token: an envelope error to count.
	if got := send(t, c, r.URL(), request{method: http.MethodPost, path: "/observe/observables", body: observables(t, "domain", "parkingcrew.net")}); !strings.Contains(string(got.body), `"authorization error"`) {
		t.Fatalf("observe without a token: %s, want an authorization error", got.body)
	}

	dir := t.TempDir()
	cfgFile := filepath.Join(dir, "prometheus.yml")
	writePrometheusConfig(t, cfgFile, r.addr)
	prom := startPrometheus(t, promBin, cfgFile, filepath.Join(dir, "data"))

	eventually(t, 60*time.Second, "Prometheus ready", func() (bool, error) {
		got, err := trySend(c, prom, request{method: http.MethodGet, path: "/-/ready"})
		return err == nil && got.status == http.StatusOK, err
	})
	eventually(t, 60*time.Second, "the relay target up", func() (bool, error) {
		var targets struct {
			ActiveTargets []struct {
				Labels    map[string]string `json:"labels"`
				ScrapeURL string            `json:"scrapeUrl"`
				Health    string            `json:"health"`
				LastError string            `json:"lastError"`
			} `json:"activeTargets"`
		}
		if err := promAPI(c, prom, "/api/v1/targets", nil, &targets); err != nil {
			return false, err
		}
		for _, tg := range targets.ActiveTargets {
			if tg.Labels["job"] == relayJob && tg.Labels["instance"] == r.addr {
				return tg.Health == "up", fmt.Errorf("target %s is %q: %s", tg.ScrapeURL, tg.Health, tg.LastError)
			}
		}
		return false, fmt.Errorf("no active target of job %s at %s: %+v", relayJob, r.addr, targets.ActiveTargets)
	})

	for _, q := range []struct {
		query string
		least float64
	}{
		{`up{job="` + relayJob + `"}`, 1},
		{`pulsedive_relay_build_info{version="` + version + `"}`, 1},
		{`pulsedive_relay_observables_total{type="domain"}`, 1},
		{`pulsedive_relay_http_requests_total{route="/observe/observables",code="200"}`, 1},
		{`pulsedive_relay_pulsedive_requests_total{kind="links",outcome="ok"}`, 1},
		// Prometheus asks for OpenMetrics first, which the relay offers
		// (TestMetricsOpenMetrics): the new families read in that format.
		{`pulsedive_relay_errors_total{route="/observe/observables",code="authorization error"}`, 1},
		{`pulsedive_relay_cache_entries`, 1},
		{`pulsedive_relay_cache_bytes`, 1},
		{`pulsedive_relay_cache_evictions_total{reason="size"}`, 0},
	} {
		eventually(t, 60*time.Second, "a sample of "+q.query, func() (bool, error) {
			v, err := promQuery(c, prom, q.query)
			if err != nil {
				return false, err
			}
			return v >= q.least, fmt.Errorf("value %v, want at least %v", v, q.least)
		})
	}

	wantAlerts := deployAlerts(t)
	eventually(t, 60*time.Second, "every deploy alert loaded and evaluated", func() (bool, error) {
		var rules struct {
			Groups []struct {
				Rules []struct {
					Name      string `json:"name"`
					Type      string `json:"type"`
					Health    string `json:"health"`
					LastError string `json:"lastError"`
				} `json:"rules"`
			} `json:"groups"`
		}
		if err := promAPI(c, prom, "/api/v1/rules", nil, &rules); err != nil {
			return false, err
		}
		var loaded []string
		evaluated := true
		for _, g := range rules.Groups {
			for _, rl := range g.Rules {
				if rl.Type != "alerting" {
					continue
				}
				loaded = append(loaded, rl.Name)
				switch rl.Health {
				case "ok":
				case "err":
					t.Fatalf("alert %s fails to evaluate: %s", rl.Name, rl.LastError)
				default:
					evaluated = false
				}
			}
		}
		slices.Sort(loaded)
		if diff := cmp.Diff(wantAlerts, loaded); diff != "" {
			return false, fmt.Errorf("alerts (-rules.yml +loaded):\n%s", diff)
		}
		return evaluated, fmt.Errorf("not every alert evaluated yet")
	})
}

// writePrometheusConfig writes deploy/prometheus/prometheus.yml with the
// relay job's target replaced by addr, intervals of 1s, and rule files
// named by absolute path.
func writePrometheusConfig(t *testing.T, file, addr string) {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(deployPrometheus, "prometheus.yml"))
	if err != nil {
		t.Fatal(err)
	}
	var cfg map[string]any
	if err := yaml.Unmarshal(raw, &cfg); err != nil {
		t.Fatalf("deploy prometheus.yml: %v", err)
	}
	global, _ := cfg["global"].(map[string]any)
	if global == nil {
		global = map[string]any{}
		cfg["global"] = global
	}
	global["scrape_interval"], global["evaluation_interval"] = "1s", "1s"

	ruleFiles, _ := cfg["rule_files"].([]any)
	if len(ruleFiles) == 0 {
		t.Fatal("deploy prometheus.yml names no rule_files")
	}
	for i, f := range ruleFiles {
		name, _ := f.(string)
		if !filepath.IsAbs(name) {
			if name, err = filepath.Abs(filepath.Join(deployPrometheus, name)); err != nil {
				t.Fatal(err)
			}
		}
		ruleFiles[i] = name
	}

	scrapes, _ := cfg["scrape_configs"].([]any)
	found := false
	for _, sc := range scrapes {
		job, _ := sc.(map[string]any)
		if job == nil || job["job_name"] != relayJob {
			continue
		}
		found = true
		job["scrape_interval"], job["scrape_timeout"] = "1s", "1s"
		job["static_configs"] = []any{map[string]any{"targets": []any{addr}}}
	}
	if !found {
		t.Fatalf("deploy prometheus.yml has no scrape job %q", relayJob)
	}
	out, err := yaml.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(file, out, 0o644); err != nil {
		t.Fatal(err)
	}
}

// deployAlerts are the alert names of deploy/prometheus/rules.yml, sorted.
func deployAlerts(t *testing.T) []string {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(deployPrometheus, "rules.yml"))
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Groups []struct {
			Rules []struct {
				Alert string `json:"alert"`
			} `json:"rules"`
		} `json:"groups"`
	}
	if err := yaml.Unmarshal(raw, &doc); err != nil {
		t.Fatalf("deploy rules.yml: %v", err)
	}
	var names []string
	for _, g := range doc.Groups {
		for _, r := range g.Rules {
			if r.Alert != "" {
				names = append(names, r.Alert)
			}
		}
	}
	if len(names) == 0 {
		t.Fatal("deploy rules.yml holds no alert")
	}
	slices.Sort(names)
	return names
}

// startPrometheus runs Prometheus on a free loopback port with cfgFile and
// its TSDB in dataDir, and returns its base URL. It is stopped when the
// test ends, and its log is shown if the test failed.
func startPrometheus(t *testing.T, bin, cfgFile, dataDir string) string {
	t.Helper()
	addr := freePort(t)
	logs := newLogBuffer()
	cmd := exec.Command(bin,
		"--config.file="+cfgFile,
		"--storage.tsdb.path="+dataDir,
		"--web.listen-address="+addr,
	)
	cmd.Env = []string{}
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(15 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
		if t.Failed() {
			t.Logf("prometheus log:\n%s", logs)
		}
	})
	return "http://" + addr
}

// promAPI GETs path with query from Prometheus's HTTP API at base and
// decodes the data of a successful answer into data.
func promAPI(c *http.Client, base, path string, query url.Values, data any) error {
	if len(query) > 0 {
		path += "?" + query.Encode()
	}
	got, err := trySend(c, base, request{method: http.MethodGet, path: path})
	if err != nil {
		return err
	}
	var env struct {
		Status string          `json:"status"`
		Data   json.RawMessage `json:"data"`
		Error  string          `json:"error"`
	}
	if err := json.Unmarshal(got.body, &env); err != nil {
		return fmt.Errorf("%s: status %d, not JSON: %s", path, got.status, got.body)
	}
	if env.Status != "success" {
		return fmt.Errorf("%s: %s %s", path, env.Status, env.Error)
	}
	return json.Unmarshal(env.Data, data)
}

// promQuery evaluates an instant query and returns the sum of its samples;
// an empty result is an error.
func promQuery(c *http.Client, base, query string) (float64, error) {
	var data struct {
		ResultType string `json:"resultType"`
		Result     []struct {
			Metric map[string]string `json:"metric"`
			Value  [2]any            `json:"value"`
		} `json:"result"`
	}
	if err := promAPI(c, base, "/api/v1/query", url.Values{"query": {query}}, &data); err != nil {
		return 0, err
	}
	if len(data.Result) == 0 {
		return 0, fmt.Errorf("query %s: no samples yet", query)
	}
	sum := 0.0
	for _, s := range data.Result {
		text, _ := s.Value[1].(string)
		v, err := strconv.ParseFloat(text, 64)
		if err != nil {
			return 0, fmt.Errorf("query %s: sample %v: %v", query, s.Value, err)
		}
		sum += v
	}
	return sum, nil
}
