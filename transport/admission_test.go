package transport

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/pulsedive-relay/relay/ctim"
	"github.com/pulsedive-relay/relay/pipeline"
	"github.com/pulsedive-relay/relay/pulsedive"
	"github.com/pulsedive-relay/relay/transport/auth"
)

func TestPoolShares(t *testing.T) {
	type step struct {
		release bool
		tenant  tenant
		n       int64
		ok      bool
	}
	tests := []struct {
		name           string
		total, largest int64
		steps          []step
	}{
		{"a key gets half, another key the rest", 8, 1, []step{
			{false, "a", 4, true},
			{false, "a", 1, false}, // a's half is held
			{false, "b", 4, true},
			{false, unverified, 1, false}, // the whole bound is held
			{true, "a", 4, true},
			{false, unverified, 2, true},
			{false, unverified, 1, false}, // the unverified quarter is held
			{false, "a", 2, true},
		}},
		{"no share below the largest request", 8, 6, []step{
			{false, unverified, 6, true},
			{false, "a", 3, false}, // 6 + 3 > 8
			{false, "a", 2, true},
		}},
		{"a request larger than the bound never fits", 4, 8, []step{
			{false, "a", 5, false},
			{false, "a", 4, true},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			obs := &recorder{}
			p := newPool(BoundBodyBytes, tt.total, tt.largest, obs)
			held := int64(0)
			for i, s := range tt.steps {
				if s.release {
					p.release(s.tenant, s.n)
					held -= s.n
					continue
				}
				err := p.acquire(s.tenant, s.n)
				if got := err == nil; got != s.ok {
					t.Fatalf("step %d: acquire(%q, %d) = %v, want admitted %v", i, s.tenant, s.n, err, s.ok)
				}
				if err == nil {
					held += s.n
				}
			}
			if got := obs.inUse[BoundBodyBytes]; got != held {
				t.Errorf("in use %d, want %d", got, held)
			}
		})
	}
}

func TestNilPoolAdmitsAll(t *testing.T) {
	p := newPool(BoundRequests, 0, 1, nopObserver{})
	if err := p.acquire("a", 1<<40); err != nil {
		t.Fatalf("unbounded pool refused: %v", err)
	}
	p.release("a", 1<<40)
}

// keyAuth accepts "Bearer <key>" for the keys it lists.
type keyAuth map[string]bool

func (k keyAuth) Authenticate(r *http.Request) (auth.Claims, error) {
	key := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !k[key] {
		return auth.Claims{}, &auth.Error{Reason: auth.ReasonMissingHeader}
	}
	return auth.Claims{Key: pulsedive.APIKey(key), EntitiesLimit: 100}, nil
}

// heldEnricher answers every observable with a verdict, after holding
// each request until the test releases it; entered receives the key of
// each request as it is held.
type heldEnricher struct {
	entered chan string
	release chan struct{}
}

func (e *heldEnricher) Observe(_ context.Context, req pipeline.Request) pipeline.Result {
	e.entered <- req.Key.Reveal()
	<-e.release
	b := &ctim.Bundle{}
	for _, o := range req.Observables {
		b.AddVerdict(ctim.Verdict{Type: "verdict", Observable: o})
	}
	return pipeline.Result{Bundle: b}
}

func (e *heldEnricher) Deliberate(ctx context.Context, req pipeline.Request) pipeline.Result {
	return e.Observe(ctx, req)
}

func (e *heldEnricher) Refer(context.Context, pipeline.Request) pipeline.ReferResult {
	return pipeline.ReferResult{}
}

func (e *heldEnricher) Health(context.Context, pulsedive.APIKey) error { return nil }

// gatedBody is a request body that signals its first Read, then blocks
// until the test opens it.
type gatedBody struct {
	r      io.Reader
	first  chan struct{}
	open   chan struct{}
	once   sync.Once
	reads  atomic.Int64
	closed atomic.Bool
}

func newGatedBody(b []byte) *gatedBody {
	return &gatedBody{r: bytes.NewReader(b), first: make(chan struct{}), open: make(chan struct{})}
}

func (g *gatedBody) Read(p []byte) (int, error) {
	g.reads.Add(1)
	g.once.Do(func() { close(g.first) })
	<-g.open
	return g.r.Read(p)
}

func (g *gatedBody) Close() error { g.closed.Store(true); return nil }

type served struct {
	rec  *httptest.ResponseRecorder
	done chan struct{}
}

// serve runs req through h on a goroutine of its own.
func serve(h http.Handler, req *http.Request) served {
	s := served{rec: httptest.NewRecorder(), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		h.ServeHTTP(s.rec, req)
	}()
	return s
}

func observeRequest(t *testing.T, key string, body io.Reader, length int64) *http.Request {
	t.Helper()
	req := httptest.NewRequest(http.MethodPost, "/observe/observables", body)
	req.ContentLength = length
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	return req
}

