package pipeline

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/pulsedive-relay/relay/ctim"
	"github.com/pulsedive-relay/relay/pulsedive"
)

// settableClock is a clock a test moves.
type settableClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *settableClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *settableClock) set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = t
}

// withoutIDs is a copy of b with its transient ids blank, so that two
// answers compare.
func withoutIDs(b *ctim.Bundle) ctim.Bundle {
	out := ctim.Bundle{
		Verdicts:      append([]ctim.Verdict(nil), b.Verdicts...),
		Judgements:    append([]ctim.Judgement(nil), b.Judgements...),
		Indicators:    append([]ctim.Indicator(nil), b.Indicators...),
		Sightings:     append([]ctim.Sighting(nil), b.Sightings...),
		Relationships: append([]ctim.Relationship(nil), b.Relationships...),
	}
	for i := range out.Verdicts {
		out.Verdicts[i].JudgementID = ""
	}
	for i := range out.Judgements {
		out.Judgements[i].ID = ""
	}
	for i := range out.Sightings {
		out.Sightings[i].ID = ""
	}
	for i := range out.Relationships {
		out.Relationships[i].ID, out.Relationships[i].SourceRef = "", ""
	}
	return out
}

// TestMappingKeptUntilItChanges: answers from a kept mapping are, but for
// their transient ids, what mapping the cached documents again gives, at
// every moment: before the Active DNS link leaves the 90-day window, once
// it has, once the verdict has expired; with another entities limit, for
// another type of the same value, and once the cache holds a new document.
func TestMappingKeptUntilItChanges(t *testing.T) {
	clock := &settableClock{now: fixedNow}
	store := &mapStore{}
	kept := newPipeline(t, &fakeFetcher{}, store, func(c *Config) { c.Now = clock.Now })
	// fresh maps the same documents every time: it has the kept
	// pipeline's store, but keeps no mapping.
	fresh := newPipeline(t, &fakeFetcher{}, store, func(c *Config) { c.Now = clock.Now; c.MappingBytes = -1 })
	if fresh.mapped != nil {
		t.Fatal("MappingBytes -1 keeps mappings")
	}
	domain := ctim.Observable{Type: "domain", Value: "a.example"}
	req := func(o ctim.Observable, limit int) Request {
		return Request{Key: "k", EntitiesLimit: limit, Observables: []ctim.Observable{o}}
	}
	steps := []struct {
		name          string
		at            time.Time
		req           Request
		verdicts, dns bool
		risk          string // replaces the cached info document first, when set
	}{
		{"first answer", fixedNow, req(domain, 100), true, true, ""},
		{"answered again", fixedNow.Add(time.Hour), req(domain, 100), true, true, ""},
		{"another limit", fixedNow, req(domain, 1), true, false, ""},
		{"another type", fixedNow, req(ctim.Observable{Type: "url", Value: "a.example"}, 100), true, false, ""},
		{"link out of the window", time.Date(2020, 6, 30, 0, 0, 0, 0, time.UTC), req(domain, 100), true, false, ""},
		{"verdict expired", time.Date(2020, 7, 10, 14, 30, 0, 0, time.UTC), req(domain, 100), false, false, ""},
		{"a new document", fixedNow, req(domain, 100), true, true, "low"},
	}
	for _, s := range steps {
		t.Run(s.name, func(t *testing.T) {
			clock.set(s.at)
			if s.risk != "" {
				store.Set(cacheKey("k", pulsedive.KindInfo, domain.Value), Document{Info: &pulsedive.Indicator{
					IID: "iid-new", Risk: s.risk, StampSeen: "2020-04-10 08:30:00",
					RiskFactors: []pulsedive.RiskFactor{{Description: "new"}}}}, 1, time.Hour, time.Hour)
			}
			got := kept.Observe(context.Background(), s.req)
			want := fresh.Observe(context.Background(), s.req)
			if len(got.Errors)+len(want.Errors) > 0 {
				t.Fatalf("errors: %v / %v", got.Errors, want.Errors)
			}
			if diff := cmp.Diff(withoutIDs(want.Bundle), withoutIDs(got.Bundle), cmpopts.IgnoreUnexported(ctim.Bundle{})); diff != "" {
				t.Errorf("kept mapping differs from mapping again (-want +got):\n%s", diff)
			}
			if g := len(got.Bundle.Verdicts) > 0; g != s.verdicts {
				t.Errorf("verdict in the answer = %v, want %v", g, s.verdicts)
			}
			dns := false
			for _, sg := range got.Bundle.Sightings {
				dns = dns || len(sg.Relations) > 0
			}
			if dns != s.dns {
				t.Errorf("Active DNS in the answer = %v, want %v", dns, s.dns)
			}
			if j := got.Bundle.Judgements[0]; j.Observable != s.req.Observables[0] {
				t.Errorf("judgement of %+v, asked %+v", j.Observable, s.req.Observables[0])
			}
		})
	}
}

