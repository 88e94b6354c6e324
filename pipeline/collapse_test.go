package pipeline

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/pulsedive-relay/relay/ctim"
	"github.com/pulsedive-relay/relay/pulsedive"
)

// mapStore is a Store in memory, every entry fresh.
type mapStore struct {
	mu   sync.Mutex
	docs map[string]Document
}

func (s *mapStore) Get(key string) (Document, bool, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	d, ok := s.docs[key]
	return d, ok, ok
}

func (s *mapStore) Set(key string, doc Document, _ int64, _, _ time.Duration) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.docs == nil {
		s.docs = map[string]Document{}
	}
	s.docs[key] = doc
	return true
}

// scriptedCollapser answers Lead and Await as a test says, and records the
// order of events.
type scriptedCollapser struct {
	lead   bool
	await  func(store Store, key string) bool
	store  Store
	mu     sync.Mutex
	events []string
}

func (c *scriptedCollapser) note(e string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.events = append(c.events, e)
}

func (c *scriptedCollapser) Lead(_ context.Context, key string) (bool, func()) {
	c.note("lead")
	if !c.lead {
		return false, func() { c.note("done of a loser") }
	}
	return true, func() {
		if _, fresh, _ := c.store.Get(key); fresh {
			c.note("done after store")
		} else {
			c.note("done before store")
		}
	}
}

func (c *scriptedCollapser) Await(_ context.Context, key string) bool {
	c.note("await")
	return c.await(c.store, key)
}

// TestCollapseAcrossReplicas: a Collapser decides which process calls; the
// others read the caller's answer from the Store or, when it is not there,
// call themselves.
func TestCollapseAcrossReplicas(t *testing.T) {
	const value = "shared.example"
	o := ctim.Observable{Type: "domain", Value: value}
	otherReplica := func(store Store, key string) bool {
		// The leading replica stores its answer, then releases the lock.
		store.Set(key, Document{Info: &pulsedive.Indicator{IID: "from-b", Risk: "high", StampSeen: "2020-04-10 08:30:00"}}, 1, time.Hour, time.Hour)
		return true
	}
	tests := []struct {
		name       string
		lead       bool
		await      func(Store, string) bool
		preload    bool // the Store holds the document when the lock is won
		wantCalls  int
		wantEvents []string
	}{
		{name: "won: calls, releases after storing", lead: true, wantCalls: 1, wantEvents: []string{"lead", "done after store"}},
		{name: "won, but another replica stored it meanwhile", lead: true, preload: true, wantCalls: 0, wantEvents: []string{"lead", "done after store"}},
		{name: "lost: the other replica's answer", await: otherReplica, wantCalls: 0, wantEvents: []string{"lead", "await"}},
		{name: "lost, nothing came: calls itself", await: func(Store, string) bool { return false }, wantCalls: 1, wantEvents: []string{"lead", "await"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			store := &mapStore{}
			f := &fakeFetcher{}
			c := &scriptedCollapser{lead: tt.lead, await: tt.await, store: store}
			p := newPipeline(t, f, store, func(cfg *Config) { cfg.Collapser = c })
			if tt.preload {
				// Looked up once before: the first Get misses, the one
				// after the lock finds it.
				p.cfg.Store = &missOnce{Store: store}
				store.Set(cacheKey("k", pulsedive.KindInfo, value), Document{Info: &pulsedive.Indicator{IID: "x", Risk: "high", StampSeen: "2020-04-10 08:30:00"}}, 1, time.Hour, time.Hour)
			}
			res := p.Deliberate(context.Background(), Request{Key: "k", Observables: []ctim.Observable{o}})
			if len(res.Errors) > 0 {
				t.Fatalf("errors: %v", res.Errors)
			}
			if diff := cmp.Diff([]string{value}, verdictValues(res.Bundle)); diff != "" {
				t.Errorf("verdicts (-want +got):\n%s", diff)
			}
			if got := f.count(pulsedive.KindInfo, value); got != tt.wantCalls {
				t.Errorf("Pulsedive calls = %d, want %d", got, tt.wantCalls)
			}
			if diff := cmp.Diff(tt.wantEvents, c.events); diff != "" {
				t.Errorf("collapser events (-want +got):\n%s", diff)
			}
		})
	}
}

// missOnce misses its first Get, as a Store does when another replica
// writes right after the lookup.
type missOnce struct {
	Store
	mu     sync.Mutex
	missed bool
}

func (m *missOnce) Get(key string) (Document, bool, bool) {
	m.mu.Lock()
	first := !m.missed
	m.missed = true
	m.mu.Unlock()
	if first {
		return Document{}, false, false
	}
	return m.Store.Get(key)
}
