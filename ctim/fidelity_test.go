package ctim

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/google/go-cmp/cmp"

	"github.com/pulsedive-relay/relay/pulsedive"
)

// Tests of CONTRACT.md section 4b, CTIM fidelity.

func mapperAt(now time.Time) Mapper {
	return Mapper{Now: func() time.Time { return now }, NewID: counterIDs()}
}

func TestVerdictExpiry(t *testing.T) {
	seen := "2020-01-10 00:00:00" // + 91 days 6 hours: 2020-04-10T06:00:00Z
	tests := []struct {
		name         string
		retired, now string
		current      bool
	}{
		{"within its validity", "", "2020-04-10T05:59:59Z", true},
		{"ending now has ended", "", "2020-04-10T06:00:00Z", false},
		{"ended", "", "2020-04-15T00:00:00Z", false},
		{"retired later", "2020-05-01 00:00:00", "2020-04-15T00:00:00Z", true},
		{"retired", "2020-04-01 00:00:00", "2020-04-15T00:00:00Z", false},
		{"retired before seen", "2019-12-01 00:00:00", "2020-01-09T23:59:59Z", true},
		{"retired before seen, seen passed", "2019-12-01 00:00:00", "2020-01-10T00:00:00Z", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			now, err := time.Parse(time.RFC3339, tt.now)
			if err != nil {
				t.Fatal(err)
			}
			m := mapperAt(now)
			r := &pulsedive.Indicator{IID: "1", Risk: "low", StampSeen: seen, StampRetired: tt.retired}
			obs := Observable{Type: "ip", Value: "1.2.3.4"}
			v, current, err := m.Verdict(obs, r)
			if err != nil {
				t.Fatal(err)
			}
			if current != tt.current {
				t.Errorf("Verdict current = %v, want %v (valid_time %+v)", current, tt.current, v.ValidTime)
			}
			if v.JudgementID != "" {
				t.Errorf("a deliberate verdict carries judgement_id %q", v.JudgementID)
			}
			e, err := m.Observe(obs, r, nil, 100)
			if err != nil {
				t.Fatal(err)
			}
			if got := e.Verdict != nil; got != tt.current {
				t.Errorf("Observe kept the verdict = %v, want %v", got, tt.current)
			}
			if e.Judgement.ID == "" || e.Judgement.ValidTime != v.ValidTime {
				t.Errorf("the judgement must stay, with the verdict's valid_time: %+v", e.Judgement)
			}
			var b Bundle
			b.Add(e)
			if len(b.Verdicts) != map[bool]int{true: 1, false: 0}[tt.current] || len(b.Judgements) != 1 {
				t.Errorf("bundle holds %d verdicts, %d judgements", len(b.Verdicts), len(b.Judgements))
			}
		})
	}
}

func TestValidTimeNeverEndsBeforeItStarts(t *testing.T) {
	r := &pulsedive.Indicator{IID: "1", Risk: "none", Retired: true, StampSeen: "2020-03-01 10:00:00", StampRetired: "2020-02-01 00:00:00",
		RiskFactors: []pulsedive.RiskFactor{{Description: "rf"}}}
	e, err := testMapper().Observe(Observable{"ip", "x"}, r, nil, 100)
	if err != nil {
		t.Fatal(err)
	}
	want := ValidTime{StartTime: "2020-03-01T10:00:00Z", EndTime: "2020-03-01T10:00:00Z"}
	for what, got := range map[string]ValidTime{"judgement": e.Judgement.ValidTime, "risk factor indicator": e.Indicators[0].ValidTime} {
		if got != want {
			t.Errorf("%s valid_time = %+v, want %+v", what, got, want)
		}
	}
	if e.Verdict != nil {
		t.Errorf("a verdict ending where it starts, before now, is current: %+v", e.Verdict)
	}
}

