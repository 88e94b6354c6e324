package ctimcheck_test

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/pulsedive-relay/relay/ctim"
	"github.com/pulsedive-relay/relay/ctim/ctimcheck"
	"github.com/pulsedive-relay/relay/pulsedive"
)

var fixedNow = time.Date(2020, 4, 15, 0, 0, 0, 0, time.UTC)

// validAnswer is an observe answer of the mapping for two observables
// sharing indicators, with every kind of entity and an Active DNS
// sighting.
func validAnswer(t *testing.T) []byte {
	t.Helper()
	m := ctim.Mapper{Now: func() time.Time { return fixedNow }}
	ind := &pulsedive.Indicator{
		IID: "5401", Risk: "high", StampSeen: "2020-04-10 08:30:00", Retired: true, RetiredReason: "why not",
		RiskFactors: []pulsedive.RiskFactor{{Description: "malware distribution"}, {Description: "Zeus"}},
		Threats:     []pulsedive.Threat{{TID: "7", Name: "Zeus", Category: "malware", StampLinked: "2020-04-02 00:00:01"}},
		Feeds:       []pulsedive.Feed{{FID: "2", Name: "Feodo Tracker", Category: "malware", Organization: "abuse.ch", StampLinked: "2020-04-01 06:00:00"}},
	}
	links := &pulsedive.Links{ActiveDNS: []pulsedive.Link{{Type: "domain", Indicator: "bad-cdn.example", StampLinked: "2020-04-09 00:00:00"}}}
	var b ctim.Bundle
	for _, obs := range []ctim.Observable{{Type: "ip", Value: "185.141.25.242"}, {Type: "ip", Value: "185.141.25.243"}} {
		o, err := m.Observation(obs, ind, links, 100)
		if err != nil {
			t.Fatal(err)
		}
		if err := o.LinksErr(); err != nil {
			t.Fatal(err)
		}
		b.Add(m.Entities(o))
	}
	body, _ := b.StreamJSON([]byte(`{"data":`), 0, nil) // never flushed: no error
	return append(body, '}')
}

func TestValidAnswerPasses(t *testing.T) {
	for name, body := range map[string][]byte{
		"observe":      validAnswer(t),
		"empty":        []byte(`{"data":{}}`),
		"errors only":  []byte(`{"errors":[{"type":"fatal","code":"key error","message":"x"}]}`),
		"deliberate":   []byte(`{"data":{"verdicts":{"count":1,"docs":[{"type":"verdict","observable":{"type":"ip","value":"1.2.3.4"},"disposition":5,"disposition_name":"Unknown","valid_time":{"start_time":"2020-04-10T00:00:00Z","end_time":"2020-07-10T06:00:00Z"}}]}}}`),
		"long id form": []byte(`{"data":{"relationships":{"count":1,"docs":[{"id":"https://private.intel.amp.cisco.com:443/ctia/relationship/relationship-4305f245-bc05-547b-a255-7775c468eba2","type":"relationship","schema_version":"1.0.22","relationship_type":"related-to","source_ref":"https://private.intel.amp.cisco.com:443/ctia/relationship/relationship-4305f245-bc05-547b-a255-7775c468eba2","target_ref":"https://private.intel.amp.cisco.com:443/ctia/relationship/relationship-4305f245-bc05-547b-a255-7775c468eba2"}]}}}`),
	} {
		t.Run(name, func(t *testing.T) {
			if problems := ctimcheck.Check(body, ctimcheck.Options{Now: fixedNow}); len(problems) > 0 {
				t.Errorf("a valid answer has problems:\n%s", join(problems))
			}
		})
	}
}

