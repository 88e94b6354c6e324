package transport_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/pulsedive-relay/relay/limiter"
	"github.com/pulsedive-relay/relay/pulsedive/pulsedivetest"
	"github.com/pulsedive-relay/relay/transport/authtest"
)

func errorsOf(answer map[string]any) []map[string]any {
	list, _ := answer["errors"].([]any)
	out := make([]map[string]any, 0, len(list))
	for _, e := range list {
		out = append(out, e.(map[string]any))
	}
	return out
}

// wantSingleError checks that answer is exactly one fatal error with code
// and message.
func wantSingleError(t *testing.T, answer map[string]any, code, message string) {
	t.Helper()
	want := map[string]any{"errors": []any{map[string]any{"type": "fatal", "code": code, "message": message}}}
	if diff := cmp.Diff(want, answer); diff != "" {
		t.Errorf("answer (-want +got):\n%s", diff)
	}
}

func TestBadBodies(t *testing.T) {
	h := newHarness(t, options{maxBody: 4096, maxObs: 5})
	tests := []struct {
		name, body, detail string
	}{
		{"not JSON", `{"type":`, `{"_schema": ["The request body is not valid JSON."]}`},
		{"empty", ``, `{"_schema": ["The request body is not valid JSON."]}`},
		{"object, not array", `{"type":"ip","value":"1.1.1.1"}`, `{"_schema": ["Invalid input type: expected a list of observables."]}`},
		{"string", `"1.1.1.1"`, `{"_schema": ["Invalid input type: expected a list of observables."]}`},
		{"item not object", `[{"type":"ip","value":"1.1.1.1"}, 7]`, `{"1": {"_schema": ["Invalid input type: expected an object."]}}`},
		{"missing type", `[{"value":"1.1.1.1"}]`, `{"0": {"type": ["Missing data for required field."]}}`},
		{"missing value", `[{"type":"ip"}]`, `{"0": {"value": ["Missing data for required field."]}}`},
		{"null value", `[{"type":"ip","value":null}]`, `{"0": {"value": ["Field may not be null."]}}`},
		{"blank value", `[{"type":"ip","value":"  "}]`, `{"0": {"value": ["Field may not be blank."]}}`},
		{"empty type", `[{"type":"","value":"x"}]`, `{"0": {"type": ["Field may not be blank."]}}`},
		{"number value", `[{"type":"ip","value":1}]`, `{"0": {"value": ["Not a valid string."]}}`},
		{"array type", `[{"type":["ip"],"value":"1.1.1.1"}]`, `{"0": {"type": ["Not a valid string."]}}`},
		{"bad item after good ones", `[{"type":"ip","value":"1.1.1.1"},{"type":"domain","value":"a"},{"type":"url"}]`, `{"2": {"value": ["Missing data for required field."]}}`},
		{"over the count limit", `[` + strings.TrimSuffix(strings.Repeat(`{"type":"ip","value":"1.1.1.1"},`, 6), ",") + `]`, `{"_schema": ["Too many observables: 6, the limit is 5."]}`},
		{"over the count limit with unsupported items", `[` + strings.TrimSuffix(strings.Repeat(`{"type":"hash","value":"x"},`, 6), ",") + `]`, `{"_schema": ["Too many observables: 6, the limit is 5."]}`},
		{"over the size limit", `[{"type":"ip","value":"` + strings.Repeat("1", 5000) + `"}]`, `{"_schema": ["The request body is larger than 4096 bytes."]}`},
	}
	for _, path := range []string{"/observe/observables", "/deliberate/observables", "/refer/observables"} {
		for _, tt := range tests {
			t.Run(path+"/"+tt.name, func(t *testing.T) {
				before := h.fake.Calls()
				status, got := h.post(path, bearer(h.freshToken()), tt.body)
				if status != http.StatusOK {
					t.Errorf("HTTP status %d, want 200", status)
				}
				wantSingleError(t, got, "invalid argument", "Invalid JSON payload received. "+tt.detail)
				if calls := h.fake.Calls() - before; calls != 0 {
					t.Errorf("Pulsedive was called %d times for a bad body", calls)
				}
			})
		}
	}
}

