package pipeline

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.uber.org/goleak"

	"github.com/pulsedive-relay/relay/cache"
	"github.com/pulsedive-relay/relay/ctim"
	"github.com/pulsedive-relay/relay/pulsedive"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var fixedNow = time.Date(2020, 4, 15, 0, 0, 0, 0, time.UTC)

// fakeFetcher answers from memory. Each call may be held by a gate the test
// opens; calls are counted per document.
type fakeFetcher struct {
	mu    sync.Mutex
	calls map[string]int
	// gate, when set, is called at the start of each call and may block;
	// it gets the call's context.
	gate func(ctx context.Context, kind, value string)
	// fail, when set, makes the call for value fail.
	fail func(kind, value string) error
}

func (f *fakeFetcher) count(kind, value string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls[kind+" "+value]
}

func (f *fakeFetcher) enter(ctx context.Context, kind, value string) error {
	f.mu.Lock()
	if f.calls == nil {
		f.calls = map[string]int{}
	}
	f.calls[kind+" "+value]++
	gate, fail := f.gate, f.fail
	f.mu.Unlock()
	if gate != nil {
		gate(ctx, kind, value)
	}
	if fail != nil {
		return fail(kind, value)
	}
	return nil
}

func (f *fakeFetcher) Indicator(ctx context.Context, _ pulsedive.APIKey, value string) (*pulsedive.Indicator, error) {
	if err := f.enter(ctx, pulsedive.KindInfo, value); err != nil {
		return nil, err
	}
	if value == "unknown.example" {
		return nil, pulsedive.ErrNotFound
	}
	return &pulsedive.Indicator{IID: "iid-" + value, Risk: "high", StampSeen: "2020-04-10 08:30:00",
		RiskFactors: []pulsedive.RiskFactor{{Description: "rf of " + value}}}, nil
}

func (f *fakeFetcher) Links(ctx context.Context, _ pulsedive.APIKey, value string) (*pulsedive.Links, error) {
	if err := f.enter(ctx, pulsedive.KindLinks, value); err != nil {
		return nil, err
	}
	return &pulsedive.Links{ActiveDNS: []pulsedive.Link{{Type: "ip", Indicator: "10.0.0.1", StampLinked: "2020-04-01 00:00:00"}}}, nil
}

