package transport

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"
)

// fakeClock is a clock the test moves.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// limited is a server of /healthz and /slow (held until release is
// closed) behind a ConnLimit; states receives each connection's new state
// once the ConnLimit knows it, and entered each request to /slow.
type limited struct {
	addr    string
	clock   *fakeClock
	states  chan http.ConnState
	entered chan struct{}
	release chan struct{}
}

func newLimited(t *testing.T, max int, obs Observer) *limited {
	t.Helper()
	l := &limited{
		clock:  &fakeClock{now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)},
		states: make(chan http.ConnState, 64), entered: make(chan struct{}, 8), release: make(chan struct{}),
	}
	cl := NewConnLimit(ConnLimitConfig{Max: max, SlowHeaders: time.Second, VouchedIdle: time.Second, Observer: obs, Now: l.clock.Now})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l.addr = ln.Addr().String()
	srv := &http.Server{
		Handler: cl.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/vouched" {
				vouch(r)
			}
			if r.URL.Path == "/slow" {
				l.entered <- struct{}{}
				<-l.release
			}
			_, _ = io.WriteString(w, "ok")
		})),
		ConnContext: cl.ConnContext,
		ConnState: func(c net.Conn, s http.ConnState) {
			cl.ConnState(c, s)
			l.states <- s
		},
		ReadHeaderTimeout: time.Minute,
	}
	go func() { _ = srv.Serve(cl.Listener(ln)) }()
	t.Cleanup(func() {
		select {
		case <-l.release:
		default:
			close(l.release)
		}
		_ = srv.Close()
	})
	return l
}

