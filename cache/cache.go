// Package cache is the relay's byte-budgeted TTL store of Pulsedive
// documents over ristretto, with stale-if-error windows (CONTRACT.md section 6;
// CACHE_MAX_BYTES, CACHE_TTL, CACHE_NEGATIVE_TTL and CACHE_STALE_TTL of
// section 7).
//
// It imports no other package of this project.
package cache

import (
	"fmt"
	"math"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/dgraph-io/ristretto/v2"
)

// DefaultMaxBytes is the budget when Config.MaxBytes is zero (64 MiB, the
// default of CACHE_MAX_BYTES).
const DefaultMaxBytes = 64 << 20

// EntryOverhead is the bytes charged to every entry on top of the caller's
// cost and the size of the entry's own inline header (the value V, its two
// deadlines and its cost, charged with unsafe.Sizeof): ristretto's
// bookkeeping for one key in its store map, its TTL bucket map and its
// eviction policy's cost map, with the maps' load-factor slack. Measured
// with BenchmarkEntryOverhead at 119 to 157 bytes (amd64, Go 1.26,
// 30k to 400k entries, depending on where the maps are in their growth)
// and rounded up, so the budget errs towards holding less than MaxBytes.
// The key string is not kept: ristretto stores two 64-bit hashes of it.
const EntryOverhead = 160

// expectedEntryBytes is the assumed typical entry (a Pulsedive document with
// its bookkeeping), used only to size ristretto's frequency counters.
const expectedEntryBytes = 2 << 10

// maxCounters bounds ristretto's admission counters (see New).
const maxCounters = 1 << 24

// Config configures a Cache.
type Config struct {
	// MaxBytes is the budget: the costs of the held entries, each plus its
	// header and EntryOverhead, sum to at most this. (A refresh that makes
	// an entry bigger is charged at once but room is made at the next new
	// entry, so the sum may exceed the budget by that growth meanwhile.)
	// Zero means DefaultMaxBytes; negative is an error. Ristretto's
	// admission counters take about 2% more on top, allocated up front.
	MaxBytes int64
	// Now decides freshness and staleness; time.Now by default. Ristretto
	// reclaims memory on its own wall clock, so a fake clock in tests makes
	// fresh/stale/gone exact without sleeping.
	Now func() time.Time
}

// Cache is a byte-budgeted store of values of type V with a fresh window and
// a stale window per entry. It is safe for concurrent use, except that Close
// must not run concurrently with other calls.
//
// A Cache may lose any entry at any time: writes are buffered and admitted
// by ristretto's TinyLFU policy, which may refuse a newcomer or evict an
// older entry to stay within the budget. Callers must treat every miss as
// "fetch again" and never rely on a Set being readable; that keeps a dropped
// or rejected Set a matter of performance, never of correctness.
type Cache[V any] struct {
	rc       *ristretto.Cache[string, entry[V]]
	now      func() time.Time
	maxBytes int64
	overhead int64

	hits, staleHits, misses    atomic.Uint64
	sets, dropped              atomic.Uint64
	rejected, evicted, expired atomic.Uint64
}

// entry is what ristretto holds for one key. Deadlines are on Config.Now's
// clock; ristretto's own expiry (wall clock) only reclaims memory.
type entry[V any] struct {
	v          V
	freshUntil time.Time
	staleUntil time.Time
	cost       int64 // as charged to the budget, overhead included
}