func newPipeline(t *testing.T, f Fetcher, store Store, mutate ...func(*Config)) *Pipeline {
	t.Helper()
	cfg := Config{Fetcher: f, Store: store, Now: func() time.Time { return fixedNow }}
	for _, m := range mutate {
		m(&cfg)
	}
	p, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func domains(n int, prefix string) []ctim.Observable {
	out := make([]ctim.Observable, n)
	for i := range out {
		out[i] = ctim.Observable{Type: "domain", Value: fmt.Sprintf("%s%03d.example", prefix, i)}
	}
	return out
}

func verdictValues(b *ctim.Bundle) []string {
	var out []string
	for _, v := range b.Verdicts {
		out = append(out, v.Observable.Value)
	}
	return out
}

// TestOrderKeptUnderConcurrency releases the calls in reverse order: the
// answer still follows the request.
func TestOrderKeptUnderConcurrency(t *testing.T) {
	obs := domains(16, "order")
	arrived := make(chan string, 64)
	release := map[string]chan struct{}{}
	for _, o := range obs {
		release[o.Value] = make(chan struct{})
	}
	f := &fakeFetcher{gate: func(_ context.Context, kind, value string) {
		if kind != pulsedive.KindInfo {
			return
		}
		arrived <- value
		<-release[value]
	}}
	p := newPipeline(t, f, nil, func(c *Config) { c.Workers = len(obs) })
	done := make(chan Result)
	go func() { done <- p.Observe(context.Background(), Request{Observables: obs, EntitiesLimit: 100}) }()
	for range obs {
		<-arrived // every call is in flight at once
	}
	for i := len(obs) - 1; i >= 0; i-- {
		close(release[obs[i].Value])
	}
	res := <-done
	var want []string
	for _, o := range obs {
		want = append(want, o.Value)
	}
	if diff := cmp.Diff(want, verdictValues(res.Bundle)); diff != "" {
		t.Errorf("verdict order (-want +got):\n%s", diff)
	}
	if len(res.Errors) != 0 {
		t.Errorf("errors = %v", res.Errors)
	}
	for i, o := range obs { // one risk-factor sighting, then Active DNS, per observable
		if got, want := res.Bundle.Sightings[2*i].Description, "rf of "+o.Value; got != want {
			t.Errorf("sighting %d is %q, want %q", 2*i, got, want)
		}
	}
}

// TestWorkersBoundConcurrency holds every call until as many are in
// flight as the bound allows (or as remain), then lets the oldest go: a
// pool without the bound would pile up far more calls at once.
func TestWorkersBoundConcurrency(t *testing.T) {
	const workers, observables = 3, 40
	type held struct {
		kind    string
		release chan struct{}
	}
	arrived := make(chan held)
	var inFlight, peak atomic.Int32
	f := &fakeFetcher{gate: func(_ context.Context, kind, _ string) {
		n := inFlight.Add(1)
		for {
			p := peak.Load()
			if n <= p || peak.CompareAndSwap(p, n) {
				break
			}
		}
		h := held{kind: kind, release: make(chan struct{})}
		arrived <- h
		<-h.release
		inFlight.Add(-1)
	}}
	p := newPipeline(t, f, nil, func(c *Config) { c.Workers = workers })
	done := make(chan Result)
	go func() {
		done <- p.Observe(context.Background(), Request{Observables: domains(observables, "w"), EntitiesLimit: 100})
	}()

	// Each observable makes an info call, then a links call; it is finished
	// when its links call is released.
	var queue []held
	for finished := 0; finished < observables; {
		queue = append(queue, <-arrived)
		for len(queue) > 0 && len(queue) >= min(workers, observables-finished) {
			h := queue[0]
			queue = queue[1:]
			if h.kind == pulsedive.KindLinks {
				finished++
			}
			close(h.release)
		}
	}
	if res := <-done; len(res.Bundle.Verdicts) != observables {
		t.Errorf("%d verdicts, want %d", len(res.Bundle.Verdicts), observables)
	}
	if got := peak.Load(); got > workers {
		t.Errorf("peak concurrent calls = %d, want at most Workers = %d", got, workers)
	}
	if got := peak.Load(); got < workers {
		t.Errorf("peak concurrent calls = %d: the test never filled the pool", got)
	}
}

// TestDeadlineKeepsFinishedWork: observables whose calls never answer get
// an error when the request timeout passes; the others keep their data.
func TestDeadlineKeepsFinishedWork(t *testing.T) {
	f := &fakeFetcher{gate: func(ctx context.Context, _, value string) {
		if value == "slow.example" {
			<-ctx.Done() // answers only when the deadline ends the call
		}
	}, fail: func(_, value string) error {
		if value == "slow.example" {
			return &pulsedive.UnavailableError{Reason: "request deadline exceeded", Err: context.DeadlineExceeded}
		}
		return nil
	}}
	p := newPipeline(t, f, nil, func(c *Config) { c.RequestTimeout = 50 * time.Millisecond })
	obs := []ctim.Observable{{Type: "domain", Value: "fast.example"}, {Type: "domain", Value: "slow.example"}, {Type: "ip", Value: "fast.example"}}
	res := p.Observe(context.Background(), Request{Observables: obs, EntitiesLimit: 100})
	if diff := cmp.Diff([]string{"fast.example", "fast.example"}, verdictValues(res.Bundle)); diff != "" {
		t.Errorf("verdicts (-want +got):\n%s", diff)
	}
	if len(res.Errors) != 1 {
		t.Fatalf("errors = %v, want one for slow.example", res.Errors)
	}
	var ue *pulsedive.UnavailableError
	if !errors.As(res.Errors[0], &ue) && !errors.Is(res.Errors[0], context.DeadlineExceeded) {
		t.Errorf("error = %v, want the deadline", res.Errors[0])
	}
}

// TestCollapse: concurrent requests for the same documents share one call
// each. It runs in a synctest bubble: once every goroutine is blocked,
// every request waits on the held info calls.
func TestCollapse(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		obs := domains(10, "collapse")
		start := make(chan struct{})
		f := &fakeFetcher{gate: func(context.Context, string, string) { <-start }}
		p := newPipeline(t, f, nil)
		const requests = 20
		var wg sync.WaitGroup
		results := make([]Result, requests)
		for i := range results {
			wg.Go(func() {
				results[i] = p.Observe(context.Background(), Request{Observables: obs, EntitiesLimit: 100})
			})
		}
		synctest.Wait() // every request waits on the held info calls
		close(start)
		wg.Wait()
		info, links := 0, 0
		for _, o := range obs {
			info += f.count(pulsedive.KindInfo, o.Value)
			links += f.count(pulsedive.KindLinks, o.Value)
		}
		if info != len(obs) {
			t.Errorf("info calls = %d for %d identical requests, want %d", info, requests, len(obs))
		}
		// The links calls start when each request's info answer arrives; the
		// requests join those too unless one finished before another began.
		if links < len(obs) || links > requests*len(obs) {
			t.Errorf("links calls = %d", links)
		}
		for i, r := range results {
			if len(r.Bundle.Verdicts) != len(obs) {
				t.Errorf("request %d got %d verdicts, want %d", i, len(r.Bundle.Verdicts), len(obs))
			}
		}
	})
}

