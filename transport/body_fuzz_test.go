package transport

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/pulsedive-relay/relay/ctim"
	"github.com/pulsedive-relay/relay/pipeline"
	"github.com/pulsedive-relay/relay/pulsedive"
	"github.com/pulsedive-relay/relay/transport/auth"
)

const invalidPrefix = "Invalid JSON payload received. "

// bodySeeds are the request bodies both fuzz targets start from: valid
// ones, every bad body of TestBadBodies, and the shapes that break
// parsers (deep nesting, huge strings, unicode, duplicate keys).
func bodySeeds() []string {
	item := `{"type":"ip","value":"1.1.1.1"},`
	seeds := []string{
		// Valid.
		`[]`,
		` [ ] `,
		`[{"type":"ip","value":"185.141.25.242"}]`,
		`[{"type":"IP","value":"185.141.25.242"},{"type":"Domain","value":"parkingcrew.net"},{"type":"url","value":"http://51jianli.cn/images"},{"type":"ipv6","value":"2001:420:1101:1::185"}]`,
		`[{"type":"sha256","value":"abc"},{"type":"email","value":"a@b.c","extra":1}]`,
		`[{"type":"ip","value":"1.1.1.1","extra":{"deep":[1,[2,[3]]]},"more":null}]`,
		`[{"type":"ip","value":"1.1.1.1"},{"type":"ip","value":"1.1.1.1"},{"type":"domain","value":"1.1.1.1"}]`,
		// Every bad body of TestBadBodies.
		`{"type":`,
		``,
		`{"type":"ip","value":"1.1.1.1"}`,
		`"1.1.1.1"`,
		`[{"type":"ip","value":"1.1.1.1"}, 7]`,
		`[{"value":"1.1.1.1"}]`,
		`[{"type":"ip"}]`,
		`[{"type":"ip","value":null}]`,
		`[{"type":"ip","value":"  "}]`,
		`[{"type":"","value":"x"}]`,
		`[{"type":"ip","value":1}]`,
		`[{"type":["ip"],"value":"1.1.1.1"}]`,
		`[{"type":"ip","value":"1.1.1.1"},{"type":"domain","value":"a"},{"type":"url"}]`,
		`[` + strings.TrimSuffix(strings.Repeat(item, 6), ",") + `]`,
		`[` + strings.TrimSuffix(strings.Repeat(`{"type":"hash","value":"x"},`, 6), ",") + `]`,
		`[{"type":"ip","value":"` + strings.Repeat("1", 5000) + `"}]`,
		// Other shapes.
		`null`, `true`, `7`, `[null]`, `[[]]`, `[{}]`, `[[{"type":"ip","value":"1.1.1.1"}]]`,
		`[{"type":"ip","value":"1.1.1.1"}]trailing`,
		`[{"type":"ip","value":"1.1.1.1"}][]`,
		"\xef\xbb\xbf" + `[{"type":"ip","value":"1.1.1.1"}]`, // byte-order mark
		"\t\r\n[\n{\"type\" : \"ip\" ,\n\"value\":\"1.1.1.1\"}\n]\n",
		// JSON allows only space, tab, CR and LF around a value: these are
		// not JSON (bytes.TrimSpace would take them for white space).
		"\v[]",
		"\f" + `[{"type":"ip","value":"1.1.1.1"}]`,
		"[]\u00a0",
		"\u0085[]",
		`[{"type":"ip","value":"1.1.1.1"},]`,
		`[{"type":"ip","value":"1.1.1.1",}]`,
		`[{'type':'ip','value':'1.1.1.1'}]`,
		// Deep nesting, in the array and inside an item's extra field.
		strings.Repeat(`[`, 10000) + strings.Repeat(`]`, 10000),
		strings.Repeat(`[`, 10001) + strings.Repeat(`]`, 10001),
		`[{"type":"ip","value":"1.1.1.1","x":` + strings.Repeat(`{"a":`, 5000) + `1` + strings.Repeat(`}`, 5000) + `}]`,
		// Huge strings.
		`[{"type":"domain","value":"` + strings.Repeat("a", 8<<10) + `.example"}]`,
		`[{"type":"` + strings.Repeat("I", 8<<10) + `","value":"x"}]`,
		// Unicode: escapes, look-alikes, invalid UTF-8, lone surrogates.
		`[{"type":"\u0069\u0070","value":"\u0031.1.1.1"}]`,
		`[{"type":"İP","value":"1.1.1.1"},{"type":"ＩＰ","value":"1.1.1.1"},{"type":"ſ","value":"x"}]`,
		`[{"type":"domain","value":"пример.испытание"},{"type":"url","value":"http://例え.jp/パス?q=😀"}]`,
		`[{"type":"domain","value":"\u202eelgoog.com"},{"type":"ip","value":"\u00a0"},{"type":"ip","value":"\u3000"}]`,
		"[{\"type\":\"ip\",\"value\":\"\xff\xfe\"}]",
		`[{"type":"ip","value":"\ud800"},{"type":"ip","value":"\udc00\ud800"}]`,
		`[{"type":"ip\u0000","value":"1.1.1.1\u0000"}]`,
		// Duplicate keys: the last one counts.
		`[{"type":"ip","type":"domain","value":"x","value":"y"}]`,
		`[{"type":"ip","value":"1.1.1.1","type":7}]`,
		`[{"type":7,"value":"1.1.1.1","type":"ip"}]`,
		`[{"Type":"ip","VALUE":"1.1.1.1"}]`,
	}
	return seeds
}

