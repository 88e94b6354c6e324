package pulsedivetest_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.uber.org/goleak"

	"github.com/pulsedive-relay/relay/pulsedive/pulsedivetest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// newServer starts a fake server for the test and closes it after.
func newServer(t *testing.T, cfg pulsedivetest.Config) *pulsedivetest.Server {
	t.Helper()
	srv, err := pulsedivetest.NewServer(cfg)
	if err != nil {
		t.Fatalf("NewServer: %v", err)
	}
	t.Cleanup(srv.Close)
	return srv
}

type answer struct {
	Status int
	Header http.Header
	Body   []byte
	Err    error // from reading the body
}

// call makes one GET of info.php with query q and reads the whole answer.
func call(t *testing.T, srv *pulsedivetest.Server, q url.Values) answer {
	t.Helper()
	return callCtx(t, context.Background(), srv, q)
}

func callCtx(t *testing.T, ctx context.Context, srv *pulsedivetest.Server, q url.Values) answer {
	t.Helper()
	a, err := tryCall(ctx, srv.Client(), srv.URL(), q)
	if err != nil {
		t.Fatalf("GET: %v", err)
	}
	return a
}

func tryCall(ctx context.Context, c *http.Client, base string, q url.Values) (answer, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"info.php?"+q.Encode(), nil)
	if err != nil {
		return answer{}, err
	}
	req.Header.Set("User-Agent", "fake-test/1")
	resp, err := c.Do(req)
	if err != nil {
		return answer{}, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return answer{Status: resp.StatusCode, Header: resp.Header, Body: body, Err: err}, nil
}

func info(value string) url.Values { return url.Values{"indicator": {value}, "key": {"k"}} }
func links(value string) url.Values {
	return url.Values{"indicator": {value}, "get": {"links"}, "key": {"k"}}
}

func errorText(t *testing.T, body []byte) string {
	t.Helper()
	var doc struct {
		Error string `json:"error"`
	}
	if err := json.Unmarshal(body, &doc); err != nil {
		t.Fatalf("body %q is not JSON: %v", body, err)
	}
	return doc.Error
}

// clock is a settable clock for the rate limits.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock(t time.Time) *clock { return &clock{t: t} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func TestServesEveryFixture(t *testing.T) {
	fixtures, err := pulsedivetest.Fixtures()
	if err != nil {
		t.Fatal(err)
	}
	if len(fixtures) < 10 {
		t.Fatalf("got %d fixtures, want the 10 of the shared set", len(fixtures))
	}
	srv := newServer(t, pulsedivetest.Config{})
	for value, e := range fixtures {
		for _, tc := range []struct {
			kind string
			q    url.Values
			want pulsedivetest.Answer
		}{
			{"info", info(value), e.Info},
			{"links", links(value), e.Links},
		} {
			t.Run(tc.kind+"/"+value, func(t *testing.T) {
				got := call(t, srv, tc.q)
				if got.Status != tc.want.Status {
					t.Errorf("status = %d, want %d", got.Status, tc.want.Status)
				}
				if !bytes.Equal(got.Body, tc.want.Body) {
					t.Errorf("body = %s\nwant %s", got.Body, tc.want.Body)
				}
				if ct := got.Header.Get("Content-Type"); ct != "application/json" {
					t.Errorf("Content-Type = %q", ct)
				}
			})
		}
	}
}

func TestFixtureValues(t *testing.T) {
	got, err := pulsedivetest.FixtureValues()
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"110.174.93.63", "185.141.25.242", "2001:420:1101:1::185", "23.23.23.23", "broken.example",
		"http://51jianli.cn/images", "many-factors.example", "parkingcrew.net", "processing.example", "rate-limited.example",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("FixtureValues (-want +got):\n%s", diff)
	}
}

func TestHealthAnswersAnIndicator(t *testing.T) {
	srv := newServer(t, pulsedivetest.Config{})
	got := call(t, srv, url.Values{"iid": {"2"}, "key": {"k"}})
	if got.Status != http.StatusOK {
		t.Fatalf("status = %d, want 200", got.Status)
	}
	var doc struct {
		IID       json.Number `json:"iid"`
		Indicator string      `json:"indicator"`
	}
	if err := json.Unmarshal(got.Body, &doc); err != nil || doc.IID == "" || doc.Indicator == "" {
		t.Errorf("body %s is not an indicator document (err %v)", got.Body, err)
	}
	if n := srv.CallsFor(pulsedivetest.KindHealth, "2"); n != 1 {
		t.Errorf("CallsFor(health, 2) = %d, want 1", n)
	}
}

