package ctim

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/pulsedive-relay/relay/pulsedive"
)

// benchReport looks like a busy Pulsedive indicator: a few risk factors,
// threats and feeds, the shape of the 185.141.25.242 fixture.
func benchReport() *pulsedive.Indicator {
	r := &pulsedive.Indicator{IID: "5401", Risk: "high", StampSeen: "2020-04-10 08:30:00"}
	for i := range 3 {
		r.RiskFactors = append(r.RiskFactors, pulsedive.RiskFactor{Description: fmt.Sprintf("risk factor %d", i)})
	}
	for i := range 2 {
		r.Threats = append(r.Threats, pulsedive.Threat{TID: fmt.Sprint(i), Name: fmt.Sprintf("Threat %d", i), Category: "malware", StampLinked: "2020-03-01 12:00:00"})
		r.Feeds = append(r.Feeds, pulsedive.Feed{FID: fmt.Sprint(i), Name: fmt.Sprintf("Feed %d", i), Category: "abuse", Organization: "org", StampLinked: "2020-01-15 10:00:00"})
	}
	return r
}

var benchLinks = []pulsedive.Link{
	{Type: "domain", Indicator: "bad-cdn.example", StampLinked: "2020-04-09 00:00:00"},
	{Type: "domain", Indicator: "mail.bad-cdn.example", StampLinked: "2020-03-20 12:00:00"},
}

func BenchmarkObserve(b *testing.B) {
	m := Mapper{Now: func() time.Time { return fixedNow }, NewID: RandomUUID}
	obs := Observable{Type: "ip", Value: "185.141.25.242"}
	r := benchReport()
	b.ReportAllocs()
	for b.Loop() {
		rels, err := m.Relations(obs, benchLinks, 100)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := m.Observe(obs, r, rels, 100); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkBundleJSON(b *testing.B) {
	m := Mapper{Now: func() time.Time { return fixedNow }, NewID: RandomUUID}
	obs := Observable{Type: "ip", Value: "185.141.25.242"}
	rels, _ := m.Relations(obs, benchLinks, 100)
	e, err := m.Observe(obs, benchReport(), rels, 100)
	if err != nil {
		b.Fatal(err)
	}
	var bundle Bundle
	bundle.Add(e)
	b.ReportAllocs()
	for b.Loop() {
		out, err := json.Marshal(&bundle)
		if err != nil {
			b.Fatal(err)
		}
		b.SetBytes(int64(len(out)))
	}
}

func BenchmarkSearchReference(b *testing.B) {
	obs := Observable{Type: "url", Value: "http://51jianli.cn/images"}
	b.ReportAllocs()
	for b.Loop() {
		_ = SearchReference(obs)
	}
}
