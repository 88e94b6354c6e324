package transport

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/pulsedive-relay/relay/pipeline"
	"github.com/pulsedive-relay/relay/pulsedive"
	"github.com/pulsedive-relay/relay/transport/auth"
)

// failing is an Enricher answering every call with errs.
type failing struct{ errs []error }

func (f failing) Observe(context.Context, pipeline.Request) pipeline.Result {
	return pipeline.Result{Errors: f.errs}
}

func (f failing) Deliberate(context.Context, pipeline.Request) pipeline.Result {
	return pipeline.Result{Errors: f.errs}
}

func (f failing) Refer(context.Context, pipeline.Request) pipeline.ReferResult {
	return pipeline.ReferResult{Errors: f.errs}
}

func (f failing) Health(context.Context, pulsedive.APIKey) error {
	if len(f.errs) == 0 {
		return nil
	}
	return f.errs[0]
}

// refuseAll refuses every token.
type refuseAll struct{}

func (refuseAll) Authenticate(*http.Request) (auth.Claims, error) {
	return auth.Claims{}, &auth.Error{Reason: auth.ReasonExpired}
}

// TestEnvelopeErrorsCounted: every error entry an answer carries is
// counted once by route and code (the errors_total family), whatever
// produced it: the token, the body, Pulsedive, the relay's own bounds,
// the watchdog, a panic. Answers without errors count nothing.
func TestEnvelopeErrorsCounted(t *testing.T) {
	const ip = `[{"type":"ip","value":"1.2.3.4"}]`
	tests := []struct {
		name     string
		enricher Enricher
		auth     Authenticator
		method   string
		path     string
		body     string
		header   http.Header
		want     []string
	}{
		{name: "a refused token", enricher: failing{}, auth: refuseAll{}, path: "/observe/observables", body: ip,
			want: []string{"/observe/observables authorization error"}},
		{name: "a refused token on health", enricher: failing{}, auth: refuseAll{}, path: "/health",
			want: []string{"/health authorization error"}},
		{name: "a bad body", enricher: failing{}, auth: anyToken{}, path: "/deliberate/observables", body: "not json",
			want: []string{"/deliberate/observables invalid argument"}},
		{name: "a Pulsedive status", enricher: failing{[]error{&pulsedive.StatusError{StatusCode: 403, Message: "Access denied."}}}, auth: anyToken{}, path: "/observe/observables", body: ip,
			want: []string{"/observe/observables forbidden"}},
		{name: "a changed document", enricher: failing{[]error{pulsedive.ErrSchema}}, auth: anyToken{}, path: "/refer/observables", body: ip,
			want: []string{"/refer/observables key error"}},
		{name: "Pulsedive away", enricher: failing{[]error{&pulsedive.UnavailableError{Reason: "connection refused"}}}, auth: anyToken{}, path: "/health",
			want: []string{"/health service unavailable"}},
		{name: "the relay's budget", enricher: failing{[]error{&pulsedive.RateLimitError{RetryAfter: time.Second}}}, auth: anyToken{}, path: "/observe/observables", body: ip,
			want: []string{"/observe/observables too many requests"}},
		{name: "a wrong PULSEDIVE_API_URL", enricher: failing{[]error{&pulsedive.UnexpectedAnswerError{StatusCode: 404}}}, auth: anyToken{}, path: "/health",
			want: []string{"/health unknown"}},
		{name: "two errors in one answer", enricher: failing{[]error{pulsedive.ErrSchema, &pulsedive.StatusError{StatusCode: 401}}}, auth: anyToken{}, path: "/observe/observables", body: ip,
			want: []string{"/observe/observables key error", "/observe/observables unauthorized"}},
		{name: "the same error twice is one entry", enricher: failing{[]error{pulsedive.ErrSchema, pulsedive.ErrSchema}}, auth: anyToken{}, path: "/observe/observables", body: ip,
			want: []string{"/observe/observables key error"}},
		{name: "a bug", enricher: failing{[]error{errors.New("no row for this")}}, auth: anyToken{}, path: "/observe/observables", body: ip,
			want: []string{"/observe/observables unknown"}},
		{name: "a panic", enricher: panicky{}, auth: anyToken{}, path: "/observe/observables", body: ip,
			want: []string{"/observe/observables unknown"}},
		{name: "a watchdog without its header", enricher: failing{}, auth: anyToken{}, method: http.MethodGet, path: "/watchdog",
			want: []string{"/watchdog health check failed"}},
		{name: "a watchdog with its header", enricher: failing{}, auth: anyToken{}, method: http.MethodGet, path: "/watchdog", header: http.Header{"Health-Check": {"x"}}},
		{name: "a healthy health check", enricher: failing{}, auth: anyToken{}, path: "/health"},
		{name: "nothing supported needs no token", enricher: failing{}, auth: refuseAll{}, path: "/observe/observables", body: `[{"type":"email","value":"a@b.c"}]`},
		{name: "a 404", enricher: failing{}, auth: anyToken{}, method: http.MethodGet, path: "/no/such/path"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			obs := &recorder{}
			h, err := NewHandler(Config{Enricher: tt.enricher, Auth: tt.auth, Observer: obs})
			if err != nil {
				t.Fatal(err)
			}
			method := tt.method
			if method == "" {
				method = http.MethodPost
			}
			req := httptest.NewRequest(method, tt.path, strings.NewReader(tt.body))
			for k, v := range tt.header {
				req.Header[k] = v
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if n := strings.Count(rec.Body.String(), `"code":`); n != len(tt.want) && rec.Code == http.StatusOK {
				t.Errorf("the answer holds %d codes, want %d: %s", n, len(tt.want), rec.Body)
			}
			if diff := cmp.Diff(tt.want, obs.takeErrors()); diff != "" {
				t.Errorf("envelope errors counted (-want +got):\n%s", diff)
			}
		})
	}
}

// TestAdmissionRefusalsCounted: a request refused over a bound answers
// "too many requests", counted like any envelope error.
func TestAdmissionRefusalsCounted(t *testing.T) {
	obs := &recorder{}
	h := &handler{log: slog.New(slog.DiscardHandler), obs: obs}
	req := httptest.NewRequest(http.MethodPost, "/observe/observables", nil)
	rec := httptest.NewRecorder()
	h.instrument(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		info(r).route = "/observe/observables"
		h.refuse(w, r, &overload{bound: BoundRequests}, true)
	})).ServeHTTP(rec, req)
	if diff := cmp.Diff([]string{"/observe/observables too many requests"}, obs.takeErrors()); diff != "" {
		t.Errorf("envelope errors counted (-want +got):\n%s", diff)
	}
}