func TestUnknownValues(t *testing.T) {
	fixtures, err := pulsedivetest.Fixtures()
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name       string
		synthetic  bool
		q          url.Values
		wantStatus int
		wantBody   []byte // nil: check below
	}{
		{"unknown info", false, info("unknown.example"), 404, []byte(`{"error":"Indicator not found."}`)},
		{"unknown links", false, links("unknown.example"), 404, []byte(`{"error":"Indicator not found."}`)},
		{"synthetic info", true, info("unknown.example"), 200, pulsedivetest.Synthetic("unknown.example").Info.Body},
		{"synthetic links", true, links("unknown.example"), 200, pulsedivetest.Synthetic("unknown.example").Links.Body},
		{"fixture wins over synthetic", true, info("23.23.23.23"), 404, fixtures["23.23.23.23"].Info.Body},
		{"fixture document in synthetic mode", true, info("parkingcrew.net"), 200, fixtures["parkingcrew.net"].Info.Body},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv := newServer(t, pulsedivetest.Config{Synthetic: tc.synthetic})
			got := call(t, srv, tc.q)
			if got.Status != tc.wantStatus || !bytes.Equal(got.Body, tc.wantBody) {
				t.Errorf("got %d %s\nwant %d %s", got.Status, got.Body, tc.wantStatus, tc.wantBody)
			}
		})
	}
}

func TestSetSyntheticAndIndicator(t *testing.T) {
	srv := newServer(t, pulsedivetest.Config{})
	if got := call(t, srv, info("new.example")).Status; got != 404 {
		t.Fatalf("before: status %d, want 404", got)
	}
	srv.SetSynthetic(true)
	if got := call(t, srv, info("new.example")).Status; got != 200 {
		t.Fatalf("synthetic: status %d, want 200", got)
	}
	err := srv.SetIndicator("new.example", pulsedivetest.Entry{
		Info:  pulsedivetest.Answer{Body: json.RawMessage(`{ "iid": "77", "retired": null }`)},
		Links: pulsedivetest.Answer{Status: 404, Body: json.RawMessage(`{"error":"Indicator not found."}`)},
	})
	if err != nil {
		t.Fatal(err)
	}
	if got := call(t, srv, info("new.example")); got.Status != 200 || string(got.Body) != `{"iid":"77","retired":null}` {
		t.Errorf("SetIndicator info: got %d %s", got.Status, got.Body)
	}
	if got := call(t, srv, links("new.example")); got.Status != 404 {
		t.Errorf("SetIndicator links: got %d %s", got.Status, got.Body)
	}
	if err := srv.SetIndicator("x", pulsedivetest.Entry{Info: pulsedivetest.Answer{Status: 1000}}); err == nil {
		t.Error("SetIndicator with status 1000: no error")
	}
}

func TestNewRejectsBadConfig(t *testing.T) {
	tests := []struct {
		name string
		cfg  pulsedivetest.Config
		want string
	}{
		{"negative rate", pulsedivetest.Config{PerMinute: -1}, "PerMinute -1 is negative"},
		{"negative quota", pulsedivetest.Config{PerDay: -3}, "PerDay -3 is negative"},
		{"negative latency", pulsedivetest.Config{Latency: -time.Second}, "latency and jitter must not be negative"},
		{"base path", pulsedivetest.Config{BasePath: "api"}, `base path "api" must start and end with /`},
		{"indicator status", pulsedivetest.Config{Indicators: map[string]pulsedivetest.Entry{
			"x": {Info: pulsedivetest.Answer{Status: 42}},
		}}, `indicator "x": status 42 is not an HTTP status`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := pulsedivetest.New(tc.cfg)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("New: error %v, want one containing %q", err, tc.want)
			}
		})
	}
}

func TestRoutes(t *testing.T) {
	srv := newServer(t, pulsedivetest.Config{BasePath: "/v1/"})
	if !strings.HasSuffix(srv.URL(), "/v1/") {
		t.Fatalf("URL() = %q, want it to end in /v1/", srv.URL())
	}
	tests := []struct {
		name, method, path string
		wantStatus         int
		wantError          string // Pulsedive's JSON error; "" for none
	}{
		{"info", http.MethodGet, "info.php?indicator=parkingcrew.net", 200, ""},
		// Not the API: the web server's page, never Pulsedive's JSON error.
		{"wrong path", http.MethodGet, "explore.php?q=x", 404, ""},
		{"info.php outside the base path", http.MethodGet, "/info.php?indicator=parkingcrew.net", 404, ""},
		{"wrong method", http.MethodPost, "info.php?indicator=parkingcrew.net", 405, "Method not allowed."},
		{"no indicator", http.MethodGet, "info.php?key=k", 400, "Invalid request."},
		{"unknown get", http.MethodGet, "info.php?indicator=parkingcrew.net&get=properties", 400, "Invalid request."},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			target := srv.URL() + tc.path
			if strings.HasPrefix(tc.path, "/") { // from the server's root
				target = srv.HTTP.URL + tc.path
			}
			req, err := http.NewRequest(tc.method, target, nil)
			if err != nil {
				t.Fatal(err)
			}
			resp, err := srv.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tc.wantStatus {
				t.Errorf("status = %d, want %d", resp.StatusCode, tc.wantStatus)
			}
			if tc.wantStatus == http.StatusNotFound && tc.wantError == "" {
				if ct := resp.Header.Get("Content-Type"); ct != "text/html" || json.Valid(body) {
					t.Errorf("answer %s %q, want a web server's HTML page", ct, body)
				}
			}
			if tc.wantError != "" {
				if got := errorText(t, body); got != tc.wantError {
					t.Errorf("error = %q, want %q", got, tc.wantError)
				}
			}
		})
	}
}

