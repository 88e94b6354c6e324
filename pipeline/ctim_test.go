package pipeline

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/pulsedive-relay/relay/ctim"
	"github.com/pulsedive-relay/relay/ctim/ctimcheck"
	"github.com/pulsedive-relay/relay/pulsedive"
	"github.com/pulsedive-relay/relay/pulsedive/pulsedivetest"
)

// Tests that what the relay maps from Pulsedive documents keeps to CTIM
// (CONTRACT.md section 4b), checked by ctimcheck: synthetic documents, the
// FuzzDecodeIndicator corpus and the fixtures, crafted documents for each
// case the checks of issue 12 found, and fuzzed documents.

// docFetcher serves raw Pulsedive bodies, decoded as the client decodes
// them; a value it has no body for is unknown to Pulsedive.
type docFetcher struct {
	info, links map[string][]byte
}

func (f docFetcher) Indicator(_ context.Context, _ pulsedive.APIKey, value string) (*pulsedive.Indicator, error) {
	body, ok := f.info[value]
	if !ok {
		return nil, pulsedive.ErrNotFound
	}
	return pulsedive.DecodeIndicator(body)
}

func (f docFetcher) Links(_ context.Context, _ pulsedive.APIKey, value string) (*pulsedive.Links, error) {
	body, ok := f.links[value]
	if !ok {
		return nil, pulsedive.ErrNotFound
	}
	return pulsedive.DecodeLinks(body)
}

// answer is a result's data as the transport writes it.
func answer(res Result) []byte {
	body, _ := res.Bundle.StreamJSON([]byte(`{"data":`), 0, nil) // never flushed: no error
	return append(body, '}')
}

// conforms checks the observe and deliberate answers of the pipeline for
// req, and returns them.
func conforms(t *testing.T, p *Pipeline, req Request) (observe, deliberate Result) {
	t.Helper()
	observe = p.Observe(context.Background(), req)
	deliberate = p.Deliberate(context.Background(), req)
	for name, res := range map[string]Result{"observe": observe, "deliberate": deliberate} {
		if problems := ctimcheck.Check(answer(res), ctimcheck.Options{Now: fixedNow}); len(problems) > 0 {
			var b strings.Builder
			for _, p := range problems[:min(len(problems), 10)] {
				fmt.Fprintln(&b, p)
			}
			t.Errorf("%s answer is not CTIM (%d problems):\n%s", name, len(problems), b.String())
		}
	}
	return observe, deliberate
}

func TestCTIMSyntheticDocuments(t *testing.T) {
	f := docFetcher{info: map[string][]byte{}, links: map[string][]byte{}}
	var obs []ctim.Observable
	for i := range 240 {
		o := []ctim.Observable{
			{Type: "domain", Value: fmt.Sprintf("synthetic-%d.example", i)},
			{Type: "ip", Value: fmt.Sprintf("10.1.%d.%d", i/250, i%250)},
			{Type: "ipv6", Value: fmt.Sprintf("2001:db8::%x", i)},
			{Type: "url", Value: fmt.Sprintf("http://synthetic-%d.example/x", i)},
		}[i%4]
		e := pulsedivetest.Synthetic(o.Value)
		f.info[o.Value], f.links[o.Value] = e.Info.Body, e.Links.Body
		obs = append(obs, o)
	}
	p := newPipeline(t, f, nil)
	for _, limit := range []int{100, 2} {
		t.Run(fmt.Sprint(limit), func(t *testing.T) {
			observe, deliberate := conforms(t, p, Request{EntitiesLimit: limit, Observables: obs})
			if len(observe.Errors) > 0 {
				t.Errorf("synthetic documents failed: %v", observe.Errors[0])
			}
			if len(observe.Bundle.Judgements) != len(obs) {
				t.Errorf("%d judgements for %d observables", len(observe.Bundle.Judgements), len(obs))
			}
			// Some synthetic indicators were last seen in early January:
			// their verdicts have expired by the fixtures' clock.
			if n := len(observe.Bundle.Verdicts); n == 0 || n == len(obs) || n != len(deliberate.Bundle.Verdicts) {
				t.Errorf("%d verdicts in observe, %d in deliberate, of %d observables: want the same, some expired",
					n, len(deliberate.Bundle.Verdicts), len(obs))
			}
		})
	}
}

// indicatorCorpus is every info document the tests know: the fixtures and
// the FuzzDecodeIndicator corpus kept in the repository.
func indicatorCorpus(t testing.TB) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	fx, err := pulsedivetest.Fixtures()
	if err != nil {
		t.Fatal(err)
	}
	for v, e := range fx {
		out["fixture "+v] = e.Info.Body
	}
	dir := filepath.Join("..", "pulsedive", "testdata", "fuzz", "FuzzDecodeIndicator")
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		data, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		out["corpus "+e.Name()] = fuzzBytes(t, data)
	}
	return out
}