// TestCancelledCallerDoesNotCancelSharedCall: the request that started a
// call goes away; the call goes on for the request that joined it.
func TestCancelledCallerDoesNotCancelSharedCall(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		arrived := make(chan struct{})
		release := make(chan struct{})
		var callCtxErr atomic.Value
		f := &fakeFetcher{gate: func(ctx context.Context, kind, _ string) {
			if kind != pulsedive.KindInfo {
				return
			}
			close(arrived)
			<-release
			callCtxErr.Store(fmt.Sprint(ctx.Err()))
		}}
		p := newPipeline(t, f, nil)
		obs := []ctim.Observable{{Type: "domain", Value: "shared.example"}}

		leaderCtx, cancelLeader := context.WithCancel(context.Background())
		leaderDone := make(chan Result)
		go func() { leaderDone <- p.Observe(leaderCtx, Request{Observables: obs, EntitiesLimit: 100}) }()
		<-arrived

		followerDone := make(chan Result)
		go func() { followerDone <- p.Observe(context.Background(), Request{Observables: obs, EntitiesLimit: 100}) }()
		synctest.Wait() // the leader and the follower wait on the one in-flight call
		cancelLeader()
		leader := <-leaderDone
		if len(leader.Errors) != 1 || !errors.Is(leader.Errors[0], context.Canceled) {
			t.Errorf("leader errors = %v, want its own cancellation", leader.Errors)
		}
		close(release)
		follower := <-followerDone
		if got := callCtxErr.Load(); got != "<nil>" {
			t.Errorf("the shared call's context ended (%v) when its first caller left", got)
		}
		if len(follower.Errors) != 0 || len(follower.Bundle.Verdicts) != 1 {
			t.Errorf("follower got %d verdicts and errors %v; want the shared answer", len(follower.Bundle.Verdicts), follower.Errors)
		}
		if n := f.count(pulsedive.KindInfo, "shared.example"); n != 1 {
			t.Errorf("info calls = %d, want the one shared call", n)
		}
	})
}

