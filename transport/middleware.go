package transport

import (
	"context"
	"encoding/binary"
	"encoding/hex"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"time"

	"github.com/pulsedive-relay/relay/pipeline"
)

// unmatched is the route label of requests no route took (404, 405): raw
// paths never become labels.
const unmatched = "unmatched"

// requestInfo is what the access line and the metrics learn about a
// request while it is served.
type requestInfo struct {
	id          string
	route       string
	observables int
	errors      []string // envelope codes answered
	cutOff      bool     // the answer could not be written whole
	start       time.Time
	w           statusWriter // the writer the handler is given: one allocation for both
}

type infoKey struct{}

// info returns the request's requestInfo; a request that did not pass
// through instrument gets a throwaway one.
func info(r *http.Request) *requestInfo {
	if ri, ok := r.Context().Value(infoKey{}).(*requestInfo); ok {
		return ri
	}
	return &requestInfo{route: unmatched}
}

// instrument wraps the router: a request id (X-Request-Id, taken or made,
// and echoed), panic recovery into the error envelope, one access line and
// the HTTP metrics per request.
func (h *handler) instrument(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		ri := &requestInfo{id: requestID(r.Header.Get("X-Request-Id")), route: unmatched, start: start}
		r = r.WithContext(context.WithValue(r.Context(), infoKey{}, ri))
		w.Header()["X-Request-Id"] = []string{ri.id} // canonical already: spares Set its check
		sw := &ri.w
		sw.ResponseWriter = w

		defer func() {
			if p := recover(); p != nil {
				if p == http.ErrAbortHandler {
					panic(p)
				}
				h.obs.PanicRecovered(ri.route)
				h.log.ErrorContext(r.Context(), "panic recovered", "route", ri.route, "request_id", ri.id, "panic", pipeline.PanicText(p))
				if !sw.wrote {
					ri.errors = append(ri.errors, codeUnknown)
					writeJSON(sw, http.StatusOK, errorBody{Errors: []apiError{{Type: "fatal", Code: codeUnknown, Message: msgUnexpected}}})
				}
			}
			d := time.Since(start)
			h.obs.HTTPRequest(ri.route, sw.code(), d)
			for _, code := range ri.errors {
				h.obs.EnvelopeError(ri.route, code)
			}
			attrs := []slog.Attr{
				slog.String("method", r.Method),
				slog.String("route", ri.route),
				slog.Int("status", sw.code()),
				slog.Float64("duration_ms", float64(d.Microseconds())/1000),
				slog.Int("observables", ri.observables),
				slog.String("request_id", ri.id),
			}
			if len(ri.errors) > 0 {
				attrs = append(attrs, slog.Any("errors", ri.errors))
			}
			if ri.cutOff {
				attrs = append(attrs, slog.Bool("cut_off", true))
			}
			h.log.LogAttrs(r.Context(), accessLevel(ri.route), "request", attrs...)
		}()
		next.ServeHTTP(sw, r)
	})
}

// accessLevel keeps the lines of probes and scrapes, which come every few
// seconds, at debug level; every other request is logged at info.
func accessLevel(route string) slog.Level {
	switch route {
	case "/healthz", "/readyz", "/metrics":
		return slog.LevelDebug
	}
	return slog.LevelInfo
}

// requestID keeps a caller's id when it is short and printable, else makes
// a random one.
func requestID(given string) string {
	if n := len(given); n > 0 && n <= 128 {
		ok := true
		for i := 0; i < n && ok; i++ {
			ok = given[i] > ' ' && given[i] < 0x7f
		}
		if ok {
			return given
		}
	}
	// The id only has to tell requests apart: the runtime's generator
	// (ChaCha8, seeded by the system) makes it without a system call.
	var b [16]byte
	binary.LittleEndian.PutUint64(b[:8], rand.Uint64())
	binary.LittleEndian.PutUint64(b[8:], rand.Uint64())
	return hex.EncodeToString(b[:])
}

// statusWriter remembers the status written.
type statusWriter struct {
	http.ResponseWriter
	status int
	wrote  bool
}

func (w *statusWriter) WriteHeader(code int) {
	if !w.wrote {
		w.status, w.wrote = code, true
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if !w.wrote {
		w.status, w.wrote = http.StatusOK, true
	}
	return w.ResponseWriter.Write(b)
}

func (w *statusWriter) code() int {
	if !w.wrote {
		return http.StatusOK
	}
	return w.status
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
