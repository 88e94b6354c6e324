package ctim

import (
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/pulsedive-relay/relay/pulsedive"
)

var fixedNow = time.Date(2020, 4, 15, 0, 0, 0, 0, time.UTC)

// counterIDs returns a NewID giving "id-1", "id-2", ... so tests can name
// the ids they expect.
func counterIDs() func() string {
	n := 0
	return func() string { n++; return fmt.Sprintf("id-%d", n) }
}

func testMapper() Mapper {
	return Mapper{Now: func() time.Time { return fixedNow }, NewID: counterIDs()}
}

func TestRiskTable(t *testing.T) {
	tests := []struct {
		risk    string
		retired bool
		want    Verdict
		sev     string
	}{
		{"none", false, Verdict{Disposition: 1, DispositionName: "Clean"}, "None"},
		{"none", true, Verdict{Disposition: 5, DispositionName: "Unknown"}, "Unknown"},
		{"unknown", false, Verdict{Disposition: 5, DispositionName: "Unknown"}, "Unknown"},
		{"retired", false, Verdict{Disposition: 5, DispositionName: "Unknown"}, "Unknown"},
		{"low", true, Verdict{Disposition: 3, DispositionName: "Suspicious"}, "Low"},
		{"medium", false, Verdict{Disposition: 3, DispositionName: "Suspicious"}, "Medium"},
		{"high", false, Verdict{Disposition: 2, DispositionName: "Malicious"}, "High"},
		{"critical", true, Verdict{Disposition: 2, DispositionName: "Malicious"}, "High"},
		{"HIGH", false, Verdict{Disposition: 2, DispositionName: "Malicious"}, "High"},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%s/retired=%v", tt.risk, tt.retired), func(t *testing.T) {
			r := &pulsedive.Indicator{IID: "1", Risk: tt.risk, Retired: tt.retired, StampSeen: "2020-04-01 00:00:00"}
			obs := Observable{Type: "ip", Value: "1.2.3.4"}
			e, err := testMapper().Observe(obs, r, nil, 100)
			if err != nil {
				t.Fatal(err)
			}
			if e.Verdict == nil {
				t.Fatal("no verdict for a report seen two weeks ago")
			}
			got := *e.Verdict
			if got.Disposition != tt.want.Disposition || got.DispositionName != tt.want.DispositionName {
				t.Errorf("verdict = %d %s, want %d %s", got.Disposition, got.DispositionName, tt.want.Disposition, tt.want.DispositionName)
			}
			if e.Judgement.Severity != tt.sev {
				t.Errorf("judgement severity = %q, want %q", e.Judgement.Severity, tt.sev)
			}
		})
	}
}

func TestValidTime(t *testing.T) {
	tests := []struct {
		name, seen, retired string
		want                ValidTime
	}{
		{"no retirement: 91 days 6 hours", "2020-04-10 08:30:00", "", ValidTime{"2020-04-10T08:30:00Z", "2020-07-10T14:30:00Z"}},
		{"retired stamp ends it", "2019-10-01 00:00:00", "2020-01-01 00:00:00", ValidTime{"2019-10-01T00:00:00Z", "2020-01-01T00:00:00Z"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v, _, err := testMapper().Verdict(Observable{"ip", "x"}, &pulsedive.Indicator{IID: "1", Risk: "low", StampSeen: tt.seen, StampRetired: tt.retired})
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, v.ValidTime); diff != "" {
				t.Errorf("valid_time (-want +got):\n%s", diff)
			}
		})
	}
}

