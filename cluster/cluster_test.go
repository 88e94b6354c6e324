package cluster

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"math"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.uber.org/goleak"

	"github.com/pulsedive-relay/relay/cluster/redistest"
	"github.com/pulsedive-relay/relay/limiter"
	"github.com/pulsedive-relay/relay/pipeline"
	"github.com/pulsedive-relay/relay/pulsedive"
	"github.com/pulsedive-relay/relay/pulsedive/pulsedivetest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// redisURL is an empty Redis database for a test that never takes Redis
// away: of the suite's server when .ci/run names one, else of a server of
// the test's own.
func redisURL(t *testing.T) string {
	t.Helper()
	url, done, err := redistest.Database(t.TempDir())
	if errors.Is(err, redistest.ErrNoServer) {
		t.Skip("redis-server is not on PATH: apt-get install redis-server to run the Redis tests; CI installs it and checks they ran")
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(done)
	return url
}

// startRedis runs a redis-server of the test's own, killed when it ends,
// for a test that kills it: packages run at once, and another test's
// Redis must stay up.
func startRedis(t *testing.T) *redistest.Server {
	t.Helper()
	srv, err := redistest.Start(t.TempDir())
	if errors.Is(err, redistest.ErrNoServer) {
		t.Skip("redis-server is not on PATH: apt-get install redis-server to run the Redis tests; CI installs it and checks they ran")
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	return srv
}

// recorder is an Observer that keeps counts and tells when the mode
// changes.
type recorder struct {
	mu       sync.Mutex
	counts   map[string]int
	failures map[string]int
	modes    chan bool
}

func newRecorder() *recorder {
	return &recorder{counts: map[string]int{}, failures: map[string]int{}, modes: make(chan bool, 16)}
}

func (r *recorder) RedisCommand(class string, _ time.Duration, failed bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.counts["redis "+class]++
	if failed {
		r.failures[class]++
	}
}

func (r *recorder) ClusterShared(shared bool) { r.modes <- shared }

func (r *recorder) L2Lookup(result string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.counts["l2 "+result]++
}

func (r *recorder) CollapseWait(result string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.counts["collapse "+result]++
}

func (r *recorder) count(k string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.counts[k]
}

// mode waits for the next mode change (the test's timeout bounds it).
func (r *recorder) mode(t *testing.T) bool {
	t.Helper()
	return <-r.modes
}

// syncBuffer is a log destination safe for the probe's goroutine.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// replica is one Cluster, as one relay replica holds it.
type replica struct {
	*Cluster
	rec  *recorder
	logs *syncBuffer
}

func newReplica(t *testing.T, url string, mutate ...func(*Config)) *replica {
	t.Helper()
	rec, logs := newRecorder(), &syncBuffer{}
	cfg := Config{URL: url, Observer: rec, Logger: slog.New(slog.NewTextHandler(logs, nil)), ProbeEvery: 20 * time.Millisecond, Timeout: 2 * time.Second}
	for _, m := range mutate {
		m(&cfg)
	}
	c, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	if got := rec.mode(t); got != c.Shared() {
		t.Fatalf("first mode reported %v, Shared() %v", got, c.Shared())
	}
	return &replica{Cluster: c, rec: rec, logs: logs}
}

func newBudget(t *testing.T, r *replica, cfg BudgetConfig) *Budget {
	t.Helper()
	if cfg.Replicas == 0 {
		cfg.Replicas = 1
	}
	b, err := r.NewBudget(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// tryNow asks for a token that must be free within a few milliseconds.
func tryNow(b *Budget, key string) error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	return b.Wait(ctx, key)
}

// TestBudgetSharedAcrossReplicas: three replicas draw on one bucket per
// key, with the burst of limiter.Budget: a 6/min budget with burst 3 gives
// three calls at once across all of them (then one every 20 s), and keys
// do not share.
func TestBudgetSharedAcrossReplicas(t *testing.T) {
	url := redisURL(t)
	var budgets []*Budget
	for range 3 {
		budgets = append(budgets, newBudget(t, newReplica(t, url), BudgetConfig{PerMinute: 6, Burst: 3, Replicas: 3}))
	}
	granted := map[string]int{}
	for round := range 4 {
		for i, b := range budgets {
			for _, key := range []string{"key-a", "key-b"} {
				err := tryNow(b, key)
				var we *limiter.WaitError
				switch {
				case err == nil:
					granted[key]++
				case errors.As(err, &we):
					if we.Delay < 10*time.Second || we.Delay > 20*time.Second {
						t.Errorf("round %d, replica %d, %s: refused with delay %v, want 10-20s (the next token)", round, i, key, we.Delay)
					}
				default:
					t.Fatalf("Wait: %v", err)
				}
			}
		}
	}
	if diff := cmp.Diff(map[string]int{"key-a": 3, "key-b": 3}, granted); diff != "" {
		t.Errorf("tokens granted across the replicas (-want +got):\n%s", diff)
	}
}

// TestBudgetReservesInOrder: a call that must wait is given its slot at
// once, so the calls waiting on several replicas queue one interval apart.
func TestBudgetReservesInOrder(t *testing.T) {
	url := redisURL(t)
	a := newBudget(t, newReplica(t, url), BudgetConfig{PerMinute: 6, Burst: 1})
	b := newBudget(t, newReplica(t, url), BudgetConfig{PerMinute: 6, Burst: 1})
	// Budget(6, 1): burst 1, refill 5/min, a slot every 12 s.
	var waits []time.Duration
	for _, bud := range []*Budget{a, b, a, b} {
		r, err := bud.reserve(context.Background(), "k", -1)
		if err != nil || !r.granted {
			t.Fatalf("reserve: %+v, %v", r, err)
		}
		waits = append(waits, r.wait.Round(time.Second))
	}
	if diff := cmp.Diff([]time.Duration{0, 12 * time.Second, 24 * time.Second, 36 * time.Second}, waits); diff != "" {
		t.Errorf("waits of successive reservations (-want +got):\n%s", diff)
	}
	// A bounded reservation past its bound takes nothing.
	r, err := a.reserve(context.Background(), "k", 5*time.Second)
	if err != nil || r.granted || r.wait.Round(time.Second) != 48*time.Second {
		t.Errorf("bounded reserve = %+v, %v; want refused with 48s", r, err)
	}
	// The last slot given back is reused.
	last, _ := b.reserve(context.Background(), "k", -1)
	b.cancel("k", last)
	again, _ := a.reserve(context.Background(), "k", -1)
	if again.wait.Round(time.Second) != last.wait.Round(time.Second) {
		t.Errorf("after cancel, next wait %v, want the cancelled %v", again.wait, last.wait)
	}
}

// TestPauseStopsEveryReplica: one replica's 429 pauses the key on all; a
// call whose deadline ends first fails fast with the pause's length.
func TestPauseStopsEveryReplica(t *testing.T) {
	url := redisURL(t)
	a := newBudget(t, newReplica(t, url), BudgetConfig{PerMinute: 600, Burst: 5})
	b := newBudget(t, newReplica(t, url), BudgetConfig{PerMinute: 600, Burst: 5, PollEvery: 10 * time.Millisecond})
	if err := tryNow(b, "k"); err != nil {
		t.Fatalf("before the pause: %v", err)
	}
	a.PauseUntil("k", time.Now().Add(time.Minute))
	a.PauseUntil("k", time.Now().Add(time.Second)) // does not shorten it
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := b.Wait(ctx, "k")
	var we *limiter.WaitError
	if !errors.As(err, &we) || we.Delay < 55*time.Second || we.Delay > time.Minute {
		t.Fatalf("Wait during another replica's pause = %v, want a WaitError of about 60s", err)
	}
	if err := tryNow(b, "other-key"); err != nil {
		t.Errorf("another key: %v, want no pause", err)
	}
}

// TestPauseNoticedWhileWaiting: a call waiting for its slot notices a pause
// set meanwhile by another replica and fails fast instead of calling into
// it.
func TestPauseNoticedWhileWaiting(t *testing.T) {
	url := redisURL(t)
	polled := make(chan struct{})
	a := newBudget(t, newReplica(t, url), BudgetConfig{PerMinute: 6, Burst: 1})
	b := newBudget(t, newReplica(t, url, func(c *Config) {
		c.Observer = &pollSignal{Observer: c.Observer, polled: polled}
	}), BudgetConfig{PerMinute: 6, Burst: 1, PollEvery: 10 * time.Millisecond})
	if err := tryNow(a, "k"); err != nil {
		t.Fatal(err)
	}
	// The next slot is 12 s away: b waits for it, polling for pauses.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- b.Wait(ctx, "k") }()
	<-polled // b holds its slot and has looked for a pause once
	a.PauseUntil("k", time.Now().Add(time.Minute))
	err := <-done
	var we *limiter.WaitError
	if !errors.As(err, &we) || we.Delay < 55*time.Second {
		t.Fatalf("Wait = %v, want a WaitError of about 60s", err)
	}
}

// pollSignal closes polled at the first budget command after the
// reservation.
type pollSignal struct {
	Observer
	polled chan struct{}
	n      int
	mu     sync.Mutex
}

func (p *pollSignal) RedisCommand(class string, d time.Duration, failed bool) {
	p.Observer.RedisCommand(class, d, failed)
	p.mu.Lock()
	defer p.mu.Unlock()
	if class == classBudget {
		p.n++
		if p.n == 2 {
			close(p.polled)
		}
	}
}

// TestFallbackAndReturn: with Redis gone the replica logs once, spends its
// own share starting empty, serves from L1 only, and returns to shared
// mode by itself when Redis is back.
func TestFallbackAndReturn(t *testing.T) {
	srv := startRedis(t)
	r := newReplica(t, srv.URL())
	// 12/min over 3 replicas: 4/min each, Budget(4, 5) refills at 2/min
	// (burst 2), a token every 30 s; shared, Budget(12, 5) refills at
	// 7/min, a token every 8.6 s.
	b := newBudget(t, r, BudgetConfig{PerMinute: 12, Burst: 5, Replicas: 3})
	l1 := &memStore{}
	store := r.NewStore(l1)
	if err := tryNow(b, "k"); err != nil {
		t.Fatal(err)
	}

	srv.Kill()
	// The first command fails and switches the mode.
	err := tryNow(b, "k")
	if got := r.rec.mode(t); got {
		t.Fatal("mode after the kill: shared, want fallback")
	}
	var we *limiter.WaitError
	if !errors.As(err, &we) || we.Delay < 3*time.Second {
		t.Errorf("first call in fallback = %v, want a WaitError of about 30s: the local share starts empty", err)
	}
	store.Set("doc", testDoc("fallback.example"), 10, time.Hour, time.Hour)
	if _, fresh, ok := store.Get("doc"); !ok || !fresh {
		t.Error("L1 does not serve in fallback mode")
	}
	for range 3 {
		_ = tryNow(b, "k")
		store.Get("missing")
	}
	if n := strings.Count(r.logs.String(), "redis unreachable"); n != 1 {
		t.Errorf("%d \"redis unreachable\" lines, want 1:\n%s", n, r.logs)
	}

	if err := srv.Restart(); err != nil {
		t.Fatal(err)
	}
	if got := r.rec.mode(t); !got {
		t.Fatal("mode after the restart: fallback, want shared")
	}
	if n := strings.Count(r.logs.String(), "redis reachable again"); n != 1 {
		t.Errorf("%d \"redis reachable again\" lines, want 1:\n%s", n, r.logs)
	}
	// The shared bucket is taken as empty a probe interval after the
	// return (other replicas may still spend their shares): its first
	// token is one interval, 8.6 s, after that, where a fresh bucket would
	// give one at once.
	err = tryNow(b, "k")
	if !errors.As(err, &we) || we.Delay < 4*time.Second || we.Delay > 9*time.Second {
		t.Errorf("first call back in shared mode = %v, want a WaitError of about 8.6s", err)
	}
	if n := r.rec.count("redis budget"); n == 0 {
		t.Error("no budget command back in shared mode")
	}
}

// TestStartsInFallback: Redis out of reach at start is no error.
func TestStartsInFallback(t *testing.T) {
	srv := startRedis(t)
	srv.Kill()
	r := newReplica(t, srv.URL(), func(c *Config) { c.Timeout = 200 * time.Millisecond })
	if r.Shared() {
		t.Fatal("Shared() with Redis down")
	}
	if err := srv.Restart(); err != nil {
		t.Fatal(err)
	}
	if !r.rec.mode(t) {
		t.Fatal("did not reach shared mode after Redis started")
	}
}

// memStore is an L1 in memory that honours windows on a fixed clock.
type memStore struct {
	mu      sync.Mutex
	entries map[string]memEntry
	sets    int
}

type memEntry struct {
	doc           pipeline.Document
	ttl, staleTTL time.Duration
	cost          int64
}

func (m *memStore) Get(key string) (pipeline.Document, bool, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	e, ok := m.entries[key]
	return e.doc, ok && e.ttl > 0, ok
}

func (m *memStore) Set(key string, doc pipeline.Document, cost int64, ttl, staleTTL time.Duration) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.entries == nil {
		m.entries = map[string]memEntry{}
	}
	m.entries[key] = memEntry{doc: doc, ttl: ttl, staleTTL: staleTTL, cost: cost}
	m.sets++
	return true
}

func (m *memStore) entry(key string) (memEntry, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	e, ok := m.entries[key]
	return e, ok
}

func testDoc(value string) pipeline.Document {
	return pipeline.Document{Info: &pulsedive.Indicator{IID: "1", Indicator: value, Risk: "high", StampSeen: "2020-04-10 08:30:00",
		RiskFactors: []pulsedive.RiskFactor{{Description: "malware", Risk: "high"}}}}
}

// TestStoreSharesDocuments: what one replica stores, another reads from
// Redis with the windows left, fills its own L1 with, and then serves
// without Redis.
func TestStoreSharesDocuments(t *testing.T) {
	url := redisURL(t)
	t0 := time.Now().Truncate(time.Millisecond) // L2 keeps milliseconds
	var clock struct {
		sync.Mutex
		now time.Time
	}
	clock.now = t0
	now := func() time.Time { clock.Lock(); defer clock.Unlock(); return clock.now }
	setNow := func(t time.Time) { clock.Lock(); defer clock.Unlock(); clock.now = t }

	a := newReplica(t, url, func(c *Config) { c.Now = now })
	b := newReplica(t, url, func(c *Config) { c.Now = now })
	la, lb := &memStore{}, &memStore{}
	sa, sb := a.NewStore(la), b.NewStore(lb)
	doc := testDoc("shared.example")
	sa.Set("fp\x00info\x00shared.example", doc, 100, time.Hour, 2*time.Hour)

	setNow(t0.Add(10 * time.Minute))
	got, fresh, ok := sb.Get("fp\x00info\x00shared.example")
	if !ok || !fresh {
		t.Fatalf("replica B: ok %v fresh %v, want a fresh hit from Redis", ok, fresh)
	}
	if diff := cmp.Diff(doc, got); diff != "" {
		t.Errorf("document through Redis (-want +got):\n%s", diff)
	}
	e, filled := lb.entry("fp\x00info\x00shared.example")
	if !filled || e.ttl != 50*time.Minute || e.staleTTL != 2*time.Hour {
		t.Errorf("B's L1 filled: %v, windows %v + %v; want 50m + 2h", filled, e.ttl, e.staleTTL)
	}
	gets := b.rec.count("redis cache_get")
	sb.Get("fp\x00info\x00shared.example")
	if n := b.rec.count("redis cache_get"); n != gets {
		t.Errorf("an L1 hit sent %d Redis commands, want none", n-gets)
	}

	// Past the fresh window, within the stale one: served stale to a
	// replica that has nothing of its own; past both, a miss.
	c := newReplica(t, url, func(c *Config) { c.Now = now })
	sc := c.NewStore(nil)
	setNow(t0.Add(90 * time.Minute))
	if _, fresh, ok := sc.Get("fp\x00info\x00shared.example"); !ok || fresh {
		t.Errorf("after the fresh window: ok %v fresh %v, want stale", ok, fresh)
	}
	setNow(t0.Add(4 * time.Hour))
	if _, _, ok := sc.Get("fp\x00info\x00shared.example"); ok {
		t.Error("after the stale window: still served")
	}
	want := map[string]int{"l2 hit": 1, "l2 stale": 1, "l2 miss": 1}
	got2 := map[string]int{"l2 hit": b.rec.count("l2 hit"), "l2 stale": c.rec.count("l2 stale"), "l2 miss": c.rec.count("l2 miss")}
	if diff := cmp.Diff(want, got2); diff != "" {
		t.Errorf("L2 lookups (-want +got):\n%s", diff)
	}
}

// TestEntryRoundTrip: every fixture document comes back from its L2 form
// unchanged, deflated when that is smaller.
func TestEntryRoundTrip(t *testing.T) {
	fx, err := pulsedivetest.Fixtures()
	if err != nil {
		t.Fatal(err)
	}
	fresh, stale := time.UnixMilli(1_700_000_000_000), time.UnixMilli(1_700_003_600_000)
	var raw, stored int
	for v, e := range fx {
		var docs []pipeline.Document
		if ind, err := pulsedive.DecodeIndicator(e.Info.Body); err == nil {
			docs = append(docs, pipeline.Document{Info: ind})
		}
		if l, err := pulsedive.DecodeLinks(e.Links.Body); err == nil {
			docs = append(docs, pipeline.Document{Links: l})
		}
		docs = append(docs, pipeline.Document{}) // "no data"
		for _, d := range docs {
			val, err := encodeEntry(d, fresh, stale)
			if err != nil {
				t.Fatal(err)
			}
			got, err := decodeEntry(val)
			if err != nil {
				t.Fatalf("%s: %v", v, err)
			}
			if diff := cmp.Diff(d, got.doc); diff != "" {
				t.Errorf("%s: document (-want +got):\n%s", v, diff)
			}
			if !got.freshUntil.Equal(fresh) || !got.staleUntil.Equal(stale) {
				t.Errorf("%s: windows %v, %v", v, got.freshUntil, got.staleUntil)
			}
			raw += int(got.cost) + headerLen
			stored += len(val)
		}
	}
	if stored >= raw {
		t.Errorf("fixtures stored in %d bytes, %d without compression: compression does not pay", stored, raw)
	}
	t.Logf("fixture documents: %d bytes as JSON, %d stored", raw, stored)
}

// FuzzDecodeEntry: whatever Redis holds under a key, decoding never panics
// and a decoded entry encodes again to a decodable one.
func FuzzDecodeEntry(f *testing.F) {
	val, _ := encodeEntry(testDoc("seed.example"), time.UnixMilli(1), time.UnixMilli(2))
	big, _ := encodeEntry(pipeline.Document{Info: &pulsedive.Indicator{Indicator: strings.Repeat("abc", 500)}}, time.UnixMilli(1), time.UnixMilli(2))
	for _, seed := range [][]byte{val, big, nil, {1, 1}, append([]byte{1, 1}, make([]byte, 16)...), {2, 0}} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		e, err := decodeEntry(b)
		if err != nil {
			return
		}
		again, err := encodeEntry(e.doc, e.freshUntil, e.staleUntil)
		if err != nil {
			t.Fatalf("re-encode: %v", err)
		}
		if _, err := decodeEntry(again); err != nil {
			t.Fatalf("re-decode: %v", err)
		}
	})
}

