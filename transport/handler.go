// Package transport is the relay's HTTP face (CONTRACT.md sections 1 to 3): the
// routes, the configuration-token check, body decoding and the error
// envelope, which every failure reaches through one table (envelopeOf).
package transport

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"time"

	"github.com/pulsedive-relay/relay/ctim"
	"github.com/pulsedive-relay/relay/pipeline"
	"github.com/pulsedive-relay/relay/pulsedive"
	"github.com/pulsedive-relay/relay/transport/auth"
)

// Authenticator checks a request's configuration token; *auth.Authenticator
// is one. Every failure is an *auth.Error.
type Authenticator interface {
	Authenticate(r *http.Request) (auth.Claims, error)
}

// Enricher answers the observable endpoints; *pipeline.Pipeline is one.
// Handlers need nothing else from the pipeline.
type Enricher interface {
	Observe(ctx context.Context, req pipeline.Request) pipeline.Result
	Deliberate(ctx context.Context, req pipeline.Request) pipeline.Result
	Refer(ctx context.Context, req pipeline.Request) pipeline.ReferResult
	Health(ctx context.Context, key pulsedive.APIKey) error
}

// Observer receives the transport's measurements; metrics.Metrics is one.
type Observer interface {
	HTTPRequest(route string, status int, d time.Duration)
	PanicRecovered(route string)
	// AdmissionRefused counts a request or connection refused over bound
	// (one of the Bound constants); AdmissionInUse adds delta to what is
	// held of it.
	AdmissionRefused(bound string)
	AdmissionInUse(bound string, delta int64)
	// ConnectionReplaced counts an open connection closed to make room
	// for a new one at the connection bound (see ConnLimit).
	ConnectionReplaced()
	// EnvelopeError counts one error answered in the envelope, by route
	// and code: every answer is HTTP 200, so HTTPRequest cannot tell.
	EnvelopeError(route, code string)
}

// Defaults applied by NewHandler to zero Config fields; the first two are
// those of RELAY_MAX_BODY_BYTES and RELAY_MAX_OBSERVABLES.
const (
	DefaultMaxBodyBytes      = 1 << 20
	DefaultMaxObservables    = 1000
	DefaultChunkWriteTimeout = 10 * time.Second
)

// Config configures the handler.
type Config struct {
	Enricher Enricher      // required
	Auth     Authenticator // required
	// Version is what POST /version answers.
	Version string
	// MaxBodyBytes and MaxObservables bound a request body
	// (DefaultMaxBodyBytes and DefaultMaxObservables when zero).
	MaxBodyBytes   int64
	MaxObservables int
	// Admission bounds what the requests served at once hold; the zero
	// value bounds nothing.
	Admission Admission
	// ChunkWriteTimeout bounds the write of each chunk of a streamed
	// answer (DefaultChunkWriteTimeout when zero), so a reader that stalls
	// is cut off early; WriteTimeout, when set (the server's), bounds the
	// whole answer from the request's start, which no chunk's deadline
	// passes.
	ChunkWriteTimeout time.Duration
	WriteTimeout      time.Duration
	// Metrics serves GET /metrics; nil leaves the route out (the metrics
	// are then on a listener of their own).
	Metrics http.Handler
	// Ready reports readiness for GET /readyz; nil means always ready.
	Ready    func() bool
	Observer Observer
	Logger   *slog.Logger
}

type handler struct {
	cfg    Config
	limits bodyLimits
	pools  pools
	log    *slog.Logger
	obs    Observer
}

// NewHandler returns the relay's http.Handler: the routes of CONTRACT.md section
// 1 behind request ids, an access log, metrics and panic recovery.
func NewHandler(cfg Config) (http.Handler, error) {
	if cfg.Enricher == nil || cfg.Auth == nil {
		return nil, errors.New("transport: Enricher and Auth are required")
	}
	h := &handler{
		cfg:    cfg,
		limits: bodyLimits{maxBytes: cfg.MaxBodyBytes, maxObservables: cfg.MaxObservables},
		log:    cfg.Logger,
		obs:    cfg.Observer,
	}
	if h.limits.maxBytes <= 0 {
		h.limits.maxBytes = DefaultMaxBodyBytes
	}
	if h.limits.maxObservables <= 0 {
		h.limits.maxObservables = DefaultMaxObservables
	}
	if h.log == nil {
		h.log = slog.New(slog.DiscardHandler)
	}
	if h.obs == nil {
		h.obs = nopObserver{}
	}
	if h.cfg.ChunkWriteTimeout <= 0 {
		h.cfg.ChunkWriteTimeout = DefaultChunkWriteTimeout
	}
	h.pools = newPools(cfg.Admission, h.limits, h.obs)
	return h.instrument(h.routes()), nil
}