func TestBrokenReports(t *testing.T) {
	good := func() *pulsedive.Indicator {
		return &pulsedive.Indicator{IID: "1", Risk: "low", StampSeen: "2020-01-01 00:00:00",
			Threats: []pulsedive.Threat{{TID: "1", Name: "T", Category: "c", StampLinked: "2020-01-01 00:00:00"}},
			Feeds:   []pulsedive.Feed{{FID: "1", Name: "F", Category: "c", Organization: "o", StampLinked: "2020-01-01 00:00:00"}}}
	}
	tests := []struct {
		name   string
		break_ func(r *pulsedive.Indicator)
	}{
		{"no risk", func(r *pulsedive.Indicator) { r.Risk = "" }},
		{"unknown risk", func(r *pulsedive.Indicator) { r.Risk = "extreme" }},
		{"no iid", func(r *pulsedive.Indicator) { r.IID = "" }},
		{"no stamp_seen", func(r *pulsedive.Indicator) { r.StampSeen = "" }},
		{"bad stamp_seen", func(r *pulsedive.Indicator) { r.StampSeen = "2020-01-01T00:00:00Z" }},
		{"bad stamp_retired", func(r *pulsedive.Indicator) { r.StampRetired = "yesterday" }},
		{"risk factor without description", func(r *pulsedive.Indicator) { r.RiskFactors = []pulsedive.RiskFactor{{}} }},
		{"threat without stamp", func(r *pulsedive.Indicator) { r.Threats[0].StampLinked = "" }},
		{"threat without name", func(r *pulsedive.Indicator) { r.Threats[0].Name = "" }},
		{"feed without fid", func(r *pulsedive.Indicator) { r.Feeds[0].FID = "" }},
	}
	if _, err := testMapper().Observe(Observable{"ip", "x"}, good(), nil, 100); err != nil {
		t.Fatalf("the good report fails: %v", err)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := good()
			tt.break_(r)
			_, err := testMapper().Observe(Observable{"ip", "x"}, r, nil, 100)
			if !errors.Is(err, ErrBroken) {
				t.Errorf("Observe error = %v, want ErrBroken", err)
			}
		})
	}
}

func TestObserveOrderAndFields(t *testing.T) {
	r := &pulsedive.Indicator{
		IID: "5401", Risk: "high", StampSeen: "2020-04-10 08:30:00",
		RiskFactors: []pulsedive.RiskFactor{{Description: "found in threat feeds"}},
		Threats: []pulsedive.Threat{
			{TID: "41", Name: "Emotet", Category: "malware", StampLinked: "2020-03-01 12:00:00"},
			{TID: "7", Name: "Zeus", Category: "malware", StampLinked: "2020-04-02 00:00:01"},
		},
		Feeds: []pulsedive.Feed{{FID: "60", Name: "ZeroDot1's Bad IPs Feed", Category: "abuse", Organization: "ZeroDot1", StampLinked: "2020-01-15 10:00:00"}},
	}
	obs := Observable{Type: "ip", Value: "185.141.25.242"}
	e, err := testMapper().Observe(obs, r, nil, 100)
	if err != nil {
		t.Fatal(err)
	}
	var titles []string
	for _, ind := range e.Indicators {
		titles = append(titles, ind.Title)
	}
	wantTitles := []string{"found in threat feeds", "Threat: Zeus", "Threat: Emotet", "Feed: ZeroDot1's Bad IPs "}
	if diff := cmp.Diff(wantTitles, titles); diff != "" {
		t.Errorf("indicator order (-want +got):\n%s", diff)
	}
	if r.Threats[0].Name != "Emotet" {
		t.Error("Observe reordered the report's threats; cached reports must stay untouched")
	}
	if got, want := e.Indicators[0].ID, "transient:indicator-de577757-b53c-5b49-8e8d-508420e9f63b"; got != want {
		t.Errorf("risk factor id = %s, want %s", got, want)
	}
	if got := e.Indicators[3].Producer; got != "ZeroDot1" {
		t.Errorf("feed producer = %q, want the organization", got)
	}
	for i, rel := range e.Relationships {
		if rel.SourceRef != e.Sightings[i].ID || rel.TargetRef != e.Indicators[i].ID {
			t.Errorf("relationship %d ties %s to %s, want sighting %s to indicator %s", i, rel.SourceRef, rel.TargetRef, e.Sightings[i].ID, e.Indicators[i].ID)
		}
	}
	if got := e.Relationships[3].RelationshipType; got != "member-of" {
		t.Errorf("feed relationship = %q, want member-of", got)
	}
	if e.Sightings[3].Severity != "" {
		t.Errorf("feed sighting has severity %q, want none", e.Sightings[3].Severity)
	}
}

