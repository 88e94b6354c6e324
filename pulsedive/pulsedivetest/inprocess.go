package pulsedivetest

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
)

// Transport returns an http.RoundTripper that serves each request with the
// fake on the calling goroutine, with no network between them. Tests run
// under testing/synctest use it: a goroutine blocked on a socket is not
// durably blocked, so with a real connection the bubble's fake clock would
// never move. Make the Fake (New) inside the bubble, so that its waits are
// on the bubble's channels and timers.
//
// The answer is buffered whole: ModeDrip and ModeHuge arrive at once.
// ModeReset and ModeDisconnect give the headers and half the body, then
// io.ErrUnexpectedEOF; a call that ends without an answer (ModeHang until
// the request's context ends, a closed Fake) gives the context's error, or
// io.ErrUnexpectedEOF.
func (fk *Fake) Transport() http.RoundTripper { return inProcess{fk} }

type inProcess struct{ fk *Fake }

func (t inProcess) RoundTrip(req *http.Request) (*http.Response, error) {
	rec := httptest.NewRecorder()
	if t.serve(rec, req) {
		if err := req.Context().Err(); err != nil {
			return nil, err
		}
		if !rec.Flushed && rec.Body.Len() == 0 {
			return nil, io.ErrUnexpectedEOF // aborted before any answer
		}
		res := rec.Result()
		res.Body = io.NopCloser(io.MultiReader(bytes.NewReader(rec.Body.Bytes()), failingReader{io.ErrUnexpectedEOF}))
		res.Request = req
		return res, nil
	}
	if err := req.Context().Err(); err != nil {
		return nil, err
	}
	res := rec.Result()
	res.Request = req
	return res, nil
}

// serve runs the handler and reports whether it aborted the answer.
func (t inProcess) serve(w http.ResponseWriter, req *http.Request) (aborted bool) {
	defer func() {
		if v := recover(); v != nil {
			if v != http.ErrAbortHandler {
				panic(v)
			}
			aborted = true
		}
	}()
	t.fk.ServeHTTP(w, req)
	return false
}

type failingReader struct{ err error }

func (r failingReader) Read([]byte) (int, error) { return 0, r.err }
