package transport_test

import (
	"bytes"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/pulsedive-relay/relay/ctim"
	"github.com/pulsedive-relay/relay/metrics"
	"github.com/pulsedive-relay/relay/pulsedive"
	"github.com/pulsedive-relay/relay/transport"
)

// BenchmarkObserveCached is the relay's hot path: one observable whose
// documents are cached, a token already verified, answered by the handler
// without a network in between. allocs/op is the figure to watch.
func BenchmarkObserveCached(b *testing.B) { benchObserveCached(b, options{cache: true}) }

// BenchmarkObserveCachedAdmitted is the same under the deployment's
// admission bounds: the cost of charging and releasing them.
func BenchmarkObserveCachedAdmitted(b *testing.B) {
	benchObserveCached(b, options{cache: true, admission: transport.Admission{Requests: 352, BodyBytes: 22 << 20, Observables: 2112}})
}

// BenchmarkObserveCachedWired is the same with the relay's metrics and its
// JSON access line (written to io.Discard: the cost of a line, not of
// the write).
func BenchmarkObserveCachedWired(b *testing.B) {
	// The labels the hot path reports, as the relay's wiring passes them.
	m, err := metrics.New(prometheus.NewRegistry(), metrics.Config{Version: "bench", Labels: metrics.Labels{
		Routes:          transport.Routes(),
		ErrorCodes:      transport.ErrorCodes(),
		Kinds:           pulsedive.Kinds(),
		CachedKinds:     []string{pulsedive.KindInfo, pulsedive.KindLinks},
		Outcomes:        pulsedive.Outcomes(),
		CacheResults:    []string{"hit", "miss", "stale"},
		ObservableTypes: ctim.Types(),
		Bounds:          transport.Bounds(),
	}})
	if err != nil {
		b.Fatal(err)
	}
	benchObserveCached(b, options{cache: true, pipeObs: m, obs: m, logger: slog.New(slog.NewJSONHandler(io.Discard, nil))})
}

func benchObserveCached(b *testing.B, o options) {
	h := newHarness(b, o)
	handler := h.relay.Config.Handler
	body := []byte(`[{"type":"ip","value":"185.141.25.242"}]`)
	authz := bearer(h.token("bench-key", nil))
	serve := func() *httptest.ResponseRecorder {
		req := httptest.NewRequest(http.MethodPost, h.relay.URL+"/observe/observables", bytes.NewReader(body))
		req.Header.Set("Authorization", authz)
		rec := httptest.NewRecorder()
		handler.ServeHTTP(rec, req)
		return rec
	}
	if rec := serve(); rec.Code != http.StatusOK || !bytes.Contains(rec.Body.Bytes(), []byte(`"verdicts"`)) {
		b.Fatalf("warm-up answer: %d %s", rec.Code, rec.Body)
	}
	h.cache.Wait()
	before := h.fake.Calls()
	b.ReportAllocs()
	for b.Loop() {
		serve()
	}
	if calls := h.fake.Calls() - before; calls != 0 {
		b.Errorf("the cached path called Pulsedive %d times", calls)
	}
}
