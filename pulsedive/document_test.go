package pulsedive_test

import (
	"encoding/json"
	"errors"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/pulsedive-relay/relay/pulsedive"
	"github.com/pulsedive-relay/relay/pulsedive/pulsedivetest"
)

func TestEmptyListIsNoLinks(t *testing.T) {
	// PHP encodes an empty map as []: no links, not a changed document.
	links, err := pulsedive.DecodeLinks([]byte(" [ ] "))
	if err != nil || links == nil || len(links.ActiveDNS) != 0 {
		t.Errorf("DecodeLinks([]) = %+v, %v; want no links and no error", links, err)
	}
	if _, err := pulsedive.DecodeIndicator([]byte("[]")); !errors.Is(err, pulsedive.ErrSchema) {
		t.Errorf("DecodeIndicator([]) error = %v, want ErrSchema: an indicator is an object", err)
	}
}

func TestDecodeErrors(t *testing.T) {
	tests := []struct {
		name string
		body string
		want error
	}{
		{"empty", ``, pulsedive.ErrInvalidJSON},
		{"HTML", `<html>502</html>`, pulsedive.ErrInvalidJSON},
		{"truncated", `{"iid":1,"risk":"hi`, pulsedive.ErrInvalidJSON},
		{"list of one", `[1]`, pulsedive.ErrSchema},
		{"string", `"ok"`, pulsedive.ErrSchema},
		{"null", `null`, pulsedive.ErrSchema},
		{"list field is a number", `{"iid":1,"riskfactors":5,"Active DNS":5}`, pulsedive.ErrSchema},
		{"string field is an object", `{"iid":{"a":1},"Active DNS":{"iid":{"a":1}}}`, pulsedive.ErrSchema},
		{"not found", `{"error":"Indicator not found."}`, pulsedive.ErrNotFound},
		{"other error", `{"error":"Invalid API key."}`, &pulsedive.APIError{Message: "Invalid API key."}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ind, err := pulsedive.DecodeIndicator([]byte(tc.body))
			checkErr(t, err, tc.want)
			if ind != nil {
				t.Errorf("DecodeIndicator returned %+v with its error", ind)
			}
			links, err := pulsedive.DecodeLinks([]byte(tc.body))
			checkErr(t, err, tc.want)
			if links != nil {
				t.Errorf("DecodeLinks returned %+v with its error", links)
			}
		})
	}
}

// TestDecodeErrorWithData: an "error" beside data is not an error.
func TestDecodeErrorWithData(t *testing.T) {
	ind, err := pulsedive.DecodeIndicator([]byte(`{"iid":5,"error":"partial"}`))
	if err != nil || ind.IID != "5" {
		t.Errorf("DecodeIndicator = %+v, %v; want the document", ind, err)
	}
	links, err := pulsedive.DecodeLinks([]byte(`{"Active DNS":{"iid":1},"error":"partial"}`))
	if err != nil || len(links.ActiveDNS) != 1 {
		t.Errorf("DecodeLinks = %+v, %v; want the document", links, err)
	}
}

// fixtureBodies returns every body of the shared fixtures.
func fixtureBodies(tb testing.TB) [][]byte {
	tb.Helper()
	fx, err := pulsedivetest.Fixtures()
	if err != nil {
		tb.Fatal(err)
	}
	var out [][]byte
	for _, e := range fx {
		out = append(out, e.Info.Body, e.Links.Body)
	}
	return out
}

// documentedError says whether err is one DecodeIndicator and DecodeLinks
// promise.
func documentedError(err error) bool {
	var apiErr *pulsedive.APIError
	return errors.Is(err, pulsedive.ErrInvalidJSON) || errors.Is(err, pulsedive.ErrSchema) ||
		errors.Is(err, pulsedive.ErrNotFound) || errors.As(err, &apiErr)
}

// pulsediveShape re-encodes a decoded indicator the way Pulsedive writes it:
// the model keeps "retired" as a flag and its text apart, Pulsedive sends
// the text in "retired" itself.
func pulsediveShape(t *testing.T, ind *pulsedive.Indicator) []byte {
	t.Helper()
	body, err := json.Marshal(ind)
	if err != nil {
		t.Fatalf("re-encoding %+v: %v", ind, err)
	}
	if ind.RetiredReason == "" {
		return body
	}
	var doc map[string]any
	if err := json.Unmarshal(body, &doc); err != nil {
		t.Fatal(err)
	}
	doc["retired"] = ind.RetiredReason
	delete(doc, "retired_reason")
	if body, err = json.Marshal(doc); err != nil {
		t.Fatal(err)
	}
	return body
}