func itemsBody(n int) []byte {
	items := make([]map[string]string, n)
	for i := range items {
		items[i] = map[string]string{"type": "ip", "value": "10.0.0." + strconv.Itoa(i)}
	}
	b, _ := json.Marshal(items)
	return b
}

// refusal checks an answer is the envelope's refusal over bound, with
// Retry-After, and whether it closes the connection.
func refusal(t *testing.T, rec *httptest.ResponseRecorder, what string, closes bool) {
	t.Helper()
	want := `{"errors":[{"type":"fatal","code":"too many requests","message":"The relay is busy: ` + what + `; retry in 1 s"}]}` + "\n"
	if rec.Code != http.StatusOK || rec.Body.String() != want {
		t.Errorf("answer %d %s, want 200 %s", rec.Code, rec.Body, want)
	}
	if got := rec.Header().Get("Retry-After"); got != "1" {
		t.Errorf("Retry-After %q, want 1", got)
	}
	if got := rec.Header().Get("Connection") == "close"; got != closes {
		t.Errorf("Connection: close %v, want %v", got, closes)
	}
}

func admissionHandler(t *testing.T, a Admission, e Enricher, obs Observer) http.Handler {
	t.Helper()
	h, err := NewHandler(Config{
		Enricher: e, Auth: keyAuth{"key-a": true, "key-b": true},
		MaxBodyBytes: 1 << 10, MaxObservables: 4, Admission: a, Observer: obs,
	})
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// TestBodyBudget: a body is charged before it is read, a caller without a
// valid token gets a quarter of the budget, one with a key half, and a
// body over the share is refused without a byte read.
func TestBodyBudget(t *testing.T) {
	obs := &recorder{}
	e := &heldEnricher{entered: make(chan string, 8), release: make(chan struct{})}
	close(e.release)
	h := admissionHandler(t, Admission{BodyBytes: 4 << 10}, e, obs)
	body := itemsBody(4)
	full := append(bytes.Clone(body), bytes.Repeat([]byte(" "), 1<<10-len(body))...)

	// An unverified body of 1 KiB fills the unverified quarter; it is
	// held half-read.
	held := newGatedBody(full)
	first := serve(h, observeRequest(t, "", held, int64(len(full))))
	<-held.first

	over := newGatedBody(body)
	close(over.open)
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, observeRequest(t, "", over, int64(len(body))))
	refusal(t, rec, "too many request bodies in memory", true)
	if n := over.reads.Load(); n != 0 {
		t.Errorf("the refused body was read %d times, want never", n)
	}

	// A key has a share of its own.
	rec = httptest.NewRecorder()
	h.ServeHTTP(rec, observeRequest(t, "key-a", bytes.NewReader(body), int64(len(body))))
	var got struct {
		Data struct {
			Verdicts struct{ Count int } `json:"verdicts"`
		} `json:"data"`
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &got); err != nil || got.Data.Verdicts.Count != 4 {
		t.Errorf("the keyed request beside the held one answered %s, want 4 verdicts", rec.Body)
	}

	close(held.open)
	<-first.done
	if !strings.Contains(first.rec.Body.String(), "authorization error") {
		t.Errorf("the held unverified request answered %s, want its authorization error", first.rec.Body)
	}
	if diff := cmp.Diff([]string{BoundBodyBytes}, obs.refused); diff != "" {
		t.Errorf("refusals counted (-want +got):\n%s", diff)
	}
	if got := obs.inUse[BoundBodyBytes]; got != 0 {
		t.Errorf("body bytes still held after every request: %d", got)
	}
}

// TestChunkedBodyCharged: a body of unknown length is charged as it is
// read, refused once the budget runs out, and too large past the limit.
func TestChunkedBodyCharged(t *testing.T) {
	lim := bodyLimits{maxBytes: 100 << 10, maxObservables: 10}
	body := bytes.Repeat([]byte("a"), 70<<10)
	tests := []struct {
		name    string
		budget  int64
		body    []byte
		wantErr string
		charged int64
	}{
		{"fits", 1 << 20, body, "", 3 * bodyChunk},
		{"budget runs out", 2 * bodyChunk, body, "relay busy: body_bytes at the limit", 2 * bodyChunk},
		{"too large", 1 << 20, bytes.Repeat([]byte("a"), 101<<10), "larger than 102400 bytes", 100<<10 + 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := httptest.NewRequest(http.MethodPost, "/observe/observables", io.NopCloser(bytes.NewReader(tt.body)))
			req.ContentLength = -1
			var charged int64
			got, held, err := readBody(req, lim, func(n int64) error {
				if charged+n > tt.budget {
					return &overload{bound: BoundBodyBytes}
				}
				charged += n
				return nil
			})
			if tt.wantErr == "" {
				if err != nil || !bytes.Equal(got, tt.body) {
					t.Fatalf("readBody = %d bytes, %v; want the body", len(got), err)
				}
			} else if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("readBody error %v, want %q", err, tt.wantErr)
			}
			if held != charged || charged != tt.charged {
				t.Errorf("held %d, charged %d; want %d", held, charged, tt.charged)
			}
		})
	}
}