// TestCollapse: of two replicas missing one document, one leads; the other
// waits and reads the leader's answer, or calls itself when the leader
// stored nothing. Without Redis everyone leads.
func TestCollapse(t *testing.T) {
	srv := startRedis(t)
	a, b := newReplica(t, srv.URL()), newReplica(t, srv.URL())
	sa, sb := a.NewStore(nil), b.NewStore(nil)
	ca, cb := a.NewCollapser(sa), b.NewCollapser(sb)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	for _, stores := range []bool{true, false} {
		key := "fp\x00info\x00collapse-" + map[bool]string{true: "stored", false: "failed"}[stores]
		lead, done := ca.Lead(ctx, key)
		if !lead {
			t.Fatal("first replica did not lead")
		}
		if lead2, _ := cb.Lead(ctx, key); lead2 {
			t.Fatal("second replica leads too")
		}
		got := make(chan bool, 1)
		go func() { got <- cb.Await(ctx, key) }()
		if stores {
			sa.Set(key, testDoc("collapse.example"), 10, time.Hour, time.Hour)
		}
		done()
		if answered := <-got; answered != stores {
			t.Errorf("leader stored %v: Await = %v", stores, answered)
		}
	}
	if diff := cmp.Diff([]int{2, 1, 1}, []int{a.rec.count("collapse won"), b.rec.count("collapse waited"), b.rec.count("collapse abandoned")}); diff != "" {
		t.Errorf("won, waited, abandoned (-want +got):\n%s", diff)
	}

	// A wait bounded by the caller's context.
	lead, done := ca.Lead(ctx, "fp\x00info\x00held")
	defer done()
	short, cancelShort := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancelShort()
	if !lead || cb.Await(short, "fp\x00info\x00held") {
		t.Error("Await returned true while the lock was held")
	}
	if b.rec.count("collapse timed_out") != 1 {
		t.Errorf("timed_out = %d, want 1", b.rec.count("collapse timed_out"))
	}

	srv.Kill()
	if lead, _ := cb.Lead(ctx, "fp\x00info\x00no-redis"); !lead {
		t.Error("without Redis a replica must call itself")
	}
}