// fuzzBytes reads the []byte of a "go test fuzz v1" file of one argument.
func fuzzBytes(t testing.TB, file []byte) []byte {
	t.Helper()
	lines := strings.Split(strings.TrimSpace(string(file)), "\n")
	if len(lines) != 2 || lines[0] != "go test fuzz v1" || !strings.HasPrefix(lines[1], "[]byte(") {
		t.Fatalf("not a fuzz corpus file of one []byte: %q", file)
	}
	s, err := strconv.Unquote(strings.TrimSuffix(strings.TrimPrefix(lines[1], "[]byte("), ")"))
	if err != nil {
		t.Fatal(err)
	}
	return []byte(s)
}

// richLinks is a links document with entries of every type, recent and
// old, for every observable of the corpus test.
var richLinks = []byte(`{"Active DNS":[
	{"iid":1,"indicator":"a.example","type":"domain","stamp_linked":"2020-04-01 00:00:00"},
	{"iid":2,"indicator":"10.0.0.1","type":"ip","stamp_linked":"2020-04-02 00:00:00"},
	{"iid":3,"indicator":"2001:db8::1","type":"ipv6","stamp_linked":"2020-04-03 00:00:00"},
	{"iid":4,"indicator":"old.example","type":"domain","stamp_linked":"2019-01-01 00:00:00"},
	{"iid":5,"indicator":"http://a.example/","type":"url","stamp_linked":"2020-04-01 00:00:00"}]}`)

func TestCTIMFuzzCorpusAndFixtures(t *testing.T) {
	for name, body := range indicatorCorpus(t) {
		t.Run(name, func(t *testing.T) {
			f := docFetcher{info: map[string][]byte{}, links: map[string][]byte{}}
			var obs []ctim.Observable
			for _, typ := range []string{"domain", "ip", "ipv6", "url"} {
				o := ctim.Observable{Type: typ, Value: typ + " of " + name}
				f.info[o.Value], f.links[o.Value] = body, richLinks
				obs = append(obs, o)
			}
			p := newPipeline(t, f, nil)
			for _, limit := range []int{100, 1} {
				observe, _ := conforms(t, p, Request{EntitiesLimit: limit, Observables: obs})
				for _, err := range observe.Errors {
					if !documented(err) {
						t.Errorf("undocumented error: %v", err)
					}
				}
			}
		})
	}
}

// documented says whether err is one the mapping or the decoder promise.
func documented(err error) bool {
	var apiErr *pulsedive.APIError
	return errors.Is(err, ctim.ErrBroken) || errors.Is(err, pulsedive.ErrSchema) ||
		errors.Is(err, pulsedive.ErrInvalidJSON) || errors.As(err, &apiErr)
}

// craftedDoc is an info document: a plain, current, high-risk indicator
// with fields replaced by set.
func craftedDoc(t *testing.T, set map[string]any) []byte {
	t.Helper()
	doc := map[string]any{
		"iid": 5401, "risk": "high", "retired": "", "stamp_seen": "2020-04-10 08:30:00", "stamp_retired": "",
		"riskfactors": []any{map[string]any{"description": "malware distribution", "risk": "high"}},
		"threats":     []any{map[string]any{"tid": 7, "name": "Zeus", "category": "malware", "risk": "high", "stamp_linked": "2020-04-02 00:00:01"}},
		"feeds": []any{map[string]any{"fid": 2, "name": "Feodo Tracker", "category": "malware", "organization": "abuse.ch",
			"stamp_linked": "2020-04-01 06:00:00"}},
	}
	for k, v := range set {
		doc[k] = v
	}
	body, err := json.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	return body
}