func TestDeepNestingWithinSizeLimit(t *testing.T) {
	// 10,000 levels fit the default 1 MiB limit: the parser must refuse
	// them without exhausting the stack.
	h := newHarness(t, options{})
	for _, depth := range []int{10000, 10001, 100000} {
		body := strings.Repeat(`[`, depth) + strings.Repeat(`]`, depth)
		_, got := h.post("/observe/observables", "", body)
		if errs := errorsOf(got); len(errs) != 1 || errs[0]["code"] != "invalid argument" {
			t.Errorf("depth %d: answer = %v, want one invalid argument error", depth, got)
		}
	}
}

func TestUnsupportedOnlyNeedsNoToken(t *testing.T) {
	h := newHarness(t, options{})
	body := `[{"type":"sha256","value":"abc"},{"type":"email","value":"a@b.c","extra":1}]`
	tests := []struct {
		path string
		want map[string]any
	}{
		{"/observe/observables", map[string]any{"data": map[string]any{}}},
		{"/deliberate/observables", map[string]any{"data": map[string]any{}}},
		{"/refer/observables", map[string]any{"data": []any{}}},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			for _, authz := range []string{"", "Bearer not-a-token"} {
				_, got := h.post(tt.path, authz, body)
				if diff := cmp.Diff(tt.want, got); diff != "" {
					t.Errorf("Authorization %q: answer (-want +got):\n%s", authz, diff)
				}
			}
			_, got := h.post(tt.path, "", `[]`)
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("empty list: answer (-want +got):\n%s", diff)
			}
		})
	}
	if calls := h.fake.Calls(); calls != 0 {
		t.Errorf("Pulsedive was called %d times", calls)
	}
}

func TestTypesAndDuplicates(t *testing.T) {
	h := newHarness(t, options{})
	body := `[{"type":"IP","value":"185.141.25.242"},{"type":"ip","value":"185.141.25.242"},{"type":"Domain","value":"185.141.25.242"},{"type":"md5","value":"x"}]`
	_, got := h.post("/deliberate/observables", bearer(h.freshToken()), body)
	verdicts := docsOf(got["data"].(map[string]any), "verdicts")
	var gotObs []string
	for _, v := range verdicts {
		o := v["observable"].(map[string]any)
		gotObs = append(gotObs, o["type"].(string)+":"+o["value"].(string))
	}
	// Both types of one value are two observables; the duplicate is dropped.
	if diff := cmp.Diff([]string{"ip:185.141.25.242", "domain:185.141.25.242"}, gotObs); diff != "" {
		t.Errorf("verdict observables (-want +got):\n%s", diff)
	}
	// Pulsedive's document depends on the value only: the two observables
	// share the call when they ask at the same time, else each asks once;
	// the duplicate never adds a call.
	if n := h.fake.CallsFor(pulsedivetest.KindInfo, "185.141.25.242"); n < 1 || n > 2 {
		t.Errorf("info calls = %d, want 1 or 2", n)
	}
}

func TestDeliberateAnswersVerdictsOnly(t *testing.T) {
	h := newHarness(t, options{})
	_, got := h.post("/deliberate/observables", bearer(h.freshToken()), []observable{{"ip", "185.141.25.242"}, {"ip", "23.23.23.23"}})
	data := got["data"].(map[string]any)
	if len(data) != 1 || len(docsOf(data, "verdicts")) != 1 {
		t.Errorf("deliberate data = %v, want one verdict and nothing else", data)
	}
	if n := h.fake.CallsFor(pulsedivetest.KindLinks, "185.141.25.242"); n != 0 {
		t.Errorf("deliberate fetched links %d times; verdicts need none", n)
	}
}