func TestURLs(t *testing.T) {
	tests := []struct {
		url, redacted string
		valid         bool
	}{
		{"redis://localhost:6379/0", "redis://localhost:6379/0", true},
		{"rediss://user:s3cret@redis.example:6380/2", "rediss://user:xxxxx@redis.example:6380/2", true},
		{"redis://:s3cret@redis.example", "redis://:xxxxx@redis.example", true},
		{"redis://redis.example/notanumber", "redis://redis.example/notanumber", false},
		{"http://redis.example", "http://redis.example", false},
		{"redis://", "redis:", false},
		{"redis://:s3cret@/", "redis://:xxxxx@/", false},
	}
	for _, tt := range tests {
		t.Run(tt.url, func(t *testing.T) {
			_, err := ParseURL(tt.url)
			if (err == nil) != tt.valid {
				t.Errorf("ParseURL error = %v, want valid %v", err, tt.valid)
			}
			if err != nil && strings.Contains(err.Error(), "s3cret") {
				t.Errorf("error names the password: %v", err)
			}
			if got := RedactURL(tt.url); got != tt.redacted {
				t.Errorf("RedactURL = %q, want %q", got, tt.redacted)
			}
		})
	}
}

// TestSlotLostWithRedisState: a call waiting on a slot of a Redis that
// restarts empty (here: is flushed) reserves again in the new state
// instead of spending a slot the new bucket does not know of, which would
// put it over the budget alongside the slots the new bucket hands out.
func TestSlotLostWithRedisState(t *testing.T) {
	srv := startRedis(t)
	polled := make(chan struct{})
	r := newReplica(t, srv.URL(), func(c *Config) {
		c.Observer = &pollSignal{Observer: c.Observer, polled: polled}
	})
	b := newBudget(t, r, BudgetConfig{PerMinute: 6, Burst: 1, PollEvery: 10 * time.Millisecond})
	if err := tryNow(b, "k"); err != nil { // the burst
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- b.Wait(ctx, "k") }() // its slot is 12 s away
	<-polled
	if err := r.rdb.FlushAll(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("Wait = %v", err)
	}
	// The call took a slot of the new bucket: it holds a tat again.
	if n, err := r.rdb.Exists(ctx, budgetKey("k")).Result(); err != nil || n != 1 {
		t.Errorf("bucket after the wait: exists %d, %v; want the new reservation's state", n, err)
	}
}

// TestNewBudgetErrors: a budget the cluster cannot make is refused with
// its cause named once ("cluster: fallback limiter: limiter: ..." was
// issue 13). No Redis is needed: the budget is checked before any command.
func TestNewBudgetErrors(t *testing.T) {
	c, err := New(Config{URL: "redis://127.0.0.1:1", Timeout: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	tests := []struct {
		name string
		cfg  BudgetConfig
		want string
	}{
		{"no replica", BudgetConfig{PerMinute: 30, Burst: 5}, "cluster: Replicas 0 is less than 1"},
		{"fallback limiter", BudgetConfig{PerMinute: math.Inf(1), Burst: 5, Replicas: 1}, "cluster: fallback limiter: PerMinute +Inf is not a finite number of calls, zero or more"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := c.NewBudget(tt.cfg)
			if err == nil || err.Error() != tt.want {
				t.Errorf("NewBudget error %v, want %q", err, tt.want)
			}
		})
	}
}