// TestEachRuleFails breaks a valid answer on purpose, one rule at a time,
// and checks the checker names that rule and only that one.
func TestEachRuleFails(t *testing.T) {
	long := func(n int) string { return strings.Repeat("é", n) } // 2 bytes, 1 code point
	tests := []struct {
		name   string
		rule   string
		break_ func(a answer)
	}{
		{"top-level key", ctimcheck.RuleClosedKeys, func(a answer) { a["extra"] = 1 }},
		{"unknown entity list", ctimcheck.RuleClosedKeys, func(a answer) { a.data()["threats"] = map[string]any{} }},
		{"key outside Judgement", ctimcheck.RuleClosedKeys, func(a answer) { a.doc("judgements", 0)["colour"] = "red" }},
		{"key outside Verdict", ctimcheck.RuleClosedKeys, func(a answer) { a.doc("verdicts", 0)["id"] = "x" }},
		{"key outside Observable", ctimcheck.RuleClosedKeys, func(a answer) { obj(a.doc("sightings", 0)["observables"].([]any)[0])["port"] = "80" }},
		{"key outside a list", ctimcheck.RuleClosedKeys, func(a answer) { obj(a.data()["sightings"])["total"] = 9 }},
		{"judgement without priority", ctimcheck.RuleRequiredKeys, func(a answer) { delete(a.doc("judgements", 0), "priority") }},
		{"indicator without producer", ctimcheck.RuleRequiredKeys, func(a answer) { delete(a.doc("indicators", 0), "producer") }},
		{"sighting without observed_time", ctimcheck.RuleRequiredKeys, func(a answer) { delete(a.doc("sightings", 0), "observed_time") }},
		{"verdict without valid_time", ctimcheck.RuleRequiredKeys, func(a answer) { delete(a.doc("verdicts", 0), "valid_time") }},
		{"relation without related", ctimcheck.RuleRequiredKeys, func(a answer) { delete(a.relation(), "related") }},
		{"external reference without source_name", ctimcheck.RuleRequiredKeys, func(a answer) { delete(a.externalRef(), "source_name") }},
		{"tlp", ctimcheck.RuleVocabulary, func(a answer) { a.doc("sightings", 1)["tlp"] = "blue" }},
		{"judgement severity", ctimcheck.RuleVocabulary, func(a answer) { a.doc("judgements", 0)["severity"] = "Severe" }},
		{"indicator severity is HighMedLow", ctimcheck.RuleVocabulary, func(a answer) { a.doc("indicators", 1)["severity"] = "Critical" }},
		{"confidence", ctimcheck.RuleVocabulary, func(a answer) { a.doc("sightings", 0)["confidence"] = "Sure" }},
		{"relationship type", ctimcheck.RuleVocabulary, func(a answer) { a.doc("relationships", 0)["relationship_type"] = "sees" }},
		{"observable type", ctimcheck.RuleVocabulary, func(a answer) { obj(a.doc("sightings", 0)["observables"].([]any)[0])["type"] = "ipv4" }},
		{"observed relation", ctimcheck.RuleVocabulary, func(a answer) { a.relation()["relation"] = "Resolves" }},
		{"disposition number", ctimcheck.RuleVocabulary, func(a answer) {
			a.doc("verdicts", 0)["disposition"] = 6.0
			a.doc("judgements", 0)["disposition"] = 6.0
		}},
		{"disposition name", ctimcheck.RuleVocabulary, func(a answer) {
			a.doc("verdicts", 0)["disposition_name"] = "Bad"
			a.doc("judgements", 0)["disposition_name"] = "Bad"
		}},
		{"priority above 100", ctimcheck.RuleVocabulary, func(a answer) { a.doc("judgements", 0)["priority"] = 101.0 }},
		{"schema version", ctimcheck.RuleVocabulary, func(a answer) { a.doc("relationships", 0)["schema_version"] = "latest" }},
		{"type of the entity", ctimcheck.RuleVocabulary, func(a answer) { a.doc("verdicts", 0)["type"] = "judgement" }},
		{"count below zero", ctimcheck.RuleVocabulary, func(a answer) { a.doc("sightings", 0)["count"] = -1.0 }},
		{"count not a number", ctimcheck.RuleShape, func(a answer) { a.doc("sightings", 0)["count"] = "1" }},
		{"tags not a list", ctimcheck.RuleShape, func(a answer) { a.doc("indicators", 2)["tags"] = "malware" }},
		{"data not an object", ctimcheck.RuleShape, func(a answer) { a["data"] = []any{} }},
		{"title", ctimcheck.RuleStringLimit, func(a answer) { a.doc("indicators", 0)["title"] = long(1025) }},
		{"short_description", ctimcheck.RuleStringLimit, func(a answer) { a.doc("indicators", 0)["short_description"] = long(2049) }},
		{"description", ctimcheck.RuleStringLimit, func(a answer) { a.doc("sightings", 0)["description"] = long(5001) }},
		{"reason", ctimcheck.RuleStringLimit, func(a answer) { a.doc("judgements", 0)["reason"] = long(1025) }},
		{"producer", ctimcheck.RuleStringLimit, func(a answer) { a.doc("indicators", 3)["producer"] = long(1025) }},
		{"tag", ctimcheck.RuleStringLimit, func(a answer) { a.doc("indicators", 2)["tags"] = []any{long(1025)} }},
		{"sighting id", ctimcheck.RuleIDShape, func(a answer) { a.doc("sightings", 4)["id"] = "sighting-1" }}, // Active DNS: no ref to it
		{"id of another type", ctimcheck.RuleIDShape, func(a answer) {
			a.doc("relationships", 0)["id"] = "transient:sighting-4305f245-bc05-547b-a255-7775c468eba2"
		}},
		{"reference", ctimcheck.RuleIDShape, func(a answer) { a.doc("relationships", 0)["target_ref"] = "Zeus" }},
		{"id too long", ctimcheck.RuleIDShape, func(a answer) {
			a.doc("relationships", 0)["id"] = "https://" + strings.Repeat("a", 2048) + "/ctia/relationship/relationship-4305f245-bc05-547b-a255-7775c468eba2"
		}},
		{"space in a URI", ctimcheck.RuleURIShape, func(a answer) { a.doc("judgements", 0)["source_uri"] = "https://pulsedive.com/indicator/?iid=12 34" }},
		{"URI without scheme", ctimcheck.RuleURIShape, func(a answer) { a.doc("judgements", 0)["reason_uri"] = "pulsedive.com/indicator/?iid=1" }},
		{"URI with a bad escape", ctimcheck.RuleURIShape, func(a answer) { a.doc("sightings", 0)["source_uri"] = "https://pulsedive.com/?iid=%zz" }},
		{"URI too long", ctimcheck.RuleURIShape, func(a answer) { a.externalRef()["url"] = "https://pulsedive.com/?q=" + strings.Repeat("1", 2048) }},
		{"time not ISO 8601", ctimcheck.RuleTime, func(a answer) { a.validTime("judgements", 0)["start_time"] = "2020-04-10 08:30:00" }},
		{"time before 1970", ctimcheck.RuleTime, func(a answer) {
			ot := obj(a.doc("sightings", 0)["observed_time"])
			ot["start_time"], ot["end_time"] = "1969-12-31T00:00:00Z", "1969-12-31T00:00:00Z"
		}},
		{"valid_time ends before it starts", ctimcheck.RuleTimeOrder, func(a answer) { a.validTime("indicators", 0)["end_time"] = "2020-04-10T08:29:59Z" }},
		{"observed_time ends before it starts", ctimcheck.RuleTimeOrder, func(a answer) {
			obj(a.doc("sightings", 0)["observed_time"])["end_time"] = "2019-01-01T00:00:00Z"
		}},
		{"disposition and name disagree", ctimcheck.RuleDisposition, func(a answer) { a.doc("judgements", 1)["disposition_name"] = "Clean" }},
		{"verdict differs from its judgement", ctimcheck.RuleDisposition, func(a answer) {
			a.doc("verdicts", 0)["disposition"], a.doc("verdicts", 0)["disposition_name"] = 1.0, "Clean"
		}},
		{"expired verdict", ctimcheck.RuleCurrent, func(a answer) { a.validTime("verdicts", 0)["end_time"] = "2020-04-15T00:00:00Z" }},
		{"relationship to nothing", ctimcheck.RuleRefResolves, func(a answer) {
			a.doc("relationships", 0)["target_ref"] = "transient:indicator-00000000-0000-5000-8000-000000000000"
		}},
		{"judgement_id naming nothing", ctimcheck.RuleRefResolves, func(a answer) {
			a.doc("verdicts", 0)["judgement_id"] = "transient:judgement-4305f245-bc05-547b-a255-7775c468eba2"
		}},
		{"judgement_id of another observable", ctimcheck.RuleRefResolves, func(a answer) {
			a.doc("verdicts", 0)["judgement_id"] = a.doc("judgements", 1)["id"]
		}},
		{"two sightings, one id", ctimcheck.RuleUniqueID, func(a answer) { a.doc("sightings", 4)["id"] = a.doc("sightings", 0)["id"] }},
		{"count off", ctimcheck.RuleCount, func(a answer) { obj(a.data()["indicators"])["count"] = 3.0 }},
		{"empty list", ctimcheck.RuleCount, func(a answer) { a.data()["verdicts"] = map[string]any{"count": 0.0, "docs": []any{}} }},
	}
	seen := map[string]bool{}
	for _, tt := range tests {
		seen[tt.rule] = true
		t.Run(tt.name, func(t *testing.T) {
			a := decode(t, validAnswer(t))
			tt.break_(a)
			problems := ctimcheck.CheckValue(map[string]any(a), ctimcheck.Options{Now: fixedNow})
			if len(problems) == 0 {
				t.Fatalf("no problem found; want %s", tt.rule)
			}
			for _, p := range problems {
				if p.Rule != tt.rule {
					t.Errorf("found %s; want %s only", p, tt.rule)
				}
			}
		})
	}
	t.Run("json", func(t *testing.T) {
		for _, body := range []string{`{"data":`, `{} {}`, ``} {
			problems := ctimcheck.Check([]byte(body), ctimcheck.Options{})
			if len(problems) != 1 || problems[0].Rule != ctimcheck.RuleJSON {
				t.Errorf("Check(%q) = %v, want one json problem", body, problems)
			}
		}
	})
	seen[ctimcheck.RuleJSON] = true
	for _, rule := range []string{ctimcheck.RuleJSON, ctimcheck.RuleShape, ctimcheck.RuleClosedKeys, ctimcheck.RuleRequiredKeys,
		ctimcheck.RuleVocabulary, ctimcheck.RuleStringLimit, ctimcheck.RuleIDShape, ctimcheck.RuleURIShape, ctimcheck.RuleTime,
		ctimcheck.RuleTimeOrder, ctimcheck.RuleDisposition, ctimcheck.RuleCurrent, ctimcheck.RuleRefResolves,
		ctimcheck.RuleUniqueID, ctimcheck.RuleCount} {
		if !seen[rule] {
			t.Errorf("no case breaks rule %s", rule)
		}
	}
}

