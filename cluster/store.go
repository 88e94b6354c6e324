package cluster

import (
	"bytes"
	"compress/flate"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"io"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/pulsedive-relay/relay/pipeline"
)

// Store is the two-level document cache: the replica's own (L1, a
// pipeline.Store such as *cache.Cache) over Redis (L2), shared by the
// replicas. It is a pipeline.Store with the same keys (they hold the API
// key's fingerprint, never the key) and the same fresh, negative and stale
// windows: the deadlines travel with the value, and Redis drops an entry
// when its stale window ends.
//
// A fresh L1 entry is served without a Redis round trip. Otherwise L2 is
// asked; a fresh L2 entry (another replica's answer) fills L1 with what is
// left of its windows. Set writes both. In fallback mode, or when a Redis
// command fails, the Store is L1 alone.
type Store struct {
	c  *Cluster
	l1 pipeline.Store
}

// NewStore returns the two-level store over l1; l1 may be nil (L2 only).
func (c *Cluster) NewStore(l1 pipeline.Store) *Store {
	return &Store{c: c, l1: l1}
}

// Get returns the freshest entry of L1 and L2 (pipeline.Store).
func (s *Store) Get(key string) (doc pipeline.Document, fresh, ok bool) {
	if s.l1 != nil {
		doc, fresh, ok = s.l1.Get(key)
		if ok && fresh {
			return doc, fresh, ok
		}
	}
	if !s.c.Shared() {
		return doc, fresh, ok
	}
	e, found, err := s.get(key)
	switch {
	case err != nil:
		s.c.obs.L2Lookup(l2Error)
		return doc, fresh, ok
	case !found:
		s.c.obs.L2Lookup(l2Miss)
		return doc, fresh, ok
	}
	now := s.c.now()
	if now.Before(e.freshUntil) {
		s.c.obs.L2Lookup(l2Hit)
		if s.l1 != nil {
			s.l1.Set(key, e.doc, e.cost, e.freshUntil.Sub(now), e.staleUntil.Sub(e.freshUntil))
		}
		return e.doc, true, true
	}
	if ok || !now.Before(e.staleUntil) {
		s.c.obs.L2Lookup(l2Miss)
		return doc, fresh, ok
	}
	s.c.obs.L2Lookup(l2Stale)
	return e.doc, false, true
}

// Set stores doc in L1 and, in shared mode, in L2 (pipeline.Store). It
// returns L1's answer: whether L2 took it changes nothing for the caller.
func (s *Store) Set(key string, doc pipeline.Document, cost int64, ttl, staleTTL time.Duration) bool {
	stored := false
	if s.l1 != nil {
		stored = s.l1.Set(key, doc, cost, ttl, staleTTL)
	}
	ttl, staleTTL = max(ttl, 0), max(staleTTL, 0)
	if ttl+staleTTL <= 0 || !s.c.Shared() {
		return stored
	}
	now := s.c.now()
	val, err := encodeEntry(doc, now.Add(ttl), now.Add(ttl+staleTTL))
	if err != nil {
		return stored
	}
	_ = s.c.do(context.Background(), classCacheSet, func(ctx context.Context) error {
		return s.c.rdb.Set(ctx, cacheKey(key), val, ttl+staleTTL).Err()
	})
	return stored
}

// has reports whether L2 holds key; the collapse asks it after a wait.
func (s *Store) has(ctx context.Context, key string) bool {
	var n int64
	err := s.c.do(ctx, classCacheGet, func(ctx context.Context) (err error) {
		n, err = s.c.rdb.Exists(ctx, cacheKey(key)).Result()
		return err
	})
	return err == nil && n == 1
}

type entry struct {
	doc                    pipeline.Document
	freshUntil, staleUntil time.Time
	cost                   int64
}

