package cache

import (
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// clock is a fake clock safe for concurrent use.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock {
	return &clock{t: time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)}
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func newCache[V any](t *testing.T, cfg Config) *Cache[V] {
	t.Helper()
	c, err := New[V](cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(c.Close)
	return c
}

// lookup is Get's three results in one comparable value.
type lookup[V any] struct {
	V     V
	Fresh bool
	OK    bool
}

func get[V any](c *Cache[V], key string) lookup[V] {
	v, fresh, ok := c.Get(key)
	return lookup[V]{v, fresh, ok}
}

func TestNew(t *testing.T) {
	tests := []struct {
		name    string
		cfg     Config
		want    int64
		wantErr string
	}{
		{name: "zero means default", cfg: Config{}, want: DefaultMaxBytes},
		{name: "explicit", cfg: Config{MaxBytes: 1 << 20}, want: 1 << 20},
		{name: "negative", cfg: Config{MaxBytes: -1}, wantErr: "cache: MaxBytes -1 is negative"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := New[string](tt.cfg)
			if tt.wantErr != "" {
				if err == nil || err.Error() != tt.wantErr {
					t.Fatalf("New() error = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("New: %v", err)
			}
			defer c.Close()
			if got := c.rc.MaxCost(); got != tt.want {
				t.Errorf("MaxCost = %d, want %d", got, tt.want)
			}
		})
	}
}

func TestSetWaitGet(t *testing.T) {
	c := newCache[doc](t, Config{MaxBytes: 1 << 20})
	tests := []struct {
		key  string
		v    doc
		cost int64
	}{
		{"fp/info/cisco.com", doc{body: []byte(`{"iid":1}`), kind: "info"}, 9},
		{"fp/links/cisco.com", doc{body: []byte(`{}`), kind: "links"}, 2},
		{"fp/info/unknown.example", doc{kind: "info"}, 0}, // a "no data" answer
		{"fp/info/negative-cost", doc{kind: "info"}, -5},
	}
	for _, tt := range tests {
		if !c.Set(tt.key, tt.v, tt.cost, time.Hour, 24*time.Hour) {
			t.Fatalf("Set(%q) = false, want true", tt.key)
		}
	}
	c.Wait()
	for _, tt := range tests {
		t.Run(tt.key, func(t *testing.T) {
			got := get(c, tt.key)
			want := lookup[doc]{V: tt.v, Fresh: true, OK: true}
			if diff := cmp.Diff(want, got, cmp.AllowUnexported(doc{})); diff != "" {
				t.Errorf("Get(%q) mismatch (-want +got):\n%s", tt.key, diff)
			}
		})
	}
	if got := get(c, "fp/info/never-set"); got.OK {
		t.Errorf("Get(never set) = %+v, want a miss", got)
	}
}

func TestFreshStaleGone(t *testing.T) {
	tests := []struct {
		name     string
		ttl      time.Duration
		staleTTL time.Duration
		// at is how far the clock has moved since Set at each lookup.
		at   []time.Duration
		want []lookup[string]
	}{
		{
			name: "positive answer: 1h fresh, 24h stale",
			ttl:  time.Hour, staleTTL: 24 * time.Hour,
			at: []time.Duration{0, time.Hour - time.Nanosecond, time.Hour, 25*time.Hour - time.Nanosecond, 25 * time.Hour, 48 * time.Hour},
			want: []lookup[string]{
				{"v", true, true}, {"v", true, true}, // fresh until just before the ttl
				{"v", false, true}, {"v", false, true}, // stale from the ttl to its end
				{}, {}, // gone after the stale window
			},
		},
		{
			name: "no-data answer: 10m fresh, no stale window",
			ttl:  10 * time.Minute, staleTTL: 0,
			at:   []time.Duration{0, 10*time.Minute - time.Nanosecond, 10 * time.Minute},
			want: []lookup[string]{{"v", true, true}, {"v", true, true}, {}},
		},
		{
			name: "short entry: 1s fresh, 1s stale",
			ttl:  time.Second, staleTTL: time.Second,
			at:   []time.Duration{500 * time.Millisecond, 1500 * time.Millisecond, 2 * time.Second},
			want: []lookup[string]{{"v", true, true}, {"v", false, true}, {}},
		},
		{
			name: "stale only: zero ttl",
			ttl:  0, staleTTL: time.Hour,
			at:   []time.Duration{0, time.Hour},
			want: []lookup[string]{{"v", false, true}, {}},
		},
		{
			name: "negative ttl counts as zero",
			ttl:  -time.Hour, staleTTL: time.Hour,
			at:   []time.Duration{0},
			want: []lookup[string]{{"v", false, true}},
		},
		{
			name: "negative stale window counts as zero",
			ttl:  time.Minute, staleTTL: -time.Hour,
			at:   []time.Duration{0, time.Minute},
			want: []lookup[string]{{"v", true, true}, {}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clk := newClock()
			c := newCache[string](t, Config{MaxBytes: 1 << 20, Now: clk.Now})
			if !c.Set("k", "v", 1, tt.ttl, tt.staleTTL) {
				t.Fatal("Set = false, want true")
			}
			c.Wait()
			var got []lookup[string]
			var moved time.Duration
			for _, at := range tt.at {
				clk.Advance(at - moved)
				moved = at
				got = append(got, get(c, "k"))
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("lookups at %v mismatch (-want +got):\n%s", tt.at, diff)
			}
		})
	}
}

func TestSetDropped(t *testing.T) {
	const maxBytes = 64 << 10
	tests := []struct {
		name          string
		cost          int64
		ttl, staleTTL time.Duration
	}{
		{name: "no window", cost: 1, ttl: 0, staleTTL: 0},
		{name: "negative windows", cost: 1, ttl: -time.Second, staleTTL: -time.Second},
		{name: "larger than the budget", cost: maxBytes, ttl: time.Hour, staleTTL: time.Hour},
		{name: "overflowing cost", cost: 1<<63 - 1, ttl: time.Hour, staleTTL: time.Hour},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newCache[string](t, Config{MaxBytes: maxBytes})
			if c.Set("k", "v", tt.cost, tt.ttl, tt.staleTTL) {
				t.Error("Set = true, want false")
			}
			c.Wait()
			if got := get(c, "k"); got.OK {
				t.Errorf("Get after a dropped Set = %+v, want a miss", got)
			}
			if got := c.Stats(); got.Dropped != 1 || got.Bytes != 0 {
				t.Errorf("Stats() = %+v, want Dropped 1 and Bytes 0", got)
			}
		})
	}
}

