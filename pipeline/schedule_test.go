package pipeline

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/pulsedive-relay/relay/cache"
	"github.com/pulsedive-relay/relay/ctim"
	"github.com/pulsedive-relay/relay/limiter"
	"github.com/pulsedive-relay/relay/pulsedive"
	"github.com/pulsedive-relay/relay/pulsedive/pulsedivetest"
)

// The scheduling tests run the real Pulsedive client and limiter against
// the fake Pulsedive, in memory, inside a synctest bubble: the limiter, the
// fake's own rate limit and its latency all read the bubble's fake clock,
// so every time below is exact.

// handlerTransport serves HTTP requests from a handler in memory: no
// sockets, which a synctest bubble cannot wait on.
type handlerTransport struct{ h http.Handler }

func (t handlerTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	rec := httptest.NewRecorder()
	t.h.ServeHTTP(rec, r)
	if err := r.Context().Err(); err != nil {
		return nil, err // the caller gave up: no answer, as over a socket
	}
	return rec.Result(), nil
}

// budgetStack is a pipeline on the real client, limiter and (optionally)
// cache, calling the fake Pulsedive; it records when each call arrives.
type budgetStack struct {
	p     *Pipeline
	fake  *pulsedivetest.Fake
	store *cache.Cache[Document]
	start time.Time

	mu    sync.Mutex
	calls []call
}

type call struct {
	kind, value string
	at          time.Duration // since the stack started
}

type stackConfig struct {
	fakePerMinute    int           // Pulsedive's own limit per key (its burst the same); 0: none
	perMinute, burst int           // the relay's PULSEDIVE_RATE_LIMIT and PULSEDIVE_BURST
	linksMaxWait     time.Duration // Config.LinksMaxWait
	timeout          time.Duration // Config.RequestTimeout (25s when zero)
	callTimeout      time.Duration // pulsedive.Config.Timeout (10s when zero)
	latency          time.Duration // of every Pulsedive answer
	hang             string        // a value whose indicator call never answers
	cache            bool
}