func TestJudgementIDAndReason(t *testing.T) {
	tests := []struct {
		name string
		r    pulsedive.Indicator
		want string
	}{
		{"risk as sent", pulsedive.Indicator{Risk: "HIGH"}, "Pulsedive risk: HIGH"},
		{"retired with a reason", pulsedive.Indicator{Risk: "none", Retired: true, RetiredReason: "No recent activity"}, "Pulsedive risk: none (retired: No recent activity)"},
		{"retired by a number", pulsedive.Indicator{Risk: "none", Retired: true}, "Pulsedive risk: none (retired)"},
		{"a long reason is cut", pulsedive.Indicator{Risk: "low", Retired: true, RetiredReason: strings.Repeat("ü", 2000)},
			"Pulsedive risk: low (retired: " + strings.Repeat("ü", 1024-len("Pulsedive risk: low (retired: "))},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := tt.r
			r.IID, r.StampSeen = "66 01", "2020-04-01 00:00:00"
			e, err := testMapper().Observe(Observable{"ip", "x"}, &r, nil, 100)
			if err != nil {
				t.Fatal(err)
			}
			j := e.Judgement
			if j.Reason != tt.want {
				t.Errorf("reason = %q, want %q", j.Reason, tt.want)
			}
			if want := "https://pulsedive.com/indicator/?iid=66+01"; j.SourceURI != want || j.ReasonURI != want {
				t.Errorf("source_uri, reason_uri = %q, %q; want both %q", j.SourceURI, j.ReasonURI, want)
			}
			if e.Verdict == nil || e.Verdict.JudgementID != j.ID {
				t.Errorf("verdict %+v does not name its judgement %s", e.Verdict, j.ID)
			}
		})
	}
}

func TestSightingsCarryTLP(t *testing.T) {
	r := benchReport()
	obs := Observable{Type: "ip", Value: "185.141.25.242"}
	e, err := testMapper().Observe(obs, r, []Relation{{Source: Observable{"domain", "a"}, Related: obs}}, 100)
	if err != nil {
		t.Fatal(err)
	}
	for i, s := range e.Sightings {
		if s.TLP != "white" {
			t.Errorf("sighting %d (%s) tlp = %q, want white", i, s.Description, s.TLP)
		}
	}
}

func TestExternalReferences(t *testing.T) {
	r := &pulsedive.Indicator{IID: "1", Risk: "high", StampSeen: "2020-04-01 00:00:00",
		RiskFactors: []pulsedive.RiskFactor{{Description: "rf"}},
		Threats:     []pulsedive.Threat{{TID: "7", Name: "Zeus", Category: "malware", StampLinked: "2020-04-02 00:00:01"}},
		Feeds:       []pulsedive.Feed{{FID: "a&b", Name: "Feodo Tracker", Category: "malware", Organization: "abuse.ch", StampLinked: "2020-04-01 06:00:00"}},
	}
	e, err := testMapper().Observe(Observable{"ip", "x"}, r, nil, 100)
	if err != nil {
		t.Fatal(err)
	}
	type refs struct {
		IDs  []string
		Refs []ExternalReference
		URI  string
	}
	var got []refs
	for _, ind := range e.Indicators {
		got = append(got, refs{ind.ExternalIDs, ind.ExternalReferences, ind.SourceURI})
	}
	want := []refs{
		{}, // a risk factor has no record of its own in Pulsedive
		{[]string{"pulsedive-threat-7"}, []ExternalReference{{"Pulsedive", "https://pulsedive.com/threat/?tid=7", "7"}}, "https://pulsedive.com/threat/?tid=7"},
		{[]string{"pulsedive-feed-a&b"}, []ExternalReference{{"Pulsedive", "https://pulsedive.com/feed/?fid=a%26b", "a&b"}}, "https://pulsedive.com/feed/?fid=a%26b"},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("external ids and references (-want +got):\n%s", diff)
	}
	// The one-entry lists share backing arrays: appending to one must not
	// reach its neighbour.
	e.Indicators[1].Tags = append(e.Indicators[1].Tags, "extra")
	e.Indicators[1].ExternalIDs = append(e.Indicators[1].ExternalIDs, "extra")
	if e.Indicators[2].Tags[0] != "malware" || e.Indicators[2].ExternalIDs[0] != "pulsedive-feed-a&b" {
		t.Errorf("appending to the threat's lists changed the feed's: %+v", e.Indicators[2])
	}
}