func TestKeyCheck(t *testing.T) {
	srv := newServer(t, pulsedivetest.Config{Keys: []string{"good", "banned"}, ForbiddenKeys: []string{"banned"}})
	tests := []struct {
		name       string
		q          url.Values
		wantStatus int
		wantError  string
	}{
		{"accepted", url.Values{"indicator": {"parkingcrew.net"}, "key": {"good"}}, 200, ""},
		{"no key", url.Values{"indicator": {"parkingcrew.net"}}, 401, "API key required."},
		{"wrong key", url.Values{"indicator": {"parkingcrew.net"}, "key": {"bad"}}, 401, "Invalid API key."},
		{"forbidden", url.Values{"indicator": {"parkingcrew.net"}, "key": {"banned"}}, 403, "Access denied for this API key."},
		{"health with wrong key", url.Values{"iid": {"2"}, "key": {"bad"}}, 401, "Invalid API key."},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := call(t, srv, tc.q)
			if got.Status != tc.wantStatus {
				t.Errorf("status = %d, want %d", got.Status, tc.wantStatus)
			}
			if tc.wantError != "" {
				if msg := errorText(t, got.Body); msg != tc.wantError {
					t.Errorf("error = %q, want %q", msg, tc.wantError)
				}
			}
		})
	}
}

func TestPerMinuteLimit(t *testing.T) {
	clk := newClock(time.Date(2020, 4, 15, 12, 0, 0, 0, time.UTC))
	srv := newServer(t, pulsedivetest.Config{PerMinute: 30, Burst: 3, Now: clk.Now})
	const wantMsg = "API rate limit exceeded: 30 requests per minute. Requests disabled for 1 minute. Please visit pulsedive.com/api to increase your limit."

	type step struct {
		advance time.Duration
		key     string
		want    int
	}
	steps := []step{
		{0, "a", 200}, {0, "a", 200}, {0, "a", 200}, // the burst
		{0, "a", 429},                // dry: disabled for a minute
		{0, "b", 200},                // another key has its own bucket
		{30 * time.Second, "a", 429}, // refilled, but still disabled
		{31 * time.Second, "a", 200}, // the minute is over
	}
	for i, s := range steps {
		clk.Advance(s.advance)
		got := call(t, srv, url.Values{"indicator": {"parkingcrew.net"}, "key": {s.key}})
		if got.Status != s.want {
			t.Fatalf("step %d (key %s): status %d, want %d", i, s.key, got.Status, s.want)
		}
		if got.Status == 429 {
			if msg := errorText(t, got.Body); msg != wantMsg {
				t.Errorf("step %d: error %q, want %q", i, msg, wantMsg)
			}
		}
	}
	if got := srv.RateLimited(); got != 2 {
		t.Errorf("RateLimited() = %d, want 2", got)
	}
}

func TestQuotaHeaders(t *testing.T) {
	start := time.Date(2020, 4, 30, 23, 59, 58, 0, time.UTC)
	tests := []struct {
		name     string
		cfg      pulsedivetest.Config
		header   string
		rollover time.Duration
		wantMsg  string
	}{
		{"second", pulsedivetest.Config{PerSecond: 2}, "X-Requests-Remaining-Second", time.Second,
			"API rate limit exceeded: 2 requests per second. Visit pulsedive.com/api to view limits and upgrade your plan."},
		{"day", pulsedivetest.Config{PerDay: 2}, "X-Requests-Remaining-Day", 3 * time.Second,
			"API rate limit exceeded: 2 requests per day. Visit pulsedive.com/api to view limits and upgrade your plan."},
		{"month", pulsedivetest.Config{PerMonth: 2}, "X-Requests-Remaining-Month", 3 * time.Second,
			"API rate limit exceeded: 2 requests per month. Visit pulsedive.com/api to view limits and upgrade your plan."},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			clk := newClock(start)
			tc.cfg.Now = clk.Now
			srv := newServer(t, tc.cfg)
			var got []string
			for range 3 {
				a := call(t, srv, info("parkingcrew.net"))
				got = append(got, http.StatusText(a.Status)+" "+a.Header.Get(tc.header))
				if a.Status == 429 {
					if msg := errorText(t, a.Body); msg != tc.wantMsg {
						t.Errorf("error = %q, want %q", msg, tc.wantMsg)
					}
				}
			}
			clk.Advance(tc.rollover)
			a := call(t, srv, info("parkingcrew.net"))
			got = append(got, http.StatusText(a.Status)+" "+a.Header.Get(tc.header))
			want := []string{"OK 1", "OK 0", "Too Many Requests ", "OK 1"}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("answers (-want +got):\n%s", diff)
			}
		})
	}
}

