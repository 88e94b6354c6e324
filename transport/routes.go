package transport

import (
	"net/http"
	"path"
)

// routes lists every endpoint of CONTRACT.md section 1 on one screen.
func (h *handler) routes() http.Handler {
	rt := router{
		notFound:         notFound(),
		methodNotAllowed: methodNotAllowed(),
	}
	rt.handle("/health", h.health(), http.MethodPost)
	rt.handle("/observe/observables", h.observe(), http.MethodPost)
	rt.handle("/deliberate/observables", h.deliberate(), http.MethodPost)
	rt.handle("/refer/observables", h.refer(), http.MethodPost)
	rt.handle("/version", h.version(), http.MethodPost)
	rt.handle("/watchdog", h.watchdog(), http.MethodGet)
	rt.handle("/healthz", h.healthz(), http.MethodGet, http.MethodHead)
	rt.handle("/readyz", h.readyz(), http.MethodGet, http.MethodHead)
	if h.cfg.Metrics != nil {
		rt.handle("/metrics", h.cfg.Metrics, http.MethodGet)
	}
	return &rt
}

// router serves exact paths by method, as the gorilla/mux router it
// replaced did for these routes, for a fraction of its cost (no regular
// expression, no request copies to carry route variables there are none
// of): a path that is not clean is redirected to its clean form (301), an
// unknown path is a 404, a known path asked with another method a 405.
// The route template of a matched request, its path, goes to the access
// line and the metrics.
type router struct {
	routes           map[string]map[string]http.Handler // path → method → handler
	notFound         http.Handler
	methodNotAllowed http.Handler
}

func (rt *router) handle(path string, h http.Handler, methods ...string) {
	if rt.routes == nil {
		rt.routes = map[string]map[string]http.Handler{}
	}
	byMethod := map[string]http.Handler{}
	for _, m := range methods {
		byMethod[m] = h
	}
	rt.routes[path] = byMethod
}

func (rt *router) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p := r.URL.Path
	if clean := cleanPath(p); clean != p {
		u := *r.URL
		u.Path = clean
		w.Header().Set("Location", u.String())
		w.WriteHeader(http.StatusMovedPermanently)
		return
	}
	byMethod, ok := rt.routes[p]
	if !ok {
		rt.notFound.ServeHTTP(w, r)
		return
	}
	h, ok := byMethod[r.Method]
	if !ok {
		rt.methodNotAllowed.ServeHTTP(w, r)
		return
	}
	info(r).route = p
	h.ServeHTTP(w, r)
}

// cleanPath is p in canonical form: rooted, without . or .. elements or
// repeated slashes, a trailing slash kept.
func cleanPath(p string) string {
	if p == "" {
		return "/"
	}
	if p[0] != '/' {
		p = "/" + p
	}
	np := path.Clean(p)
	if p[len(p)-1] == '/' && np != "/" {
		np += "/"
	}
	return np
}
