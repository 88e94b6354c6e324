package ctim

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/pulsedive-relay/relay/pulsedive"
)

// TestObservationIsObserve: an observation's entities are Observe's, id
// for id, for every shape of report the mapping knows, at any limit.
func TestObservationIsObserve(t *testing.T) {
	obs := Observable{Type: "ip", Value: "185.141.25.242"}
	reports := map[string]*pulsedive.Indicator{
		"busy":    benchReport(),
		"bare":    {IID: "1", Risk: "none", StampSeen: "2020-04-01 00:00:00"},
		"expired": {IID: "2", Risk: "high", StampSeen: "2019-01-01 00:00:00", RiskFactors: []pulsedive.RiskFactor{{Description: "rf"}, {Description: "rf"}}},
		"retired": {IID: "3", Risk: "none", Retired: true, RetiredReason: "gone", StampSeen: "2020-03-01 00:00:00", StampRetired: "2020-05-01 00:00:00"},
	}
	for name, r := range reports {
		for _, limit := range []int{0, 1, 3, 100} {
			t.Run(fmt.Sprintf("%s/%d", name, limit), func(t *testing.T) {
				rels, err := mapperAt(fixedNow).Relations(obs, benchLinks, limit)
				if err != nil {
					t.Fatal(err)
				}
				want, err := mapperAt(fixedNow).Observe(obs, r, rels, limit)
				if err != nil {
					t.Fatal(err)
				}
				m := mapperAt(fixedNow)
				o, err := m.Observation(obs, r, &pulsedive.Links{ActiveDNS: benchLinks}, limit)
				if err != nil {
					t.Fatal(err)
				}
				if diff := cmp.Diff(want, m.Entities(o)); diff != "" {
					t.Errorf("Entities differ from Observe (-want +got):\n%s", diff)
				}
			})
		}
	}
}

// TestObservationUntil: an observation holds until its verdict expires or
// its first Active DNS link leaves the 90-day window, whichever comes
// first; mapped again at that moment, the answer changes.
func TestObservationUntil(t *testing.T) {
	obs := Observable{Type: "domain", Value: "d.example"}
	link := func(stamp string) pulsedive.Link {
		return pulsedive.Link{Type: "ip", Indicator: "10.0.0." + stamp[8:10], StampLinked: stamp}
	}
	tests := []struct {
		name  string
		seen  string // the verdict ends 91 days 6 hours later
		links []pulsedive.Link
		want  string // "" for never
	}{
		{"verdict only", "2020-04-10 08:30:00", nil, "2020-07-10T14:30:00Z"},
		{"link leaves first", "2020-04-10 08:30:00", []pulsedive.Link{link("2020-03-20 12:00:00"), link("2020-03-01 00:00:00")}, "2020-05-30T00:00:00Z"},
		{"verdict ends first", "2020-01-20 00:00:00", []pulsedive.Link{link("2020-04-09 00:00:00")}, "2020-04-20T06:00:00Z"},
		{"expired, no links: never changes", "2019-01-01 00:00:00", nil, ""},
		{"expired, an old link left out", "2019-01-01 00:00:00", []pulsedive.Link{link("2019-12-01 00:00:00")}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := &pulsedive.Indicator{IID: "1", Risk: "high", StampSeen: tt.seen, RiskFactors: []pulsedive.RiskFactor{{Description: "rf"}}}
			o, err := mapperAt(fixedNow).Observation(obs, r, &pulsedive.Links{ActiveDNS: tt.links}, 100)
			if err != nil {
				t.Fatal(err)
			}
			got := ""
			if !o.until.IsZero() {
				got = o.until.UTC().Format(time.RFC3339)
			}
			if got != tt.want {
				t.Fatalf("Until = %q, want %q", got, tt.want)
			}
			if got == "" {
				if !o.Current(fixedNow.AddDate(100, 0, 0)) {
					t.Error("an observation that never changes is not current a century later")
				}
				return
			}
			until := o.until
			if !o.Current(until.Add(-time.Nanosecond)) || o.Current(until) {
				t.Errorf("Current around Until %s is wrong", until)
			}
			// Just before, a new mapping is the same; at Until it is not.
			before, _ := mapperAt(until.Add(-time.Second)).Observation(obs, r, &pulsedive.Links{ActiveDNS: tt.links}, 100)
			at, _ := mapperAt(until).Observation(obs, r, &pulsedive.Links{ActiveDNS: tt.links}, 100)
			m := mapperAt(fixedNow)
			if diff := cmp.Diff(m.Entities(o), mapperAt(fixedNow).Entities(before)); diff != "" {
				t.Errorf("mapped just before Until, the answer changed:\n%s", diff)
			}
			if cmp.Equal(mapperAt(fixedNow).Entities(o), mapperAt(fixedNow).Entities(at)) {
				t.Error("mapped at Until, the answer is the same: Until is too early")
			}
		})
	}
}