func TestNoQuotaNoHeaders(t *testing.T) {
	srv := newServer(t, pulsedivetest.Config{PerMinute: 100})
	got := call(t, srv, info("parkingcrew.net"))
	for _, h := range []string{"X-Requests-Remaining-Second", "X-Requests-Remaining-Day", "X-Requests-Remaining-Month"} {
		if v, ok := got.Header[h]; ok {
			t.Errorf("header %s = %q, want none", h, v)
		}
	}
}

func TestFaultModes(t *testing.T) {
	fixtures, err := pulsedivetest.Fixtures()
	if err != nil {
		t.Fatal(err)
	}
	normal := fixtures["parkingcrew.net"].Info.Body
	tests := []struct {
		name        string
		fault       pulsedivetest.Fault
		wantStatus  int
		wantBody    []byte // nil: not checked
		wantError   string // JSON error text; "": not checked
		wantType    string
		wantReadErr bool
	}{
		{name: "zero fault is 500", fault: pulsedivetest.Fault{}, wantStatus: 500,
			wantError: "An unexpected error occurred. Please try again later.", wantType: "application/json"},
		{name: "401", fault: pulsedivetest.Fault{Status: 401}, wantStatus: 401, wantError: "Invalid API key."},
		{name: "403", fault: pulsedivetest.Fault{Status: 403}, wantStatus: 403, wantError: "Access denied for this API key."},
		{name: "408", fault: pulsedivetest.Fault{Status: 408}, wantStatus: 408, wantError: "Request(s) still processing."},
		{name: "429", fault: pulsedivetest.Fault{Status: 429}, wantStatus: 429,
			wantError: "API rate limit exceeded: 30 requests per minute. Requests disabled for 1 minute. Please visit pulsedive.com/api to increase your limit."},
		{name: "502 is a proxy page", fault: pulsedivetest.Fault{Status: 502}, wantStatus: 502, wantType: "text/html"},
		{name: "503 with message", fault: pulsedivetest.Fault{Status: 503, Message: "Down for maintenance."},
			wantStatus: 503, wantError: "Down for maintenance."},
		{name: "status with body", fault: pulsedivetest.Fault{Status: 200, Body: []byte(`{"iid":"9"}`)},
			wantStatus: 200, wantBody: []byte(`{"iid":"9"}`)},
		{name: "bad status", fault: pulsedivetest.Fault{Status: 1200}, wantStatus: 500,
			wantError: "pulsedivetest: fault status 1200 is not an HTTP status"},
		{name: "error field", fault: pulsedivetest.Fault{Mode: pulsedivetest.ModeErrorField, Message: "Indicator not found."},
			wantStatus: 200, wantBody: []byte(`{"error":"Indicator not found."}`)},
		{name: "not JSON", fault: pulsedivetest.Fault{Mode: pulsedivetest.ModeNotJSON}, wantStatus: 200, wantType: "text/html"},
		{name: "truncated", fault: pulsedivetest.Fault{Mode: pulsedivetest.ModeTruncate}, wantStatus: 200,
			wantBody: normal[:len(normal)/2]},
		{name: "disconnect", fault: pulsedivetest.Fault{Mode: pulsedivetest.ModeDisconnect}, wantStatus: 200,
			wantBody: normal[:len(normal)/2], wantReadErr: true},
		{name: "huge", fault: pulsedivetest.Fault{Mode: pulsedivetest.ModeHuge, Size: 1 << 20}, wantStatus: 200},
		{name: "drip", fault: pulsedivetest.Fault{Mode: pulsedivetest.ModeDrip, DripBytes: 400, DripEvery: time.Millisecond},
			wantStatus: 200, wantBody: normal},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv := newServer(t, pulsedivetest.Config{})
			srv.SetFault("parkingcrew.net", tc.fault)
			got := call(t, srv, info("parkingcrew.net"))
			if got.Status != tc.wantStatus {
				t.Errorf("status = %d, want %d", got.Status, tc.wantStatus)
			}
			if tc.wantBody != nil && !bytes.Equal(got.Body, tc.wantBody) {
				t.Errorf("body = %q\nwant %q", got.Body, tc.wantBody)
			}
			if tc.wantError != "" {
				if msg := errorText(t, got.Body); msg != tc.wantError {
					t.Errorf("error = %q, want %q", msg, tc.wantError)
				}
			}
			if ct := got.Header.Get("Content-Type"); tc.wantType != "" && ct != tc.wantType {
				t.Errorf("Content-Type = %q, want %q", ct, tc.wantType)
			}
			if (got.Err != nil) != tc.wantReadErr {
				t.Errorf("reading the body: %v, want an error: %t", got.Err, tc.wantReadErr)
			}
			if tc.wantReadErr && !errors.Is(got.Err, io.ErrUnexpectedEOF) {
				t.Errorf("reading the body: %v, want an unexpected EOF", got.Err)
			}
		})
	}
}

