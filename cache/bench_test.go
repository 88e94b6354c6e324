package cache

import (
	"runtime"
	"strconv"
	"testing"
	"time"
	"unsafe"
)

// doc stands in for the pipeline's Document: a header pointing at bytes
// whose size the caller passes as the cost.
type doc struct {
	body []byte
	kind string
}

func benchCache(b *testing.B, maxBytes int64) *Cache[doc] {
	b.Helper()
	c, err := New[doc](Config{MaxBytes: maxBytes})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(c.Close)
	return c
}

func benchKeys(n int) []string {
	keys := make([]string, n)
	for i := range keys {
		keys[i] = "0123456789abcdef0123456789abcdef/info/" + strconv.Itoa(i)
	}
	return keys
}

func BenchmarkGetHit(b *testing.B) {
	c := benchCache(b, 64<<20)
	keys := benchKeys(1024)
	for _, k := range keys {
		c.Set(k, doc{kind: "info"}, 2048, time.Hour, 24*time.Hour)
	}
	c.Wait()
	if _, _, ok := c.Get(keys[0]); !ok {
		b.Fatal("setup: entry not admitted")
	}
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			c.Get(keys[i%len(keys)])
			i++
		}
	})
}

func BenchmarkSet(b *testing.B) {
	c := benchCache(b, 64<<20)
	keys := benchKeys(1 << 16)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		c.Set(keys[i%len(keys)], doc{kind: "info"}, 2048, time.Hour, 24*time.Hour)
	}
	b.StopTimer()
	c.Wait()
}

// BenchmarkStats measures a scrape's read of the figures of a full
// default-sized cache (about 32k entries of 2 KiB), Entries' walk included.
func BenchmarkStats(b *testing.B) {
	c := benchCache(b, DefaultMaxBytes)
	keys := benchKeys(1 << 15)
	for _, k := range keys {
		c.Set(k, doc{kind: "info"}, 2048, time.Hour, 24*time.Hour)
	}
	c.Wait()
	if st := c.Stats(); st.Entries == 0 {
		b.Fatalf("setup: no entry admitted: %+v", st)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		_ = c.Stats()
	}
}

// BenchmarkEntryOverhead measures the heap one entry costs beyond its
// caller-declared payload, the figure EntryOverhead is rounded up from.
// Run it with -benchtime=1x; it reports heap-bytes/entry (everything) and
// overhead-bytes/entry (everything but the entry's own inline header, which
// Set charges separately with unsafe.Sizeof).
func BenchmarkEntryOverhead(b *testing.B) {
	const n = 200_000
	keys := benchKeys(n)
	var before, after runtime.MemStats
	for i := 0; i < b.N; i++ {
		c, err := New[doc](Config{MaxBytes: 1 << 30})
		if err != nil {
			b.Fatal(err)
		}
		runtime.GC()
		runtime.ReadMemStats(&before)
		for _, k := range keys {
			for !c.Set(k, doc{}, 0, time.Hour, time.Hour) {
				c.Wait() // the buffer was full: let it drain, then retry
			}
		}
		c.Wait()
		runtime.GC()
		runtime.ReadMemStats(&after)
		if got := c.Stats().Bytes; got != n*c.overhead {
			b.Fatalf("Bytes = %d, want %d: not every entry was admitted", got, n*c.overhead)
		}
		perEntry := float64(after.HeapAlloc-before.HeapAlloc) / n
		b.ReportMetric(perEntry, "heap-bytes/entry")
		b.ReportMetric(perEntry-float64(unsafe.Sizeof(entry[doc]{})), "overhead-bytes/entry")
		c.Close()
	}
	runtime.KeepAlive(keys)
}