// FuzzParseObservables checks the properties of the body parser on any
// input: it never panics; a refusal is exactly one "invalid argument"
// whose detail is JSON; an acceptance holds supported types only,
// lower-case, non-blank values as sent, at most the limit, and exactly the
// items a reference decoding of the body selects.
func FuzzParseObservables(f *testing.F) {
	for _, s := range bodySeeds() {
		f.Add([]byte(s), uint8(5))
		f.Add([]byte(s), uint8(0))
	}
	f.Fuzz(func(t *testing.T, body []byte, limit uint8) {
		maxObs := 1 + int(limit%8)
		got, err := parseObservables(body, maxObs)
		if err != nil {
			var bad *badRequest
			if !errors.As(err, &bad) {
				t.Fatalf("error %v (%T) is not a *badRequest", err, err)
			}
			if !strings.HasPrefix(err.Error(), invalidPrefix) {
				t.Fatalf("error %q does not start with %q", err, invalidPrefix)
			}
			if !json.Valid([]byte(bad.Detail)) {
				t.Fatalf("error detail %q is not JSON", bad.Detail)
			}
			if got != nil {
				t.Fatalf("observables %v returned with error %v", got, err)
			}
			return
		}
		if !json.Valid(body) {
			t.Fatalf("a body that is not JSON was accepted: %q", body)
		}
		if len(got) > maxObs {
			t.Fatalf("%d observables accepted, the limit is %d", len(got), maxObs)
		}
		for i, o := range got {
			if !ctim.Supported(o.Type) || o.Type != strings.ToLower(o.Type) {
				t.Errorf("observable %d: type %q is not a supported lower-case type", i, o.Type)
			}
			if strings.TrimSpace(o.Value) == "" {
				t.Errorf("observable %d: blank value %q", i, o.Value)
			}
		}
		if diff := cmp.Diff(referenceObservables(t, body), got); diff != "" {
			t.Errorf("observables (-reference +got):\n%s", diff)
		}
	})
}

// referenceObservables decodes an accepted body another way: a list of
// generic objects, each with string type and value.
func referenceObservables(t *testing.T, body []byte) []ctim.Observable {
	t.Helper()
	var items []map[string]any
	if err := json.Unmarshal(body, &items); err != nil {
		t.Fatalf("the parser accepted a body that is not a list of objects: %v", err)
	}
	out := []ctim.Observable{}
	for i, item := range items {
		typ, ok1 := item["type"].(string)
		value, ok2 := item["value"].(string)
		if item == nil || !ok1 || !ok2 {
			t.Fatalf("the parser accepted item %d, %v, without string type and value", i, item)
		}
		if typ = strings.ToLower(typ); ctim.Supported(typ) {
			out = append(out, ctim.Observable{Type: typ, Value: value})
		}
	}
	return out
}

