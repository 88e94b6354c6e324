package pulsedivetest

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"time"
)

// Mode is what a Fault does to a call.
type Mode int

// Fault modes. The zero Mode is ModeStatus, so Fault{Status: 503} reads as
// "answer 503".
const (
	// ModeStatus answers Status (500 when zero) with Body, else with
	// {"error": Message}, else with the text Pulsedive sends for that status
	// (see DefaultMessage); 502, 503 and 504 default to the HTML page a
	// front proxy sends, not JSON.
	ModeStatus Mode = iota
	// ModeHang answers nothing until the request's context ends (the client
	// gave up) or the Fake is closed.
	ModeHang
	// ModeReset sends the status line, headers (Content-Length of the whole
	// answer) and half the body, then resets the connection (TCP RST,
	// "connection reset by peer"). Where the connection cannot be hijacked
	// (HTTP/2) the stream is aborted instead.
	ModeReset
	// ModeDisconnect is ModeReset with an orderly close (FIN): the client
	// reads half the body and then an unexpected EOF.
	ModeDisconnect
	// ModeTruncate answers the first half of the body as if it were all of
	// it (Content-Length matches): well-framed HTTP, broken JSON.
	ModeTruncate
	// ModeNotJSON answers an HTML page with Content-Type text/html.
	ModeNotJSON
	// ModeErrorField answers {"error": Message} ("Unexpected error." when
	// Message is empty) with Status, 200 by default: Pulsedive's way of
	// failing with a success code.
	ModeErrorField
	// ModeHuge streams a body of Size bytes (32 MiB by default): an object
	// with one very long string, valid JSON if the client reads it all. It
	// stops when a write fails, so a client that stops reading is not sent
	// everything; Stats.BytesWritten tells how much went out.
	ModeHuge
	// ModeDrip sends the normal answer DripBytes bytes (1 by default) every
	// DripEvery (50ms by default), flushing each, until done or the
	// request's context ends.
	ModeDrip
)

var modeNames = [...]string{
	ModeStatus: "status", ModeHang: "hang", ModeReset: "reset", ModeDisconnect: "disconnect",
	ModeTruncate: "truncate", ModeNotJSON: "not-json", ModeErrorField: "error-field",
	ModeHuge: "huge", ModeDrip: "drip",
}

func (m Mode) String() string {
	if m >= 0 && int(m) < len(modeNames) {
		return modeNames[m]
	}
	return "Mode(" + strconv.Itoa(int(m)) + ")"
}

// Fault describes a failure the fake injects. The zero Fault answers
// HTTP 500 to every call it matches. A Fault is a value: SetFault copies it.
type Fault struct {
	Mode Mode

	// Status is the status sent where the mode sends one: 500 by default for
	// ModeStatus; the normal answer's status for ModeReset, ModeDisconnect,
	// ModeTruncate and ModeDrip; 200 otherwise.
	Status int
	// Message is the "error" text of ModeStatus and ModeErrorField.
	Message string
	// Body, when not nil, is sent as is (Content-Type application/json) by
	// ModeStatus, and is the answer that ModeReset, ModeDisconnect,
	// ModeTruncate and ModeDrip cut or trickle.
	Body []byte
	// Header is added to the answer of ModeStatus and ModeErrorField (a
	// Retry-After, say).
	Header http.Header

	// Kind limits the fault to one kind of call: KindInfo, KindLinks or
	// KindHealth; empty matches all.
	Kind string
	// FirstN, when positive, makes only the first FirstN matching calls fail;
	// later ones get the normal answer ("fails twice, then recovers").
	FirstN int
	// Every, when above 1, makes only every Every-th matching call fail,
	// starting with the first: Every 2 fails calls 1, 3, 5... ("flapping").
	// With FirstN too, a call fails when both allow it.
	Every int

	// Size is the body length of ModeHuge.
	Size int64
	// DripBytes and DripEvery pace ModeDrip.
	DripBytes int
	DripEvery time.Duration
}

