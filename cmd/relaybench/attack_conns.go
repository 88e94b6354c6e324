package main

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"time"
)

// Rows of connections held open: idle keep-alives, and requests whose
// headers never end.
func connRows() []attackRow {
	return []attackRow{
		{
			name:  "idle-conns",
			title: "14,000 idle keep-alive connections (6,000 with -short)",
			run: func(ctx context.Context, a *attack) error {
				return a.holdConns(ctx, a.short(6000, 14000), "GET /healthz HTTP/1.1\r\nHost: relay\r\n\r\n", true)
			},
		},
		{
			name:  "slow-headers",
			title: "3,500 connections each holding 64 KB of unfinished headers",
			run: func(ctx context.Context, a *attack) error {
				head := "POST /observe/observables HTTP/1.1\r\nHost: relay\r\nX-Pad: " + strings.Repeat("a", 64<<10)
				return a.holdConns(ctx, 3500, head, false)
			},
		},
	}
}

// addr is the relay's host:port.
func (a *attack) addr() string {
	return strings.TrimPrefix(strings.TrimPrefix(a.st.url, "http://"), "https://")
}

// holdConns keeps n connections open until ctx ends: each sends first,
// reads the answer when answered is true, then holds the connection
// without a word; a connection the relay closes is opened again.
func (a *attack) holdConns(ctx context.Context, n int, first string, answered bool) error {
	var open, most atomic.Int64
	dialer := &net.Dialer{Timeout: 5 * time.Second}
	a.crowd(ctx, n, time.Minute, "connections", func(ctx context.Context, _ *loadClient, t *outcomes) error {
		conn, err := dialer.DialContext(ctx, "tcp", a.addr())
		if err != nil {
			if ctx.Err() == nil {
				t.failure(err)
			}
			return err
		}
		defer conn.Close()
		stop := context.AfterFunc(ctx, func() { _ = conn.Close() })
		defer stop()
		if now := open.Add(1); now > most.Load() {
			most.Store(now)
		}
		defer open.Add(-1)
		if _, err := io.WriteString(conn, first); err != nil {
			return err
		}
		br := bufio.NewReader(conn)
		if answered {
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				if ctx.Err() == nil {
					t.failure(err)
				}
				return err
			}
			got, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			t.answer(resp.StatusCode, got)
			if resp.StatusCode != http.StatusOK {
				return errors.New("refused")
			}
		}
		// Hold: the next read ends when the relay closes the connection,
		// or answers the unfinished request.
		resp, err := http.ReadResponse(br, nil)
		switch {
		case ctx.Err() != nil:
			return nil
		case err == nil:
			resp.Body.Close()
			t.add("then answered HTTP " + http.StatusText(resp.StatusCode))
		default:
			t.add("then closed by the relay")
		}
		return errors.New("closed")
	})
	a.r.add("attack_conns_most", "attacking connections open at once, at most", float64(most.Load()), unitCount)
	return nil
}