func TestEntitiesLimit(t *testing.T) {
	r := &pulsedive.Indicator{IID: "1", Risk: "low", StampSeen: "2020-03-31 14:47:36"}
	for i := range 5 {
		r.RiskFactors = append(r.RiskFactors, pulsedive.RiskFactor{Description: fmt.Sprintf("rf %d", i)})
	}
	obs := Observable{Type: "domain", Value: "example.com"}
	relations := []Relation{{Source: obs, Related: Observable{"ip", "1.1.1.1"}}}
	tests := []struct {
		limit                 int
		indicators, sightings int
		activeDNS             bool
	}{
		{limit: 3, indicators: 3, sightings: 3},
		{limit: 5, indicators: 5, sightings: 5},
		{limit: 6, indicators: 5, sightings: 6, activeDNS: true},
		{limit: 100, indicators: 5, sightings: 6, activeDNS: true},
		{limit: 0, indicators: 5, sightings: 6, activeDNS: true},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprint(tt.limit), func(t *testing.T) {
			e, err := testMapper().Observe(obs, r, relations, tt.limit)
			if err != nil {
				t.Fatal(err)
			}
			if len(e.Indicators) != tt.indicators || len(e.Sightings) != tt.sightings || len(e.Relationships) != tt.indicators {
				t.Errorf("got %d indicators, %d sightings, %d relationships; want %d, %d, %d",
					len(e.Indicators), len(e.Sightings), len(e.Relationships), tt.indicators, tt.sightings, tt.indicators)
			}
			hasDNS := len(e.Sightings) > 0 && e.Sightings[len(e.Sightings)-1].Description == "Active DNS"
			if hasDNS != tt.activeDNS {
				t.Errorf("Active DNS sighting present = %v, want %v", hasDNS, tt.activeDNS)
			}
		})
	}
}

func TestRelations(t *testing.T) {
	links := []pulsedive.Link{
		{Type: "ip", Indicator: "10.0.0.1", StampLinked: "2020-04-01 00:00:00"},
		{Type: "ipv6", Indicator: "::1", StampLinked: "2020-04-01 00:00:00"},
		{Type: "domain", Indicator: "a.example", StampLinked: "2020-04-01 00:00:00"},
		{Type: "domain", Indicator: "old.example", StampLinked: "2020-01-16 00:00:00"}, // exactly 90 days: out
		{Type: "domain", Indicator: "edge.example", StampLinked: "2020-01-16 00:00:01"},
		{Type: "url", Indicator: "http://a.example/", StampLinked: "2020-04-01 00:00:00"},
	}
	tests := []struct {
		obs  Observable
		want []string // source -> related
	}{
		{Observable{"domain", "d.example"}, []string{"d.example->10.0.0.1", "d.example->::1"}},
		{Observable{"ip", "1.2.3.4"}, []string{"a.example->1.2.3.4", "edge.example->1.2.3.4"}},
		{Observable{"ipv6", "2001::1"}, []string{"a.example->2001::1", "edge.example->2001::1"}},
		{Observable{"url", "http://x/"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.obs.Type, func(t *testing.T) {
			rels, err := testMapper().Relations(tt.obs, links, 0)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, r := range rels {
				got = append(got, r.Source.Value+"->"+r.Related.Value)
				if r.Relation != "Resolved_To" || r.Origin != "Pulsedive Enrichment Module" {
					t.Errorf("relation fields = %+v", r)
				}
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("relations (-want +got):\n%s", diff)
			}
		})
	}
	if _, err := testMapper().Relations(Observable{"ip", "x"}, []pulsedive.Link{{Type: "domain", Indicator: "a", StampLinked: "soon"}}, 0); !errors.Is(err, ErrBroken) {
		t.Errorf("bad stamp: error = %v, want ErrBroken", err)
	}
}

func TestBundleDeduplicatesIndicators(t *testing.T) {
	m := testMapper()
	r := &pulsedive.Indicator{IID: "1", Risk: "low", StampSeen: "2020-04-01 00:00:00", RiskFactors: []pulsedive.RiskFactor{{Description: "shared"}, {Description: "own"}}}
	var b Bundle
	for _, v := range []string{"a.example", "b.example"} {
		e, err := m.Observe(Observable{"domain", v}, r, nil, 100)
		if err != nil {
			t.Fatal(err)
		}
		b.Add(e)
	}
	if len(b.Indicators) != 2 || len(b.Sightings) != 4 || len(b.Relationships) != 4 || len(b.Verdicts) != 2 {
		t.Fatalf("bundle holds %d indicators, %d sightings, %d relationships, %d verdicts; want 2, 4, 4, 2",
			len(b.Indicators), len(b.Sightings), len(b.Relationships), len(b.Verdicts))
	}
	if b.Relationships[2].TargetRef != b.Indicators[0].ID {
		t.Error("the second observable's relationship does not point at the shared indicator")
	}
	got, err := json.Marshal(&b)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(got), `"indicators":{"count":2,`) {
		t.Errorf("encoded bundle lacks the counted indicators: %s", got)
	}
	empty, _ := json.Marshal(&Bundle{})
	if string(empty) != "{}" {
		t.Errorf("empty bundle encodes as %s, want {}", empty)
	}
}