// hits says whether the n-th matching call (1-based) fails.
func (f *Fault) hits(n int) bool {
	if f.FirstN > 0 && n > f.FirstN {
		return false
	}
	return f.Every <= 1 || (n-1)%f.Every == 0
}

// DefaultMessage is the "error" text the fake sends with a status when the
// fault names none: Pulsedive's own words where known.
func DefaultMessage(status int) string {
	switch status {
	case http.StatusNotFound, http.StatusBadRequest:
		return notFoundText
	case http.StatusUnauthorized:
		return invalidKeyText
	case http.StatusForbidden:
		return forbiddenKeyText
	case http.StatusRequestTimeout:
		return processingText
	case http.StatusTooManyRequests:
		return perMinuteText(30)
	case http.StatusInternalServerError:
		return "An unexpected error occurred. Please try again later."
	}
	return http.StatusText(status) + "."
}

const (
	notFoundText     = "Indicator not found."
	invalidKeyText   = "Invalid API key."
	missingKeyText   = "API key required."
	forbiddenKeyText = "Access denied for this API key."
	processingText   = "Request(s) still processing."
	notJSONPage      = "<!DOCTYPE html>\n<html><head><title>Pulsedive</title></head><body><h1>Something went wrong</h1></body></html>\n"
)

func perMinuteText(n int) string {
	return fmt.Sprintf("API rate limit exceeded: %d requests per minute. Requests disabled for 1 minute. Please visit pulsedive.com/api to increase your limit.", n)
}

func periodText(n int, period string) string {
	return fmt.Sprintf("API rate limit exceeded: %d requests per %s. Visit pulsedive.com/api to view limits and upgrade your plan.", n, period)
}

func proxyPage(status int) []byte {
	text := fmt.Sprintf("%d %s", status, http.StatusText(status))
	return []byte("<html>\r\n<head><title>" + text + "</title></head>\r\n<body>\r\n<center><h1>" + text + "</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n")
}

func errorBody(message string) []byte {
	b, _ := json.Marshal(map[string]string{"error": message})
	return b
}

// inject carries out fault f for a call whose normal answer is normal.
func (fk *Fake) inject(w http.ResponseWriter, r *http.Request, f *Fault, normal Answer) {
	if f.Status != 0 && (f.Status < 100 || f.Status > 599) {
		fk.write(w, http.StatusInternalServerError, "application/json", nil,
			errorBody(fmt.Sprintf("pulsedivetest: fault status %d is not an HTTP status", f.Status)))
		return
	}
	body := []byte(normal.Body)
	if f.Body != nil {
		body = f.Body
	}
	status := normal.Status
	if f.Status != 0 {
		status = f.Status
	}

	switch f.Mode {
	case ModeStatus:
		status = cmp.Or(f.Status, http.StatusInternalServerError)
		ctype := "application/json"
		switch {
		case f.Body != nil:
			body = f.Body
		case f.Message != "":
			body = errorBody(f.Message)
		case status == http.StatusRequestTimeout:
			body = []byte(`{"error":"` + processingText + `","status":"processing","qid":"110740426"}`)
		case status == http.StatusTooManyRequests:
			body = errorBody(perMinuteText(cmp.Or(fk.cfg.PerMinute, 30)))
		case status == http.StatusBadGateway, status == http.StatusServiceUnavailable, status == http.StatusGatewayTimeout:
			body, ctype = proxyPage(status), "text/html"
		default:
			body = errorBody(DefaultMessage(status))
		}
		fk.write(w, status, ctype, f.Header, body)
	case ModeErrorField:
		fk.write(w, cmp.Or(f.Status, http.StatusOK), "application/json", f.Header, errorBody(cmp.Or(f.Message, "Unexpected error.")))
	case ModeNotJSON:
		fk.write(w, cmp.Or(f.Status, http.StatusOK), "text/html", nil, []byte(notJSONPage))
	case ModeTruncate:
		fk.write(w, status, "application/json", nil, body[:len(body)/2])
	case ModeHang:
		select {
		case <-r.Context().Done():
		case <-fk.done:
			abort(w)
		}
	case ModeReset, ModeDisconnect:
		fk.cut(w, status, body, f.Mode == ModeReset)
	case ModeHuge:
		fk.huge(w, r.Context(), cmp.Or(f.Status, http.StatusOK), cmp.Or(f.Size, 32<<20))
	case ModeDrip:
		fk.drip(w, r.Context(), status, body, cmp.Or(f.DripBytes, 1), cmp.Or(f.DripEvery, 50*time.Millisecond))
	default:
		fk.write(w, http.StatusInternalServerError, "application/json", nil, errorBody("pulsedivetest: unknown fault mode "+f.Mode.String()))
	}
}