// TestRetiredReason: the judgement's reason says why Pulsedive retired an
// indicator when Pulsedive said so in text, and only that it did when it
// sent a number (CONTRACT.md section 4b).
func TestRetiredReason(t *testing.T) {
	tests := []struct {
		retired string
		want    bool
		reason  string
	}{
		{`"No recent activity"`, true, "No recent activity"},
		{`"0"`, true, "0"}, // a non-empty string, whatever it says
		{`"false"`, true, "false"},
		{`" "`, true, " "},
		{`1`, true, ""},
		{`-2.5`, true, ""},
		{`true`, true, ""},
		{`0`, false, ""},
		{`0.0`, false, ""},
		{`""`, false, ""},
		{`false`, false, ""},
		{`null`, false, ""},
	}
	for _, tt := range tests {
		t.Run(tt.retired, func(t *testing.T) {
			ind, err := pulsedive.DecodeIndicator([]byte(`{"iid":1,"retired":` + tt.retired + `}`))
			if err != nil {
				t.Fatal(err)
			}
			if ind.Retired != tt.want || ind.RetiredReason != tt.reason {
				t.Errorf("retired %s decodes as (%v, %q), want (%v, %q)", tt.retired, ind.Retired, ind.RetiredReason, tt.want, tt.reason)
			}
			// The cache keeps the model as JSON: the reason survives it.
			body, err := json.Marshal(ind)
			if err != nil {
				t.Fatal(err)
			}
			var back pulsedive.Indicator
			if err := json.Unmarshal(body, &back); err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(ind, &back); diff != "" {
				t.Errorf("cache round trip (-before +after):\n%s", diff)
			}
		})
	}
	absent, err := pulsedive.DecodeIndicator([]byte(`{"iid":1}`))
	if err != nil || absent.Retired || absent.RetiredReason != "" {
		t.Errorf("absent retired decodes as %+v, %v; want not retired", absent, err)
	}
}

var extraSeeds = []string{
	``, `{}`, `[]`, `null`, `{"iid":"1","retired":0,"stamp_retired":null}`, `{"iid":2,"retired":"gone","risk":"none"}`,
	`{"iid":1,"retired":1,"threats":{},"feeds":[],"riskfactors":{"description":"x"}}`,
	`{"Active DNS":{"iid":1,"summary":[]}}`, `{"Active DNS":[{"iid":"2","summary":{}}],"Related URLs":{}}`,
	`{"error":"Indicator not found."}`, `{"error":"x","iid":""}`, `{"iid":true,"risk":1e3}`,
}

func FuzzDecodeIndicator(f *testing.F) {
	for _, b := range fixtureBodies(f) {
		f.Add(b)
	}
	for _, s := range extraSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		ind, err := pulsedive.DecodeIndicator(body)
		if err != nil {
			if ind != nil || !documentedError(err) {
				t.Fatalf("DecodeIndicator(%q) = %+v, %v: want nil and a documented error", body, ind, err)
			}
			return
		}
		if ind == nil {
			t.Fatalf("DecodeIndicator(%q) = nil, nil", body)
		}
		again := pulsediveShape(t, ind)
		ind2, err := pulsedive.DecodeIndicator(again)
		if err != nil {
			t.Fatalf("decoding the re-encoded %s: %v", again, err)
		}
		if diff := cmp.Diff(ind, ind2); diff != "" {
			t.Fatalf("round trip of %q changed the document (-first +second):\n%s", body, diff)
		}
	})
}

func FuzzDecodeLinks(f *testing.F) {
	for _, b := range fixtureBodies(f) {
		f.Add(b)
	}
	for _, s := range extraSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		links, err := pulsedive.DecodeLinks(body)
		if err != nil {
			if links != nil || !documentedError(err) {
				t.Fatalf("DecodeLinks(%q) = %+v, %v: want nil and a documented error", body, links, err)
			}
			return
		}
		if links == nil {
			t.Fatalf("DecodeLinks(%q) = nil, nil", body)
		}
		// Re-encode in Pulsedive's shape: the group is "Active DNS".
		again, err := json.Marshal(map[string][]pulsedive.Link{"Active DNS": links.ActiveDNS})
		if err != nil {
			t.Fatalf("re-encoding %+v: %v", links, err)
		}
		links2, err := pulsedive.DecodeLinks(again)
		if err != nil {
			t.Fatalf("decoding the re-encoded %s: %v", again, err)
		}
		if diff := cmp.Diff(links, links2); diff != "" {
			t.Fatalf("round trip of %q changed the document (-first +second):\n%s", body, diff)
		}
	})
}

func BenchmarkDecodeIndicator(b *testing.B) {
	var largest []byte
	for _, body := range fixtureBodies(b) {
		if len(body) > len(largest) {
			largest = body
		}
	}
	b.SetBytes(int64(len(largest)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := pulsedive.DecodeIndicator(largest); err != nil {
			b.Fatal(err)
		}
	}
}