// dataBody is an answer of the observable endpoints: data, errors, or both
// side by side (CONTRACT.md section 2).
type dataBody struct {
	Data   any        `json:"data,omitempty"`
	Errors []apiError `json:"errors,omitempty"`
}

// enrich is the shared flow of observe, deliberate and refer, answering in
// the contract's order: body, then supported types, then the token, then
// Pulsedive. empty is the answer when no supported observable remains
// (given without asking for a token, as the original did).
//
// The token is checked first all the same, before the body is read, though
// its verdict waits its turn: a caller without a valid token is charged to
// the unverified share of every bound, so that it cannot make the relay
// hold big bodies at the expense of callers with one.
func (h *handler) enrich(empty any, run func(context.Context, pipeline.Request) (data any, errs []error)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		a, ok := h.admit(w, r, false)
		if !ok {
			return
		}
		defer h.pools.requests.release(a.t, 1)
		claims, authErr, t := a.claims, a.authErr, a.t

		obs, err := h.readObservables(r, t)
		var busy *overload
		if errors.As(err, &busy) {
			h.refuse(w, r, err, false)
			return
		}
		if err != nil {
			h.fail(w, r, err)
			return
		}
		info(r).observables = len(obs)
		if len(obs) == 0 {
			writeJSON(w, http.StatusOK, dataBody{Data: empty})
			return
		}
		if authErr != nil {
			h.fail(w, r, authErr)
			return
		}
		n := int64(len(obs))
		if err := h.pools.observables.acquire(t, n); err != nil {
			h.refuse(w, r, err, true)
			return
		}
		defer h.pools.observables.release(t, n)
		data, errs := run(r.Context(), pipeline.Request{Key: claims.Key, KeyFingerprint: string(t), EntitiesLimit: claims.EntitiesLimit, Observables: obs})
		body := dataBody{Data: data}
		if len(errs) > 0 {
			body.Errors = h.envelope(r, errs)
		}
		if body.Data == nil && body.Errors == nil {
			body.Data = empty
		}
		h.answer(w, r, body)
	})
}

// admit authenticates r, vouching for its connection when the token is
// good, and takes one of its tenant's request slots (the unverified share
// without a valid token), which the caller gives back with
// h.pools.requests.release(t, 1). Refused a slot, it answers as refuse
// does (bodyRead: whether r's body needs no reading) and ok is false.
func (h *handler) admit(w http.ResponseWriter, r *http.Request, bodyRead bool) (admitted, bool) {
	var a admitted
	a.claims, a.authErr = h.cfg.Auth.Authenticate(r)
	if a.authErr == nil {
		vouch(r)
	}
	a.t = tenantOf(a.claims, a.authErr)
	if err := h.pools.requests.acquire(a.t, 1); err != nil {
		h.refuse(w, r, err, bodyRead)
		return a, false
	}
	return a, true
}

// admitted is a request admit let in: its token's claims or why it has
// none, and its tenant.
type admitted struct {
	claims  auth.Claims
	authErr error
	t       tenant
}

// readObservables reads and parses the body under the body budget, which
// holds it only until it is parsed.
func (h *handler) readObservables(r *http.Request, t tenant) ([]ctim.Observable, error) {
	var held int64
	defer func() { h.pools.bodyBytes.release(t, held) }()
	body, held, err := readBody(r, h.limits, func(n int64) error { return h.pools.bodyBytes.acquire(t, n) })
	if err != nil {
		return nil, err
	}
	return parseObservables(body, h.limits.maxObservables)
}