func TestHugeBodyIsJSONOfTheSize(t *testing.T) {
	srv := newServer(t, pulsedivetest.Config{})
	srv.SetFault(pulsedivetest.AnyValue, pulsedivetest.Fault{Mode: pulsedivetest.ModeHuge, Size: 3<<20 + 5})
	got := call(t, srv, info("x"))
	if len(got.Body) != 3<<20+5 || !json.Valid(got.Body) {
		t.Errorf("got %d bytes (valid JSON: %t), want %d bytes of JSON", len(got.Body), json.Valid(got.Body), 3<<20+5)
	}
	if n := srv.Stats().BytesWritten; n != 3<<20+5 {
		t.Errorf("BytesWritten = %d, want %d", n, 3<<20+5)
	}
}

func TestHugeBodyStopsWhenTheClientDoes(t *testing.T) {
	srv := newServer(t, pulsedivetest.Config{})
	const size = 64 << 20
	srv.SetFault(pulsedivetest.AnyValue, pulsedivetest.Fault{Mode: pulsedivetest.ModeHuge, Size: size})
	resp, err := srv.Client().Get(srv.URL() + "info.php?indicator=x")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.CopyN(io.Discard, resp.Body, 1<<10); err != nil {
		t.Fatal(err)
	}
	resp.Body.Close() // early close drops the connection
	srv.Close()       // waits for the handler
	if n := srv.Stats().BytesWritten; n >= size {
		t.Errorf("BytesWritten = %d: the fake sent everything to a client that left", n)
	}
}

func TestResetIsAConnectionReset(t *testing.T) {
	srv := newServer(t, pulsedivetest.Config{})
	srv.SetFault(pulsedivetest.AnyValue, pulsedivetest.Fault{Mode: pulsedivetest.ModeReset})
	a, err := tryCall(context.Background(), srv.Client(), srv.URL(), info("parkingcrew.net"))
	if err == nil {
		err = a.Err
	}
	// The RST may overtake the partial answer: either the body or the whole
	// exchange fails, with a reset or an early EOF.
	if !errors.Is(err, syscall.ECONNRESET) && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
		t.Errorf("got %v, want a connection reset", err)
	}
}

func TestFaultSchedules(t *testing.T) {
	tests := []struct {
		name  string
		fault pulsedivetest.Fault
		want  []int
	}{
		{"always", pulsedivetest.Fault{Status: 503}, []int{503, 503, 503, 503}},
		{"first two then recover", pulsedivetest.Fault{Status: 503, FirstN: 2}, []int{503, 503, 200, 200}},
		{"every other call", pulsedivetest.Fault{Status: 500, Every: 2}, []int{500, 200, 500, 200}},
		{"every third of the first four", pulsedivetest.Fault{Status: 500, Every: 3, FirstN: 4}, []int{500, 200, 200, 500, 200, 200, 200}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv := newServer(t, pulsedivetest.Config{})
			srv.SetFault("parkingcrew.net", tc.fault)
			var got []int
			for range tc.want {
				got = append(got, call(t, srv, info("parkingcrew.net")).Status)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("statuses (-want +got):\n%s", diff)
			}
		})
	}
}