// TestObservationLinksErr: a broken links list leaves the Active DNS out
// and says why, the rest mapped.
func TestObservationLinksErr(t *testing.T) {
	r := &pulsedive.Indicator{IID: "1", Risk: "low", StampSeen: "2020-04-01 00:00:00", RiskFactors: []pulsedive.RiskFactor{{Description: "rf"}}}
	o, err := testMapper().Observation(Observable{"domain", "x"}, r, &pulsedive.Links{ActiveDNS: []pulsedive.Link{{Type: "ip", Indicator: "1.2.3.4", StampLinked: "yesterday"}}}, 100)
	if err != nil {
		t.Fatal(err)
	}
	if !errors.Is(o.LinksErr(), ErrBroken) {
		t.Errorf("LinksErr = %v, want ErrBroken", o.LinksErr())
	}
	if e := testMapper().Entities(o); len(e.Sightings) != 1 || e.Verdict == nil {
		t.Errorf("entities without the broken links: %d sightings, verdict %v", len(e.Sightings), e.Verdict)
	}
	if _, err := testMapper().Observation(Observable{"domain", "x"}, &pulsedive.Indicator{IID: "1", Risk: "low"}, nil, 100); !errors.Is(err, ErrBroken) {
		t.Errorf("a broken report: error = %v, want ErrBroken", err)
	}
}

// TestEntitiesFreshIDs: every answer of one observation gets ids of its
// own, version 4 UUIDs with their prefixes, unique within the answer and
// across answers, the relationships' source_ref and the verdict's
// judgement_id pointing at them; the observation itself never changes,
// whichever goroutines answer from it at once.
func TestEntitiesFreshIDs(t *testing.T) {
	m := Mapper{Now: func() time.Time { return fixedNow }}
	o, err := m.Observation(Observable{"ip", "185.141.25.242"}, benchReport(), &pulsedive.Links{ActiveDNS: benchLinks}, 100)
	if err != nil {
		t.Fatal(err)
	}
	pristine := fmt.Sprintf("%+v", *o)
	const answers, goroutines = 200, 4
	var mu sync.Mutex
	seen := map[string]bool{}
	var wg sync.WaitGroup
	for range goroutines {
		wg.Go(func() {
			for range answers {
				e := m.Entities(o)
				var b Bundle
				b.Add(e)
				ids := []string{e.Judgement.ID}
				for _, s := range e.Sightings {
					ids = append(ids, s.ID)
				}
				for i, rel := range e.Relationships {
					ids = append(ids, rel.ID)
					if rel.SourceRef != e.Sightings[i].ID {
						t.Errorf("relationship %d points at %s, not its sighting %s", i, rel.SourceRef, e.Sightings[i].ID)
					}
				}
				if e.Verdict.JudgementID != e.Judgement.ID {
					t.Errorf("judgement_id %s is not the judgement's %s", e.Verdict.JudgementID, e.Judgement.ID)
				}
				mu.Lock()
				for _, id := range ids {
					dash := strings.IndexByte(id, '-')
					prefix, uuid := id[:max(dash, 0)], id[dash+1:]
					if !strings.HasPrefix(prefix, "transient:") || !uuidV4.MatchString(uuid) {
						t.Errorf("id %q is not a prefixed version 4 UUID", id)
					}
					if seen[id] {
						t.Errorf("id %s given twice", id)
					}
					seen[id] = true
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if got := fmt.Sprintf("%+v", *o); got != pristine {
		t.Error("answering changed the observation")
	}
}

// TestBundleStreamJSONIsData: a bundle encodes to the bytes encoding/json
// writes for its Data, whole or in chunks.
func TestBundleStreamJSONIsData(t *testing.T) {
	m := Mapper{Now: func() time.Time { return fixedNow }}
	verdictsOnly := Bundle{}
	v, _, _ := m.Verdict(Observable{"ip", "x"}, benchReport())
	verdictsOnly.AddVerdict(v)
	for name, b := range map[string]Bundle{"empty": {}, "one": bigBundle(t, 1), "many": bigBundle(t, 20), "verdicts": verdictsOnly} {
		t.Run(name, func(t *testing.T) {
			want := append([]byte("x"), stdJSON(t, b.Data())...)
			for _, chunk := range []int{0, 100, 64 << 10} {
				var got bytes.Buffer
				rest, err := b.StreamJSON([]byte("x"), chunk, func(p []byte) error { got.Write(p); return nil })
				if err != nil {
					t.Fatal(err)
				}
				got.Write(rest)
				if !bytes.Equal(got.Bytes(), want) {
					t.Errorf("chunk %d: Bundle.StreamJSON differs from Data:\n got %s\nwant %s", chunk, got.Bytes(), want)
				}
			}
		})
	}
}