func TestStaleIfError(t *testing.T) {
	now := fixedNow
	var clockMu sync.Mutex
	clock := func() time.Time { clockMu.Lock(); defer clockMu.Unlock(); return now }
	store, err := cache.New[Document](cache.Config{MaxBytes: 1 << 20, Now: clock})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	var failMu sync.Mutex
	var failErr error
	setFail := func(err error) { failMu.Lock(); failErr = err; failMu.Unlock() }
	f := &fakeFetcher{fail: func(string, string) error {
		failMu.Lock()
		defer failMu.Unlock()
		return failErr
	}}
	obs := &countingObserver{}
	p := newPipeline(t, f, store, func(c *Config) { c.Observer = obs; c.CacheTTL = time.Hour; c.StaleTTL = 24 * time.Hour })
	req := Request{Observables: []ctim.Observable{{Type: "domain", Value: "stale.example"}}, EntitiesLimit: 100}

	if res := p.Observe(context.Background(), req); len(res.Bundle.Verdicts) != 1 {
		t.Fatalf("first answer: %+v", res)
	}
	store.Wait()
	if res := p.Observe(context.Background(), req); len(res.Bundle.Verdicts) != 1 || f.count(pulsedive.KindInfo, "stale.example") != 1 {
		t.Fatalf("a fresh entry should answer without a call")
	}

	clockMu.Lock()
	now = now.Add(2 * time.Hour) // expired, still kept
	clockMu.Unlock()
	tests := []struct {
		name      string
		err       error
		wantStale bool
	}{
		{"503", &pulsedive.StatusError{StatusCode: 503}, true},
		{"timeout", &pulsedive.UnavailableError{Reason: "timeout"}, true},
		{"paused key", &pulsedive.RateLimitError{RetryAfter: time.Minute}, true},
		{"breaker open", &pulsedive.UnavailableError{Reason: "circuit breaker open"}, true},
		{"revoked key", &pulsedive.StatusError{StatusCode: 401}, false},
		{"forbidden key", &pulsedive.StatusError{StatusCode: 403}, false},
		{"redirect", &pulsedive.RedirectError{StatusCode: 302}, false},
		{"not Pulsedive's answer", &pulsedive.UnexpectedAnswerError{StatusCode: 404}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			setFail(tt.err)
			res := p.Observe(context.Background(), req)
			if tt.wantStale {
				if len(res.Errors) != 0 || len(res.Bundle.Verdicts) != 1 {
					t.Errorf("got %d verdicts, errors %v; want the stale answer", len(res.Bundle.Verdicts), res.Errors)
				}
			} else if len(res.Errors) != 1 || len(res.Bundle.Verdicts) != 0 {
				t.Errorf("got %d verdicts, errors %v; want the error, no stale data", len(res.Bundle.Verdicts), res.Errors)
			}
		})
	}
	if obs.get("info stale") == 0 {
		t.Error("stale answers were not counted")
	}

	clockMu.Lock()
	now = now.Add(48 * time.Hour) // past the stale window
	clockMu.Unlock()
	setFail(&pulsedive.StatusError{StatusCode: 503})
	if res := p.Observe(context.Background(), req); len(res.Errors) != 1 {
		t.Errorf("past the stale window: errors %v, want the 503", res.Errors)
	}
}

func TestNegativeCaching(t *testing.T) {
	store, err := cache.New[Document](cache.Config{MaxBytes: 1 << 20, Now: func() time.Time { return fixedNow }})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	f := &fakeFetcher{}
	p := newPipeline(t, f, store)
	req := Request{Observables: []ctim.Observable{{Type: "domain", Value: "unknown.example"}}}
	for range 3 {
		res := p.Observe(context.Background(), req)
		if !res.Bundle.Empty() || len(res.Errors) != 0 {
			t.Fatalf("unknown indicator: %+v", res)
		}
		store.Wait()
	}
	if n := f.count(pulsedive.KindInfo, "unknown.example"); n != 1 {
		t.Errorf("info calls = %d, want 1: \"no data\" is cached", n)
	}
	if n := f.count(pulsedive.KindLinks, "unknown.example"); n != 0 {
		t.Errorf("links calls = %d, want 0 for an unknown indicator", n)
	}
}

func TestCacheKeyHoldsNoAPIKey(t *testing.T) {
	key := pulsedive.APIKey("super-secret-key")
	ck := cacheKey(key, pulsedive.KindInfo, "x")
	if want := key.Fingerprint(); ck[:len(want)] != want {
		t.Errorf("cache key %q does not start with the fingerprint", ck)
	}
	for _, s := range []string{"super", "secret"} {
		if strings.Contains(ck, s) {
			t.Errorf("cache key %q holds part of the API key", ck)
		}
	}
	if cacheKey("other", pulsedive.KindInfo, "x") == ck {
		t.Error("two keys share a cache entry")
	}
}

