package auth

import (
	"container/list"
	"encoding/binary"
	"net/http"
	"strings"
	"sync"
	"time"
)

// tokenKey identifies a verified token and the audiences it was accepted
// for. It holds the whole token, so that a hit is an exact match: hashing
// it into a digest (SHA-256) cost half a microsecond a request, and any
// shorter digest, or a part of the token (its signature), would let
// another token share a verified one's entry. The map hashes the key with
// its own random seed and compares it whole.
type tokenKey struct {
	token string
	// auds is the accepted audiences, each length-prefixed (Config.Audiences),
	// or, when the audience is the request's own root URL, the request's
	// Host with https telling the scheme: what requestAudience is made of,
	// so that a hit needs no string built. Two spellings of one audience
	// ("host" and "host:80") are two entries.
	auds  string
	https bool
}

// requestTokenKey is the key of raw accepted for r's own root URL.
func requestTokenKey(raw string, r *http.Request) tokenKey {
	return tokenKey{token: raw, auds: r.Host, https: requestScheme(r) == "https"}
}

func audiencesKey(auds []string) string {
	var b []byte
	for _, a := range auds {
		b = binary.BigEndian.AppendUint64(b, uint64(len(a)))
		b = append(b, a...)
	}
	return string(b)
}

// kept is k holding copies of its strings, not the request's memory.
func (k tokenKey) kept() tokenKey {
	k.token, k.auds = strings.Clone(k.token), strings.Clone(k.auds)
	return k
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
	k = k.kept()
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