func TestStringLimits(t *testing.T) {
	name := strings.Repeat("ж", 6000) // 2 bytes, 1 code point each
	r := &pulsedive.Indicator{IID: "1", Risk: "low", StampSeen: "2020-04-01 00:00:00",
		RiskFactors: []pulsedive.RiskFactor{{Description: name}},
		Threats:     []pulsedive.Threat{{TID: "1", Name: name, Category: name, StampLinked: "2020-04-01 00:00:00"}},
		Feeds:       []pulsedive.Feed{{FID: "1", Name: name, Category: "c", Organization: name, StampLinked: "2020-04-01 00:00:00"}},
	}
	e, err := testMapper().Observe(Observable{"ip", "x"}, r, nil, 100)
	if err != nil {
		t.Fatal(err)
	}
	runes := utf8.RuneCountInString
	for i, ind := range e.Indicators {
		if runes(ind.Title) != 1024 || ind.ShortDescription != ind.Title || !utf8.ValidString(ind.Title) {
			t.Errorf("indicator %d: title of %d code points (short_description equal: %v), want 1024", i, runes(ind.Title), ind.ShortDescription == ind.Title)
		}
		if runes(ind.Producer) > 1024 {
			t.Errorf("indicator %d: producer of %d code points, want at most 1024", i, runes(ind.Producer))
		}
		for _, tag := range ind.Tags {
			if runes(tag) > 1024 {
				t.Errorf("indicator %d: tag of %d code points, want at most 1024", i, runes(tag))
			}
		}
	}
	wantPrefix := []string{"", "Threat: ", "Feed: "}
	for i, s := range e.Sightings {
		if runes(s.Description) != 5000 || !strings.HasPrefix(s.Description, wantPrefix[i]) {
			t.Errorf("sighting %d: description of %d code points, want 5000 starting %q", i, runes(s.Description), wantPrefix[i])
		}
	}
	// Ids come from the whole name, so two long names that differ only
	// past the cut stay two indicators.
	if e.Indicators[0].ID != indicatorID(name) {
		t.Errorf("risk factor id is not the id of its whole name")
	}
}

func TestCut(t *testing.T) {
	tests := []struct {
		s    string
		n    int
		want string
	}{
		{"", 3, ""},
		{"abc", 3, "abc"},
		{"abcd", 3, "abc"},
		{"éé", 3, "éé"}, // 4 bytes, 2 code points
		{"ééé", 2, "éé"},
		{"a😀b", 2, "a😀"},
	}
	for _, tt := range tests {
		if got := cut(tt.s, tt.n); got != tt.want {
			t.Errorf("cut(%q, %d) = %q, want %q", tt.s, tt.n, got, tt.want)
		}
	}
}

func TestIDsEscapedInURLs(t *testing.T) {
	r := &pulsedive.Indicator{IID: "12 34", Risk: "low", StampSeen: "2020-04-01 00:00:00",
		Threats: []pulsedive.Threat{{TID: "7/../8?x=#", Name: "T", StampLinked: "2020-04-01 00:00:00"}},
	}
	e, err := testMapper().Observe(Observable{"ip", "x"}, r, nil, 100)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := e.Judgement.SourceURI, "https://pulsedive.com/indicator/?iid=12+34"; got != want {
		t.Errorf("judgement source_uri = %s, want %s", got, want)
	}
	threat := e.Indicators[0]
	if got, want := threat.SourceURI, "https://pulsedive.com/threat/?tid=7%2F..%2F8%3Fx%3D%23"; got != want {
		t.Errorf("threat source_uri = %s, want %s", got, want)
	}
	if got := threat.ExternalReferences[0].ExternalID; got != "7/../8?x=#" {
		t.Errorf("external_id = %q, want the raw tid", got)
	}
	if ref, err := BrowseReference(Observable{"ip", "x"}, "12 34"); err != nil || ref.URL != "https://pulsedive.com/indicator/?iid=12+34" {
		t.Errorf("browse url = %s, %v; want https://pulsedive.com/indicator/?iid=12+34", ref.URL, err)
	}
	// An id too long for a CTIM URI is not Pulsedive's.
	long := &pulsedive.Indicator{IID: strings.Repeat("9", 2048), Risk: "low", StampSeen: "2020-04-01 00:00:00"}
	if _, err := testMapper().Observe(Observable{"ip", "x"}, long, nil, 100); !errors.Is(err, ErrBroken) {
		t.Errorf("iid of 2048 digits: error %v, want ErrBroken", err)
	}
	if _, err := BrowseReference(Observable{"ip", "x"}, long.IID); !errors.Is(err, ErrBroken) {
		t.Errorf("iid of 2048 digits, refer's browse pivot: error %v, want ErrBroken as in observe", err)
	}
}