func TestFaultScope(t *testing.T) {
	srv := newServer(t, pulsedivetest.Config{})
	srv.SetFault(pulsedivetest.AnyValue, pulsedivetest.Fault{Status: 500})
	srv.SetFault("parkingcrew.net", pulsedivetest.Fault{Status: 503, Kind: pulsedivetest.KindLinks})
	srv.SetFault("185.141.25.242", pulsedivetest.Fault{Status: 502, Kind: pulsedivetest.KindInfo})

	type probe struct {
		name string
		q    url.Values
	}
	probes := []probe{
		{"own fault for links", links("parkingcrew.net")},
		{"global fault for info", info("parkingcrew.net")},
		{"own fault for info", info("185.141.25.242")},
		{"global fault for links", links("185.141.25.242")},
		{"global fault elsewhere", info("110.174.93.63")},
		{"global fault on health", url.Values{"iid": {"2"}}},
	}
	run := func() map[string]int {
		got := map[string]int{}
		for _, p := range probes {
			got[p.name] = call(t, srv, p.q).Status
		}
		return got
	}
	want := map[string]int{
		"own fault for links": 503, "global fault for info": 500, "own fault for info": 502,
		"global fault for links": 500, "global fault elsewhere": 500, "global fault on health": 500,
	}
	if diff := cmp.Diff(want, run()); diff != "" {
		t.Errorf("with faults (-want +got):\n%s", diff)
	}

	srv.ClearFault(pulsedivetest.AnyValue)
	want = map[string]int{
		"own fault for links": 503, "global fault for info": 200, "own fault for info": 502,
		"global fault for links": 200, "global fault elsewhere": 200, "global fault on health": 200,
	}
	if diff := cmp.Diff(want, run()); diff != "" {
		t.Errorf("after ClearFault(AnyValue) (-want +got):\n%s", diff)
	}

	srv.ClearFaults()
	for name, status := range run() {
		if status != 200 {
			t.Errorf("after ClearFaults: %s answered %d", name, status)
		}
	}
}

func TestFaultHeader(t *testing.T) {
	srv := newServer(t, pulsedivetest.Config{})
	h := http.Header{"Retry-After": {"7"}}
	srv.SetFault(pulsedivetest.AnyValue, pulsedivetest.Fault{Status: 429, Header: h})
	h.Set("Retry-After", "changed after SetFault")
	if got := call(t, srv, info("x")).Header.Get("Retry-After"); got != "7" {
		t.Errorf("Retry-After = %q, want 7", got)
	}
}

// entered returns a config hook announcing each call once the fake has
// counted it.
func entered() (func(pulsedivetest.Request), <-chan struct{}) {
	ch := make(chan struct{}, 16)
	return func(pulsedivetest.Request) { ch <- struct{}{} }, ch
}

func TestHangEndsWithTheClient(t *testing.T) {
	srv := newServer(t, pulsedivetest.Config{})
	srv.SetFault(pulsedivetest.AnyValue, pulsedivetest.Fault{Mode: pulsedivetest.ModeHang})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if _, err := tryCall(ctx, srv.Client(), srv.URL(), info("x")); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("got %v, want the client's deadline", err)
	}
	srv.HTTP.Close() // returns only once the hanging handler did
	if got := srv.Stats().InFlight; got != 0 {
		t.Errorf("InFlight = %d after the client left, want 0", got)
	}
}

func TestLatencyEndsWithTheClient(t *testing.T) {
	srv := newServer(t, pulsedivetest.Config{Latency: time.Hour, Jitter: time.Hour})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if _, err := tryCall(ctx, srv.Client(), srv.URL(), info("x")); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("got %v, want the client's deadline", err)
	}
	srv.HTTP.Close()
	if got := srv.Stats().InFlight; got != 0 {
		t.Errorf("InFlight = %d after the client left, want 0", got)
	}

	srv2 := newServer(t, pulsedivetest.Config{Latency: time.Hour})
	srv2.SetLatency(0, 0)
	if got := call(t, srv2, info("parkingcrew.net")).Status; got != 200 {
		t.Errorf("after SetLatency(0, 0): status %d", got)
	}
}

func TestCloseReleasesWaitingCalls(t *testing.T) {
	tests := []struct {
		name  string
		cfg   pulsedivetest.Config
		fault pulsedivetest.Fault
	}{
		{"hang", pulsedivetest.Config{}, pulsedivetest.Fault{Mode: pulsedivetest.ModeHang}},
		{"latency", pulsedivetest.Config{Latency: time.Hour}, pulsedivetest.Fault{Status: 200, Body: []byte(`{}`)}},
		{"drip", pulsedivetest.Config{}, pulsedivetest.Fault{Mode: pulsedivetest.ModeDrip, DripEvery: time.Hour}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			onCall, arrived := entered()
			tc.cfg.OnCall = onCall
			srv := newServer(t, tc.cfg)
			srv.SetFault(pulsedivetest.AnyValue, tc.fault)
			errc := make(chan error, 1)
			go func() {
				a, err := tryCall(context.Background(), srv.Client(), srv.URL(), info("parkingcrew.net"))
				if err == nil {
					err = a.Err
				}
				errc <- err
			}()
			<-arrived
			srv.Fake.Close()
			if err := <-errc; err == nil {
				t.Error("the call succeeded; want it cut off by Close")
			}
		})
	}
}