// FuzzObservablesBody posts any body to /observe/observables through the
// relay's handler, over a pipeline whose Pulsedive knows every value, with
// no network: the answer is always HTTP 200 and a JSON object, no panic is
// recovered, a body the parser refuses is answered with exactly its one
// "invalid argument" error, and an accepted one with data only.
func FuzzObservablesBody(f *testing.F) {
	for _, s := range bodySeeds() {
		f.Add([]byte(s))
	}
	const maxObs, maxBytes = 5, 256 << 10
	panics := &panicCounter{}
	h := fuzzHandler(f, maxObs, maxBytes, panics)
	f.Fuzz(func(t *testing.T, body []byte) {
		rec := httptest.NewRecorder()
		req := httptest.NewRequest(http.MethodPost, "/observe/observables", bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer anything")
		before := panics.n.Load()
		h.ServeHTTP(rec, req)

		if n := panics.n.Load() - before; n != 0 {
			t.Fatalf("the handler panicked (%d recovered)", n)
		}
		if rec.Code != http.StatusOK {
			t.Fatalf("HTTP status %d, want 200", rec.Code)
		}
		if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
			t.Fatalf("Content-Type %q, want application/json", ct)
		}
		var answer map[string]any
		if err := json.Unmarshal(rec.Body.Bytes(), &answer); err != nil {
			t.Fatalf("answer is not a JSON object: %v\n%s", err, rec.Body.Bytes())
		}

		var obs []ctim.Observable
		var err error
		if len(body) > maxBytes {
			err = schemaProblem("The request body is larger than 262144 bytes.")
		} else {
			obs, err = parseObservables(body, maxObs)
		}
		if err == nil && !json.Valid(body) {
			t.Fatalf("a body that is not JSON was accepted: %q", body)
		}
		if err != nil {
			want := map[string]any{"errors": []any{map[string]any{"type": "fatal", "code": "invalid argument", "message": err.Error()}}}
			if diff := cmp.Diff(want, answer); diff != "" {
				t.Fatalf("answer to a refused body (-want +got):\n%s", diff)
			}
			return
		}
		if _, ok := answer["errors"]; ok {
			t.Fatalf("errors in the answer to an accepted body: %v", answer)
		}
		data, ok := answer["data"].(map[string]any)
		if !ok {
			t.Fatalf("answer to an accepted body has no data object: %v", answer)
		}
		distinct := map[ctim.Observable]bool{}
		for _, o := range obs {
			distinct[o] = true
		}
		verdicts, _ := data["verdicts"].(map[string]any)
		count, _ := verdicts["count"].(float64)
		if int(count) != len(distinct) {
			t.Fatalf("%v verdicts for %d distinct observables", verdicts["count"], len(distinct))
		}
	})
}

// fuzzHandler is the relay's handler over a real pipeline with a fetcher
// that knows every value and an authenticator that accepts every token.
func fuzzHandler(tb testing.TB, maxObs int, maxBytes int64, obs Observer) http.Handler {
	tb.Helper()
	now := time.Date(2020, 4, 15, 0, 0, 0, 0, time.UTC)
	pipe, err := pipeline.New(pipeline.Config{
		Fetcher: knowsAll{},
		Pinger:  knowsAll{},
		Now:     func() time.Time { return now },
	})
	if err != nil {
		tb.Fatal(err)
	}
	h, err := NewHandler(Config{
		Enricher:       pipe,
		Auth:           acceptAll{},
		Version:        "1.2.3",
		MaxBodyBytes:   maxBytes,
		MaxObservables: maxObs,
		Observer:       obs,
	})
	if err != nil {
		tb.Fatal(err)
	}
	return h
}

// knowsAll is a Pulsedive that knows every value: one risk factor, one
// threat, and one recent Active DNS link.
type knowsAll struct{}

func (knowsAll) Indicator(_ context.Context, _ pulsedive.APIKey, value string) (*pulsedive.Indicator, error) {
	return &pulsedive.Indicator{
		IID: "42", Indicator: value, Type: "domain", Risk: "high", StampSeen: "2020-04-01 00:00:00",
		RiskFactors: []pulsedive.RiskFactor{{Description: "found in threat feeds", Risk: "high"}},
		Threats:     []pulsedive.Threat{{TID: "7", Name: "Zeus", Category: "malware", Risk: "high", StampLinked: "2020-04-02 00:00:01"}},
	}, nil
}

func (knowsAll) Links(context.Context, pulsedive.APIKey, string) (*pulsedive.Links, error) {
	return &pulsedive.Links{ActiveDNS: []pulsedive.Link{
		{IID: "3", Indicator: "187.191.98.202", Type: "ip", StampLinked: "2020-04-01 10:46:47"},
		{IID: "4", Indicator: "bad-cdn.example", Type: "domain", StampLinked: "2020-04-09 00:00:00"},
	}}, nil
}

func (knowsAll) Health(context.Context, pulsedive.APIKey) error { return nil }

// acceptAll accepts every request with one key.
type acceptAll struct{}

func (acceptAll) Authenticate(*http.Request) (auth.Claims, error) {
	return auth.Claims{Key: "fuzz-key", EntitiesLimit: 100}, nil
}

// panicCounter is an Observer counting recovered panics.
type panicCounter struct{ n atomic.Int64 }

func (*panicCounter) HTTPRequest(string, int, time.Duration) {}
func (p *panicCounter) PanicRecovered(string)                { p.n.Add(1) }
func (*panicCounter) AdmissionRefused(string)                {}
func (*panicCounter) AdmissionInUse(string, int64)           {}
func (*panicCounter) ConnectionReplaced()                    {}
func (*panicCounter) EnvelopeError(string, string)           {}

