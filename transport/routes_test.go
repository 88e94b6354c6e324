package transport

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/gorilla/mux"

	"github.com/pulsedive-relay/relay/pipeline"
	"github.com/pulsedive-relay/relay/pulsedive"
	"github.com/pulsedive-relay/relay/transport/auth"
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

// TestRoutesAndCodesAreWhatTheHandlerServes: Routes names every route the
// router takes (and the label of the rest), and ErrorCodes every code of
// the envelope on the routes that take a token: what the metrics create
// their series from.
func TestRoutesAndCodesAreWhatTheHandlerServes(t *testing.T) {
	h := &handler{cfg: Config{Metrics: http.NotFoundHandler()}}
	var served []string
	err := h.routes().(*mux.Router).Walk(func(route *mux.Route, _ *mux.Router, _ []*mux.Route) error {
		path, err := route.GetPathTemplate()
		served = append(served, path)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(append(served, unmatched), Routes()); diff != "" {
		t.Errorf("Routes against the router's (-router +Routes):\n%s", diff)
	}

	codes := ErrorCodes()
	for route := range codes {
		if !slices.Contains(Routes(), route) {
			t.Errorf("ErrorCodes names %s, which is no route", route)
		}
	}
	// Every row of the envelope's table, on a route that takes a token.
	for _, err := range []error{
		&auth.Error{Reason: auth.ReasonExpired}, &badRequest{Detail: "x"}, &pulsedive.APIError{}, pulsedive.ErrSchema,
		pulsedive.ErrInvalidJSON, pulsedive.ErrTooLarge, &pulsedive.RedirectError{}, &pulsedive.UnexpectedAnswerError{StatusCode: 404},
		&pulsedive.TLSError{}, &pulsedive.UnavailableError{}, context.DeadlineExceeded, context.Canceled,
		&pipeline.BudgetError{LinksOnly: true}, &pulsedive.RateLimitError{}, &overload{bound: BoundRequests}, &pipeline.PanicError{},
		errors.New("no row"),
	} {
		e, _ := envelopeOf(err)
		for _, route := range []string{"/health", "/observe/observables", "/deliberate/observables", "/refer/observables"} {
			if !slices.Contains(codes[route], e.Code) {
				t.Errorf("%T answers %q on %s, which ErrorCodes does not list", err, e.Code, route)
			}
		}
	}
	if !slices.Contains(codes["/watchdog"], codeHealthCheckFailed) {
		t.Errorf("ErrorCodes lacks the watchdog's %q", codeHealthCheckFailed)
	}
}