// TestCraftedDocuments maps a crafted Pulsedive document for each case the
// CTIM checks of issue 12 found, and checks the answers keep to CTIM and
// read as CONTRACT.md section 4b says.
func TestCraftedDocuments(t *testing.T) {
	long := strings.Repeat("ß", 6000) // 2 bytes, 1 code point each
	manyLinks := func(n int) []byte {
		var b strings.Builder
		b.WriteString(`{"Active DNS":[`)
		for i := range n {
			if i > 0 {
				b.WriteByte(',')
			}
			fmt.Fprintf(&b, `{"iid":%d,"indicator":"10.%d.%d.%d","type":"ip","stamp_linked":"2020-04-01 00:00:00","summary":{}}`,
				i, i>>16, (i>>8)&255, i&255)
		}
		b.WriteString(`]}`)
		return []byte(b.String())
	}
	tests := []struct {
		name  string
		info  map[string]any
		links []byte
		check func(t *testing.T, observe, deliberate *ctim.Bundle)
	}{
		{"retired before seen", map[string]any{"risk": "none", "retired": "No recent activity",
			"stamp_seen": "2020-03-01 00:00:00", "stamp_retired": "2020-02-01 00:00:00"}, nil,
			func(t *testing.T, observe, deliberate *ctim.Bundle) {
				j := observe.Judgements[0]
				if want := (ctim.ValidTime{StartTime: "2020-03-01T00:00:00Z", EndTime: "2020-03-01T00:00:00Z"}); j.ValidTime != want {
					t.Errorf("judgement valid_time %+v, want %+v", j.ValidTime, want)
				}
				if j.Reason != "Pulsedive risk: none (retired: No recent activity)" {
					t.Errorf("reason %q", j.Reason)
				}
				if len(observe.Verdicts)+len(deliberate.Verdicts) > 0 {
					t.Errorf("an expired verdict was sent: %+v %+v", observe.Verdicts, deliberate.Verdicts)
				}
			}},
		{"6,000-character names", map[string]any{
			"riskfactors": []any{map[string]any{"description": long}},
			"threats":     []any{map[string]any{"tid": 7, "name": long, "category": long, "stamp_linked": "2020-04-02 00:00:01"}},
			"feeds":       []any{map[string]any{"fid": 2, "name": long, "category": "c", "organization": long, "stamp_linked": "2020-04-01 06:00:00"}},
		}, nil, func(t *testing.T, observe, _ *ctim.Bundle) {
			for _, ind := range observe.Indicators {
				if n := utf8.RuneCountInString(ind.Title); n != 1024 {
					t.Errorf("title of %d code points, want 1024", n)
				}
			}
			for _, s := range observe.Sightings {
				if n := utf8.RuneCountInString(s.Description); n != 5000 {
					t.Errorf("description of %d code points, want 5000", n)
				}
			}
		}},
		{`id "12 34"`, map[string]any{"iid": "12 34",
			"threats": []any{map[string]any{"tid": "12 34", "name": "Zeus", "category": "malware", "stamp_linked": "2020-04-02 00:00:01"}},
			"feeds":   []any{map[string]any{"fid": "12 34", "name": "F", "category": "c", "organization": "o", "stamp_linked": "2020-04-01 06:00:00"}},
		}, nil, func(t *testing.T, observe, _ *ctim.Bundle) {
			if got := observe.Judgements[0].SourceURI; got != "https://pulsedive.com/indicator/?iid=12+34" {
				t.Errorf("judgement source_uri %s", got)
			}
			threat := observe.Indicators[1]
			if threat.SourceURI != "https://pulsedive.com/threat/?tid=12+34" || threat.ExternalIDs[0] != "pulsedive-threat-12 34" ||
				threat.ExternalReferences[0].ExternalID != "12 34" {
				t.Errorf("threat %s, %v, %+v", threat.SourceURI, threat.ExternalIDs, threat.ExternalReferences)
			}
		}},
		{"empty category and organization", map[string]any{
			"threats": []any{map[string]any{"tid": 7, "name": "Zeus", "category": "", "stamp_linked": "2020-04-02 00:00:01"}},
			"feeds":   []any{map[string]any{"fid": 2, "name": "F", "category": "", "organization": "", "stamp_linked": "2020-04-01 06:00:00"}},
		}, nil, func(t *testing.T, observe, _ *ctim.Bundle) {
			threat, feed := observe.Indicators[1], observe.Indicators[2]
			if threat.Tags != nil || feed.Tags != nil || feed.Producer != "Pulsedive" {
				t.Errorf("threat tags %q, feed tags %q, producer %q; want no tags, producer Pulsedive", threat.Tags, feed.Tags, feed.Producer)
			}
		}},
		{"a feed named Feed", map[string]any{
			"feeds": []any{map[string]any{"fid": 2, "name": "Feed", "category": "c", "organization": "o", "stamp_linked": "2020-04-01 06:00:00"}},
		}, nil, func(t *testing.T, observe, _ *ctim.Bundle) {
			if got := observe.Indicators[2].Title; got != "Feed: Feed" {
				t.Errorf("feed title %q, want %q", got, "Feed: Feed")
			}
		}},
		{"one name for risk factor, threat and feed", map[string]any{
			"riskfactors": []any{map[string]any{"description": "Zeus"}},
			"threats":     []any{map[string]any{"tid": 7, "name": "Zeus", "category": "malware", "stamp_linked": "2020-04-02 00:00:01"}},
			"feeds":       []any{map[string]any{"fid": 2, "name": "Zeus", "category": "c", "organization": "o", "stamp_linked": "2020-04-01 06:00:00"}},
		}, nil, func(t *testing.T, observe, _ *ctim.Bundle) {
			if len(observe.Indicators) != 3 {
				t.Fatalf("%d indicators, want one per kind", len(observe.Indicators))
			}
			byID := map[string]ctim.Indicator{}
			for _, ind := range observe.Indicators {
				byID[ind.ID] = ind
			}
			for i, rel := range observe.Relationships {
				if got, want := byID[rel.TargetRef].Title, observe.Sightings[i].Description; got != want {
					t.Errorf("sighting %q points at indicator %q", want, got)
				}
			}
		}},
		{"20,000 Active DNS entries", map[string]any{}, manyLinks(20_000), func(t *testing.T, observe, _ *ctim.Bundle) {
			dns := observe.Sightings[len(observe.Sightings)-1]
			if dns.Description != "Active DNS" || len(dns.Relations) != 100 {
				t.Fatalf("last sighting %q holds %d relations, want Active DNS with 100", dns.Description, len(dns.Relations))
			}
			if first, last := dns.Relations[0].Related.Value, dns.Relations[99].Related.Value; first != "10.0.0.0" || last != "10.0.0.99" {
				t.Errorf("relations from %s to %s, want Pulsedive's first 100", first, last)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// A domain: it pairs with the ip entries of the links.
			obs := ctim.Observable{Type: "domain", Value: "crafted.example"}
			f := docFetcher{info: map[string][]byte{obs.Value: craftedDoc(t, tt.info)}, links: map[string][]byte{}}
			if tt.links != nil {
				f.links[obs.Value] = tt.links
			}
			p := newPipeline(t, f, nil)
			observe, deliberate := conforms(t, p, Request{EntitiesLimit: 100, Observables: []ctim.Observable{obs}})
			if len(observe.Errors)+len(deliberate.Errors) > 0 {
				t.Fatalf("errors: %v %v", observe.Errors, deliberate.Errors)
			}
			tt.check(t, observe.Bundle, deliberate.Bundle)
		})
	}
}

// FuzzObserveCTIM maps fuzzed Pulsedive documents, as info and links of an
// observable of each type, and asserts the answers keep to CTIM: whatever
// Pulsedive sends, the relay answers valid CTIM or a documented error.
func FuzzObserveCTIM(f *testing.F) {
	for _, body := range indicatorCorpus(f) {
		f.Add(body, richLinks, uint8(0), "fuzz.example")
	}
	fx, err := pulsedivetest.Fixtures()
	if err != nil {
		f.Fatal(err)
	}
	for v, e := range fx {
		f.Add([]byte(e.Info.Body), []byte(e.Links.Body), uint8(1), v)
	}
	types := []string{"domain", "ip", "ipv6", "url"}
	f.Fuzz(func(t *testing.T, info, links []byte, typ uint8, value string) {
		m := ctim.Mapper{Now: func() time.Time { return fixedNow }}
		ind, err := pulsedive.DecodeIndicator(info)
		if err != nil {
			return // the decoder's errors are FuzzDecodeIndicator's to check
		}
		obs := ctim.Observable{Type: types[int(typ)%len(types)], Value: value}
		l, err := pulsedive.DecodeLinks(links)
		if err != nil {
			l = nil // the links call failed: mapped without them
		}
		var observe, deliberate ctim.Bundle
		o, err := m.Observation(obs, ind, l, 100)
		if err != nil {
			if !errors.Is(err, ctim.ErrBroken) {
				t.Fatalf("Observation: undocumented error %v", err)
			}
			return
		}
		if err := o.LinksErr(); err != nil && !errors.Is(err, ctim.ErrBroken) {
			t.Fatalf("Active DNS: undocumented error %v", err)
		}
		e := m.Entities(o)
		observe.Add(e)
		v, current, err := m.Verdict(obs, ind)
		if err != nil {
			t.Fatalf("Verdict fails (%v) where Observation did not", err)
		}
		if current != (e.Verdict != nil) {
			t.Fatalf("deliberate and observe disagree on whether the verdict is current")
		}
		if current {
			deliberate.AddVerdict(v)
		}
		for name, b := range map[string]*ctim.Bundle{"observe": &observe, "deliberate": &deliberate} {
			body, _ := b.StreamJSON([]byte(`{"data":`), 0, nil)
			body = append(body, '}')
			if problems := ctimcheck.Check(body, ctimcheck.Options{Now: fixedNow}); len(problems) > 0 {
				t.Fatalf("%s answer is not CTIM: %v\ninfo: %q", name, problems[0], info)
			}
		}
	})
}