func TestCounters(t *testing.T) {
	srv := newServer(t, pulsedivetest.Config{})
	srv.SetFault("rate-limited.example", pulsedivetest.Fault{Kind: pulsedivetest.KindLinks, Status: 429})
	calls := []url.Values{
		{"indicator": {"parkingcrew.net"}, "key": {"alpha"}},
		{"indicator": {"parkingcrew.net"}, "key": {"alpha"}},
		{"indicator": {"parkingcrew.net"}, "get": {"links"}, "key": {"beta"}},
		{"indicator": {"rate-limited.example"}, "key": {"beta"}},                   // fixture 429
		{"indicator": {"rate-limited.example"}, "get": {"links"}, "key": {"beta"}}, // fault 429
		{"iid": {"2"}, "key": {"alpha"}},
		{"key": {"alpha"}}, // malformed
	}
	for _, q := range calls {
		call(t, srv, q)
	}
	got := srv.Stats()
	want := pulsedivetest.Stats{
		Calls: 7,
		ByDocument: map[pulsedivetest.Document]int{
			{Kind: "info", Value: "parkingcrew.net"}:       2,
			{Kind: "links", Value: "parkingcrew.net"}:      1,
			{Kind: "info", Value: "rate-limited.example"}:  1,
			{Kind: "links", Value: "rate-limited.example"}: 1,
			{Kind: "health", Value: "2"}:                   1,
		},
		ByKey: map[string]int{
			pulsedivetest.KeyFingerprint("alpha"): 4,
			pulsedivetest.KeyFingerprint("beta"):  3,
		},
		ByStatus:     map[int]int{200: 4, 429: 2, 400: 1},
		RateLimited:  2,
		MaxInFlight:  1,
		BytesWritten: got.BytesWritten,
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Stats (-want +got):\n%s", diff)
	}
	if got.BytesWritten == 0 {
		t.Error("BytesWritten = 0")
	}
	if n := srv.Calls(); n != 7 {
		t.Errorf("Calls() = %d", n)
	}
	if n := srv.CallsFor(pulsedivetest.KindInfo, "parkingcrew.net"); n != 2 {
		t.Errorf("CallsFor(info, parkingcrew.net) = %d", n)
	}
	if n := srv.CallsByKey("beta"); n != 3 {
		t.Errorf("CallsByKey(beta) = %d", n)
	}

	srv.Reset()
	want = pulsedivetest.Stats{ByDocument: map[pulsedivetest.Document]int{}, ByKey: map[string]int{}, ByStatus: map[int]int{}}
	if diff := cmp.Diff(want, srv.Stats()); diff != "" {
		t.Errorf("Stats after Reset (-want +got):\n%s", diff)
	}
	if _, ok := srv.LastRequest(); ok {
		t.Error("LastRequest after Reset: still one")
	}
}

func TestMaxInFlight(t *testing.T) {
	onCall, arrived := entered()
	srv := newServer(t, pulsedivetest.Config{OnCall: onCall})
	srv.SetFault(pulsedivetest.AnyValue, pulsedivetest.Fault{Mode: pulsedivetest.ModeHang})
	const n = 5
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			a, err := tryCall(context.Background(), srv.Client(), srv.URL(), info("x"))
			if err == nil && a.Err == nil {
				t.Error("a hanging call succeeded")
			}
		})
	}
	for range n {
		<-arrived
	}
	// Every call is counted in and hangs; Close lets them all go.
	srv.Fake.Close()
	wg.Wait()
	if got := srv.MaxInFlight(); got != n {
		t.Errorf("MaxInFlight() = %d, want %d", got, n)
	}
}

func TestLastRequestKeepsTheKeyAsSent(t *testing.T) {
	srv := newServer(t, pulsedivetest.Config{})
	const key = `k&ey=1#frag%20 +plus/?`
	call(t, srv, url.Values{"indicator": {"a b&c"}, "key": {key}})
	got, ok := srv.LastRequest()
	if !ok {
		t.Fatal("no LastRequest")
	}
	want := pulsedivetest.Request{
		Kind: "info", Value: "a b&c", Key: key, UserAgent: "fake-test/1",
		Query: url.Values{"indicator": {"a b&c"}, "key": {key}},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("LastRequest (-want +got):\n%s", diff)
	}
	if n := srv.CallsByKey(key); n != 1 {
		t.Errorf("CallsByKey = %d, want 1", n)
	}
}

