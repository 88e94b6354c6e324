package transport

import (
	"container/list"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"
)

// ConnLimit bounds the open connections of one http.Server. Its Listener
// counts every accepted connection; the server's ConnState, set to its
// ConnState method, tells it which are idle.
//
// At the limit a new connection takes the place of the connection idle the
// longest, when one has been idle for MinIdle (as nginx reuses keep-alive
// connections): keep-alive clients that went quiet make room for callers
// with a request to make. With none to take, the new connection is refused
// at once with HTTP 503 and Retry-After, and closed; it is not left
// waiting in the kernel's accept queue as netutil.LimitListener would, where
// a client only sees a timeout. Refusals are counted (bound
// "connections"), and an operator sees the open connections in the
// admission_in_use gauge.
type ConnLimit struct {
	max     int
	minIdle time.Duration
	obs     Observer
	now     func() time.Time

	mu      sync.Mutex
	conns   map[net.Conn]*list.Element // nil element: not idle
	idle    *list.List                 // of *idleConn, idle the longest first
	refusal chan struct{}              // bounds the refusals being written
}

type idleConn struct {
	conn  net.Conn
	since time.Time
}

// ConnLimitConfig configures a ConnLimit.
type ConnLimitConfig struct {
	// Max is the most connections open at once; 0 leaves them unbounded.
	Max int
	// MinIdle is how long a connection must have been idle before a new
	// one may take its place (1s): a client that just got its answer is
	// likely to send its next request on it.
	MinIdle  time.Duration
	Observer Observer
	// Now is the clock of idle times; time.Now when nil.
	Now func() time.Time
}

// maxRefusing bounds the refusals written at once; beyond it a connection
// over the limit is closed without a word.
const maxRefusing = 64

// NewConnLimit returns a connection bound.
func NewConnLimit(cfg ConnLimitConfig) *ConnLimit {
	c := &ConnLimit{
		max: cfg.Max, minIdle: cfg.MinIdle, obs: cfg.Observer, now: cfg.Now,
		conns: map[net.Conn]*list.Element{}, idle: list.New(), refusal: make(chan struct{}, maxRefusing),
	}
	if c.minIdle <= 0 {
		c.minIdle = time.Second
	}
	if c.obs == nil {
		c.obs = nopObserver{}
	}
	if c.now == nil {
		c.now = time.Now
	}
	return c
}

// Listener wraps ln: Accept returns only the connections within the bound.
func (c *ConnLimit) Listener(ln net.Listener) net.Listener {
	return &limitListener{Listener: ln, c: c}
}

type limitListener struct {
	net.Listener
	c *ConnLimit
}

func (l *limitListener) Accept() (net.Conn, error) {
	for {
		conn, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if l.c.admit(conn) {
			return conn, nil
		}
	}
}

// admit counts conn in, making room by closing the connection idle the
// longest if need be, or refuses it.
func (c *ConnLimit) admit(conn net.Conn) bool {
	if c.max <= 0 {
		return true
	}
	var victim net.Conn
	c.mu.Lock()
	if len(c.conns) >= c.max {
		if front := c.idle.Front(); front != nil {
			if ic := front.Value.(*idleConn); c.now().Sub(ic.since) >= c.minIdle {
				victim = ic.conn
				c.idle.Remove(front)
				delete(c.conns, victim) // its StateClosed will find it gone
			}
		}
	}
	admitted := len(c.conns) < c.max
	if admitted {
		c.conns[conn] = nil
	}
	c.mu.Unlock()

	if victim != nil {
		_ = victim.Close()
		c.obs.AdmissionInUse(BoundConnections, -1)
	}
	if !admitted {
		c.obs.AdmissionRefused(BoundConnections)
		c.refuse(conn)
		return false
	}
	c.obs.AdmissionInUse(BoundConnections, 1)
	return true
}

// refusal503 is the whole answer to a connection over the limit.
var refusal503 = func() []byte {
	body := `{"errors":[{"type":"fatal","code":"service unavailable","message":"The relay is busy: too many connections; retry in ` + strconv.Itoa(retryAfterSeconds) + ` s"}]}` + "\n"
	return []byte("HTTP/1.1 503 Service Unavailable\r\n" +
		"Content-Type: application/json\r\n" +
		"Retry-After: " + strconv.Itoa(retryAfterSeconds) + "\r\n" +
		"Connection: close\r\n" +
		"Content-Length: " + strconv.Itoa(len(body)) + "\r\n\r\n" + body)
}()

// refuseLinger bounds how long a refused connection is kept to read what
// the client sent, so that closing it does not reset the connection
// before the client has read the 503.
const refuseLinger = time.Second

// refuse answers 503 on conn and closes it, on a goroutine of its own
// that ends within refuseLinger (at most maxRefusing at once).
func (c *ConnLimit) refuse(conn net.Conn) {
	select {
	case c.refusal <- struct{}{}:
	default:
		_ = conn.Close()
		return
	}
	go func() {
		defer func() { <-c.refusal }()
		defer conn.Close()
		_ = conn.SetDeadline(time.Now().Add(refuseLinger))
		if _, err := conn.Write(refusal503); err != nil {
			return
		}
		if cw, ok := conn.(interface{ CloseWrite() error }); ok {
			_ = cw.CloseWrite()
		}
		_, _ = io.Copy(io.Discard, io.LimitReader(conn, 64<<10))
	}()
}

// ConnState is the http.Server's ConnState hook: it keeps the idle
// connections in the order they went idle and forgets closed ones.
func (c *ConnLimit) ConnState(conn net.Conn, state http.ConnState) {
	if c.max <= 0 {
		return
	}
	c.mu.Lock()
	elem, tracked := c.conns[conn]
	if !tracked {
		c.mu.Unlock()
		return // taken as a victim, or never admitted
	}
	if elem != nil {
		c.idle.Remove(elem)
		c.conns[conn] = nil
	}
	gone := false
	switch state {
	case http.StateIdle:
		c.conns[conn] = c.idle.PushBack(&idleConn{conn: conn, since: c.now()})
	case http.StateClosed, http.StateHijacked:
		delete(c.conns, conn)
		gone = true
	}
	c.mu.Unlock()
	if gone {
		c.obs.AdmissionInUse(BoundConnections, -1)
	}
}

// Open is the number of connections counted in.
func (c *ConnLimit) Open() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.conns)
}
