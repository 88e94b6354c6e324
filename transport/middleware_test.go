package transport

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/pulsedive-relay/relay/pipeline"
	"github.com/pulsedive-relay/relay/pulsedive"
	"github.com/pulsedive-relay/relay/transport/auth"
)

// panicky is an Enricher whose every method panics, standing for a bug.
type panicky struct{}

func (panicky) Observe(context.Context, pipeline.Request) pipeline.Result { panic("boom: observe") }
func (panicky) Deliberate(context.Context, pipeline.Request) pipeline.Result {
	panic(context.DeadlineExceeded)
}
func (panicky) Refer(context.Context, pipeline.Request) pipeline.ReferResult { panic(42) }
func (panicky) Health(context.Context, pulsedive.APIKey) error               { panic("boom: health") }

// anyToken accepts every request.
type anyToken struct{}

func (anyToken) Authenticate(*http.Request) (auth.Claims, error) {
	return auth.Claims{Key: "k", EntitiesLimit: 100}, nil
}

// recorder is an Observer remembering what it was told.
type recorder struct {
	mu       sync.Mutex
	requests []string
	panics   []string
	refused  []string
	inUse    map[string]int64
	errors   []string // "route code"
	replaced int      // connections closed to make room
}

func (r *recorder) EnvelopeError(route, code string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.errors = append(r.errors, route+" "+code)
}

// takeErrors returns the envelope errors counted since the last call.
func (r *recorder) takeErrors() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := r.errors
	r.errors = nil
	return out
}

func (r *recorder) AdmissionRefused(bound string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.refused = append(r.refused, bound)
}

func (r *recorder) AdmissionInUse(bound string, delta int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.inUse == nil {
		r.inUse = map[string]int64{}
	}
	r.inUse[bound] += delta
}

func (r *recorder) ConnectionReplaced() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.replaced++
}

func (r *recorder) HTTPRequest(route string, status int, _ time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.requests = append(r.requests, route+" "+http.StatusText(status))
}

func (r *recorder) PanicRecovered(route string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.panics = append(r.panics, route)
}

func TestPanicsBecomeTheEnvelope(t *testing.T) {
	obs := &recorder{}
	var logs bytes.Buffer
	h, err := NewHandler(Config{
		Enricher: panicky{},
		Auth:     anyToken{},
		Observer: obs,
		Logger:   slog.New(slog.NewJSONHandler(&logs, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	body := `[{"type":"ip","value":"1.2.3.4"}]`
	paths := []string{"/observe/observables", "/deliberate/observables", "/refer/observables", "/health"}
	for _, path := range paths {
		t.Run(path, func(t *testing.T) {
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, path, strings.NewReader(body)))
			if rec.Code != http.StatusOK {
				t.Errorf("status %d, want 200: a panic must not become an HTTP 500", rec.Code)
			}
			var got map[string]any
			if err := json.Unmarshal(rec.Body.Bytes(), &got); err != nil {
				t.Fatalf("answer is not JSON: %v: %s", err, rec.Body)
			}
			want := map[string]any{"errors": []any{map[string]any{"type": "fatal", "code": "unknown", "message": "Unexpected error."}}}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("answer (-want +got):\n%s", diff)
			}
		})
	}
	if diff := cmp.Diff(paths, obs.panics); diff != "" {
		t.Errorf("recovered panics by route (-want +got):\n%s", diff)
	}
	if n := strings.Count(logs.String(), `"msg":"panic recovered"`); n != len(paths) {
		t.Errorf("%d panic log lines, want %d:\n%s", n, len(paths), logs.String())
	}
	if !strings.Contains(logs.String(), `"panic":"non-error panic value"`) {
		t.Error("a non-error panic value was logged as is; only errors and strings are")
	}
	// The relay still serves.
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/healthz", nil))
	if rec.Code != http.StatusOK {
		t.Errorf("after the panics /healthz answers %d", rec.Code)
	}
}

func TestRequestIDAndRouteLabels(t *testing.T) {
	obs := &recorder{}
	var logs bytes.Buffer
	h, err := NewHandler(Config{Enricher: panicky{}, Auth: anyToken{}, Observer: obs,
		Logger: slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, method, path, given string
		wantKept                  bool
		wantRoute                 string
	}{
		{"kept", http.MethodPost, "/version", "abc-123", true, "/version"},
		{"too long", http.MethodPost, "/version", strings.Repeat("x", 129), false, "/version"},
		{"control character", http.MethodPost, "/version", "a\x01b", false, "/version"},
		{"raw path is not a label", http.MethodGet, "/secret-looking/1.2.3.4", "", false, "unmatched"},
		{"wrong method", http.MethodGet, "/observe/observables", "", false, "unmatched"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			obs.requests = nil
			req := httptest.NewRequest(tt.method, tt.path, nil)
			if tt.given != "" {
				req.Header.Set("X-Request-Id", tt.given)
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			id := rec.Header().Get("X-Request-Id")
			if tt.wantKept && id != tt.given {
				t.Errorf("X-Request-Id = %q, want the caller's %q", id, tt.given)
			}
			if !tt.wantKept && (id == tt.given || len(id) != 32) {
				t.Errorf("X-Request-Id = %q, want a generated one", id)
			}
			if len(obs.requests) != 1 || !strings.HasPrefix(obs.requests[0], tt.wantRoute+" ") {
				t.Errorf("metrics saw %v, want route %q", obs.requests, tt.wantRoute)
			}
			if !strings.Contains(logs.String(), `"request_id":"`+id+`"`) {
				t.Errorf("no access line with request_id %s", id)
			}
		})
	}
	if strings.Contains(logs.String(), "1.2.3.4") {
		t.Error("a raw path reached the access log's route")
	}
}
