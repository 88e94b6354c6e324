package transport

import (
	"bufio"
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

// limitedServer serves /healthz behind a ConnLimit of max; idle receives
// each connection as it goes idle.
func limitedServer(t *testing.T, max int, clock *fakeClock, obs Observer) (addr string, idle <-chan net.Conn) {
	t.Helper()
	cl := NewConnLimit(ConnLimitConfig{Max: max, MinIdle: time.Second, Observer: obs, Now: clock.Now})
	idleCh := make(chan net.Conn, 16)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok") }),
		ConnState: func(c net.Conn, s http.ConnState) {
			cl.ConnState(c, s)
			if s == http.StateIdle {
				idleCh <- c
			}
		},
		ReadHeaderTimeout: 10 * time.Second,
	}
	go func() { _ = srv.Serve(cl.Listener(ln)) }()
	t.Cleanup(func() { _ = srv.Close() })
	return ln.Addr().String(), idleCh
}

// client is one raw keep-alive connection.
type client struct {
	conn net.Conn
	br   *bufio.Reader
}

func dial(t *testing.T, addr string) *client {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return &client{conn: conn, br: bufio.NewReader(conn)}
}

// get sends GET /healthz and reads the answer.
func (c *client) get() (*http.Response, error) {
	if _, err := fmt.Fprint(c.conn, "GET /healthz HTTP/1.1\r\nHost: relay\r\n\r\n"); err != nil {
		return nil, err
	}
	resp, err := http.ReadResponse(c.br, nil)
	if err != nil {
		return nil, err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp, nil
}

// TestConnLimit: at the limit, a new connection takes the place of the
// one idle longest once it has been idle a second; with none to take, it
// is answered 503 with Retry-After and closed.
func TestConnLimit(t *testing.T) {
	clock := &fakeClock{now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	obs := &recorder{}
	addr, idle := limitedServer(t, 2, clock, obs)

	first, second := dial(t, addr), dial(t, addr)
	for _, c := range []*client{first, second} {
		if resp, err := c.get(); err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("within the limit: %v %v", resp, err)
		}
		<-idle
	}

	// Both are idle, but for less than a second: the newcomer is refused.
	third := dial(t, addr)
	resp, err := http.ReadResponse(third.br, nil)
	if err != nil {
		t.Fatalf("over the limit: %v, want a 503", err)
	}
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") != "1" {
		t.Errorf("over the limit: %d Retry-After %q %s, want 503 with Retry-After 1", resp.StatusCode, resp.Header.Get("Retry-After"), body)
	}
	if _, err := third.br.ReadByte(); err != io.EOF {
		t.Errorf("the refused connection stays open (%v)", err)
	}

	// A second later the first is the longest idle: a newcomer replaces it.
	clock.Advance(time.Second)
	fourth := dial(t, addr)
	if resp, err := fourth.get(); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("newcomer after the idle time: %v %v, want served", resp, err)
	}
	if _, err := first.br.ReadByte(); err == nil {
		t.Error("the longest idle connection was not closed")
	}
	if resp, err := second.get(); err != nil || resp.StatusCode != http.StatusOK {
		t.Errorf("the other idle connection: %v %v, want still served", resp, err)
	}

	obs.mu.Lock()
	defer obs.mu.Unlock()
	if len(obs.refused) != 1 || obs.refused[0] != BoundConnections {
		t.Errorf("refusals counted %v, want one of connections", obs.refused)
	}
	if got := obs.inUse[BoundConnections]; got != 2 {
		t.Errorf("open connections %d, want 2", got)
	}
}

func TestConnLimitOffAdmitsAll(t *testing.T) {
	clock := &fakeClock{now: time.Now()}
	addr, idle := limitedServer(t, 0, clock, nil)
	for range 5 {
		if resp, err := dial(t, addr).get(); err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("unbounded: %v %v", resp, err)
		}
		<-idle
	}
}