// newBudgetStack must run inside a synctest bubble; it closes what it
// started when the test ends.
func newBudgetStack(t *testing.T, c stackConfig) *budgetStack {
	t.Helper()
	s := &budgetStack{start: time.Now()}
	fake, err := pulsedivetest.New(pulsedivetest.Config{
		Synthetic: true,
		PerMinute: c.fakePerMinute,
		Latency:   c.latency,
		OnCall: func(r pulsedivetest.Request) {
			s.mu.Lock()
			defer s.mu.Unlock()
			s.calls = append(s.calls, call{r.Kind, r.Value, time.Since(s.start)})
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(fake.Close)
	if c.hang != "" {
		fake.SetFault(c.hang, pulsedivetest.Fault{Mode: pulsedivetest.ModeHang, Kind: pulsedivetest.KindInfo})
	}
	s.fake = fake
	refill, burst := limiter.Budget(float64(c.perMinute), c.burst)
	lim, err := limiter.New(limiter.Config{PerMinute: refill, Burst: burst})
	if err != nil {
		t.Fatal(err)
	}
	client, err := pulsedive.New(pulsedive.Config{
		BaseURL:    "http://pulsedive.test/api/",
		HTTPClient: &http.Client{Transport: handlerTransport{fake}},
		Timeout:    c.callTimeout,
		Limiter:    lim,
	})
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{
		Fetcher:        client,
		RequestTimeout: c.timeout,
		LinksMaxWait:   c.linksMaxWait,
		Budget:         Budget{Every: time.Duration(float64(time.Minute) / refill), Burst: burst},
		Now:            func() time.Time { return fixedNow },
	}
	if c.cache {
		s.store, err = cache.New[Document](cache.Config{MaxBytes: 8 << 20})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(s.store.Close)
		cfg.Store = s.store
	}
	if s.p, err = New(cfg); err != nil {
		t.Fatal(err)
	}
	return s
}

// budgetRun is what one request did, on the fake clock.
type budgetRun struct {
	Judgements           int // one per observable answered (a verdict may be left out as expired)
	InfoCalls            int
	LinksCalls           int
	LastInfo, FirstLinks time.Duration // when the last indicator call and the first links call reached Pulsedive (-1: none)
	Answer               time.Duration // when the answer was ready
	Errors               []string
	Budget               *BudgetError // the folded refusal, if any
}

// observe sends one observe request and reports what it did; calls and
// times count from the request's start.
func (s *budgetStack) observe(t *testing.T, key string, obs []ctim.Observable) budgetRun {
	t.Helper()
	s.mu.Lock()
	s.calls, s.start = nil, time.Now()
	s.mu.Unlock()
	res := s.p.Observe(context.Background(), Request{Key: pulsedive.APIKey(key), EntitiesLimit: 100, Observables: obs})
	run := budgetRun{Judgements: len(res.Bundle.Judgements), Answer: time.Since(s.start), LastInfo: -1, FirstLinks: -1}
	s.mu.Lock()
	for _, c := range s.calls {
		switch c.kind {
		case pulsedivetest.KindInfo:
			run.InfoCalls++
			run.LastInfo = max(run.LastInfo, c.at)
		case pulsedivetest.KindLinks:
			run.LinksCalls++
			if run.FirstLinks < 0 || c.at < run.FirstLinks {
				run.FirstLinks = c.at
			}
		}
	}
	s.mu.Unlock()
	for _, err := range res.Errors {
		run.Errors = append(run.Errors, err.Error())
		if be, ok := err.(*BudgetError); ok {
			run.Budget = be
		}
	}
	if n := s.fake.RateLimited(); n != 0 {
		t.Errorf("Pulsedive answered 429 %d times; the relay must never cause one", n)
	}
	return run
}

// TestTightBudgetScheduling checks, on a fake clock, that indicator calls go
// before links calls, that links take budget free at once while verdicts
// are outstanding and otherwise wait at most LinksMaxWait (never past the
// request deadline), and how the refusals fold.
func TestTightBudgetScheduling(t *testing.T) {
	const latency = 100 * time.Millisecond
	linksOnly := func(skipped, of int, retry time.Duration) *BudgetError {
		return &BudgetError{LinksOnly: true, Skipped: skipped, Of: of, RetryAfter: retry}
	}
	tests := []struct {
		name string
		cfg  stackConfig
		obs  int
		want budgetRun
	}{
		{
			// The acceptance: ten verdicts at once; one links call
			// gets the token that comes 3 s later; the rest are refused at
			// once, since the next token (6 s) is past 5 s after the verdicts
			// (0.1 s). Nine tokens are back at 30 s: retry in 30 − 3.1 s.
			name: "defaults: 30/min, burst 10, links wait 5s",
			cfg:  stackConfig{fakePerMinute: 30, perMinute: 30, burst: 10, latency: latency},
			obs:  10,
			want: budgetRun{Judgements: 10, InfoCalls: 10, LinksCalls: 1, LastInfo: 0, FirstLinks: 3 * time.Second,
				Answer: 3*time.Second + latency, Budget: linksOnly(9, 10, 26*time.Second+900*time.Millisecond)},
		},
		{
			// Links never wait: all refused when the verdicts are in.
			name: "links never wait",
			cfg:  stackConfig{fakePerMinute: 30, perMinute: 30, burst: 10, linksMaxWait: -1, latency: latency},
			obs:  10,
			want: budgetRun{Judgements: 10, InfoCalls: 10, LastInfo: 0, FirstLinks: -1,
				Answer: latency, Budget: linksOnly(10, 10, 29*time.Second+900*time.Millisecond)},
		},
		{
			// A wider wait takes each token as it comes: 3, 6 and 9 s.
			name: "links wait 10s",
			cfg:  stackConfig{fakePerMinute: 30, perMinute: 30, burst: 10, linksMaxWait: 10 * time.Second, latency: latency},
			obs:  10,
			want: budgetRun{Judgements: 10, InfoCalls: 10, LinksCalls: 3, LastInfo: 0, FirstLinks: 3 * time.Second,
				Answer: 9*time.Second + latency, Budget: linksOnly(7, 10, 20*time.Second+900*time.Millisecond)},
		},
		{
			// The request deadline (4 s, less the call margin) bounds the
			// links wait before LinksMaxWait does.
			name: "links wait bounded by the request deadline",
			cfg:  stackConfig{fakePerMinute: 30, perMinute: 30, burst: 10, timeout: 3500 * time.Millisecond, latency: latency},
			obs:  10,
			want: budgetRun{Judgements: 10, InfoCalls: 10, LastInfo: 0, FirstLinks: -1,
				Answer: latency, Budget: linksOnly(10, 10, 29*time.Second+900*time.Millisecond)},
		},
		{
			// Twelve domains: the two indicator calls past the burst get
			// the tokens of 3 and 6 s; no links call takes one before. Then
			// one links call gets the token of 9 s.
			name: "indicator calls before links calls",
			cfg:  stackConfig{fakePerMinute: 30, perMinute: 30, burst: 10, latency: latency},
			obs:  12,
			want: budgetRun{Judgements: 12, InfoCalls: 12, LinksCalls: 1, LastInfo: 6 * time.Second, FirstLinks: 9 * time.Second,
				Answer: 9*time.Second + latency, Budget: linksOnly(11, 12, 29*time.Second+900*time.Millisecond)},
		},
		{
			// Budget to spare: every links call goes at once, before the
			// hanging indicator call gives up at the call timeout (2 s);
			// its observable has no verdict and one error of its own.
			name: "free budget goes to links while a verdict is outstanding",
			cfg:  stackConfig{perMinute: 600, burst: 100, latency: latency, callTimeout: 2 * time.Second, hang: "budget009.example"},
			obs:  10,
			want: budgetRun{Judgements: 9, InfoCalls: 10, LinksCalls: 9, LastInfo: 0, FirstLinks: latency,
				Answer: 2 * time.Second, Errors: []string{"pulsedive unavailable: timeout"}},
		},
		{
			// The verdicts need more than the deadline allows: the refused
			// indicator calls make the message the plain one, with the
			// latest retry time (the budget's next token, 24 s, plus the
			// refill of the other refused calls up to the burst).
			name: "verdicts refused too",
			cfg:  stackConfig{fakePerMinute: 30, perMinute: 30, burst: 10, latency: latency},
			obs:  20,
			want: budgetRun{Judgements: 18, InfoCalls: 18, LastInfo: 24 * time.Second, FirstLinks: -1,
				Answer: 24*time.Second + latency,
				Budget: &BudgetError{Skipped: 18, Of: 18, RetryAfter: 29*time.Second + 900*time.Millisecond}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				s := newBudgetStack(t, tt.cfg)
				got := s.observe(t, "key", domains(tt.obs, "budget"))
				if tt.want.Budget != nil {
					tt.want.Errors = append(tt.want.Errors, tt.want.Budget.Error())
				}
				if diff := cmp.Diff(tt.want, got); diff != "" {
					t.Errorf("request (-want +got):\n%s", diff)
				}
			})
		})
	}
}

// TestRetryAfterGetsTheRest is the acceptance end to end on the
// pipeline: after the retry time, the same request gets its verdicts from
// the cache and the rest of the Active DNS from Pulsedive.
func TestRetryAfterGetsTheRest(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := newBudgetStack(t, stackConfig{fakePerMinute: 30, perMinute: 30, burst: 10, latency: 100 * time.Millisecond, cache: true})
		obs := domains(10, "retry")
		first := s.observe(t, "key", obs)
		if first.Budget == nil || first.Budget.Skipped == 0 {
			t.Fatalf("first request: %+v; want some Active DNS skipped", first)
		}
		s.store.Wait()
		time.Sleep(first.Budget.RetryAfter.Round(time.Second) + time.Second/2) // the message's whole seconds, rounded up
		second := s.observe(t, "key", obs)
		want := budgetRun{Judgements: 10, LinksCalls: first.Budget.Skipped, LastInfo: -1, FirstLinks: 0, Answer: 100 * time.Millisecond}
		if diff := cmp.Diff(want, second); diff != "" {
			t.Errorf("second request (-want +got):\n%s", diff)
		}
		for _, o := range obs {
			if n := s.fake.CallsFor(pulsedivetest.KindLinks, o.Value); n != 1 {
				t.Errorf("links of %s fetched %d times over both requests, want once", o.Value, n)
			}
		}
	})
}

