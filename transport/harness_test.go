package transport_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pulsedive-relay/relay/cache"
	"github.com/pulsedive-relay/relay/limiter"
	"github.com/pulsedive-relay/relay/pipeline"
	"github.com/pulsedive-relay/relay/pulsedive"
	"github.com/pulsedive-relay/relay/pulsedive/pulsedivetest"
	"github.com/pulsedive-relay/relay/transport"
	"github.com/pulsedive-relay/relay/transport/auth"
	"github.com/pulsedive-relay/relay/transport/authtest"
)

// fixedNow is the clock the shared fixtures were computed at.
var fixedNow = time.Date(2020, 4, 15, 0, 0, 0, 0, time.UTC)

// options vary the relay a harness runs.
type options struct {
	fake      pulsedivetest.Config
	limiter   *limiter.Config // nil: no local rate limit
	cache     bool
	timeout   time.Duration // RequestTimeout
	callLimit time.Duration // pulsedive.Config.Timeout
	maxBody   int64
	maxObs    int
	admission transport.Admission
	baseURL   string // overrides the fake's URL
	client    *http.Client
	audiences []string

	// Knobs of the fault tests; their zero values keep the defaults above.
	clock       func() time.Time // the cache's clock (fixedNow when nil) and the client's rate-limit pauses (time.Now when nil); breakers read time.Now
	breaker     pulsedive.BreakerConfig
	maxInFlight int               // pulsedive.Config.MaxInFlight
	maxDoc      int64             // pulsedive.Config.MaxBodyBytes
	pipeObs     pipeline.Observer // the pipeline's measurements (cache lookups)
	obs         transport.Observer
	logger      *slog.Logger // the handler's (access lines); none when nil
}

// harness is the whole relay over HTTP: the fake Pulsedive, a JWKS server
// on loopback TLS, the pipeline at the fixtures' clock, and the handler.
type harness struct {
	t     testing.TB
	fake  *pulsedivetest.Server
	jwks  *authtest.JWKSServer
	key   *authtest.Key
	relay *httptest.Server
	cache *cache.Cache[pipeline.Document]
	ids   atomic.Int64
}

func newHarness(t testing.TB, o options) *harness {
	t.Helper()
	h := &harness{t: t}
	fake, err := pulsedivetest.NewServer(o.fake)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(fake.Close)
	h.fake = fake

	if h.key, err = authtest.NewKey("relay-test-key"); err != nil {
		t.Fatal(err)
	}
	doc, err := h.key.JWKS()
	if err != nil {
		t.Fatal(err)
	}
	if h.jwks, err = authtest.NewJWKSServer(authtest.ServerConfig{JWKS: doc}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.jwks.Close)

	pcfg := pulsedive.Config{
		BaseURL:    fake.URL(),
		HTTPClient: fake.Client(),
		Timeout:    o.callLimit,
		Now:        o.clock, // time.Now when nil
		Breaker:    o.breaker,

		MaxInFlight:  o.maxInFlight,
		MaxBodyBytes: o.maxDoc,
	}
	if o.baseURL != "" {
		pcfg.BaseURL = o.baseURL
	}
	if o.client != nil {
		pcfg.HTTPClient = o.client
	}
	if o.limiter != nil {
		lim, err := limiter.New(*o.limiter)
		if err != nil {
			t.Fatal(err)
		}
		pcfg.Limiter = lim
	}
	client, err := pulsedive.New(pcfg)
	if err != nil {
		t.Fatal(err)
	}
	var store pipeline.Store
	if o.cache {
		clock := o.clock
		if clock == nil {
			clock = func() time.Time { return fixedNow }
		}
		h.cache, err = cache.New[pipeline.Document](cache.Config{MaxBytes: 8 << 20, Now: clock})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(h.cache.Close)
		store = h.cache
	}
	pipe, err := pipeline.New(pipeline.Config{
		Fetcher:        client,
		Pinger:         client,
		Store:          store,
		RequestTimeout: o.timeout,
		Now:            func() time.Time { return fixedNow },
		Observer:       o.pipeObs,
	})
	if err != nil {
		t.Fatal(err)
	}
	authn, err := auth.New(auth.Config{
		JWKSHosts:  []string{h.jwks.Host()},
		Audiences:  o.audiences,
		HTTPClient: h.jwks.Client(),
		Now:        func() time.Time { return fixedNow },
	})
	if err != nil {
		t.Fatal(err)
	}
	handler, err := transport.NewHandler(transport.Config{
		Enricher:       pipe,
		Auth:           authn,
		Version:        "1.2.3",
		MaxBodyBytes:   o.maxBody,
		MaxObservables: o.maxObs,
		Admission:      o.admission,
		Metrics:        http.NotFoundHandler(),
		Observer:       o.obs,
		Logger:         o.logger,
	})
	if err != nil {
		t.Fatal(err)
	}
	h.relay = httptest.NewServer(handler)
	t.Cleanup(h.relay.Close)
	return h
}

// token mints a valid configuration token for apiKey, with the relay's own
// URL as audience.
func (h *harness) token(apiKey string, extra map[string]any) string {
	h.t.Helper()
	claims := authtest.Claims(h.jwks.Host(), h.relay.URL, apiKey, fixedNow, time.Hour)
	for k, v := range extra {
		if v == nil {
			delete(claims, k)
			continue
		}
		claims[k] = v
	}
	tok, err := h.key.Mint(claims)
	if err != nil {
		h.t.Fatal(err)
	}
	return tok
}

// freshToken is a valid token for a key no other call of the test used, so
// rate-limit pauses and cache entries of one case do not reach another.
func (h *harness) freshToken() string {
	return h.token(fmt.Sprintf("key-%d", h.ids.Add(1)), nil)
}

// post sends body to path with the given Authorization (none when empty)
// and returns the HTTP status and the decoded JSON answer.
func (h *harness) post(path, authorization string, body any) (int, map[string]any) {
	h.t.Helper()
	var raw []byte
	switch b := body.(type) {
	case string:
		raw = []byte(b)
	case []byte:
		raw = b
	default:
		var err error
		if raw, err = json.Marshal(b); err != nil {
			h.t.Fatal(err)
		}
	}
	req, err := http.NewRequest(http.MethodPost, h.relay.URL+path, bytes.NewReader(raw))
	if err != nil {
		h.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if authorization != "" {
		req.Header.Set("Authorization", authorization)
	}
	return h.do(req)
}

func (h *harness) do(req *http.Request) (int, map[string]any) {
	h.t.Helper()
	resp, err := h.relay.Client().Do(req)
	if err != nil {
		h.t.Fatal(err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		h.t.Fatal(err)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		h.t.Errorf("%s %s: Content-Type %q, want application/json", req.Method, req.URL.Path, ct)
	}
	var got map[string]any
	if err := json.Unmarshal(data, &got); err != nil {
		h.t.Fatalf("%s %s: answer is not a JSON object: %v\n%s", req.Method, req.URL.Path, err, data)
	}
	return resp.StatusCode, got
}

func bearer(tok string) string { return "Bearer " + tok }

type observable struct {
	Type  string `json:"type"`
	Value string `json:"value"`
}
