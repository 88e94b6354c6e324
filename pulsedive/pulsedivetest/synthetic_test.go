package pulsedivetest_test

import (
	"bytes"
	"encoding/json"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/pulsedive-relay/relay/pulsedive/pulsedivetest"
)

type synthIndicator struct {
	IID         int64  `json:"iid"`
	Type        string `json:"type"`
	Indicator   string `json:"indicator"`
	Risk        string `json:"risk"`
	Retired     string `json:"retired"`
	StampSeen   string `json:"stamp_seen"`
	RiskFactors []struct {
		Description string `json:"description"`
	} `json:"riskfactors"`
	Threats []struct {
		Name        string `json:"name"`
		StampLinked string `json:"stamp_linked"`
	} `json:"threats"`
	Feeds []struct {
		Name        string `json:"name"`
		StampLinked string `json:"stamp_linked"`
	} `json:"feeds"`
}

type synthLinks struct {
	ActiveDNS []struct {
		Indicator   string `json:"indicator"`
		Type        string `json:"type"`
		StampLinked string `json:"stamp_linked"`
	} `json:"Active DNS"`
}

func TestSyntheticIsDeterministic(t *testing.T) {
	for _, v := range []string{"example.com", "10.1.2.3", "2001:db8::1", "http://x.example/a"} {
		a, b := pulsedivetest.Synthetic(v), pulsedivetest.Synthetic(v)
		if !bytes.Equal(a.Info.Body, b.Info.Body) || !bytes.Equal(a.Links.Body, b.Links.Body) {
			t.Errorf("Synthetic(%q) differs between calls", v)
		}
	}
	if bytes.Equal(pulsedivetest.Synthetic("a.example").Info.Body, pulsedivetest.Synthetic("b.example").Info.Body) {
		t.Error("two values gave the same document")
	}
}

// TestSyntheticLooksLikePulsedive checks, over many values of each type,
// the properties the relay's mapping relies on.
func TestSyntheticLooksLikePulsedive(t *testing.T) {
	clock := time.Date(2020, 4, 15, 0, 0, 0, 0, time.UTC)
	windowStart := clock.Add(-90 * 24 * time.Hour)
	earliest := time.Date(2018, 1, 1, 0, 0, 0, 0, time.UTC)
	risks := []string{"none", "unknown", "low", "medium", "high", "critical"}
	pairs := map[string][]string{"domain": {"ip", "ipv6"}, "ip": {"domain"}, "ipv6": {"domain"}, "url": nil}

	values := map[string][]string{}
	for i := range 200 {
		values["domain"] = append(values["domain"], "host"+string(rune('a'+i%26))+string(rune('a'+i/26))+".example")
		values["ip"] = append(values["ip"], "10.0."+strconv.Itoa(i/256)+"."+strconv.Itoa(i%256))
		values["ipv6"] = append(values["ipv6"], "2001:db8::"+strconv.Itoa(i+1))
		values["url"] = append(values["url"], "http://site.example/"+strconv.Itoa(i))
	}
	parse := func(s string) time.Time {
		t.Helper()
		ts, err := time.Parse(time.DateTime, s)
		if err != nil {
			t.Fatalf("stamp %q: %v", s, err)
		}
		return ts
	}

	for typ, vs := range values {
		t.Run(typ, func(t *testing.T) {
			withRecent := 0
			for _, v := range vs {
				e := pulsedivetest.Synthetic(v)
				if e.Info.Status != 200 || e.Links.Status != 200 {
					t.Fatalf("%s: statuses %d/%d", v, e.Info.Status, e.Links.Status)
				}
				var ind synthIndicator
				if err := json.Unmarshal(e.Info.Body, &ind); err != nil {
					t.Fatalf("%s: info: %v", v, err)
				}
				if ind.Indicator != v || ind.Type != typ || ind.IID <= 0 || !slices.Contains(risks, ind.Risk) {
					t.Errorf("%s: indicator %q type %q iid %d risk %q", v, ind.Indicator, ind.Type, ind.IID, ind.Risk)
				}
				seen := parse(ind.StampSeen)
				if seen.Before(time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC)) || !seen.Before(clock) {
					t.Errorf("%s: stamp_seen %s outside early 2020", v, ind.StampSeen)
				}
				if n := len(ind.RiskFactors); n < 1 || n > 3 {
					t.Errorf("%s: %d risk factors", v, n)
				}
				for _, l := range append(ind.Threats, ind.Feeds...) {
					if ts := parse(l.StampLinked); ts.Before(earliest) || ts.After(seen) {
						t.Errorf("%s: %s linked %s, after stamp_seen %s", v, l.Name, l.StampLinked, ind.StampSeen)
					}
				}

				var ls synthLinks
				if err := json.Unmarshal(e.Links.Body, &ls); err != nil {
					t.Fatalf("%s: links: %v", v, err)
				}
				if typ == "url" && len(ls.ActiveDNS) > 0 {
					t.Errorf("%s: a URL with Active DNS links", v)
				}
				recent := false
				for _, l := range ls.ActiveDNS {
					if !slices.Contains(pairs[typ], l.Type) {
						t.Errorf("%s: Active DNS entry of type %q", v, l.Type)
					}
					if ts := parse(l.StampLinked); !ts.Before(clock) {
						t.Errorf("%s: link stamped %s, after the fixed clock", v, l.StampLinked)
					} else if !ts.Before(windowStart) {
						recent = true
					}
				}
				if recent {
					withRecent++
				}
			}
			if typ != "url" && withRecent < len(vs)*3/4 {
				t.Errorf("%d of %d values have an Active DNS link within 90 days; want most", withRecent, len(vs))
			}
		})
	}
}