func TestLinksOnlyForKnownIndicators(t *testing.T) {
	h := newHarness(t, options{})
	h.post("/observe/observables", bearer(h.freshToken()), []observable{{"ip", "23.23.23.23"}, {"domain", "parkingcrew.net"}})
	if n := h.fake.CallsFor(pulsedivetest.KindLinks, "23.23.23.23"); n != 0 {
		t.Errorf("links of an unknown indicator were fetched %d times", n)
	}
	if n := h.fake.CallsFor(pulsedivetest.KindLinks, "parkingcrew.net"); n != 1 {
		t.Errorf("links of a known indicator fetched %d times, want 1", n)
	}
}

func TestEntitiesLimitFromToken(t *testing.T) {
	h := newHarness(t, options{})
	for _, tt := range []struct {
		limit any
		want  int
	}{{3, 3}, {"7", 7}, {0, 100}, {-2, 100}, {"many", 100}, {nil, 100}} {
		t.Run(fmt.Sprint(tt.limit), func(t *testing.T) {
			extra := map[string]any{"CTR_ENTITIES_LIMIT": tt.limit}
			_, got := h.post("/observe/observables", bearer(h.token(fmt.Sprintf("limit-%v", tt.limit), extra)), []observable{{"domain", "many-factors.example"}})
			data := got["data"].(map[string]any)
			if n := len(docsOf(data, "indicators")); n != tt.want {
				t.Errorf("indicators = %d, want %d", n, tt.want)
			}
			if n := len(docsOf(data, "sightings")); n != tt.want {
				t.Errorf("sightings = %d, want %d", n, tt.want)
			}
		})
	}
}