func TestTLSServer(t *testing.T) {
	srv, err := pulsedivetest.NewTLSServer(pulsedivetest.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	if !strings.HasPrefix(srv.URL(), "https://") {
		t.Fatalf("URL() = %q", srv.URL())
	}
	if got := call(t, srv, info("parkingcrew.net")).Status; got != 200 {
		t.Errorf("trusted client: status %d", got)
	}
	untrusting := &http.Client{Transport: &http.Transport{}}
	t.Cleanup(untrusting.CloseIdleConnections)
	if _, err := tryCall(context.Background(), untrusting, srv.URL(), info("parkingcrew.net")); err == nil ||
		!strings.Contains(err.Error(), "certificate signed by unknown authority") {
		t.Errorf("untrusting client: %v, want an unknown authority", err)
	}
}

// TestConcurrentUse changes faults and settings while calls run; the race
// detector is the judge.
func TestConcurrentUse(t *testing.T) {
	srv := newServer(t, pulsedivetest.Config{Synthetic: true, PerMinute: 6000})
	var wg sync.WaitGroup
	for i := range 4 {
		wg.Go(func() {
			for j := range 10 {
				call(t, srv, info("v"+string(rune('a'+i))+string(rune('a'+j))))
				srv.Stats()
			}
		})
	}
	wg.Go(func() {
		for j := range 10 {
			srv.SetFault(pulsedivetest.AnyValue, pulsedivetest.Fault{Status: 500, Every: j + 1})
			srv.SetLatency(0, time.Duration(j)*time.Microsecond)
			srv.SetSynthetic(j%2 == 0)
			srv.Reset()
		}
	})
	wg.Wait()
}

// TestNoDataAnswersArePulsedivesJSON: every "no data" answer of the
// fixtures and of the fake's own (400, 404, 406) is Pulsedive's JSON error,
// an object with an "error" string: the relay treats any other body as
// "not Pulsedive".
func TestNoDataAnswersArePulsedivesJSON(t *testing.T) {
	fx, err := pulsedivetest.Fixtures()
	if err != nil {
		t.Fatal(err)
	}
	check := func(name string, a pulsedivetest.Answer) {
		t.Helper()
		switch a.Status {
		case http.StatusBadRequest, http.StatusNotFound, http.StatusNotAcceptable:
		default:
			return
		}
		var doc map[string]any
		if err := json.Unmarshal(a.Body, &doc); err != nil {
			t.Errorf("%s: %d answer %s is not a JSON object", name, a.Status, a.Body)
			return
		}
		if _, ok := doc["error"].(string); !ok {
			t.Errorf("%s: %d answer %s has no error string", name, a.Status, a.Body)
		}
	}
	for v, e := range fx {
		check(v+" info", e.Info)
		check(v+" links", e.Links)
	}
	srv := newServer(t, pulsedivetest.Config{})
	for name, q := range map[string]url.Values{
		"unknown info": info("unknown.example"), "unknown links": links("unknown.example"), "malformed": {"key": {"k"}},
	} {
		got := call(t, srv, q)
		check(name, pulsedivetest.Answer{Status: got.Status, Body: got.Body})
	}
	for _, status := range []int{400, 404, 406} {
		srv.SetFault(pulsedivetest.AnyValue, pulsedivetest.Fault{Status: status})
		got := call(t, srv, info("x"))
		check(fmt.Sprintf("fault %d", status), pulsedivetest.Answer{Status: got.Status, Body: got.Body})
	}
}

// TestTransport serves through the in-process transport the answers the
// fake gives over HTTP, and fails calls the way a connection would.
func TestTransport(t *testing.T) {
	fk, err := pulsedivetest.New(pulsedivetest.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer fk.Close()
	c := &http.Client{Transport: fk.Transport()}
	base := "http://pulsedive.test/api/"

	got, err := tryCall(context.Background(), c, base, info("parkingcrew.net"))
	if err != nil || got.Status != 200 || !json.Valid(got.Body) {
		t.Errorf("fixture: %d %q, %v; want 200 and its document", got.Status, got.Body, err)
	}
	fk.SetFault(pulsedivetest.AnyValue, pulsedivetest.Fault{Mode: pulsedivetest.ModeReset})
	got, err = tryCall(context.Background(), c, base, info("parkingcrew.net"))
	if err != nil || !errors.Is(got.Err, io.ErrUnexpectedEOF) {
		t.Errorf("reset: %v, body error %v; want headers, then io.ErrUnexpectedEOF", err, got.Err)
	}
	fk.SetFault(pulsedivetest.AnyValue, pulsedivetest.Fault{Mode: pulsedivetest.ModeHang})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err = tryCall(ctx, c, base, info("parkingcrew.net")); !errors.Is(err, context.Canceled) {
		t.Errorf("hang with an ended context: %v, want context.Canceled", err)
	}
}