// New returns an empty Cache with ristretto's goroutines running; Close
// stops them. It fails only on a negative MaxBytes.
func New[V any](cfg Config) (*Cache[V], error) {
	switch {
	case cfg.MaxBytes < 0:
		return nil, fmt.Errorf("cache: MaxBytes %d is negative", cfg.MaxBytes)
	case cfg.MaxBytes == 0:
		cfg.MaxBytes = DefaultMaxBytes
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	c := &Cache[V]{
		now:      cfg.Now,
		maxBytes: cfg.MaxBytes,
		overhead: EntryOverhead + int64(unsafe.Sizeof(entry[V]{})),
	}
	rc, err := ristretto.NewCache(&ristretto.Config[string, entry[V]]{
		// Ten counters per entry we expect to hold, as ristretto advises.
		// The floor keeps admission meaningful for tiny test budgets; the
		// ceiling (about 40 MiB of counters, reached at a 3 GiB budget)
		// keeps a huge budget from allocating gigabytes up front.
		NumCounters: min(max(10*cfg.MaxBytes/expectedEntryBytes, 1000), maxCounters),
		MaxCost:     cfg.MaxBytes,
		BufferItems: 64,
		// Every cost we pass is already in bytes and already includes the
		// entry's bookkeeping (c.overhead, which covers ristretto's
		// storeItem among the rest). Letting ristretto add its own
		// internal cost on top would count that part twice and make Stats
		// disagree with the costs the caller can see.
		IgnoreInternalCost: true,
		OnEvict:            c.onEvict,
		OnReject:           func(*ristretto.Item[entry[V]]) { c.rejected.Add(1) },
	})
	if err != nil {
		return nil, fmt.Errorf("cache: %w", err)
	}
	c.rc = rc
	return c, nil
}

// onEvict runs on ristretto's goroutine for evictions to make room and for
// entries reclaimed after ristretto's TTL.
func (c *Cache[V]) onEvict(it *ristretto.Item[entry[V]]) {
	if !it.Expiration.IsZero() && !it.Expiration.After(time.Now()) {
		c.expired.Add(1)
		return
	}
	c.evicted.Add(1)
}

// Get returns the value stored under key. fresh is true within the entry's
// ttl; past the ttl but within its stale window the value is still returned
// with fresh false (for stale-if-error); past that, or when the entry was
// never admitted, was evicted or deleted, ok is false. An entry is fresh
// strictly before its ttl ends: at exactly ttl it is stale.
func (c *Cache[V]) Get(key string) (v V, fresh bool, ok bool) {
	e, found := c.rc.Get(key)
	if !found {
		c.misses.Add(1)
		return v, false, false
	}
	now := c.now()
	switch {
	case now.Before(e.freshUntil):
		c.hits.Add(1)
		return e.v, true, true
	case now.Before(e.staleUntil):
		c.staleHits.Add(1)
		return e.v, false, true
	default:
		c.misses.Add(1)
		return v, false, false
	}
}

// Set stores v under key with the given cost in bytes (the caller's
// estimate of v's size; negative counts as zero), fresh for ttl from Now and
// then kept stale for staleTTL more. Negative durations count as zero; an
// entry with neither a fresh nor a stale window is not stored. Setting an
// existing key replaces its value and windows at once.
//
// Ristretto buffers the write and applies it shortly after (Wait blocks
// until then). The result reports whether the write was accepted into that
// buffer: false when the buffer is full, when the entry alone exceeds the
// budget, when it has no window, or after Close. Even an accepted write may
// then be refused by the admission policy. Either way the key simply misses
// and the caller fetches again; Set never fails otherwise.
func (c *Cache[V]) Set(key string, v V, cost int64, ttl, staleTTL time.Duration) bool {
	ttl, staleTTL = max(ttl, 0), max(staleTTL, 0)
	keep := satAdd(ttl, staleTTL)
	cost = satAdd(max(cost, 0), c.overhead)
	if keep == 0 || cost > c.maxBytes {
		c.dropped.Add(1)
		return false
	}
	now := c.now()
	e := entry[V]{
		v:          v,
		freshUntil: now.Add(ttl),
		staleUntil: now.Add(keep),
		cost:       cost,
	}
	if !c.rc.SetWithTTL(key, e, cost, keep) {
		c.dropped.Add(1)
		return false
	}
	c.sets.Add(1)
	return true
}

// Wait blocks until every Set issued before it has been applied, so that a
// following Get (or Stats) sees its outcome, admitted or not. The relay
// does not need it; the tests of the packages that use a Cache do, to read
// back what they wrote. After Close it returns at once.
func (c *Cache[V]) Wait() {
	c.rc.Wait()
}

// Close drops every entry and stops ristretto's goroutines. Afterwards Get
// misses, Set returns false and Wait returns at once; the entries dropped
// by Close count as Evicted. Close may be called more than once, but not
// concurrently with other methods.
func (c *Cache[V]) Close() {
	c.rc.Close()
}

// Stats is a snapshot of a Cache's counters since New.
type Stats struct {
	Hits      uint64 // Get found a fresh entry
	StaleHits uint64 // Get found an entry past its ttl, within its stale window
	Misses    uint64 // Get found nothing usable
	Sets      uint64 // Set accepted into ristretto's buffer
	Dropped   uint64 // Set refused before buffering (buffer full, oversized, no window, closed)
	Rejected  uint64 // buffered Set refused by the admission policy
	Evicted   uint64 // entries removed to make room for others
	Expired   uint64 // entries reclaimed after their stale window, on the wall clock
	Bytes     int64  // cost currently held, overhead included; at most MaxBytes
	// Entries counts the entries held and not yet past their stale window
	// on the wall clock (Bytes may still include such an entry until
	// ristretto reclaims it, within seconds).
	Entries int
}

// Stats returns the counters. Bytes and Entries reflect writes already
// applied; call Wait first for exact figures.
//
// Entries is counted by walking the store, one shard's read lock at a
// time (a few milliseconds per hundred thousand entries): call Stats at
// the pace of a metrics scrape, not per request.
func (c *Cache[V]) Stats() Stats {
	entries := 0
	c.rc.IterValues(func(entry[V]) bool {
		entries++
		return false
	})
	return Stats{
		Entries:   entries,
		Hits:      c.hits.Load(),
		StaleHits: c.staleHits.Load(),
		Misses:    c.misses.Load(),
		Sets:      c.sets.Load(),
		Dropped:   c.dropped.Load(),
		Rejected:  c.rejected.Load(),
		Evicted:   c.evicted.Load(),
		Expired:   c.expired.Load(),
		Bytes:     c.rc.MaxCost() - c.rc.RemainingCost(),
	}
}

// satAdd adds two non-negative numbers, saturating at the type's maximum so
// that "keep forever"-style durations do not wrap around.
func satAdd[T time.Duration | int64](a, b T) T {
	if a > T(math.MaxInt64)-b {
		return T(math.MaxInt64)
	}
	return a + b
}
