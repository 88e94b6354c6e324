package transport

import (
	"net/http"

	"github.com/gorilla/mux"
)

// routes lists every endpoint of CONTRACT.md section 1 on one screen.
func (h *handler) routes() http.Handler {
	r := mux.NewRouter()
	route := func(path string, handler http.Handler, methods ...string) {
		r.Handle(path, named(path, handler)).Methods(methods...)
	}
	route("/health", h.health(), http.MethodPost)
	route("/observe/observables", h.observe(), http.MethodPost)
	route("/deliberate/observables", h.deliberate(), http.MethodPost)
	route("/refer/observables", h.refer(), http.MethodPost)
	route("/version", h.version(), http.MethodPost)
	route("/watchdog", h.watchdog(), http.MethodGet)
	route("/healthz", h.healthz(), http.MethodGet, http.MethodHead)
	route("/readyz", h.readyz(), http.MethodGet, http.MethodHead)
	if h.cfg.Metrics != nil {
		route("/metrics", h.cfg.Metrics, http.MethodGet)
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
