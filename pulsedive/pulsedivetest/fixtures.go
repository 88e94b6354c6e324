package pulsedivetest

import (
	"bytes"
	_ "embed"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
)

// fixtureJSON is what Pulsedive's info.php answered for each fixture
// indicator: the project's fixture set, kept in testdata.
//
//go:embed testdata/indicators.json
var fixtureJSON []byte

// Answer is one HTTP answer of info.php: a status and the body as sent.
type Answer struct {
	Status int             `json:"status"`
	Body   json.RawMessage `json:"body"`
}

// Entry holds Pulsedive's two answers for one indicator value: Info for
// ?indicator=V and Links for ?indicator=V&get=links.
type Entry struct {
	Info  Answer `json:"info"`
	Links Answer `json:"links"`
}

// Fixtures returns the shared fixture set, keyed by indicator value. Each call
// decodes a fresh copy, so callers may change what they get. Bodies are
// compacted JSON, as Pulsedive sends them.
func Fixtures() (map[string]Entry, error) {
	var doc struct {
		Indicators map[string]Entry `json:"indicators"`
	}
	if err := json.Unmarshal(fixtureJSON, &doc); err != nil {
		return nil, fmt.Errorf("pulsedivetest: decoding fixtures: %w", err)
	}
	for v, e := range doc.Indicators {
		e.Info.Body = compact(e.Info.Body)
		e.Links.Body = compact(e.Links.Body)
		doc.Indicators[v] = e
	}
	return doc.Indicators, nil
}

// FixtureValues returns the fixture indicator values, sorted.
func FixtureValues() ([]string, error) {
	fx, err := Fixtures()
	if err != nil {
		return nil, err
	}
	return slices.Sorted(maps.Keys(fx)), nil
}

// compact returns b without insignificant white space; bytes that are not
// JSON are returned unchanged (a fake may answer them on purpose).
func compact(b []byte) []byte {
	var buf bytes.Buffer
	if err := json.Compact(&buf, b); err != nil {
		return b
	}
	return buf.Bytes()
}
