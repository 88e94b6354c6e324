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

	sw := streamWriter{h: h, w: w, r: r}
	buf = append(buf, `{"data":`...)
	buf, err := data.StreamJSON(buf, answerChunk, sw.flush)
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
	if sw.streaming {
		if sw.flush(buf) != nil {
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

// streamWriter writes an answer that does not fit one chunk: the header
// with the first chunk, then each chunk under its write deadline.
type streamWriter struct {
	h         *handler
	w         http.ResponseWriter
	r         *http.Request
	rc        *http.ResponseController
	streaming bool
}

func (sw *streamWriter) flush(chunk []byte) error {
	if !sw.streaming {
		sw.streaming = true
		sw.rc = http.NewResponseController(sw.w)
		sw.w.Header()["Content-Type"] = jsonContentType
		sw.w.WriteHeader(http.StatusOK)
	}
	deadline := time.Now().Add(sw.h.cfg.ChunkWriteTimeout)
	if sw.h.cfg.WriteTimeout > 0 {
		if whole := info(sw.r).start.Add(sw.h.cfg.WriteTimeout); whole.Before(deadline) {
			deadline = whole
		}
	}
	_ = sw.rc.SetWriteDeadline(deadline)
	_, err := sw.w.Write(chunk)
	return err
}

// jsonContentType is the Content-Type of every answer, one slice for all:
// net/http only reads header values, and Header.Add appends to a copy (the
// slice is full).
var jsonContentType = []string{"application/json"}