func (s *Store) get(key string) (entry, bool, error) {
	var val []byte
	err := s.c.do(context.Background(), classCacheGet, func(ctx context.Context) (err error) {
		val, err = s.c.rdb.Get(ctx, cacheKey(key)).Bytes()
		return err
	})
	if errors.Is(err, redis.Nil) {
		return entry{}, false, nil
	}
	if err != nil {
		return entry{}, false, err
	}
	e, err := decodeEntry(val)
	if err != nil {
		return entry{}, false, err
	}
	e.cost += int64(len(key))
	return e, true, nil
}

func cacheKey(key string) string { return keyPrefix + "doc:" + key }

// An L2 value is a header and the document as JSON, deflated when that
// pays: version (1 byte), flags (1 byte: 1 = deflated), fresh-until and
// stale-until (Unix milliseconds, 8 bytes each, big-endian), then the
// payload. Measured on the shared fixtures, the 13 documents take 10,317
// bytes as JSON and 2,472 deflated at BestSpeed (24%; level 6: 2,418 at
// three times the CPU), while the smallest ones ("no data", short links)
// do not shrink: they are stored as they are.
const (
	entryVersion  = 1
	flagDeflated  = 1
	headerLen     = 18
	minDeflateLen = 256
)

var errBadEntry = errors.New("cluster: undecodable cache entry")

func encodeEntry(doc pipeline.Document, freshUntil, staleUntil time.Time) ([]byte, error) {
	js, err := json.Marshal(doc)
	if err != nil {
		return nil, err
	}
	out := make([]byte, headerLen, headerLen+len(js))
	out[0] = entryVersion
	binary.BigEndian.PutUint64(out[2:], uint64(freshUntil.UnixMilli()))
	binary.BigEndian.PutUint64(out[10:], uint64(staleUntil.UnixMilli()))
	if len(js) >= minDeflateLen {
		if z := deflate(js); len(z) < len(js) {
			out[1] = flagDeflated
			return append(out, z...), nil
		}
	}
	return append(out, js...), nil
}

func decodeEntry(val []byte) (entry, error) {
	if len(val) < headerLen || val[0] != entryVersion || val[1]&^flagDeflated != 0 {
		return entry{}, errBadEntry
	}
	e := entry{
		freshUntil: time.UnixMilli(int64(binary.BigEndian.Uint64(val[2:]))),
		staleUntil: time.UnixMilli(int64(binary.BigEndian.Uint64(val[10:]))),
	}
	js := val[headerLen:]
	if val[1]&flagDeflated != 0 {
		var err error
		if js, err = inflate(js); err != nil {
			return entry{}, errBadEntry
		}
	}
	if err := json.Unmarshal(js, &e.doc); err != nil {
		return entry{}, errBadEntry
	}
	e.cost = int64(len(js))
	return e, nil
}

// Writers and readers are pooled: a flate.Writer allocates about a
// megabyte.
var (
	writers = sync.Pool{New: func() any {
		w, _ := flate.NewWriter(nil, flate.BestSpeed)
		return w
	}}
	readers = sync.Pool{New: func() any { return flate.NewReader(nil) }}
)

func deflate(b []byte) []byte {
	var buf bytes.Buffer
	w := writers.Get().(*flate.Writer)
	defer writers.Put(w)
	w.Reset(&buf)
	_, _ = w.Write(b) // a bytes.Buffer does not fail
	_ = w.Close()
	return buf.Bytes()
}

// maxInflated bounds what one entry may inflate to, so a corrupt or
// hostile entry cannot make a replica allocate without limit (the
// pulsedive client reads at most 4 MiB of an answer).
const maxInflated = 8 << 20

func inflate(b []byte) ([]byte, error) {
	r := readers.Get().(io.ReadCloser)
	defer readers.Put(r)
	if err := r.(flate.Resetter).Reset(bytes.NewReader(b), nil); err != nil {
		return nil, err
	}
	out, err := io.ReadAll(io.LimitReader(r, maxInflated+1))
	if err != nil {
		return nil, err
	}
	if len(out) > maxInflated {
		return nil, errBadEntry
	}
	return out, nil
}
