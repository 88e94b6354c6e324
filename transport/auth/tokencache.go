package auth

import (
	"container/list"
	"crypto/sha256"
	"encoding/binary"
	"sync"
	"time"
)

// tokenKey identifies a verified token and the audiences it was accepted
// for, without holding the token: SHA-256 over length-prefixed parts.
type tokenKey [sha256.Size]byte

func newTokenKey(raw string, auds []string) tokenKey {
	// Tokens from Threat Response are about 1 KiB: hashing one contiguous
	// buffer on the stack keeps a cache hit free of copies.
	var stack [4096]byte
	b := appendPart(stack[:0], raw)
	for _, a := range auds {
		b = appendPart(b, a)
	}
	return sha256.Sum256(b)
}

func appendPart(b []byte, s string) []byte {
	b = binary.BigEndian.AppendUint64(b, uint64(len(s)))
	return append(b, s...)
}

// tokenCache is a bounded LRU of verified tokens. Only tokens that passed
// every check are stored, so filling it takes validly signed tokens.
type tokenCache struct {
	mu      sync.Mutex
	size    int
	order   *list.List // of *tokenEntry, most recently used first
	entries map[tokenKey]*list.Element
}

type tokenEntry struct {
	key    tokenKey
	claims Claims
	until  time.Time // exclusive
}

func newTokenCache(size int) *tokenCache {
	return &tokenCache{size: size, order: list.New(), entries: make(map[tokenKey]*list.Element)}
}

// get returns the claims stored for k while now is before their deadline;
// an entry past it is dropped.
func (c *tokenCache) get(k tokenKey, now time.Time) (Claims, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	el, ok := c.entries[k]
	if !ok {
		return Claims{}, false
	}
	e := el.Value.(*tokenEntry)
	if !now.Before(e.until) {
		c.order.Remove(el)
		delete(c.entries, k)
		return Claims{}, false
	}
	c.order.MoveToFront(el)
	return e.claims, true
}

// put stores claims for k until the deadline, evicting the least recently
// used entry when the cache is full.
func (c *tokenCache) put(k tokenKey, claims Claims, until time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.entries[k]; ok {
		e := el.Value.(*tokenEntry)
		e.claims, e.until = claims, until
		c.order.MoveToFront(el)
		return
	}
	c.entries[k] = c.order.PushFront(&tokenEntry{key: k, claims: claims, until: until})
	for c.order.Len() > c.size {
		oldest := c.order.Back()
		c.order.Remove(oldest)
		delete(c.entries, oldest.Value.(*tokenEntry).key)
	}
}

// len is the number of entries, expired ones included.
func (c *tokenCache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.order.Len()
}
