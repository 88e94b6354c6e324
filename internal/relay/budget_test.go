package relay

import (
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/google/go-cmp/cmp"

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

// TestTightBudgetAcceptance is issue 15's acceptance, on a fake clock: with
// Pulsedive enforcing 30 calls a minute per key and the relay at its
// defaults, one request of 10 new domains answers their 10 verdicts within
// 10 s, Active DNS for what the budget allowed, and exactly one "too many
// requests" error; the same request after the retry time gets the rest of
// the Active DNS from Pulsedive and the verdicts from the cache; Pulsedive
// never answers 429.
func TestTightBudgetAcceptance(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const latency = 100 * time.Millisecond // of every Pulsedive answer
		fake, err := pulsedivetest.New(pulsedivetest.Config{Synthetic: true, PerMinute: 30, Latency: latency})
		if err != nil {
			t.Fatal(err)
		}
		defer fake.Close()
		key, err := authtest.NewKey("budget-test")
		if err != nil {
			t.Fatal(err)
		}
		jwks, err := key.JWKS()
		if err != nil {
			t.Fatal(err)
		}
		env := map[string]string{
			"PULSEDIVE_API_URL": "http://pulsedive.test/api/",
			"RELAY_JWKS_HOSTS":  "jwks.test",
			"RELAY_AUDIENCE":    "https://relay.test",
		}
		cfg, err := loadConfig(func(k string) string { return env[k] })
		if err != nil {
			t.Fatal(err)
		}
		app, err := wire(cfg, Deps{
			Stderr: io.Discard,
			JWKSClient: &http.Client{Transport: memoryTransport{http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
				w.Header().Set("Content-Type", "application/json")
				_, _ = w.Write(jwks)
			})}},
			pulsedive: memoryTransport{fake},
			// The mapping's clock: the ten synthetic documents below were
			// seen from 3 January to 26 March 2020, so that every verdict
			// (valid 91 days from stamp_seen) is current on 1 April.
			Now: func() time.Time { return time.Date(2020, 4, 1, 0, 0, 0, 0, time.UTC) },
		}, slog.New(slog.DiscardHandler), func() bool { return true })
		if err != nil {
			t.Fatal(err)
		}
		defer app.close()
		tok, err := key.Mint(authtest.Claims("jwks.test", "https://relay.test", "a-free-plan-key", time.Now(), time.Hour))
		if err != nil {
			t.Fatal(err)
		}
		var body strings.Builder
		body.WriteString("[")
		for i := range 10 {
			if i > 0 {
				body.WriteString(",")
			}
			fmt.Fprintf(&body, `{"type":"domain","value":"new-%02d.example"}`, i)
		}
		body.WriteString("]")

		type answer struct {
			Data struct {
				Verdicts   struct{ Count int }
				Judgements struct{ Count int }
			}
			Errors []map[string]string
		}
		observe := func() (answer, time.Duration) {
			req := httptest.NewRequest(http.MethodPost, "https://relay.test/observe/observables", strings.NewReader(body.String()))
			req.Header.Set("Authorization", "Bearer "+tok)
			req.Header.Set("Content-Type", "application/json")
			rec := httptest.NewRecorder()
			start := time.Now()
			app.handler.ServeHTTP(rec, req)
			took := time.Since(start)
			var a answer
			if err := json.Unmarshal(rec.Body.Bytes(), &a); err != nil || rec.Code != http.StatusOK {
				t.Fatalf("HTTP %d, %v: %s", rec.Code, err, rec.Body)
			}
			return a, took
		}
		calls := func(kind string) int {
			n := 0
			for doc, c := range fake.Stats().ByDocument {
				if doc.Kind == kind {
					n += c
				}
			}
			return n
		}

		// Ten verdicts at once (burst 10), then one token every 3 s (the
		// refill of 30 − 10 a minute): one Active DNS within the 5 s links
		// wait, nine skipped until nine tokens are back at 30 s.
		first, took := observe()
		if first.Data.Verdicts.Count != 10 || first.Data.Judgements.Count != 10 {
			t.Errorf("first request: %d verdicts, %d judgements; want 10 each", first.Data.Verdicts.Count, first.Data.Judgements.Count)
		}
		if want := 3*time.Second + latency; took != want {
			t.Errorf("first request answered after %v, want %v", took, want)
		}
		wantErrors := []map[string]string{{"type": "fatal", "code": "too many requests",
			"message": "Pulsedive rate limit for this API key reached: Active DNS skipped for 9 of 10 observables; retry in 27 s"}}
		if diff := cmp.Diff(wantErrors, first.Errors); diff != "" {
			t.Errorf("first request's errors (-want +got):\n%s", diff)
		}
		if info, links := calls(pulsedivetest.KindInfo), calls(pulsedivetest.KindLinks); info != 10 || links != 1 {
			t.Errorf("first request: %d indicator and %d links calls, want 10 and 1", info, links)
		}

		time.Sleep(27 * time.Second) // as the message says
		fake.Reset()
		second, took := observe()
		if second.Data.Verdicts.Count != 10 || len(second.Errors) != 0 {
			t.Errorf("second request: %d verdicts, errors %v; want 10 and none", second.Data.Verdicts.Count, second.Errors)
		}
		if info, links := calls(pulsedivetest.KindInfo), calls(pulsedivetest.KindLinks); info != 0 || links != 9 {
			t.Errorf("second request: %d indicator and %d links calls, want 0 (cached) and 9 (the rest)", info, links)
		}
		if took != latency {
			t.Errorf("second request answered after %v, want %v", took, latency)
		}
		if n := fake.RateLimited(); n != 0 {
			t.Errorf("Pulsedive answered 429 %d times", n)
		}
	})
}
