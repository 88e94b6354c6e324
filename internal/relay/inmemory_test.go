package relay

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/pulsedive-relay/relay/pulsedive/pulsedivetest"
	"github.com/pulsedive-relay/relay/transport/authtest"
)

// memoryTransport answers HTTP requests from a handler in memory: a
// synctest bubble cannot wait on sockets.
type memoryTransport struct{ h http.Handler }

func (t memoryTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	rec := httptest.NewRecorder()
	t.h.ServeHTTP(rec, r)
	if err := r.Context().Err(); err != nil {
		return nil, err
	}
	return rec.Result(), nil
}

// inMemory is the relay's whole wiring in the test's process, for tests
// run in a synctest bubble, whose clock makes their timings exact: a fake
// Pulsedive (synthetic documents) and the JWKS answer from memory, and
// requests go to the handler without a socket. Its figures are those of
// the relay's logic (budgets, worker pool, collapse), not of a machine.
type inMemory struct {
	t     *testing.T
	app   *wiring
	fake  *pulsedivetest.Fake
	key   *authtest.Key
	calls *callLog
}

// startInMemory wires the relay with env over the test's own settings,
// against a fake Pulsedive of fakeCfg. The mapping's clock is 1 April
// 2020, when the synthetic documents' verdicts are current.
func startInMemory(t *testing.T, fakeCfg pulsedivetest.Config, env map[string]string) *inMemory {
	t.Helper()
	r := &inMemory{t: t, calls: &callLog{byKey: map[string][]call{}}}
	onCall := fakeCfg.OnCall
	fakeCfg.OnCall = func(req pulsedivetest.Request) {
		r.calls.record(req)
		if onCall != nil {
			onCall(req)
		}
	}
	fakeCfg.Synthetic = true
	fake, err := pulsedivetest.New(fakeCfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(fake.Close)
	r.fake = fake
	if r.key, err = authtest.NewKey("in-memory"); err != nil {
		t.Fatal(err)
	}
	jwks, err := r.key.JWKS()
	if err != nil {
		t.Fatal(err)
	}
	settings := map[string]string{
		"PULSEDIVE_API_URL": "http://pulsedive.test/api/",
		"RELAY_JWKS_HOSTS":  "jwks.test",
		"RELAY_AUDIENCE":    "https://relay.test",
	}
	maps.Copy(settings, env)
	cfg, err := loadConfig(mapEnv(settings))
	if err != nil {
		t.Fatal(err)
	}
	r.app, err = wire(cfg, Deps{
		Stderr: io.Discard,
		JWKSClient: &http.Client{Transport: memoryTransport{http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write(jwks)
		})}},
		pulsedive: memoryTransport{fake},
		Now:       func() time.Time { return time.Date(2020, 4, 1, 0, 0, 0, 0, time.UTC) },
	}, slog.New(slog.DiscardHandler), func() bool { return true })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.app.close)
	return r
}

// observed is an observe answer: its counts, its errors, and how long it
// took on the bubble's clock.
type observed struct {
	Data struct {
		Verdicts   struct{ Count int }
		Judgements struct{ Count int }
	}
	Errors []map[string]string
	took   time.Duration
}

// errorText lists the errors' messages, for a report.
func (o observed) errorText() string {
	var parts []string
	for _, e := range o.Errors {
		parts = append(parts, e["message"])
	}
	return strings.Join(parts, "; ")
}

// observe sends one observe request for domains under apiKey and decodes
// the answer, failing the test unless it is HTTP 200 with the envelope.
func (r *inMemory) observe(apiKey string, domains []string) observed {
	r.t.Helper()
	tok, err := r.key.Mint(authtest.Claims("jwks.test", "https://relay.test", apiKey, time.Now(), time.Hour))
	if err != nil {
		r.t.Fatal(err)
	}
	var body []map[string]string
	for _, d := range domains {
		body = append(body, map[string]string{"type": "domain", "value": d})
	}
	raw, _ := json.Marshal(body) // strings only
	req := httptest.NewRequest(http.MethodPost, "https://relay.test/observe/observables", bytes.NewReader(raw))
	req.Header.Set("Authorization", "Bearer "+tok)
	req.Header.Set("Content-Type", "application/json")
	rec := httptest.NewRecorder()
	start := time.Now()
	r.app.handler.ServeHTTP(rec, req)
	var o observed
	o.took = time.Since(start)
	if err := json.Unmarshal(rec.Body.Bytes(), &o); err != nil || rec.Code != http.StatusOK {
		r.t.Errorf("HTTP %d, %v: %s", rec.Code, err, rec.Body)
	}
	return o
}

// metric is the value of the relay's counter family name summed over the
// series whose label has value.
func (r *inMemory) metric(name, label, value string) float64 {
	r.t.Helper()
	rec := httptest.NewRecorder()
	r.app.metricsHandler.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(rec.Body)
	if err != nil {
		r.t.Fatal(err)
	}
	sum := 0.0
	for _, m := range fams[name].GetMetric() {
		for _, lp := range m.GetLabel() {
			if lp.GetName() == label && lp.GetValue() == value {
				sum += m.GetCounter().GetValue()
			}
		}
	}
	return sum
}

// domains names n new domains starting with prefix.
func domains(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s-%02d.example", prefix, i)
	}
	return out
}

// call is one Pulsedive call the fake counted: its kind and when.
type call struct {
	kind string
	at   time.Time
}

// callLog notes each key's Pulsedive calls, by key fingerprint.
type callLog struct {
	mu    sync.Mutex
	byKey map[string][]call
}

func (l *callLog) record(r pulsedivetest.Request) {
	if r.Kind != pulsedivetest.KindInfo && r.Kind != pulsedivetest.KindLinks {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	fp := pulsedivetest.KeyFingerprint(r.Key)
	l.byKey[fp] = append(l.byKey[fp], call{r.Kind, time.Now()})
}

// take returns apiKey's calls since the last take.
func (l *callLog) take(apiKey string) []call {
	l.mu.Lock()
	defer l.mu.Unlock()
	fp := pulsedivetest.KeyFingerprint(apiKey)
	out := l.byKey[fp]
	delete(l.byKey, fp)
	return out
}

// count is the calls of kind among calls.
func count(calls []call, kind string) int {
	n := 0
	for _, c := range calls {
		if c.kind == kind {
			n++
		}
	}
	return n
}
