package transport

import (
	"container/list"
	"context"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// ConnLimit bounds the open connections of one http.Server. Its Listener
// counts every accepted connection; the server's ConnState, ConnContext
// and Handler, set to its methods, tell it what each connection is doing.
//
// At the limit a new connection takes the place of another that is doing
// nothing, as nginx drains its reusable keep-alive connections, in this
// order:
//
//  1. the one idle the longest, at any age, among those that never
//     carried a request with a valid token (the handler vouches for the
//     others);
//  2. the one that has gone longest without sending whole headers, once
//     it has been at them for SlowHeaders (a slowloris; net/http reports
//     a request only once its headers are read, so one stalling on a
//     keep-alive connection counts as idle);
//  3. the one idle the longest among those vouched for, once idle for
//     VouchedIdle.
//
// An idle connection with the bytes of a request waiting in its socket is
// never taken. Clients that went quiet make room for callers with a
// request to make, and a flood of connections cannot take a caller's: a
// flood whose connections went idle a moment ago would otherwise shut
// every newcomer out while its own refused connections came straight back
// (relaybench attack idle-conns measured 0.35 of legitimate requests
// answered on two cores with one 2 s minimum for all), and with no minimum
// for all it would churn through the legitimate clients' keep-alive
// connections between two of their requests. With none to take, the new
// connection is refused at once with HTTP 503 and Retry-After, and
// closed; it is not left waiting in the kernel's accept queue as
// netutil.LimitListener would, where a client only sees a timeout.
// Refusals are counted (bound "connections"), and the open connections
// are in the admission_in_use gauge.
type ConnLimit struct {
	max                      int
	slowHeaders, vouchedIdle time.Duration
	obs                      Observer
	now                      func() time.Time

	mu    sync.Mutex
	conns map[net.Conn]*tracked
	// idle and vouched hold the idle connections, reading those that
	// have not reached a handler since their request began (or since they
	// were accepted), each in the order they got there.
	idle, vouched, reading *list.List
	refusal                chan struct{} // bounds the refusals being written
}

// tracked is one connection: in at most one of the lists.
type tracked struct {
	conn  net.Conn
	since time.Time
	in    *list.List
	elem  *list.Element
	// vouched: the connection carried a request with a valid token.
	vouched atomic.Bool
}

// ConnLimitConfig configures a ConnLimit.
type ConnLimitConfig struct {
	// Max is the most connections open at once; 0 leaves them unbounded.
	Max int
	// SlowHeaders is how long a connection must have been sending its
	// headers before a new one may take its place (2s): a client on a slow
	// link gets that long before it counts as a slowloris.
	SlowHeaders time.Duration
	// VouchedIdle is how long a connection vouched for must have been
	// idle before a new one may take its place (2s): a caller between
	// two requests keeps its connection.
	VouchedIdle time.Duration
	Observer    Observer
	// Now is the clock of idle times; time.Now when nil.
	Now func() time.Time
}

// maxRefusing bounds the refusals written at once; beyond it a connection
// over the limit is closed without a word.
const maxRefusing = 64

// NewConnLimit returns a connection bound.
func NewConnLimit(cfg ConnLimitConfig) *ConnLimit {
	c := &ConnLimit{
		max: cfg.Max, slowHeaders: cfg.SlowHeaders, vouchedIdle: cfg.VouchedIdle,
		obs: cfg.Observer, now: cfg.Now,
		conns: map[net.Conn]*tracked{}, idle: list.New(), vouched: list.New(), reading: list.New(),
		refusal: make(chan struct{}, maxRefusing),
	}
	if c.slowHeaders <= 0 {
		c.slowHeaders = 2 * time.Second
	}
	if c.vouchedIdle <= 0 {
		c.vouchedIdle = 2 * time.Second
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

// move puts t at the back of list to (nil: in none) from now.
func (c *ConnLimit) move(t *tracked, to *list.List) {
	if t.in != nil {
		t.in.Remove(t.elem)
		t.in, t.elem = nil, nil
	}
	t.since = c.now()
	if to != nil {
		t.in, t.elem = to, to.PushBack(t)
	}
}

// admit counts conn in, making room by closing a connection that does
// nothing if need be, or refuses it.
func (c *ConnLimit) admit(conn net.Conn) bool {
	if c.max <= 0 {
		return true
	}
	c.mu.Lock()
	var victim net.Conn
	if len(c.conns) >= c.max {
		if t := c.victim(); t != nil {
			victim = t.conn
			c.move(t, nil)
			delete(c.conns, victim) // its StateClosed will find it gone
		}
	}
	admitted := len(c.conns) < c.max
	if admitted {
		t := &tracked{conn: conn}
		c.move(t, c.reading) // nothing read from it yet
		c.conns[conn] = t
	}
	c.mu.Unlock()

	if victim != nil {
		_ = victim.Close()
		c.obs.AdmissionInUse(BoundConnections, -1)
		c.obs.ConnectionReplaced()
	}
	if !admitted {
		c.obs.AdmissionRefused(BoundConnections)
		c.refuse(conn)
		return false
	}
	c.obs.AdmissionInUse(BoundConnections, 1)
	return true
}

// victimScan bounds how many idle connections admit looks at for one
// with no request arriving.
const victimScan = 8

// victim picks the connection to close, c.mu held, in the order of
// ConnLimit's comment; nil when none may go.
func (c *ConnLimit) victim() *tracked {
	now := c.now()
	if t := c.idlest(c.idle, now, 0); t != nil {
		return t
	}
	if e := c.reading.Front(); e != nil {
		if t := e.Value.(*tracked); now.Sub(t.since) >= c.slowHeaders {
			return t
		}
	}
	return c.idlest(c.vouched, now, c.vouchedIdle)
}

// idlest is the connection of idle list l idle the longest, for at least
// least, with no bytes of a request waiting on it; it looks at
// victimScan of them at most.
func (c *ConnLimit) idlest(l *list.List, now time.Time, least time.Duration) *tracked {
	e := l.Front()
	for range victimScan {
		if e == nil {
			return nil
		}
		t := e.Value.(*tracked)
		if now.Sub(t.since) < least {
			return nil // the rest went idle later still
		}
		if !pendingInput(t.conn) {
			return t
		}
		e = e.Next()
	}
	return nil
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

// ConnState is the http.Server's ConnState hook: an idle connection goes
// to the idle list, one whose request headers were read to the reading
// list until its handler runs (an accepted one is there from the start),
// and a closed one is forgotten.
func (c *ConnLimit) ConnState(conn net.Conn, state http.ConnState) {
	if c.max <= 0 {
		return
	}
	c.mu.Lock()
	t, tracked := c.conns[conn]
	gone := false
	switch {
	case !tracked: // taken as a victim, or never admitted
	case state == http.StateIdle && t.vouched.Load():
		c.move(t, c.vouched)
	case state == http.StateIdle:
		c.move(t, c.idle)
	case state == http.StateActive:
		c.move(t, c.reading)
	case state == http.StateClosed, state == http.StateHijacked:
		c.move(t, nil)
		delete(c.conns, conn)
		gone = true
	}
	c.mu.Unlock()
	if gone {
		c.obs.AdmissionInUse(BoundConnections, -1)
	}
}

type connKey struct{}

// ConnContext is the http.Server's ConnContext hook: it lets Handler and
// vouch find the request's connection.
func (c *ConnLimit) ConnContext(ctx context.Context, conn net.Conn) context.Context {
	c.mu.Lock()
	t := c.conns[conn]
	c.mu.Unlock()
	if t == nil {
		return ctx
	}
	return context.WithValue(ctx, connKey{}, t)
}

// vouch marks the connection of a request that carried a valid token: once
// idle, it is taken to make room only after the connections of callers
// without one (see ConnLimit). Requests on a connection no ConnLimit
// counts are ignored.
func vouch(r *http.Request) {
	if t, ok := r.Context().Value(connKey{}).(*tracked); ok {
		t.vouched.Store(true)
	}
}

// Handler wraps the server's handler: a connection whose request has
// reached it is no longer sending headers, and is never taken as a victim
// while it is served.
func (c *ConnLimit) Handler(next http.Handler) http.Handler {
	if c.max <= 0 {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if t, ok := r.Context().Value(connKey{}).(*tracked); ok {
			c.mu.Lock()
			if c.conns[t.conn] == t {
				c.move(t, nil)
			}
			c.mu.Unlock()
		}
		next.ServeHTTP(w, r)
	})
}