// TestErrorTable checks the Pulsedive and relay rows of the error table of
// CONTRACT.md section 2 end to end; the authorization rows are in
// TestAuthorizationTable.
func TestErrorTable(t *testing.T) {
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadURL := "http://" + closed.Addr().String() + "/api/"
	closed.Close()

	tests := []struct {
		name    string
		opts    options
		fault   *pulsedivetest.Fault
		value   string
		code    string
		message string
	}{
		{name: "403", fault: &pulsedivetest.Fault{Status: 403, Message: "Access denied."}, code: "forbidden", message: "Access denied."},
		{name: "401", fault: &pulsedivetest.Fault{Status: 401, Message: "Invalid API key."}, code: "unauthorized", message: "Invalid API key."},
		{name: "500 without message", fault: &pulsedivetest.Fault{Status: 500, Body: []byte(`{}`)}, code: "internal server error", message: "The Pulsedive API error."},
		{name: "503 proxy page", fault: &pulsedivetest.Fault{Status: 503}, code: "service unavailable", message: "The Pulsedive API error."},
		{name: "429 fixture", value: "rate-limited.example", code: "too many requests", message: "API rate limit exceeded: 30 requests per minute. Requests disabled for 1 minute. Please visit pulsedive.com/api to increase your limit."},
		{name: "408 fixture", value: "processing.example", code: "request timeout", message: "Request(s) still processing."},
		{name: "changed document", value: "broken.example", code: "key error", message: "The data structure of Pulsedive API has changed. The module is broken."},
		{name: "not JSON", fault: &pulsedivetest.Fault{Mode: pulsedivetest.ModeNotJSON}, code: "unknown", message: "Pulsedive answered with invalid JSON"},
		{name: "truncated JSON", fault: &pulsedivetest.Fault{Mode: pulsedivetest.ModeTruncate}, code: "unknown", message: "Pulsedive answered with invalid JSON"},
		{name: "200 with an error", fault: &pulsedivetest.Fault{Mode: pulsedivetest.ModeErrorField, Message: "Something broke."}, code: "unknown", message: "Something broke."},
		{name: "connection refused", opts: options{baseURL: deadURL}, code: "service unavailable", message: "Pulsedive is unavailable: connection refused"},
		{name: "connection reset", fault: &pulsedivetest.Fault{Mode: pulsedivetest.ModeReset}, code: "service unavailable", message: "Pulsedive is unavailable: connection reset"},
		{name: "call timeout", opts: options{callLimit: 50 * time.Millisecond}, fault: &pulsedivetest.Fault{Mode: pulsedivetest.ModeHang}, code: "service unavailable", message: "Pulsedive is unavailable: timeout"},
		{name: "request deadline", opts: options{timeout: 50 * time.Millisecond}, fault: &pulsedivetest.Fault{Mode: pulsedivetest.ModeHang}, code: "service unavailable", message: "Pulsedive is unavailable: request deadline exceeded"},
		// The indicator takes the only token; its links call cannot get one
		// in time, and only Active DNS is missing (issue 15's wording).
		{name: "local budget", opts: options{timeout: time.Second, limiter: &limiter.Config{PerMinute: 1, Burst: 1}}, value: "many", code: "too many requests", message: "Pulsedive rate limit for this API key reached: Active DNS skipped for 1 of 1 observables; retry in 60 s"},
		// A second indicator call is refused too: one error for both
		// refusals and the links one, in the plain wording.
		{name: "local budget, a verdict refused", opts: options{timeout: time.Second, limiter: &limiter.Config{PerMinute: 1, Burst: 1}}, value: "more", code: "too many requests", message: "Pulsedive rate limit for this API key reached; retry in 60 s"},
		// CONTRACT.md section 6: a redirect is never followed.
		{name: "redirect", fault: &pulsedivetest.Fault{Status: 302, Header: http.Header{"Location": {"http://elsewhere.example/"}}}, code: "unknown", message: "Pulsedive answered with a redirect"},
		{name: "permanent redirect", fault: &pulsedivetest.Fault{Status: 308, Header: http.Header{"Location": {"https://pulsedive.com/api/info.php"}}}, code: "unknown", message: "Pulsedive answered with a redirect"},
		// CONTRACT.md section 4: "no data" statuses need Pulsedive's
		// JSON error body.
		{name: "404 web page", fault: &pulsedivetest.Fault{Status: 404, Body: []byte("<html><body>Not Found</body></html>")}, code: "unknown", message: "Pulsedive answered unexpectedly (HTTP 404); check PULSEDIVE_API_URL"},
		{name: "404 empty", fault: &pulsedivetest.Fault{Status: 404, Body: []byte{}}, code: "unknown", message: "Pulsedive answered unexpectedly (HTTP 404); check PULSEDIVE_API_URL"},
		{name: "404 other JSON", fault: &pulsedivetest.Fault{Status: 404, Body: []byte(`{"message":"Not Found"}`)}, code: "unknown", message: "Pulsedive answered unexpectedly (HTTP 404); check PULSEDIVE_API_URL"},
		{name: "400 web page", fault: &pulsedivetest.Fault{Status: 400, Body: []byte("<html>Bad Request</html>")}, code: "unknown", message: "Pulsedive answered unexpectedly (HTTP 400); check PULSEDIVE_API_URL"},
		{name: "406 plain text", fault: &pulsedivetest.Fault{Status: 406, Body: []byte("Not Acceptable")}, code: "unknown", message: "Pulsedive answered unexpectedly (HTTP 406); check PULSEDIVE_API_URL"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, tt.opts)
			if tt.fault != nil {
				h.fake.SetFault(pulsedivetest.AnyValue, *tt.fault)
			}
			obs := []observable{{"ip", "185.141.25.242"}}
			switch tt.value {
			case "":
			case "many": // the first call takes the only token, the second cannot get one in time
				obs = []observable{{"ip", "110.174.93.63"}}
			case "more":
				obs = []observable{{"ip", "110.174.93.63"}, {"ip", "185.141.25.242"}}
			default:
				obs = []observable{{"domain", tt.value}}
			}
			status, got := h.post("/observe/observables", bearer(h.freshToken()), obs)
			if status != http.StatusOK {
				t.Errorf("HTTP status %d, want 200", status)
			}
			wantSingleErrorOrWithData(t, got, tt.code, tt.message)
		})
	}
}

