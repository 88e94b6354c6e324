package transport

import (
	"net/http"

	"github.com/gorilla/mux"
)

// routes lists every endpoint of CONTRACT.md section 1 on one screen.
func (h *handler) routes() *mux.Router {
	r := mux.NewRouter()
	r.Use(h.routeName)

	r.Handle("/health", h.health()).Methods(http.MethodPost)
	r.Handle("/observe/observables", h.observe()).Methods(http.MethodPost)
	r.Handle("/deliberate/observables", h.deliberate()).Methods(http.MethodPost)
	r.Handle("/refer/observables", h.refer()).Methods(http.MethodPost)
	r.Handle("/version", h.version()).Methods(http.MethodPost)
	r.Handle("/watchdog", h.watchdog()).Methods(http.MethodGet)
	r.Handle("/healthz", h.healthz()).Methods(http.MethodGet, http.MethodHead)
	r.Handle("/readyz", h.readyz()).Methods(http.MethodGet, http.MethodHead)
	if h.cfg.Metrics != nil {
		r.Handle("/metrics", h.cfg.Metrics).Methods(http.MethodGet)
	}

	r.NotFoundHandler = notFound()
	r.MethodNotAllowedHandler = methodNotAllowed()
	return r
}