func TestEmptyPulsediveStrings(t *testing.T) {
	r := &pulsedive.Indicator{IID: "1", Risk: "low", StampSeen: "2020-04-01 00:00:00",
		Threats: []pulsedive.Threat{{TID: "1", Name: "T", Category: "", StampLinked: "2020-04-01 00:00:00"}},
		Feeds: []pulsedive.Feed{
			{FID: "1", Name: "Feed", Category: "", Organization: "", StampLinked: "2020-04-01 00:00:00"},
			{FID: "2", Name: " Feed Feed ", Category: "abuse", Organization: "o", StampLinked: "2020-04-01 00:00:00"},
			{FID: "3", Name: "ZeroDot1's Bad IPs Feed", Category: "abuse", Organization: "o", StampLinked: "2020-04-01 00:00:00"},
		},
	}
	e, err := testMapper().Observe(Observable{"ip", "x"}, r, nil, 100)
	if err != nil {
		t.Fatal(err)
	}
	type shape struct {
		Title, Producer string
		Tags            []string
	}
	var got []shape
	for _, ind := range e.Indicators {
		got = append(got, shape{ind.Title, ind.Producer, ind.Tags})
	}
	want := []shape{
		{"Threat: T", "Pulsedive", nil},
		{"Feed: Feed", "Pulsedive", nil},
		{"Feed:  Feed Feed ", "o", []string{"abuse"}},
		{"Feed: ZeroDot1's Bad IPs ", "o", []string{"abuse"}},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("indicators (-want +got):\n%s", diff)
	}
	if got := e.Sightings[1].Description; got != "Feed: Feed" {
		t.Errorf("feed sighting description = %q, want the indicator's title", got)
	}
}

func TestIndicatorIDCollisions(t *testing.T) {
	const name = "Zeus"
	stamp := "2020-04-01 00:00:00"
	tests := []struct {
		name string
		r    pulsedive.Indicator
		want []string // indicator ids, in order
	}{
		{"no collision", pulsedive.Indicator{
			RiskFactors: []pulsedive.RiskFactor{{Description: "rf"}},
			Threats:     []pulsedive.Threat{{TID: "1", Name: name, StampLinked: stamp}},
			Feeds:       []pulsedive.Feed{{FID: "1", Name: "F", StampLinked: stamp}},
		}, []string{indicatorID("rf"), indicatorID(name), indicatorID("F")}},
		{"risk factor, threat and feed", pulsedive.Indicator{
			RiskFactors: []pulsedive.RiskFactor{{Description: name}},
			Threats:     []pulsedive.Threat{{TID: "1", Name: name, StampLinked: stamp}},
			Feeds:       []pulsedive.Feed{{FID: "1", Name: name, StampLinked: stamp}},
		}, []string{indicatorID(name), kindIndicatorID("threat", name), kindIndicatorID("feed", name)}},
		{"threat and feed", pulsedive.Indicator{
			Threats: []pulsedive.Threat{{TID: "1", Name: name, StampLinked: stamp}},
			Feeds:   []pulsedive.Feed{{FID: "1", Name: name, StampLinked: stamp}},
		}, []string{indicatorID(name), kindIndicatorID("feed", name)}},
		{"risk factor and feed", pulsedive.Indicator{
			RiskFactors: []pulsedive.RiskFactor{{Description: name}},
			Feeds:       []pulsedive.Feed{{FID: "1", Name: name, StampLinked: stamp}},
		}, []string{indicatorID(name), kindIndicatorID("feed", name)}},
		{"many names, hashed", pulsedive.Indicator{
			RiskFactors: riskFactors(40, name),
			Threats:     append(threats(40, stamp), pulsedive.Threat{TID: "x", Name: name, StampLinked: stamp}),
			Feeds:       []pulsedive.Feed{{FID: "1", Name: "threat 7", StampLinked: stamp}},
		}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := tt.r
			r.IID, r.Risk, r.StampSeen = "1", "low", stamp
			e, err := testMapper().Observe(Observable{"ip", "x"}, &r, nil, 0)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			ids := map[string]bool{}
			for _, ind := range e.Indicators {
				got = append(got, ind.ID)
				ids[ind.ID] = true
			}
			if tt.want != nil {
				if diff := cmp.Diff(tt.want, got); diff != "" {
					t.Errorf("indicator ids (-want +got):\n%s", diff)
				}
			}
			if len(ids) != len(e.Indicators) {
				t.Errorf("%d indicators share %d ids: a sighting would point at another's indicator", len(e.Indicators), len(ids))
			}
			for i, rel := range e.Relationships {
				if rel.TargetRef != e.Indicators[i].ID || rel.SourceRef != e.Sightings[i].ID {
					t.Errorf("relationship %d ties %s to %s, want its own sighting and indicator", i, rel.SourceRef, rel.TargetRef)
				}
			}
		})
	}
	if kindIndicatorID("threat", name) != prefixedUUID5("transient:indicator-", namespaceX500, "", "threat:"+name) {
		t.Error(`a kind's id is not uuid5(X500, "<kind>:<name>")`)
	}
}