// TestBudget inserts far more than the budget holds and checks, from the
// entries actually retained, that their costs never sum past MaxBytes, that
// whatever was refused or evicted is a plain miss, and that whatever is
// found is the value stored under that key.
func TestBudget(t *testing.T) {
	const (
		maxBytes = 256 << 10
		n        = 4000
		cost     = 1 << 10 // n*cost is about 16 times the budget
	)
	c := newCache[string](t, Config{MaxBytes: maxBytes})
	// Make the first keys popular, so that admission has something to
	// weigh newcomers against.
	for i := 0; i < n; i++ {
		key := strconv.Itoa(i)
		c.Set(key, "value "+key, cost, time.Hour, time.Hour)
		if i < 50 {
			c.Wait()
			for range 10 {
				c.Get(key)
			}
		}
	}
	c.Wait()

	var held, entries int64
	c.rc.IterValues(func(e entry[string]) bool {
		held += e.cost
		entries++
		return false
	})
	if held > maxBytes {
		t.Errorf("retained entries cost %d bytes, over the %d budget", held, maxBytes)
	}
	if entries == 0 {
		t.Error("no entry retained")
	}
	st := c.Stats()
	if st.Bytes != held {
		t.Errorf("Stats().Bytes = %d, want the retained entries' %d", st.Bytes, held)
	}
	if int64(st.Entries) != entries {
		t.Errorf("Stats().Entries = %d, want the %d retained", st.Entries, entries)
	}
	if st.Evicted+st.Rejected+st.Dropped == 0 {
		t.Errorf("Stats() = %+v, want evictions, rejections or drops", st)
	}

	found := 0
	for i := 0; i < n; i++ {
		key := strconv.Itoa(i)
		got := get(c, key)
		if !got.OK {
			continue
		}
		found++
		if want := (lookup[string]{"value " + key, true, true}); got != want {
			t.Fatalf("Get(%q) = %+v, want %+v", key, got, want)
		}
	}
	if int64(found) != entries {
		t.Errorf("Get found %d entries, want the %d retained", found, entries)
	}
}