func TestReferKeepsSearchPivotOnFailure(t *testing.T) {
	f := &fakeFetcher{fail: func(string, string) error { return &pulsedive.StatusError{StatusCode: 500} }}
	p := newPipeline(t, f, nil)
	res := p.Refer(context.Background(), Request{Observables: []ctim.Observable{{Type: "ip", Value: "1.2.3.4"}}})
	if len(res.References) != 1 || len(res.Errors) != 1 {
		t.Errorf("refer = %d references, %v; want the search pivot and the error", len(res.References), res.Errors)
	}
}

type countingObserver struct {
	mu sync.Mutex
	n  map[string]int
}

func (o *countingObserver) add(k string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.n == nil {
		o.n = map[string]int{}
	}
	o.n[k]++
}

func (o *countingObserver) get(k string) int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.n[k]
}

func (o *countingObserver) CacheLookup(kind, result string) { o.add(kind + " " + result) }
func (o *countingObserver) Observable(typ string)           { o.add("type " + typ) }
func (o *countingObserver) SharedCall(kind string)          { o.add("shared " + kind) }

func (o *countingObserver) PanicRecovered(route string) { o.add("panic " + route) }

// TestPanicInSharedCall: a fetcher that panics while several requests wait
// on its call gives each of them a *PanicError (the envelope's "Unexpected
// error."), counts the panic once and logs it once with its stack; the
// process lives on (a panic escaping singleflight.DoChan would end it,
// failing the whole test binary) and the next call works. It runs in a
// synctest bubble, where every goroutine blocked means every request waits
// on the held call.
func TestPanicInSharedCall(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const requests = 5
		start := make(chan struct{})
		var panicking atomic.Bool
		panicking.Store(true)
		f := &fakeFetcher{gate: func(_ context.Context, kind, _ string) {
			if kind != pulsedive.KindInfo {
				return
			}
			<-start
			if panicking.Load() {
				panic(errors.New("decoding: unexpected shape")) // a bug in decoding
			}
		}}
		var logs strings.Builder
		var logMu sync.Mutex
		obs := &countingObserver{}
		p := newPipeline(t, f, nil, func(c *Config) {
			c.Observer = obs
			c.Logger = slog.New(slog.NewJSONHandler(lockedWriter{&logMu, &logs}, nil))
		})
		req := Request{Observables: []ctim.Observable{{Type: "domain", Value: "panic.example"}}, EntitiesLimit: 100}
		results := make([]Result, requests)
		var wg sync.WaitGroup
		for i := range results {
			wg.Go(func() { results[i] = p.Observe(context.Background(), req) })
		}
		synctest.Wait() // every request waits on the one held call
		close(start)
		wg.Wait()

		for i, r := range results {
			var pe *PanicError
			if len(r.Errors) != 1 || !errors.As(r.Errors[0], &pe) {
				t.Errorf("request %d: errors %v, want one *PanicError", i, r.Errors)
				continue
			}
			if pe.Kind != pulsedive.KindInfo {
				t.Errorf("request %d: PanicError.Kind = %q, want info", i, pe.Kind)
			}
			if !r.Bundle.Empty() {
				t.Errorf("request %d: data %+v beside the panic", i, r.Bundle)
			}
		}
		if got := f.count(pulsedive.KindInfo, "panic.example"); got != 1 {
			t.Errorf("info calls = %d, want the one shared call", got)
		}
		if got := obs.get("panic pipeline"); got != 1 {
			t.Errorf("panics counted = %d, want 1", got)
		}
		logMu.Lock()
		text := logs.String()
		logMu.Unlock()
		if n := strings.Count(text, "panic recovered in a shared Pulsedive call"); n != 1 {
			t.Errorf("panic logged %d times, want once:\n%s", n, text)
		}
		for _, want := range []string{`"kind":"info"`, `"panic":"error: decoding: unexpected shape"`, "pipeline.(*fakeFetcher).Indicator"} {
			if !strings.Contains(text, want) {
				t.Errorf("panic log lacks %q (the cause and the stack):\n%s", want, text)
			}
		}

		panicking.Store(false)
		if res := p.Observe(context.Background(), req); len(res.Errors) != 0 || len(res.Bundle.Verdicts) != 1 {
			t.Errorf("after the panic: %d verdicts, errors %v; want the answer", len(res.Bundle.Verdicts), res.Errors)
		}
	})
}

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
