package pipeline

import (
	"container/list"
	"sync"
	"time"
	"weak"

	"github.com/pulsedive-relay/relay/ctim"
	"github.com/pulsedive-relay/relay/pulsedive"
)

// observations keeps the observe mappings of cached documents
// (ctim.Observation) for reuse within a byte budget, the least recently
// used going first. A mapping is found by the very documents it was mapped
// from, held weakly: a document the cache refreshed (a new one) or evicted
// (collected) finds nothing, and the budget never keeps a document alive.
// It is safe for concurrent use.
type observations struct {
	mu      sync.Mutex
	max     int64
	used    int64
	order   list.List // of *observationEntry, most recently used first
	entries map[observationKey]*list.Element
}

// observationKey names one mapping: its info document, the observable
// (documents are cached by value, and the type decides the mapping too)
// and the entities limit it was mapped under (a token's
// CTR_ENTITIES_LIMIT).
type observationKey struct {
	info  weak.Pointer[pulsedive.Indicator]
	obs   ctim.Observable
	limit int
}

type observationEntry struct {
	key   observationKey
	links weak.Pointer[pulsedive.Links] // the links document mapped with info; nil pointer when none
	obs   *ctim.Observation
	cost  int64
}

// observationOverhead is what an entry costs beyond its mapping: the
// entry, its list element and its map slot.
const observationOverhead = 160

func newObservations(maxBytes int64) *observations {
	return &observations{max: maxBytes, entries: make(map[observationKey]*list.Element)}
}

// get returns the mapping of obs from info and links under limit while it
// holds at now, or nil.
func (m *observations) get(obs ctim.Observable, info *pulsedive.Indicator, links *pulsedive.Links, limit int, now time.Time) *ctim.Observation {
	key := observationKey{weak.Make(info), obs, limit}
	m.mu.Lock()
	defer m.mu.Unlock()
	el, ok := m.entries[key]
	if !ok {
		return nil
	}
	e := el.Value.(*observationEntry)
	if e.links != weak.Make(links) || !e.obs.Current(now) {
		return nil // put replaces it
	}
	m.order.MoveToFront(el)
	return e.obs
}

// mapped reports whether a mapping of obs from info under limit is kept,
// whatever its links and however old: info then has every field the
// mapping needs.
func (m *observations) mapped(obs ctim.Observable, info *pulsedive.Indicator, limit int) bool {
	key := observationKey{weak.Make(info), obs, limit}
	m.mu.Lock()
	defer m.mu.Unlock()
	_, ok := m.entries[key]
	return ok
}

// put keeps ob as the mapping of obs from info and links under limit, in
// place of any other for the same key, evicting the least recently used
// mappings past the budget. A mapping alone over the budget is not kept.
func (m *observations) put(obs ctim.Observable, info *pulsedive.Indicator, links *pulsedive.Links, limit int, ob *ctim.Observation) {
	cost := ob.Size() + observationOverhead + int64(len(obs.Type)+len(obs.Value))
	if cost > m.max {
		return
	}
	key := observationKey{weak.Make(info), obs, limit}
	e := &observationEntry{key: key, links: weak.Make(links), obs: ob, cost: cost}
	m.mu.Lock()
	defer m.mu.Unlock()
	if el, ok := m.entries[key]; ok {
		m.remove(el)
	}
	m.entries[key] = m.order.PushFront(e)
	m.used += cost
	for m.used > m.max {
		m.remove(m.order.Back())
	}
}

func (m *observations) remove(el *list.Element) {
	e := m.order.Remove(el).(*observationEntry)
	delete(m.entries, e.key)
	m.used -= e.cost
}

// len is the number of mappings kept.
func (m *observations) len() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.order.Len()
}