// TestZeroClockSkipsCurrent: without the answer's clock, an old verdict is
// no problem.
func TestZeroClockSkipsCurrent(t *testing.T) {
	a := decode(t, validAnswer(t))
	a.validTime("verdicts", 0)["end_time"] = "2020-04-11T00:00:00Z"
	if problems := ctimcheck.CheckValue(map[string]any(a), ctimcheck.Options{}); len(problems) > 0 {
		t.Errorf("problems without a clock:\n%s", join(problems))
	}
}

// answer is a decoded answer with helpers to reach into it.
type answer map[string]any

func decode(t *testing.T, body []byte) answer {
	t.Helper()
	var a answer
	if err := json.Unmarshal(body, &a); err != nil {
		t.Fatal(err)
	}
	return a
}

func obj(v any) map[string]any { return v.(map[string]any) }

func (a answer) data() map[string]any { return obj(a["data"]) }

func (a answer) doc(kind string, i int) map[string]any {
	return obj(obj(a.data()[kind])["docs"].([]any)[i])
}

func (a answer) validTime(kind string, i int) map[string]any {
	return obj(a.doc(kind, i)["valid_time"])
}

// relation is the first relation of the first Active DNS sighting.
func (a answer) relation() map[string]any {
	for _, s := range obj(a.data()["sightings"])["docs"].([]any) {
		if rels, ok := obj(s)["relations"].([]any); ok {
			return obj(rels[0])
		}
	}
	panic("no Active DNS sighting")
}

// externalRef is the first external reference of the answer.
func (a answer) externalRef() map[string]any {
	for _, ind := range obj(a.data()["indicators"])["docs"].([]any) {
		if refs, ok := obj(ind)["external_references"].([]any); ok {
			return obj(refs[0])
		}
	}
	panic("no external reference")
}

func join(problems []ctimcheck.Problem) string {
	var b strings.Builder
	for _, p := range problems {
		fmt.Fprintln(&b, p)
	}
	return b.String()
}