// TestDeliberateSpendsNoLinks: deliberate asks for indicators only, under a
// tight budget as under an ample one.
func TestDeliberateSpendsNoLinks(t *testing.T) {
	for _, perMinute := range []int{30, 600} {
		t.Run(fmt.Sprint(perMinute, "/min"), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				s := newBudgetStack(t, stackConfig{fakePerMinute: perMinute, perMinute: perMinute, burst: 10, latency: 100 * time.Millisecond})
				res := s.p.Deliberate(context.Background(), Request{Key: "key", Observables: domains(10, "deliberate")})
				if n := len(res.Bundle.Verdicts); n == 0 || len(res.Errors) != 0 {
					t.Errorf("deliberate: %d verdicts, errors %v; want verdicts, no error", n, res.Errors)
				}
				st := s.fake.Stats()
				if n := st.ByDocument[pulsedivetest.Document{Kind: pulsedivetest.KindInfo, Value: "deliberate000.example"}]; n != 1 {
					t.Errorf("deliberate made %d indicator calls for one observable, want 1", n)
				}
				for doc, n := range st.ByDocument {
					if doc.Kind != pulsedivetest.KindInfo {
						t.Errorf("deliberate called Pulsedive for %s %s (%d times)", doc.Kind, doc.Value, n)
					}
				}
			})
		})
	}
}
