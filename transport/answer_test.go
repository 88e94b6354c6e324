package transport

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pulsedive-relay/relay/ctim"
	"github.com/pulsedive-relay/relay/pipeline"
	"github.com/pulsedive-relay/relay/pulsedive"
)

// manyVerdicts answers n verdicts for any request, with an error beside
// them when errs.
type manyVerdicts struct {
	n    int
	errs []error
}

func (m manyVerdicts) Observe(_ context.Context, _ pipeline.Request) pipeline.Result {
	b := &ctim.Bundle{}
	for i := range m.n {
		b.AddVerdict(ctim.Verdict{Type: "verdict", Observable: ctim.Observable{Type: "domain", Value: fmt.Sprintf("d%06d.example", i)},
			Disposition: 2, DispositionName: "Malicious", ValidTime: ctim.ValidTime{StartTime: "2020-04-10T08:30:00Z"}})
	}
	return pipeline.Result{Bundle: b, Errors: m.errs}
}

func (m manyVerdicts) Deliberate(ctx context.Context, req pipeline.Request) pipeline.Result {
	return m.Observe(ctx, req)
}
func (manyVerdicts) Refer(context.Context, pipeline.Request) pipeline.ReferResult {
	return pipeline.ReferResult{}
}
func (manyVerdicts) Health(context.Context, pulsedive.APIKey) error { return nil }

// writes records each Write a handler makes.
type writes struct {
	header http.Header
	status int
	chunks [][]byte
}

func (w *writes) Header() http.Header { return w.header }
func (w *writes) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
}
func (w *writes) Write(p []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	w.chunks = append(w.chunks, bytes.Clone(p))
	return len(p), nil
}

// TestAnswerStreams: an answer that fits one chunk goes out in one write
// with its Content-Length; a longer one in chunks of about answerChunk,
// without one; either way the bytes are encoding/json's.
func TestAnswerStreams(t *testing.T) {
	tests := []struct {
		name       string
		verdicts   int
		errs       []error
		wantChunks func(n int) bool
	}{
		{"one chunk", 10, nil, func(n int) bool { return n == 1 }},
		{"one chunk with errors", 10, []error{&pulsedive.StatusError{StatusCode: 500}}, func(n int) bool { return n == 1 }},
		{"streamed", 5000, nil, func(n int) bool { return n > 5 }},
		{"streamed with errors", 5000, []error{&pulsedive.StatusError{StatusCode: 500}}, func(n int) bool { return n > 5 }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := manyVerdicts{n: tt.verdicts, errs: tt.errs}
			h, err := NewHandler(Config{Enricher: e, Auth: acceptAll{}})
			if err != nil {
				t.Fatal(err)
			}
			w := &writes{header: http.Header{}}
			h.ServeHTTP(w, httptest.NewRequest(http.MethodPost, "/observe/observables", bytes.NewReader([]byte(`[{"type":"ip","value":"1.1.1.1"}]`))))

			res := e.Observe(context.Background(), pipeline.Request{})
			want := dataBody{Data: res.Bundle.Data()}
			if len(tt.errs) > 0 {
				want.Errors = envelopeErrors(tt.errs, nil)
			}
			wantBytes, err := appendJSON(nil, want)
			if err != nil {
				t.Fatal(err)
			}
			got := bytes.Join(w.chunks, nil)
			if !bytes.Equal(got, wantBytes) {
				t.Fatalf("answer differs from encoding/json's:\n got %.300s\nwant %.300s", got, wantBytes)
			}
			if w.status != http.StatusOK || w.header.Get("Content-Type") != "application/json" {
				t.Errorf("status %d, Content-Type %q", w.status, w.header.Get("Content-Type"))
			}
			if !tt.wantChunks(len(w.chunks)) {
				t.Errorf("%d writes for %d bytes", len(w.chunks), len(got))
			}
			for i, c := range w.chunks[:len(w.chunks)-1] {
				if len(c) < answerChunk || len(c) > answerChunk+1<<10 {
					t.Errorf("write %d is %d bytes, want about %d", i, len(c), answerChunk)
				}
			}
			cl := w.header.Get("Content-Length")
			if len(w.chunks) == 1 && cl != strconv.Itoa(len(got)) {
				t.Errorf("Content-Length %q for a one-chunk answer of %d bytes", cl, len(got))
			}
			if len(w.chunks) > 1 && cl != "" {
				t.Errorf("Content-Length %q on a streamed answer", cl)
			}
		})
	}
}

// TestStalledReaderIsCutOff: a client that sends a request and never
// reads its big answer ties the handler up for one chunk's write timeout,
// or until the whole answer's WriteTimeout if that comes first, not for
// the whole answer; the access line says it was cut off.
func TestStalledReaderIsCutOff(t *testing.T) {
	for _, tt := range []struct {
		name          string
		chunk, answer time.Duration
	}{
		{"a chunk's timeout", 100 * time.Millisecond, 0},
		{"the answer's timeout first", time.Minute, 100 * time.Millisecond},
	} {
		t.Run(tt.name, func(t *testing.T) { testStalledReader(t, tt.chunk, tt.answer) })
	}
}

func testStalledReader(t *testing.T, chunk, answer time.Duration) {
	logs := &syncBuffer{wrote: make(chan struct{}, 1)}
	h, err := NewHandler(Config{
		Enricher: manyVerdicts{n: 200_000}, Auth: acceptAll{},
		ChunkWriteTimeout: chunk,
		WriteTimeout:      answer,
		Logger:            slog.New(slog.NewJSONHandler(logs, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)

	conn, err := net.Dial("tcp", srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	_ = conn.(*net.TCPConn).SetReadBuffer(4 << 10)
	body := `[{"type":"ip","value":"1.1.1.1"}]`
	fmt.Fprintf(conn, "POST /observe/observables HTTP/1.1\r\nHost: relay\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
	// An answer cut before its first chunk has no headers either.
	if resp, err := http.ReadResponse(bufio.NewReaderSize(conn, 1<<10), nil); err == nil {
		if resp.StatusCode != http.StatusOK || resp.ContentLength != -1 {
			t.Fatalf("status %d, length %d: want a streamed 200", resp.StatusCode, resp.ContentLength)
		}
	}
	// Read nothing more: the handler must give up on its own, long before
	// the answer's end, and say so in its access line.
	for !strings.Contains(logs.String(), `"msg":"request"`) {
		select {
		case <-logs.wrote:
		case <-time.After(30 * time.Second):
			t.Fatal("the handler still writes to a client that stopped reading")
		}
	}
	if line := logs.String(); !strings.Contains(line, `"status":200`) || !strings.Contains(line, `"cut_off":true`) {
		t.Errorf("access line %s, want status 200 and cut_off", line)
	}
}

// syncBuffer is a bytes.Buffer safe for a handler and a test at once.
// Each write is signalled on wrote.
type syncBuffer struct {
	mu    sync.Mutex
	b     bytes.Buffer
	wrote chan struct{}
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	select {
	case s.wrote <- struct{}{}:
	default:
	}
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
