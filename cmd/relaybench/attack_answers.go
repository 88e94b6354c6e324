package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/pulsedive-relay/relay/pulsedive/pulsedivetest"
)

// Rows of big answers: read slowly, read by many at once, or made big by
// Pulsedive's own documents.
func answerRows() []attackRow {
	return []attackRow{
		{
			name:  "slow-readers",
			title: "150 slow readers of a 1000-observable observe answer (~3.5 MB), one valid token",
			run: func(ctx context.Context, a *attack) error {
				req, err := a.bigAnswer(ctx)
				if err != nil {
					return err
				}
				a.crowd(ctx, 150, time.Minute, "slow readers", func(ctx context.Context, _ *loadClient, t *outcomes) error {
					return a.slowRead(ctx, req, t)
				})
				return nil
			},
		},
		{
			name:  "big-answers",
			title: "80 concurrent ordinary readers of 1000-observable observe answers, one valid token",
			run: func(ctx context.Context, a *attack) error {
				req, err := a.bigAnswer(ctx)
				if err != nil {
					return err
				}
				return a.postCrowd(ctx, 80, req.Body, req.Token)
			},
		},
		{
			name:  "active-dns",
			title: "60 observables whose Pulsedive links hold 20,000 Active DNS entries each, in one request, 4 clients, one valid token",
			owner: "the Active DNS cap (CONTRACT.md section 4b: at most CTR_ENTITIES_LIMIT relations)",
			run: func(ctx context.Context, a *attack) error {
				obs := make([]observable, 60)
				for i := range obs {
					obs[i] = a.b.values.named("dns-flood")
					if err := a.st.fake.SetIndicator(obs[i].Value, floodEntry(obs[i].Value, 20000)); err != nil {
						return err
					}
				}
				req, err := a.b.observeRequest(a.b.apiKey("active-dns-attacker"), obs)
				if err != nil {
					return err
				}
				return a.postCrowd(ctx, 4, req.Body, req.Token)
			},
		},
	}
}

// bigAnswer returns an observe request of 1000 observables under the
// attacker's key, looked up once so that its answer comes from the cache.
func (a *attack) bigAnswer(ctx context.Context) (request, error) {
	req, err := a.b.observeRequest(a.b.apiKey(a.row.name+"-attacker"), a.b.values.batch(1000))
	if err != nil {
		return request{}, err
	}
	lc := newLoadClient(a.st.url, 1, time.Minute)
	defer lc.closeIdle()
	ra, ans, err := post(ctx, lc, req)
	if err != nil {
		return request{}, err
	}
	if ra.judgements() == 0 {
		return request{}, fmt.Errorf("warming the big answer: no judgements (%s)", truncate(ra.errorText(), 200))
	}
	a.r.add("answer_bytes", "bytes of the big answer", float64(len(ans.Body)), unitBytes)
	return req, nil
}

// slowRead sends req on a connection with a small receive buffer and
// reads the answer at about 10 KB/s, until it is whole, cut off, or ctx
// ends.
func (a *attack) slowRead(ctx context.Context, req request, t *outcomes) error {
	conn, err := (&net.Dialer{Timeout: 5 * time.Second}).DialContext(ctx, "tcp", a.addr())
	if err != nil {
		t.failure(err)
		return err
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { _ = conn.Close() })
	defer stop()
	if tc, ok := conn.(*net.TCPConn); ok {
		_ = tc.SetReadBuffer(4 << 10) // the kernel keeps no megabytes for us
	}
	head := "POST " + req.Path + " HTTP/1.1\r\nHost: relay\r\nContent-Type: application/json\r\nAuthorization: Bearer " + req.Token +
		"\r\nContent-Length: " + strconv.Itoa(len(req.Body)) + "\r\n\r\n"
	if _, err := io.WriteString(conn, head); err != nil {
		return err
	}
	if _, err := conn.Write(req.Body); err != nil {
		return err
	}
	resp, err := http.ReadResponse(bufio.NewReaderSize(conn, 1<<10), nil)
	if err != nil {
		if ctx.Err() == nil {
			t.failure(err)
		}
		return err
	}
	defer resp.Body.Close()
	var got bytes.Buffer
	buf := make([]byte, 1<<10)
	for {
		n, err := resp.Body.Read(buf)
		if got.Len() < 4<<10 {
			got.Write(buf[:n])
		}
		if err == io.EOF {
			t.answer(resp.StatusCode, got.Bytes())
			return nil
		}
		if err != nil {
			if ctx.Err() == nil {
				t.add("cut off while reading")
			}
			return err
		}
		if !pause(ctx, 100*time.Millisecond) {
			return nil
		}
	}
}

// floodEntry is a Pulsedive answer for a domain whose links document
// holds n recent Active DNS addresses.
func floodEntry(value string, n int) pulsedivetest.Entry {
	e := pulsedivetest.Synthetic(value)
	stamp := time.Now().UTC().Add(-24 * time.Hour).Format(time.DateTime)
	dns := make([]map[string]string, n)
	for i := range dns {
		dns[i] = map[string]string{
			"iid": strconv.Itoa(10_000_000 + i), "type": "ip", "stamp_linked": stamp,
			"indicator": fmt.Sprintf("10.%d.%d.%d", i>>16, (i>>8)&255, i&255),
		}
	}
	links, _ := json.Marshal(map[string]any{"Active DNS": dns}) // strings only
	e.Links = pulsedivetest.Answer{Status: http.StatusOK, Body: links}
	return e
}