// TestMappingReused: a second answer of the same documents takes the kept
// mapping, not a new one, with ids of its own; a document the cache
// dropped keeps nothing alive.
func TestMappingReused(t *testing.T) {
	store := &mapStore{}
	p := newPipeline(t, &fakeFetcher{}, store)
	req := Request{Key: "k", EntitiesLimit: 100, Observables: []ctim.Observable{{Type: "domain", Value: "a.example"}}}
	first := p.Observe(context.Background(), req)
	doc, _, _ := store.Get(cacheKey("k", pulsedive.KindInfo, "a.example"))
	links, _, _ := store.Get(cacheKey("k", pulsedive.KindLinks, "a.example"))
	kept := p.mapped.get(req.Observables[0], doc.Info, links.Links, 100, fixedNow)
	if kept == nil || p.mapped.len() != 1 {
		t.Fatalf("after one answer: mapping %v, %d kept; want it kept", kept, p.mapped.len())
	}
	second := p.Observe(context.Background(), req)
	if again := p.mapped.get(req.Observables[0], doc.Info, links.Links, 100, fixedNow); again != kept || p.mapped.len() != 1 {
		t.Errorf("the second answer mapped again: %d kept", p.mapped.len())
	}
	if first.Bundle.Judgements[0].ID == second.Bundle.Judgements[0].ID || first.Bundle.Sightings[0].ID == second.Bundle.Sightings[0].ID {
		t.Error("two answers share transient ids")
	}
	if p.mapped.get(req.Observables[0], doc.Info, nil, 100, fixedNow) != nil {
		t.Error("a mapping made with links is found without them")
	}
}

// TestMappingBudget: kept mappings stay within their budget, the least
// recently used going first.
func TestMappingBudget(t *testing.T) {
	m := ctim.Mapper{Now: func() time.Time { return fixedNow }}
	r := &pulsedive.Indicator{IID: "1", Risk: "low", StampSeen: "2020-04-01 00:00:00", RiskFactors: []pulsedive.RiskFactor{{Description: "rf"}}}
	o := ctim.Observable{Type: "domain", Value: "a.example"}
	ob, err := m.Observation(o, r, nil, 100)
	if err != nil {
		t.Fatal(err)
	}
	cost := ob.Size() + observationOverhead + int64(len(o.Type)+len(o.Value))
	kept := newObservations(5 * cost)
	infos := make([]*pulsedive.Indicator, 20)
	for i := range infos {
		infos[i] = &pulsedive.Indicator{IID: fmt.Sprint(i)}
		kept.put(o, infos[i], nil, 100, ob)
		if i == 10 {
			// Used now, it outlives those put after it but one.
			if kept.get(o, infos[6], nil, 100, fixedNow) == nil {
				t.Fatal("a recent mapping is gone")
			}
		}
		if kept.used > kept.max {
			t.Fatalf("after %d mappings %d bytes used, over the budget of %d", i+1, kept.used, kept.max)
		}
	}
	if n := kept.len(); n != 5 {
		t.Errorf("%d mappings kept, want 5", n)
	}
	for i, info := range infos {
		got := kept.get(o, info, nil, 100, fixedNow) != nil
		if want := i >= 15; got != want {
			t.Errorf("mapping %d kept = %v, want %v", i, got, want)
		}
	}
	newObservations(cost-1).put(o, infos[0], nil, 100, ob) // over the budget alone: not kept, no panic
}

// TestMappingShared: requests answered at once from one kept mapping, under
// the race detector, each get their own ids.
func TestMappingShared(t *testing.T) {
	p := newPipeline(t, &fakeFetcher{}, &mapStore{})
	req := Request{Key: "k", EntitiesLimit: 100, Observables: []ctim.Observable{{Type: "domain", Value: "a.example"}, {Type: "ip", Value: "10.0.0.9"}}}
	p.Observe(context.Background(), req)
	var (
		mu  sync.Mutex
		ids = map[string]bool{}
		wg  sync.WaitGroup
	)
	for range 8 {
		wg.Go(func() {
			for range 50 {
				res := p.Observe(context.Background(), req)
				mu.Lock()
				for _, s := range res.Bundle.Sightings {
					if ids[s.ID] {
						t.Errorf("sighting id %s given twice", s.ID)
					}
					ids[s.ID] = true
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if n := p.mapped.len(); n != 2 {
		t.Errorf("%d mappings kept for 2 observables", n)
	}
}

// TestKeyFingerprintGiven: a request that brings its key's fingerprint
// finds the same cache entries as one that does not.
func TestKeyFingerprintGiven(t *testing.T) {
	store := &mapStore{}
	f := &fakeFetcher{}
	p := newPipeline(t, f, store)
	key := pulsedive.APIKey("secret-key")
	obs := []ctim.Observable{{Type: "domain", Value: "a.example"}}
	p.Deliberate(context.Background(), Request{Key: key, Observables: obs})
	p.Deliberate(context.Background(), Request{Key: key, KeyFingerprint: key.Fingerprint(), Observables: obs})
	if n := f.count(pulsedive.KindInfo, "a.example"); n != 1 {
		t.Errorf("%d info calls; the second request missed the first one's entry", n)
	}
	if _, ok, _ := store.Get(cacheKey(key, pulsedive.KindInfo, "a.example")); !ok {
		t.Error("no entry under the key's cache key")
	}
}
