package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Rows of request bodies sent without a token: the relay must not hold
// them for callers who cannot even authenticate.
func bodyRows() []attackRow {
	return []attackRow{
		{
			name:  "big-bodies",
			title: "400 concurrent 1 MiB POST bodies, no token",
			run: func(ctx context.Context, a *attack) error {
				return a.postCrowd(ctx, 400, bigBody(1<<20), "")
			},
		},
		{
			name:  "slow-uploads",
			title: "400 slow uploads of 1 MiB at 40 KB/s, no token",
			run: func(ctx context.Context, a *attack) error {
				a.crowd(ctx, 400, time.Minute, "slow uploads", func(ctx context.Context, _ *loadClient, t *outcomes) error {
					return a.slowUpload(ctx, bigBody(1<<20), 40<<10, t)
				})
				return nil
			},
		},
		{
			name:  "wide-object",
			title: "40 concurrent 1 MiB bodies of one object with ~100k fields, no token",
			run: func(ctx context.Context, a *attack) error {
				return a.postCrowd(ctx, 40, wideBody(1<<20), "")
			},
		},
	}
}

// bigBody is a valid body of exactly size bytes: one observable whose value
// fills it.
func bigBody(size int) []byte {
	const head, tail = `[{"type":"ip","value":"`, `"}]`
	return []byte(head + strings.Repeat("a", size-len(head)-len(tail)) + tail)
}

// wideBody is a body of at most size bytes: one object of as many fields
// as fit, none of them type or value.
func wideBody(size int) []byte {
	var b bytes.Buffer
	b.WriteString(`[{`)
	for i := 0; b.Len() < size-16; i++ {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `"f%d":0`, i)
	}
	b.WriteString(`}]`)
	return b.Bytes()
}

// outcomes tallies what attackers got back, by a short description.
type outcomes struct {
	mu sync.Mutex
	n  map[string]int
}

func newOutcomes() *outcomes { return &outcomes{n: map[string]int{}} }

func (o *outcomes) add(what string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if _, seen := o.n[what]; seen || len(o.n) < 30 {
		o.n[what]++
	}
}

// answer notes an HTTP answer: its status and the envelope's first code.
func (o *outcomes) answer(status int, body []byte) {
	what := "HTTP " + strconv.Itoa(status)
	if ra, err := parseAnswer(body); err == nil && len(ra.Errors) > 0 {
		what += " " + ra.Errors[0].Code
	}
	o.add(what)
}

func (o *outcomes) failure(err error) { o.add("no answer: " + lossCause(err)) }

// send sends req through lc and notes what came back; a failure once ctx
// has ended is the attack's end, not an outcome.
func (o *outcomes) send(ctx context.Context, lc *loadClient, req request) (answer, error) {
	ans, err := lc.do(ctx, req)
	if err != nil {
		if ctx.Err() == nil {
			o.failure(err)
		}
		return ans, err
	}
	o.answer(ans.Status, ans.Body)
	return ans, nil
}

func (o *outcomes) report(r *report, what string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	total := 0
	for _, v := range o.n {
		total += v
	}
	r.add("attack_attempts", "attacking "+what+" made", float64(total), unitCount)
	countMap(r, "what the attackers got", o.n)
}

// postCrowd has n clients post body again and again until ctx ends, with
// the bearer token tok ("" for none), and tallies the answers.
func (a *attack) postCrowd(ctx context.Context, n int, body []byte, tok string) error {
	req := request{Kind: "observe", Path: "/observe/observables", Body: body, Token: tok}
	a.crowd(ctx, n, 30*time.Second, fmt.Sprintf("clients (%d)", n), func(ctx context.Context, lc *loadClient, t *outcomes) error {
		_, err := t.send(ctx, lc, req)
		return err
	})
	return nil
}

// slowUpload sends one observe request whose body trickles at rate bytes
// a second, until it is all sent, the relay answers or cuts it, or ctx
// ends, and notes what the relay said.
func (a *attack) slowUpload(ctx context.Context, body []byte, rate int, t *outcomes) error {
	conn, err := (&net.Dialer{Timeout: 5 * time.Second}).DialContext(ctx, "tcp", a.addr())
	if err != nil {
		t.failure(err)
		return err
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { _ = conn.Close() })
	defer stop()
	head := "POST /observe/observables HTTP/1.1\r\nHost: relay\r\nContent-Type: application/json\r\nContent-Length: " + strconv.Itoa(len(body)) + "\r\n\r\n"
	if _, err := io.WriteString(conn, head); err != nil {
		return err
	}
	const tick = 100 * time.Millisecond
	step := max(rate/int(time.Second/tick), 1)
	var werr error
	for sent := 0; sent < len(body) && werr == nil; sent += step {
		if !pause(ctx, tick) {
			return nil
		}
		_, werr = conn.Write(body[sent:min(sent+step, len(body))])
	}
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	switch {
	case err == nil:
		got, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		resp.Body.Close()
		t.answer(resp.StatusCode, got)
	case ctx.Err() != nil:
	case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF):
		t.add("cut off without an answer")
	default:
		t.failure(err)
	}
	return werr
}