func riskFactors(n int, also string) []pulsedive.RiskFactor {
	out := []pulsedive.RiskFactor{{Description: also}}
	for i := range n {
		out = append(out, pulsedive.RiskFactor{Description: fmt.Sprintf("risk factor %d", i)})
	}
	return out
}

func threats(n int, stamp string) []pulsedive.Threat {
	var out []pulsedive.Threat
	for i := range n {
		out = append(out, pulsedive.Threat{TID: fmt.Sprint(i), Name: fmt.Sprintf("threat %d", i), StampLinked: stamp})
	}
	return out
}

// TestActiveDNSCap: 20,000 Active DNS entries give at most the entities
// limit of relations, the first ones in Pulsedive's order, and the mapping
// reads no further than it keeps: the entries past those it needs are
// unreadable, and reading one would fail the mapping.
func TestActiveDNSCap(t *testing.T) {
	const entries = 20_000
	link := func(i int) pulsedive.Link {
		// Every third entry is too old and every fifth of another type:
		// the limit counts what is kept after the filters.
		switch {
		case i%3 == 1:
			return pulsedive.Link{Type: "domain", Indicator: fmt.Sprintf("old%d.example", i), StampLinked: "2019-01-01 00:00:00"}
		case i%5 == 2:
			return pulsedive.Link{Type: "url", Indicator: fmt.Sprintf("http://u%d.example/", i), StampLinked: "2020-04-01 00:00:00"}
		}
		return pulsedive.Link{Type: "domain", Indicator: fmt.Sprintf("d%d.example", i), StampLinked: "2020-04-01 00:00:00"}
	}
	for _, limit := range []int{1, 100, 500} {
		t.Run(fmt.Sprint(limit), func(t *testing.T) {
			// The first 2·limit+1 entries hold limit that are kept.
			links := make([]pulsedive.Link, entries)
			for i := range links {
				links[i] = pulsedive.Link{Type: "domain", StampLinked: "never read"}
				if i <= 2*limit {
					links[i] = link(i)
				}
			}
			obs := Observable{Type: "ip", Value: "1.2.3.4"}
			rels, err := testMapper().Relations(obs, links, limit)
			if err != nil {
				t.Fatal(err)
			}
			var want []string
			for i := 0; len(want) < limit; i++ {
				if l := link(i); l.Type == "domain" && strings.HasPrefix(l.Indicator, "d") {
					want = append(want, l.Indicator)
				}
			}
			var got []string
			for _, r := range rels {
				got = append(got, r.Source.Value)
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("relations (-want +got):\n%s", diff)
			}
			e, err := testMapper().Observe(obs, &pulsedive.Indicator{IID: "1", Risk: "low", StampSeen: "2020-04-01 00:00:00"}, rels, limit)
			if err != nil {
				t.Fatal(err)
			}
			if n := len(e.Sightings[len(e.Sightings)-1].Relations); n != limit {
				t.Errorf("Active DNS sighting holds %d relations, want %d", n, limit)
			}
		})
	}
	// Observe caps relations it is given too.
	many := make([]Relation, 300)
	e, err := testMapper().Observe(Observable{"ip", "x"}, &pulsedive.Indicator{IID: "1", Risk: "low", StampSeen: "2020-04-01 00:00:00"}, many, 100)
	if err != nil {
		t.Fatal(err)
	}
	if n := len(e.Sightings[0].Relations); n != 100 {
		t.Errorf("Observe kept %d of 300 relations, want 100", n)
	}
}

func TestStampsOutOfCTIMRange(t *testing.T) {
	for _, stamp := range []string{"1969-12-31 23:59:59", "0000-01-01 00:00:00", "2500-01-01 00:00:00", "9999-12-31 23:59:59"} {
		t.Run(stamp, func(t *testing.T) {
			r := &pulsedive.Indicator{IID: "1", Risk: "low", StampSeen: stamp}
			if _, _, err := testMapper().Verdict(Observable{"ip", "x"}, r); !errors.Is(err, ErrBroken) {
				t.Errorf("stamp_seen %s: error %v, want ErrBroken", stamp, err)
			}
		})
	}
	for _, stamp := range []string{"1970-01-01 00:00:00", "2499-12-31 23:59:59"} {
		r := &pulsedive.Indicator{IID: "1", Risk: "low", StampSeen: stamp}
		if _, _, err := testMapper().Verdict(Observable{"ip", "x"}, r); err != nil {
			t.Errorf("stamp_seen %s: %v", stamp, err)
		}
	}
}
