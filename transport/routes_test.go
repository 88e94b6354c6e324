package transport

import (
	"net/http"
	"net/http/httptest"
	"testing"
)

// TestRouting pins what the router answers besides the routes themselves,
// as gorilla/mux, which it replaced, answered: unclean paths are
// redirected, a trailing slash is another path, methods are exact.
func TestRouting(t *testing.T) {
	obs := &recorder{}
	h, err := NewHandler(Config{Enricher: panicky{}, Auth: anyToken{}, Observer: obs})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		method, target string
		wantCode       int
		wantLocation   string
		wantRoute      string
	}{
		{http.MethodPost, "/version", http.StatusOK, "", "/version"},
		{http.MethodGet, "/healthz", http.StatusOK, "", "/healthz"},
		{http.MethodHead, "/healthz", http.StatusOK, "", "/healthz"},
		{http.MethodHead, "/readyz", http.StatusOK, "", "/readyz"},
		{http.MethodHead, "/watchdog", http.StatusMethodNotAllowed, "", "unmatched"},
		{http.MethodPut, "/observe/observables", http.StatusMethodNotAllowed, "", "unmatched"},
		{http.MethodPost, "/version/", http.StatusNotFound, "", "unmatched"},
		{http.MethodPost, "/Version", http.StatusNotFound, "", "unmatched"},
		{http.MethodPost, "/", http.StatusNotFound, "", "unmatched"},
		{http.MethodPost, "//version", http.StatusMovedPermanently, "/version", "unmatched"},
		{http.MethodPost, "/observe/../version?x=1", http.StatusMovedPermanently, "/version?x=1", "unmatched"},
		{http.MethodGet, "/a/./healthz/", http.StatusMovedPermanently, "/a/healthz/", "unmatched"},
	}
	for _, tt := range tests {
		t.Run(tt.method+" "+tt.target, func(t *testing.T) {
			obs.requests = nil
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, httptest.NewRequest(tt.method, tt.target, nil))
			if rec.Code != tt.wantCode {
				t.Errorf("status = %d, want %d", rec.Code, tt.wantCode)
			}
			if got := rec.Header().Get("Location"); got != tt.wantLocation {
				t.Errorf("Location = %q, want %q", got, tt.wantLocation)
			}
			if want := tt.wantRoute + " "; len(obs.requests) != 1 || len(obs.requests[0]) < len(want) || obs.requests[0][:len(want)] != want {
				t.Errorf("metrics saw %v, want route %q", obs.requests, tt.wantRoute)
			}
		})
	}
}