// cut sends the headers and half of body, then drops the connection: with
// a TCP RST when rst, else with an orderly close.
func (fk *Fake) cut(w http.ResponseWriter, status int, body []byte, rst bool) {
	half := body[:len(body)/2]
	conn, buf, err := http.NewResponseController(w).Hijack()
	if err != nil {
		// HTTP/2, or a wrapper that cannot hijack: abort the stream after
		// the partial answer.
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		w.WriteHeader(status)
		fk.count(status, 0)
		n, _ := w.Write(half)
		fk.count(0, int64(n))
		_ = http.NewResponseController(w).Flush()
		abort(w)
		return
	}
	defer conn.Close()
	fk.count(status, 0)
	_, _ = fmt.Fprintf(buf, "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n",
		status, http.StatusText(status), len(body))
	n, _ := buf.Write(half)
	fk.count(0, int64(n))
	_ = buf.Flush()
	if rst {
		raw := conn
		if nc, ok := conn.(interface{ NetConn() net.Conn }); ok { // *tls.Conn
			raw = nc.NetConn()
		}
		if tc, ok := raw.(*net.TCPConn); ok {
			_ = tc.SetLinger(0)
		}
	}
}

// huge streams size bytes of one JSON object, stopping at the first failed
// write or when ctx or the fake ends.
func (fk *Fake) huge(w http.ResponseWriter, ctx context.Context, status int, size int64) {
	head, tail := []byte(`{"iid":1,"pad":"`), []byte(`"}`)
	size = max(size, int64(len(head)+len(tail)))
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.FormatInt(size, 10))
	w.WriteHeader(status)
	fk.count(status, 0)

	chunk := make([]byte, 32<<10)
	for i := range chunk {
		chunk[i] = 'x'
	}
	remaining := size
	send := func(b []byte) bool {
		n, err := w.Write(b)
		fk.count(0, int64(n))
		remaining -= int64(n)
		return err == nil && ctx.Err() == nil && !fk.closed()
	}
	if !send(head) {
		return
	}
	for pad := remaining - int64(len(tail)); pad > 0; pad -= int64(len(chunk)) {
		if !send(chunk[:min(int64(len(chunk)), pad)]) {
			return
		}
	}
	send(tail)
}

// drip sends body n bytes at a time, every d.
func (fk *Fake) drip(w http.ResponseWriter, ctx context.Context, status int, body []byte, n int, d time.Duration) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(status)
	fk.count(status, 0)
	rc := http.NewResponseController(w)
	_ = rc.Flush()
	t := time.NewTicker(d)
	defer t.Stop()
	for len(body) > 0 {
		select {
		case <-ctx.Done():
			return
		case <-fk.done:
			abort(w)
		case <-t.C:
		}
		k := min(n, len(body))
		written, err := w.Write(body[:k])
		fk.count(0, int64(written))
		if err != nil || rc.Flush() != nil {
			return
		}
		body = body[k:]
	}
}

// abort ends the handler without a complete answer; net/http closes the
// connection (HTTP/1) or resets the stream (HTTP/2) and logs nothing.
func abort(http.ResponseWriter) { panic(http.ErrAbortHandler) }