// TestRequestAndObservableBounds: the requests and observables being
// served are bounded per key; another key is still served.
func TestRequestAndObservableBounds(t *testing.T) {
	tests := []struct {
		name     string
		a        Admission
		nextObs  int
		what     string
		bound    string
		holdObs  int
		otherObs int
		closes   bool // the refusal comes before the body is read
	}{
		{"requests", Admission{Requests: 2}, 1, "too many requests in progress", BoundRequests, 1, 1, true},
		{"observables", Admission{Observables: 8}, 1, "too many observables in progress", BoundObservables, 4, 4, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			obs := &recorder{}
			e := &heldEnricher{entered: make(chan string, 8), release: make(chan struct{})}
			h := admissionHandler(t, tt.a, e, obs)
			b := itemsBody(tt.holdObs)
			held := serve(h, observeRequest(t, "key-a", bytes.NewReader(b), int64(len(b))))
			<-e.entered

			b = itemsBody(tt.nextObs)
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, observeRequest(t, "key-a", bytes.NewReader(b), int64(len(b))))
			refusal(t, rec, tt.what, tt.closes)

			b = itemsBody(tt.otherObs)
			other := serve(h, observeRequest(t, "key-b", bytes.NewReader(b), int64(len(b))))
			if got := <-e.entered; got != "key-b" {
				t.Fatalf("entered %q, want key-b", got)
			}
			close(e.release)
			<-held.done
			<-other.done
			for _, s := range []served{held, other} {
				if !strings.Contains(s.rec.Body.String(), `"verdicts"`) {
					t.Errorf("an admitted request answered %s", s.rec.Body)
				}
			}
			if diff := cmp.Diff([]string{tt.bound}, obs.refused); diff != "" {
				t.Errorf("refusals counted (-want +got):\n%s", diff)
			}
			for bound, n := range obs.inUse {
				if n != 0 {
					t.Errorf("%s still held after every request: %d", bound, n)
				}
			}
		})
	}
}

// TestAdmissionKeepsTheContractsOrder: checking the token before the body
// changes no answer: a bad body is reported before a bad token, and a body
// with nothing supported needs no token.
func TestAdmissionKeepsTheContractsOrder(t *testing.T) {
	e := &heldEnricher{entered: make(chan string, 8), release: make(chan struct{})}
	close(e.release)
	h := admissionHandler(t, Admission{Requests: 4, BodyBytes: 8 << 10, Observables: 8}, e, nil)
	tests := []struct {
		name, key, body, want string
	}{
		{"bad body, no token", "", `[{"type":"ip"}]`, `{"errors":[{"type":"fatal","code":"invalid argument","message":"Invalid JSON payload received. {\"0\": {\"value\": [\"Missing data for required field.\"]}}"}]}`},
		{"bad body, bad token", "nobody", `nope`, `{"errors":[{"type":"fatal","code":"invalid argument","message":"Invalid JSON payload received. {\"_schema\": [\"The request body is not valid JSON.\"]}"}]}`},
		{"nothing supported, no token", "", `[{"type":"sha256","value":"x"}]`, `{"data":{}}`},
		{"supported, no token", "", `[{"type":"ip","value":"1.1.1.1"}]`, `{"errors":[{"type":"fatal","code":"authorization error","message":"Authorization failed: Authorization header is missing"}]}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, observeRequest(t, tt.key, strings.NewReader(tt.body), int64(len(tt.body))))
			if got := strings.TrimSuffix(rec.Body.String(), "\n"); got != tt.want {
				t.Errorf("answer\n%s\nwant\n%s", got, tt.want)
			}
		})
	}
}

// TestWideItemIsWalkedNotDecoded: a 1 MiB body of one item with ~100,000
// fields is parsed without building a map of them (it cost ~10 MiB and
// ~100 ms per request when each item was unmarshalled): a handful of
// allocations, for the error.
func TestWideItemIsWalkedNotDecoded(t *testing.T) {
	var b bytes.Buffer
	b.WriteString(`[{`)
	for i := 0; b.Len() < 1<<20-16; i++ {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(`"f` + strconv.Itoa(i) + `":0`)
	}
	b.WriteString(`,"value":"x","type":"ip"}]`)
	body := b.Bytes()
	var got []ctim.Observable
	allocs := testing.AllocsPerRun(3, func() {
		var err error
		if got, err = parseObservables(body, 1000); err != nil {
			t.Fatal(err)
		}
	})
	if diff := cmp.Diff([]ctim.Observable{{Type: "ip", Value: "x"}}, got); diff != "" {
		t.Errorf("observables (-want +got):\n%s", diff)
	}
	if allocs > 10 {
		t.Errorf("%v allocations to parse one wide item, want a handful", allocs)
	}
}