func (h *handler) observe() http.Handler {
	return h.enrich(struct{}{}, func(ctx context.Context, req pipeline.Request) (any, []error) {
		res := h.cfg.Enricher.Observe(ctx, req)
		return bundleData(res.Bundle, len(res.Errors) > 0), res.Errors
	})
}

func (h *handler) deliberate() http.Handler {
	return h.enrich(struct{}{}, func(ctx context.Context, req pipeline.Request) (any, []error) {
		res := h.cfg.Enricher.Deliberate(ctx, req)
		return bundleData(res.Bundle, len(res.Errors) > 0), res.Errors
	})
}

func (h *handler) refer() http.Handler {
	return h.enrich([]ctim.Reference{}, func(ctx context.Context, req pipeline.Request) (any, []error) {
		res := h.cfg.Enricher.Refer(ctx, req)
		if len(res.References) == 0 {
			return nil, res.Errors
		}
		return res.References, res.Errors
	})
}

// bundleData is the data of an observe or deliberate answer: the bundle,
// which answer encodes as its ctim.Data, or nothing when it is empty and
// errors stand alone.
func bundleData(b *ctim.Bundle, withErrors bool) any {
	if b == nil || (b.Empty() && withErrors) {
		return nil
	}
	return b
}

func (h *handler) health() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// Its body, if any, is never read: net/http discards it.
		a, ok := h.admit(w, r, true)
		if !ok {
			return
		}
		defer h.pools.requests.release(a.t, 1)
		claims, err := a.claims, a.authErr
		if err == nil {
			err = h.cfg.Enricher.Health(r.Context(), claims.Key)
		}
		if err != nil {
			h.fail(w, r, err)
			return
		}
		writeJSON(w, http.StatusOK, dataBody{Data: map[string]string{"status": "ok"}})
	})
}

func (h *handler) version() http.Handler {
	body := map[string]string{"version": h.cfg.Version}
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, body)
	})
}

func (h *handler) watchdog() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		check := r.Header.Get("Health-Check")
		if check == "" {
			e := apiError{Type: "fatal", Code: codeHealthCheckFailed, Message: "Invalid Health Check"}
			info(r).errors = append(info(r).errors, e.Code)
			writeJSON(w, http.StatusOK, errorBody{Errors: []apiError{e}})
			return
		}
		writeJSON(w, http.StatusOK, dataBody{Data: check})
	})
}

func (h *handler) healthz() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
}

func (h *handler) readyz() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		if h.cfg.Ready != nil && !h.cfg.Ready() {
			writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "not ready"})
			return
		}
		writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
	})
}

// statusBody is the JSON body of a 404 or 405.
type statusBody struct {
	Code    int    `json:"code"`
	Message string `json:"message"`
	Reason  string `json:"reason"`
}

func notFound() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusNotFound, statusBody{
			Code: http.StatusNotFound, Message: "Not Found",
			Reason: "The requested URL was not found on the server.",
		})
	})
}

func methodNotAllowed() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusMethodNotAllowed, statusBody{
			Code: http.StatusMethodNotAllowed, Message: "Method Not Allowed",
			Reason: "The method is not allowed for the requested URL.",
		})
	})
}

// fail answers a single error in the envelope.
func (h *handler) fail(w http.ResponseWriter, r *http.Request, err error) {
	writeJSON(w, http.StatusOK, errorBody{Errors: h.envelope(r, []error{err})})
}

// envelope maps errs for the answer, notes their codes for the access
// line, and logs errors no row of the table knows (bugs) once.
func (h *handler) envelope(r *http.Request, errs []error) []apiError {
	out := envelopeErrors(errs, func(err error) {
		h.log.ErrorContext(r.Context(), "unmapped error", "error", err.Error(), "request_id", info(r).id)
	})
	ri := info(r)
	for _, e := range out {
		ri.errors = append(ri.errors, e.Code)
	}
	return out
}

type nopObserver struct{}

func (nopObserver) HTTPRequest(string, int, time.Duration) {}
func (nopObserver) PanicRecovered(string)                  {}
func (nopObserver) AdmissionRefused(string)                {}
func (nopObserver) AdmissionInUse(string, int64)           {}
func (nopObserver) ConnectionReplaced()                    {}
func (nopObserver) EnvelopeError(string, string)           {}
