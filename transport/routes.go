package transport

import (
	"net/http"

	"github.com/gorilla/mux"
)

// endpoint is one route of the relay: its template, its handler and
// methods, and whether it takes a configuration token (and so answers the
// envelope's codes of a token and of Pulsedive).
type endpoint struct {
	path    string
	handler http.Handler
	methods []string
	token   bool
}

// endpoints lists every endpoint of CONTRACT.md section 1 on one screen.
func (h *handler) endpoints() []endpoint {
	post, get := []string{http.MethodPost}, []string{http.MethodGet}
	return []endpoint{
		{"/health", h.health(), post, true},
		{"/observe/observables", h.observe(), post, true},
		{"/deliberate/observables", h.deliberate(), post, true},
		{"/refer/observables", h.refer(), post, true},
		{"/version", h.version(), post, false},
		{"/watchdog", h.watchdog(), get, false},
		{"/healthz", h.healthz(), []string{http.MethodGet, http.MethodHead}, false},
		{"/readyz", h.readyz(), []string{http.MethodGet, http.MethodHead}, false},
		// Without Config.Metrics, /metrics is on a listener of its own.
		{"/metrics", h.cfg.Metrics, get, false},
	}
}

// routes is the router of the endpoints.
func (h *handler) routes() http.Handler {
	r := mux.NewRouter()
	for _, e := range h.endpoints() {
		if e.handler != nil {
			r.Handle(e.path, named(e.path, e.handler)).Methods(e.methods...)
		}
	}
	r.NotFoundHandler = notFound()
	r.MethodNotAllowedHandler = methodNotAllowed()
	return r
}

// named records the matched route's path for the access line and metrics.
func named(path string, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		info(r).route = path
		next.ServeHTTP(w, r)
	})
}

// Routes lists the route label of every request: each endpoint's
// template, and the label of requests none matched.
func Routes() []string {
	var out []string
	for _, e := range (&handler{}).endpoints() {
		out = append(out, e.path)
	}
	return append(out, unmatched)
}

// ErrorCodes lists, by route, the envelope's codes (CONTRACT.md section 2)
// the route answers: every code of a token and of Pulsedive on the routes
// that take a token, the failed check on /watchdog. Besides them an
// observable route may answer a Pulsedive status's lower-case reason
// phrase, and any route "unknown" for a recovered panic.
func ErrorCodes() map[string][]string {
	out := map[string][]string{"/watchdog": {codeHealthCheckFailed}}
	for _, e := range (&handler{}).endpoints() {
		if e.token {
			out[e.path] = []string{codeAuthorization, codeInvalidArgument, codeTooManyRequests, codeUnknown, codeKeyError, codeUnavailable}
		}
	}
	return out
}