func TestReplaceAndDel(t *testing.T) {
	clk := newClock()
	c := newCache[string](t, Config{MaxBytes: 1 << 20, Now: clk.Now})

	c.Set("k", "old", 10, time.Minute, time.Minute)
	c.Wait()
	clk.Advance(90 * time.Second) // stale now
	if got, want := get(c, "k"), (lookup[string]{"old", false, true}); got != want {
		t.Fatalf("Get before refresh = %+v, want %+v", got, want)
	}
	// A refresh replaces the value and restarts both windows.
	c.Set("k", "new", 20, time.Minute, time.Minute)
	c.Wait()
	if got, want := get(c, "k"), (lookup[string]{"new", true, true}); got != want {
		t.Errorf("Get after refresh = %+v, want %+v", got, want)
	}
	if got, want := c.Stats().Bytes, 20+c.overhead; got != want {
		t.Errorf("Stats().Bytes after refresh = %d, want %d", got, want)
	}

	c.Del("k")
	if got := get(c, "k"); got.OK {
		t.Errorf("Get after Del = %+v, want a miss", got)
	}
	// A Del right after a buffered Set of the same key wins.
	c.Set("j", "v", 10, time.Minute, 0)
	c.Del("j")
	c.Wait()
	if got := get(c, "j"); got.OK {
		t.Errorf("Get after Set, Del, Wait = %+v, want a miss", got)
	}
	if got := c.Stats().Bytes; got != 0 {
		t.Errorf("Stats().Bytes after deleting everything = %d, want 0", got)
	}
}

func TestStats(t *testing.T) {
	clk := newClock()
	c := newCache[string](t, Config{MaxBytes: 1 << 20, Now: clk.Now})
	c.Set("a", "v", 100, time.Minute, time.Hour)
	c.Set("b", "v", 100, time.Minute, 0)
	c.Set("c", "v", 100, 0, 0) // dropped: no window
	c.Wait()
	c.Get("a")       // hit
	c.Get("missing") // miss
	clk.Advance(time.Minute)
	c.Get("a") // stale hit
	c.Get("b") // past its window: miss

	want := Stats{Hits: 1, StaleHits: 1, Misses: 2, Sets: 2, Dropped: 1, Bytes: 2 * (100 + c.overhead), Entries: 2}
	if diff := cmp.Diff(want, c.Stats()); diff != "" {
		t.Errorf("Stats() mismatch (-want +got):\n%s", diff)
	}

	// Entries follows deletions and Close.
	c.Del("a")
	c.Wait()
	if got := c.Stats().Entries; got != 1 {
		t.Errorf("Stats().Entries after deleting one of two = %d, want 1", got)
	}
	c.Close()
	if got := c.Stats().Entries; got != 0 {
		t.Errorf("Stats().Entries after Close = %d, want 0", got)
	}
}

// TestConcurrent runs Set, Get and Del from several goroutines on shared
// keys; under -race it proves the Cache is safe for concurrent use, and it
// checks that a hit always carries the value stored under that key.
func TestConcurrent(t *testing.T) {
	c := newCache[string](t, Config{MaxBytes: 64 << 10})
	const workers, ops, keys = 4, 2000, 64
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range ops {
				key := strconv.Itoa((w*7 + i) % keys)
				switch i % 5 {
				case 0:
					c.Del(key)
				case 1, 2:
					c.Set(key, "value "+key, 512, time.Hour, time.Hour)
				default:
					if v, _, ok := c.Get(key); ok && v != "value "+key {
						errs <- fmt.Errorf("Get(%q) = %q", key, v)
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	c.Wait()
	if got := c.Stats().Bytes; got > 64<<10 {
		t.Errorf("Stats().Bytes = %d, over the budget", got)
	}
}

func TestClose(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	c, err := New[string](Config{MaxBytes: 1 << 20})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	c.Set("k", "v", 1, time.Hour, 0)
	c.Wait()
	c.Close()

	if got := get(c, "k"); got.OK {
		t.Errorf("Get after Close = %+v, want a miss", got)
	}
	if c.Set("k", "v", 1, time.Hour, 0) {
		t.Error("Set after Close = true, want false")
	}
	c.Del("k")
	c.Wait()  // returns at once
	c.Close() // a second Close is harmless
}