func TestReferences(t *testing.T) {
	obs := Observable{Type: "ipv6", Value: "2001:420:1101:1::185"}
	s := SearchReference(obs)
	if want := "ref-pulsedive-search-ipv6-2001%3A420%3A1101%3A1%3A%3A185"; s.ID != want {
		t.Errorf("search id = %s, want %s", s.ID, want)
	}
	if s.Title != "Search for this IPv6" || s.Description != "Lookup this IPv6 on Pulsedive" {
		t.Errorf("search texts = %q / %q", s.Title, s.Description)
	}
	b, err := BrowseReference(Observable{Type: "url", Value: "http://a b/~x_y.z-"}, "77")
	if err != nil {
		t.Fatal(err)
	}
	if want := "ref-pulsedive-detail-url-http%3A%2F%2Fa%20b%2F~x_y.z-"; b.ID != want {
		t.Errorf("browse id = %s, want %s", b.ID, want)
	}
	if b.URL != "https://pulsedive.com/indicator/?iid=77" || b.Title != "Browse URL" {
		t.Errorf("browse = %+v", b)
	}
}

func TestBrowseQueryEscapesValue(t *testing.T) {
	q := string(browseQuery(`a"}],"x":["\`))
	var v map[string]any
	if err := json.Unmarshal([]byte(q), &v); err != nil {
		t.Fatalf("query with a hostile value is not JSON: %v\n%s", err, q)
	}
	ind := v["indicator"].([]any)[0].(map[string]any)["raw"].(map[string]any)["value"]
	if ind != `a"}],"x":["\` {
		t.Errorf("value read back = %q", ind)
	}
	if _, extra := v["x"]; extra {
		t.Error("the value injected a key into the query")
	}
}

var uuidV4 = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)

func TestUUIDs(t *testing.T) {
	if got, want := UUID5(namespaceX500, "malware distribution"), "4305f245-bc05-547b-a255-7775c468eba2"; got != want {
		t.Errorf("UUID5 = %s, want %s", got, want)
	}
	// RandomUUID is the tests' generator; fastRandomUUID the relay's own,
	// behind a Mapper without NewID.
	for name, random := range map[string]func() string{
		"RandomUUID":     RandomUUID,
		"fastRandomUUID": func() string { return string(appendUUID(nil, fastRandomUUID())) },
	} {
		seen := map[string]bool{}
		for range 1000 {
			u := random()
			if !uuidV4.MatchString(u) {
				t.Fatalf("%s() = %s, not a version 4 UUID", name, u)
			}
			if seen[u] {
				t.Fatalf("%s repeated %s", name, u)
			}
			seen[u] = true
		}
	}
}