// FuzzParseMatchesUnmarshal holds the body parser, which walks the bytes
// in place, to the answers of the unmarshalling parser it replaced
// (parseByUnmarshal, kept verbatim below): the same observables, or the
// same error, for any body.
func FuzzParseMatchesUnmarshal(f *testing.F) {
	for _, s := range bodySeeds() {
		f.Add([]byte(s), uint8(5))
	}
	for _, s := range []string{
		`[{"\u0074ype":"ip","val\u0075e":"1.1.1.1"}]`,
		`[{"type":"ip","value":"1.1.1.1","t\"ype":"x"}]`,
		`[{"typ":"ip","values":"1.1.1.1"}]`,
		`[{"type":"ip","value":"a\"b\\"}, {"value":"\\\\","type":"url"}]`,
		`[ {"type" : "ip" , "value" : "1.1.1.1" } , 7 , "x" ]`,
		`[1,2,3,4,5,6,7]`,
		`[{"type":"ip","value":"x"},{"type":"ip","value":"y"},{"type":"ip"},{},[],7,8]`,
	} {
		f.Add([]byte(s), uint8(5))
		f.Add([]byte(s), uint8(1))
	}
	f.Fuzz(func(t *testing.T, body []byte, limit uint8) {
		maxObs := 1 + int(limit%8)
		got, gotErr := parseObservables(body, maxObs)
		want, wantErr := parseByUnmarshal(body, maxObs)
		if fmt.Sprint(gotErr) != fmt.Sprint(wantErr) {
			t.Fatalf("error %v, want %v, for %q", gotErr, wantErr, body)
		}
		if diff := cmp.Diff(want, got, cmpopts.EquateEmpty()); diff != "" {
			t.Fatalf("observables (-unmarshal +walk) for %q:\n%s", body, diff)
		}
	})
}

// parseByUnmarshal is the body parser before the walk, which unmarshalled
// every item into a map: the reference of FuzzParseMatchesUnmarshal.
func parseByUnmarshal(body []byte, maxObservables int) ([]ctim.Observable, error) {
	trimmed := bytes.Trim(body, " \t\r\n")
	if len(trimmed) == 0 || !json.Valid(trimmed) {
		return nil, schemaProblem("The request body is not valid JSON.")
	}
	if trimmed[0] != '[' {
		return nil, schemaProblem("Invalid input type: expected a list of observables.")
	}
	var items []json.RawMessage
	if err := json.Unmarshal(trimmed, &items); err != nil {
		return nil, schemaProblem("The request body is not valid JSON.")
	}
	if len(items) > maxObservables {
		return nil, schemaProblem(fmt.Sprintf("Too many observables: %d, the limit is %d.", len(items), maxObservables))
	}
	out := make([]ctim.Observable, 0, len(items))
	for i, raw := range items {
		var fields map[string]json.RawMessage
		if len(raw) == 0 || raw[0] != '{' || json.Unmarshal(raw, &fields) != nil {
			return nil, fieldProblem(i, "_schema", "Invalid input type: expected an object.")
		}
		var vals [2]string
		for j, name := range []string{"type", "value"} {
			raw, ok := fields[name]
			if !ok {
				return nil, fieldProblem(i, name, "Missing data for required field.")
			}
			if string(raw) == "null" {
				return nil, fieldProblem(i, name, "Field may not be null.")
			}
			if err := json.Unmarshal(raw, &vals[j]); err != nil {
				return nil, fieldProblem(i, name, "Not a valid string.")
			}
			if strings.TrimSpace(vals[j]) == "" {
				return nil, fieldProblem(i, name, "Field may not be blank.")
			}
		}
		if typ := strings.ToLower(vals[0]); ctim.Supported(typ) {
			out = append(out, ctim.Observable{Type: typ, Value: vals[1]})
		}
	}
	return out, nil
}

// BenchmarkParseObservables walks a body of one observable (the cached
// path's) and one of a thousand.
func BenchmarkParseObservables(b *testing.B) {
	for _, n := range []int{1, 1000} {
		items := make([]string, n)
		for i := range items {
			items[i] = fmt.Sprintf(`{"type":"ip","value":"185.141.%d.%d"}`, i/256, i%256)
		}
		body := []byte("[" + strings.Join(items, ",") + "]")
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			b.SetBytes(int64(len(body)))
			b.ReportAllocs()
			for b.Loop() {
				if obs, err := parseObservables(body, 1000); err != nil || len(obs) != n {
					b.Fatalf("%d observables, %v", len(obs), err)
				}
			}
		})
	}
}
