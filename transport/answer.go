package transport

import (
	"net/http"
	"strconv"
	"time"

	"github.com/pulsedive-relay/relay/ctim"
)

// answerChunk is how much of an observe or deliberate answer is encoded
// before it is written: the memory a slow reader can hold is this, plus
// one document, not the whole answer (a 1000-observable answer is several
// MB).
const answerChunk = 64 << 10

// answer writes an observable endpoint's answer with HTTP 200. A bundle
// is encoded with ctim's own encoder (the same bytes as encoding/json, several
// times faster) and streamed: an answer that fits one chunk goes out whole
// with its Content-Length; a longer one is written chunk by chunk, each
// under ChunkWriteTimeout, so that a reader that stops reading is cut off
// then rather than at the server's WriteTimeout.
func (h *handler) answer(w http.ResponseWriter, r *http.Request, body dataBody) {
	data, ok := body.Data.(*ctim.Bundle)
	if !ok {
		writeJSON(w, http.StatusOK, body)
		return
	}
	bp := buffers.Get().(*[]byte)
	buf := (*bp)[:0]
	defer func() { putBuffer(bp, buf) }()

	rc := http.NewResponseController(w)
	streaming := false
	flush := func(chunk []byte) error {
		if !streaming {
			streaming = true
			w.Header()["Content-Type"] = jsonContentType
			w.WriteHeader(http.StatusOK)
		}
		deadline := time.Now().Add(h.cfg.ChunkWriteTimeout)
		if h.cfg.WriteTimeout > 0 {
			if whole := info(r).start.Add(h.cfg.WriteTimeout); whole.Before(deadline) {
				deadline = whole
			}
		}
		_ = rc.SetWriteDeadline(deadline)
		_, err := w.Write(chunk)
		return err
	}
	buf = append(buf, `{"data":`...)
	buf, err := data.StreamJSON(buf, answerChunk, flush)
	if err != nil {
		info(r).cutOff = true // the client is gone or stalled: nothing more can reach it
		return
	}
	if len(body.Errors) > 0 {
		buf = append(buf, `,"errors":`...)
		buf, _ = appendJSON(buf, body.Errors) // []apiError always encodes
		buf = buf[:len(buf)-1]                // its newline
	}
	buf = append(buf, "}\n"...)
	if streaming {
		if flush(buf) != nil {
			info(r).cutOff = true
		}
		return
	}
	hdr := w.Header()
	hdr["Content-Type"] = jsonContentType
	hdr["Content-Length"] = []string{strconv.Itoa(len(buf))}
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(buf)
}

// jsonContentType is the Content-Type of every answer, one slice for all:
// net/http only reads header values, and Header.Add appends to a copy (the
// slice is full).
var jsonContentType = []string{"application/json"}