// await waits for the next connection state the server reports.
func (l *limited) await(t *testing.T, want http.ConnState) {
	t.Helper()
	for {
		select {
		case s := <-l.states:
			if s == want {
				return
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("no connection went %v", want)
		}
	}
}

// client is one raw keep-alive connection.
type client struct {
	conn net.Conn
	br   *bufio.Reader
}

func (l *limited) dial(t *testing.T) *client {
	t.Helper()
	conn, err := net.Dial("tcp", l.addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return &client{conn: conn, br: bufio.NewReader(conn)}
}

// get sends GET path and reads the answer.
func (c *client) get(path string) (*http.Response, error) {
	if _, err := fmt.Fprintf(c.conn, "GET %s HTTP/1.1\r\nHost: relay\r\n\r\n", path); err != nil {
		return nil, err
	}
	return c.read()
}

func (c *client) read() (*http.Response, error) {
	resp, err := http.ReadResponse(c.br, nil)
	if err != nil {
		return nil, err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp, nil
}

// closed says whether the server closed c.
func (c *client) closed() bool {
	_ = c.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, err := c.br.ReadByte()
	return err == io.EOF
}

func wantServed(t *testing.T, what string, resp *http.Response, err error) {
	t.Helper()
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("%s: %v %v, want served", what, resp, err)
	}
}

// wantRefused checks c was answered 503 with Retry-After and closed.
func wantRefused(t *testing.T, what string, c *client) {
	t.Helper()
	resp, err := c.read()
	if err != nil {
		t.Fatalf("%s: %v, want a 503", what, err)
	}
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") != "1" {
		t.Errorf("%s: %d Retry-After %q, want 503 with Retry-After 1", what, resp.StatusCode, resp.Header.Get("Retry-After"))
	}
	if !c.closed() {
		t.Errorf("%s: the refused connection stays open", what)
	}
}

// TestConnLimitReplacesTheLongestIdle: at the limit, a new connection
// takes the place of the one idle longest, however short its idle time;
// with every connection served, it is answered 503 with Retry-After and
// closed.
func TestConnLimitReplacesTheLongestIdle(t *testing.T) {
	obs := &recorder{}
	l := newLimited(t, 2, obs)
	first, second := l.dial(t), l.dial(t)
	for _, c := range []*client{first, second} {
		resp, err := c.get("/healthz")
		wantServed(t, "within the limit", resp, err)
		l.await(t, http.StateIdle)
	}

	third := l.dial(t)
	resp, err := third.get("/healthz")
	wantServed(t, "over the limit, the first idle a moment", resp, err)
	if !first.closed() {
		t.Error("the longest idle connection was not closed")
	}
	l.await(t, http.StateIdle)
	resp, err = second.get("/healthz")
	wantServed(t, "the other idle connection", resp, err)
	l.await(t, http.StateIdle)

	for _, c := range []*client{second, third} {
		if _, err := fmt.Fprint(c.conn, "GET /slow HTTP/1.1\r\nHost: relay\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		<-l.entered
	}
	l.clock.Advance(time.Minute)
	wantRefused(t, "over the limit, every connection served", l.dial(t))

	obs.mu.Lock()
	defer obs.mu.Unlock()
	if len(obs.refused) != 1 || obs.refused[0] != BoundConnections {
		t.Errorf("refusals counted %v, want one of connections", obs.refused)
	}
	if obs.replaced != 1 {
		t.Errorf("connections replaced counted %d, want 1", obs.replaced)
	}
	if got := obs.inUse[BoundConnections]; got != 2 {
		t.Errorf("open connections %d, want 2", got)
	}
}

// TestConnLimitKeepsVouchedConnections: a connection that carried a
// request with a valid token is taken only after the others, and only
// once idle for VouchedIdle.
func TestConnLimitKeepsVouchedConnections(t *testing.T) {
	l := newLimited(t, 2, nil)
	caller, flood := l.dial(t), l.dial(t)
	resp, err := caller.get("/vouched")
	wantServed(t, "the caller", resp, err)
	l.await(t, http.StateIdle)
	resp, err = flood.get("/healthz")
	wantServed(t, "the flood", resp, err)
	l.await(t, http.StateIdle)

	newcomer := l.dial(t)
	resp, err = newcomer.get("/healthz")
	wantServed(t, "a newcomer, the caller idle longer than the flood", resp, err)
	l.await(t, http.StateIdle)
	if !flood.closed() {
		t.Error("the flood's connection was not the one closed")
	}
	if resp, err := caller.get("/vouched"); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("the caller's connection after the newcomer: %v %v", resp, err)
	}
	l.await(t, http.StateIdle)
	if _, err := fmt.Fprint(newcomer.conn, "GET /slow HTTP/1.1\r\nHost: relay\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	<-l.entered

	wantRefused(t, "only the caller idle, a moment", l.dial(t))
	l.clock.Advance(time.Second)
	resp, err = l.dial(t).get("/healthz")
	wantServed(t, "the caller idle for VouchedIdle", resp, err)
	if !caller.closed() {
		t.Error("the caller's connection idle for VouchedIdle was not closed")
	}
}

// TestConnLimitReplacesSlowHeaders: a connection still sending its
// headers after SlowHeaders makes room; one whose request is being served
// never does.
func TestConnLimitReplacesSlowHeaders(t *testing.T) {
	l := newLimited(t, 1, nil)
	served := l.dial(t)
	if _, err := fmt.Fprint(served.conn, "GET /slow HTTP/1.1\r\nHost: relay\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	<-l.entered
	l.clock.Advance(time.Minute)
	wantRefused(t, "while the only connection is served", l.dial(t))
	l.release <- struct{}{}
	if resp, err := served.read(); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("the served request: %v %v", resp, err)
	}
	close(l.release)
	if err := served.conn.Close(); err != nil {
		t.Fatal(err)
	}
	l.await(t, http.StateClosed)

	// net/http reports nothing until the headers are whole: the
	// connection is new, sending them since it was accepted.
	slow := l.dial(t)
	l.await(t, http.StateNew)
	if _, err := fmt.Fprint(slow.conn, "GET /healthz HTTP/1.1\r\nHost: rel"); err != nil {
		t.Fatal(err)
	}
	wantRefused(t, "headers begun a moment ago", l.dial(t))
	l.clock.Advance(time.Second)
	resp, err := l.dial(t).get("/healthz")
	wantServed(t, "headers begun a second ago", resp, err)
	if !slow.closed() {
		t.Error("the connection stuck in its headers was not closed")
	}
}

// TestPendingInput: bytes a client sent and the server has not read are
// seen, so that a connection with a request arriving is not taken for
// idle.
func TestPendingInput(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	client, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	server, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer server.Close()
	if pendingInput(server) {
		t.Fatal("input pending before the client wrote")
	}
	if _, err := io.WriteString(client, "GET / HTTP/1.1\r\n"); err != nil {
		t.Fatal(err)
	}
	// Loopback delivers as the write returns; allow the stack a moment.
	deadline := time.Now().Add(5 * time.Second)
	for !pendingInput(server) {
		if time.Now().After(deadline) {
			t.Fatal("the client's bytes never showed as pending")
		}
	}
	// The relay's own TLS hands ConnLimit a *tls.Conn over the socket.
	if !pendingInput(tls.Server(server, &tls.Config{})) {
		t.Error("input pending on the socket is not seen through TLS")
	}
	buf := make([]byte, 64)
	if _, err := server.Read(buf); err != nil {
		t.Fatal(err)
	}
	if pendingInput(server) {
		t.Error("input pending after it was read")
	}
}

func TestConnLimitOffAdmitsAll(t *testing.T) {
	l := newLimited(t, 0, nil)
	for range 5 {
		resp, err := l.dial(t).get("/healthz")
		wantServed(t, "unbounded", resp, err)
	}
}