// wantSingleErrorOrWithData checks the one error of an answer; data may
// stand beside it (a links call failing after the indicator was found).
func wantSingleErrorOrWithData(t *testing.T, got map[string]any, code, message string) {
	t.Helper()
	errs := errorsOf(got)
	if len(errs) != 1 {
		t.Fatalf("answer holds %d errors, want 1: %v", len(errs), got)
	}
	want := map[string]any{"type": "fatal", "code": code, "message": message}
	if diff := cmp.Diff(want, errs[0]); diff != "" {
		t.Errorf("error (-want +got):\n%s", diff)
	}
}

func TestTLSVerificationFailure(t *testing.T) {
	tlsFake, err := pulsedivetest.NewTLSServer(pulsedivetest.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(tlsFake.Close)
	h := newHarness(t, options{baseURL: tlsFake.URL(), client: &http.Client{}})
	_, got := h.post("/observe/observables", bearer(h.freshToken()), []observable{{"ip", "185.141.25.242"}})
	wantSingleError(t, got, "unknown", "Unable to verify SSL certificate: Certificate signed by unknown authority")
}

func TestAuthorizationTable(t *testing.T) {
	h := newHarness(t, options{})
	valid := func(extra map[string]any) string { return h.token("auth-table", extra) }
	foreign, err := authtest.NewKey("relay-test-key") // same kid, other key
	if err != nil {
		t.Fatal(err)
	}
	foreignToken, err := foreign.Mint(authtest.Claims(h.jwks.Host(), h.relay.URL, "k", fixedNow, time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	otherKid, err := authtest.NewKey("unknown-kid")
	if err != nil {
		t.Fatal(err)
	}
	otherKidToken, err := otherKid.Mint(authtest.Claims(h.jwks.Host(), h.relay.URL, "k", fixedNow, time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	noneToken, err := authtest.MintWith("none", nil, "relay-test-key", authtest.Claims(h.jwks.Host(), h.relay.URL, "k", fixedNow, time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	const prefix = "Authorization failed: "
	tests := []struct {
		name, authz, reason string
	}{
		{"no header", "", "Authorization header is missing"},
		{"basic scheme", "Basic dXNlcjpwYXNz", "Wrong authorization type"},
		{"three words", "Bearer a b", "Wrong authorization type"},
		{"not a JWT", "Bearer not.a.jwt", "Wrong JWT structure"},
		{"no jwks_host", bearer(valid(map[string]any{"jwks_host": nil})), "jwks_host is missing in JWT payload. Make sure custom_jwks_host field is present in module_type"},
		{"jwks_host not allowed", bearer(valid(map[string]any{"jwks_host": "visibility.evil.example"})), "Wrong jwks_host in JWT payload. Make sure domain follows the visibility.<region>.cisco.com structure"},
		{"unknown kid", bearer(otherKidToken), "kid from JWT header not found in API response"},
		{"foreign key", bearer(foreignToken), "Failed to decode JWT with provided key. Make sure domain in custom_jwks_host corresponds to your SecureX instance region."},
		{"alg none", bearer(noneToken), "Failed to decode JWT with provided key. Make sure domain in custom_jwks_host corresponds to your SecureX instance region."},
		{"wrong audience", bearer(valid(map[string]any{"aud": "https://other.example"})), "Wrong configuration-token-audience"},
		{"no audience", bearer(valid(map[string]any{"aud": nil})), "Wrong configuration-token-audience"},
		{"no key", bearer(valid(map[string]any{"key": nil})), "Wrong JWT payload structure"},
		{"expired", bearer(valid(map[string]any{"exp": fixedNow.Add(-time.Minute).Unix()})), "Token has expired"},
		{"not yet valid", bearer(valid(map[string]any{"nbf": fixedNow.Add(time.Minute).Unix()})), "Token is not valid yet"},
	}
	for _, path := range []string{"/health", "/observe/observables", "/deliberate/observables", "/refer/observables"} {
		for _, tt := range tests {
			t.Run(path+"/"+tt.name, func(t *testing.T) {
				before := h.fake.Calls()
				status, got := h.post(path, tt.authz, []observable{{"ip", "185.141.25.242"}})
				if status != http.StatusOK {
					t.Errorf("HTTP status %d, want 200", status)
				}
				wantSingleError(t, got, "authorization error", prefix+tt.reason)
				if n := h.fake.Calls() - before; n != 0 {
					t.Errorf("Pulsedive called %d times for a refused token", n)
				}
			})
		}
	}
}

func TestHealth(t *testing.T) {
	h := newHarness(t, options{})
	_, got := h.post("/health", bearer(h.freshToken()), "")
	if diff := cmp.Diff(map[string]any{"data": map[string]any{"status": "ok"}}, got); diff != "" {
		t.Errorf("health (-want +got):\n%s", diff)
	}
	if n := h.fake.CallsFor(pulsedivetest.KindHealth, "2"); n != 1 {
		t.Errorf("health made %d info.php?iid=2 calls, want 1", n)
	}
	h.fake.SetFault(pulsedivetest.AnyValue, pulsedivetest.Fault{Status: 401, Message: "Invalid API key."})
	_, got = h.post("/health", bearer(h.freshToken()), "")
	wantSingleError(t, got, "unauthorized", "Invalid API key.")
}

func TestPlainEndpoints(t *testing.T) {
	h := newHarness(t, options{})
	get := func(path string, header http.Header) (int, map[string]any) {
		req, _ := http.NewRequest(http.MethodGet, h.relay.URL+path, nil)
		for k, v := range header {
			req.Header[k] = v
		}
		return h.do(req)
	}
	tests := []struct {
		name   string
		do     func() (int, map[string]any)
		status int
		want   map[string]any
	}{
		{"version", func() (int, map[string]any) { return h.post("/version", "", "") }, 200, map[string]any{"version": "1.2.3"}},
		{"watchdog", func() (int, map[string]any) { return get("/watchdog", http.Header{"Health-Check": {"ping-42"}}) }, 200, map[string]any{"data": "ping-42"}},
		{"watchdog without header", func() (int, map[string]any) { return get("/watchdog", nil) }, 200,
			map[string]any{"errors": []any{map[string]any{"type": "fatal", "code": "health check failed", "message": "Invalid Health Check"}}}},
		{"healthz", func() (int, map[string]any) { return get("/healthz", nil) }, 200, map[string]any{"status": "ok"}},
		{"readyz", func() (int, map[string]any) { return get("/readyz", nil) }, 200, map[string]any{"status": "ready"}},
		{"unknown path", func() (int, map[string]any) { return get("/nope", nil) }, 404,
			map[string]any{"code": float64(404), "message": "Not Found", "reason": "The requested URL was not found on the server."}},
		{"wrong method", func() (int, map[string]any) { return get("/observe/observables", nil) }, 405,
			map[string]any{"code": float64(405), "message": "Method Not Allowed", "reason": "The method is not allowed for the requested URL."}},
		{"POST version only", func() (int, map[string]any) { return get("/version", nil) }, 405,
			map[string]any{"code": float64(405), "message": "Method Not Allowed", "reason": "The method is not allowed for the requested URL."}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, got := tt.do()
			if status != tt.status {
				t.Errorf("status %d, want %d", status, tt.status)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("answer (-want +got):\n%s", diff)
			}
		})
	}
}

// wrongAPIURLs are PULSEDIVE_API_URL values an operator gets wrong: the
// API base without its "api/" part, and a plain web server (a file server
// here) instead of Pulsedive.
func wrongAPIURLs(t *testing.T) map[string]string {
	t.Helper()
	other, err := pulsedivetest.NewServer(pulsedivetest.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(other.Close)
	files := httptest.NewServer(http.FileServer(http.Dir(t.TempDir())))
	t.Cleanup(files.Close)
	return map[string]string{
		"api/ missing": strings.TrimSuffix(other.URL(), "api/"),
		"file server":  files.URL + "/api/",
	}
}

// TestWrongAPIURL: with PULSEDIVE_API_URL pointing where Pulsedive is not,
// /health and observe say so instead of answering "ok" and "no data".
func TestWrongAPIURL(t *testing.T) {
	const message = "Pulsedive answered unexpectedly (HTTP 404); check PULSEDIVE_API_URL"
	for name, base := range wrongAPIURLs(t) {
		t.Run(name, func(t *testing.T) {
			h := newHarness(t, options{baseURL: base, client: &http.Client{}})
			_, got := h.post("/health", bearer(h.freshToken()), "")
			wantSingleError(t, got, "unknown", message)
			for _, path := range []string{"/observe/observables", "/deliberate/observables"} {
				_, got = h.post(path, bearer(h.freshToken()), []observable{{"ip", "185.141.25.242"}, {"ip", "23.23.23.23"}})
				wantSingleError(t, got, "unknown", message)
			}
		})
	}
}

// TestPulsediveTextNeverCarriesTheKey: Pulsedive's error text reaches the
// caller as the envelope's message, scrubbed of the caller's key in every
// form Pulsedive might echo it.
func TestPulsediveTextNeverCarriesTheKey(t *testing.T) {
	const apiKey = "K3y/With+Odd&Chars=1 ü"
	forms := []string{apiKey, url.QueryEscape(apiKey), url.PathEscape(apiKey)}
	h := newHarness(t, options{})
	for i, form := range forms {
		for _, fault := range []pulsedivetest.Fault{
			{Status: 401, Message: "Invalid API key " + form + "."},
			{Status: 429, Message: "Requests disabled for key " + form + "."},
			{Mode: pulsedivetest.ModeErrorField, Message: "No plan for " + form + "."},
		} {
			t.Run(fmt.Sprintf("form %d, %s %d", i, fault.Mode, fault.Status), func(t *testing.T) {
				h.fake.SetFault(pulsedivetest.AnyValue, fault)
				status, raw := h.postRaw("/observe/observables", bearer(h.token(apiKey, nil)), []observable{{"ip", "185.141.25.242"}})
				if status != http.StatusOK {
					t.Errorf("HTTP status %d, want 200", status)
				}
				for _, f := range forms {
					if strings.Contains(strings.ToLower(raw), strings.ToLower(f)) {
						t.Errorf("the answer holds the key (%q): %s", f, raw)
					}
				}
				if !strings.Contains(raw, "[redacted]") {
					t.Errorf("answer %s: want Pulsedive's message with the key redacted", raw)
				}
			})
		}
	}
}

// postRaw sends body to path as post does and returns the HTTP status and
// the answer as written.
func (h *harness) postRaw(path, authorization string, body any) (int, string) {
	h.t.Helper()
	raw, err := json.Marshal(body)
	if err != nil {
		h.t.Fatal(err)
	}
	req, err := http.NewRequest(http.MethodPost, h.relay.URL+path, bytes.NewReader(raw))
	if err != nil {
		h.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", authorization)
	resp, err := h.relay.Client().Do(req)
	if err != nil {
		h.t.Fatal(err)
	}
	defer resp.Body.Close()
	answer, err := io.ReadAll(resp.Body)
	if err != nil {
		h.t.Fatal(err)
	}
	return resp.StatusCode, string(answer)
}
