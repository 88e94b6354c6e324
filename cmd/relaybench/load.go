package main

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"slices"
	"sync"
	"syscall"
	"time"
)

// request is one call the load generator makes: a POST of Body to Path
// with a bearer token (none when Token is empty).
type request struct {
	Kind  string // what it is, for the report: observe, deliberate, refer, health
	Path  string
	Body  []byte
	Token string
	ID    string // X-Request-Id, to find the request in the relay's log; none when empty
}

// answer is what came back: the status and the whole body, and the time
// from sending to the last body byte.
type answer struct {
	Status  int
	Header  http.Header
	Body    []byte
	Latency time.Duration
}

// loadClient sends requests to one base URL over keep-alive connections,
// enough idle ones for every client, so that a run measures the server and
// not connection set-up.
type loadClient struct {
	base      string
	transport *http.Transport
	client    *http.Client
}

// newLoadClient returns a client for base with room for clients keep-alive
// connections; timeout bounds each request, body included.
func newLoadClient(base string, clients int, timeout time.Duration) *loadClient {
	t := &http.Transport{
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:        clients * 2,
		MaxIdleConnsPerHost: clients,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
	}
	return &loadClient{base: base, transport: t, client: &http.Client{Transport: t, Timeout: timeout}}
}

// closeIdle closes the idle keep-alive connections, ending the server's
// goroutines that serve them.
func (lc *loadClient) closeIdle() { lc.transport.CloseIdleConnections() }

// do sends one request and reads the whole answer.
func (lc *loadClient) do(ctx context.Context, r request) (answer, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, lc.base+r.Path, bytes.NewReader(r.Body))
	if err != nil {
		return answer{}, err
	}
	req.Header.Set("Content-Type", "application/json")
	if r.Token != "" {
		req.Header.Set("Authorization", "Bearer "+r.Token)
	}
	if r.ID != "" {
		req.Header.Set("X-Request-Id", r.ID)
	}
	start := time.Now()
	resp, err := lc.client.Do(req)
	if err != nil {
		return answer{}, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return answer{}, fmt.Errorf("read body: %w", err)
	}
	return answer{Status: resp.StatusCode, Header: resp.Header, Body: body, Latency: time.Since(start)}, nil
}

// loadConfig is one run of the load generator.
type loadConfig struct {
	// Clients is the number of concurrent clients, each sending its next
	// request when the previous one is answered.
	Clients int
	// PerClient, when positive, is the number of requests each client
	// sends; otherwise clients start requests until Duration has passed.
	PerClient int
	Duration  time.Duration
	// Next returns the request of a client; seq counts that client's
	// requests from 0. It is called from the client's goroutine.
	Next func(client, seq int) (request, error)
	// OnAnswer, when set, sees every answer, from the clients' goroutines
	// at once.
	OnAnswer func(request, answer)
}

// loadResult is what a run measured. A request is lost when no complete
// answer came back: a transport error, a timeout, a cut body.
type loadResult struct {
	Sent, Answered int
	Lost           map[string]int  // by cause
	Status         map[int]int     // answers by HTTP status
	Latencies      []time.Duration // of answers, sorted
	Elapsed        time.Duration   // from the first start to the last answer
}

func (r *loadResult) lost() int { return r.Sent - r.Answered }

// rate is answers per second.
func (r *loadResult) rate() float64 {
	if r.Elapsed <= 0 {
		return 0
	}
	return float64(r.Answered) / r.Elapsed.Seconds()
}

// percentile returns the latency at or below which a fraction p of the
// answers were (nearest rank); zero without answers.
func (r *loadResult) percentile(p float64) time.Duration {
	return percentile(r.Latencies, p)
}

func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(float64(len(sorted))*p+0.999999) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

// fiveXX counts answers with a 5xx status.
func (r *loadResult) fiveXX() int {
	n := 0
	for s, c := range r.Status {
		if s >= 500 {
			n += c
		}
	}
	return n
}

// sender is what one goroutine of the load generator measured.
type sender struct {
	loadResult
	err error
}

func newSender() sender {
	return sender{loadResult: loadResult{Lost: map[string]int{}, Status: map[int]int{}}}
}

// send sends req and notes the answer, or its loss; latencyFrom, when set,
// is when the request was due.
func (s *sender) send(ctx context.Context, lc *loadClient, req request, latencyFrom time.Time, onAnswer func(request, answer)) {
	s.Sent++
	a, err := lc.do(ctx, req)
	if err != nil {
		s.Lost[lossCause(err)]++
		return
	}
	if !latencyFrom.IsZero() {
		a.Latency = time.Since(latencyFrom)
	}
	s.Answered++
	s.Status[a.Status]++
	s.Latencies = append(s.Latencies, a.Latency)
	if onAnswer != nil {
		onAnswer(req, a)
	}
}

// merge sums the senders' figures, latencies sorted, and returns the first
// error any met.
func merge(senders []sender, elapsed time.Duration) (*loadResult, error) {
	out := &loadResult{Elapsed: elapsed, Lost: map[string]int{}, Status: map[int]int{}}
	var firstErr error
	for _, r := range senders {
		out.Sent += r.Sent
		out.Answered += r.Answered
		for k, v := range r.Lost {
			out.Lost[k] += v
		}
		for k, v := range r.Status {
			out.Status[k] += v
		}
		out.Latencies = append(out.Latencies, r.Latencies...)
		firstErr = cmp.Or(firstErr, r.err)
	}
	slices.Sort(out.Latencies)
	return out, firstErr
}

// run drives the clients and waits for every request to end. A Next error
// stops that client and is returned (the first one) after the others end;
// ctx ending stops every client (requests in flight count as lost).
func (lc *loadClient) run(ctx context.Context, cfg loadConfig) (*loadResult, error) {
	senders := make([]sender, cfg.Clients)
	start := make(chan struct{})
	var wg sync.WaitGroup
	var began, end time.Time
	for c := range cfg.Clients {
		senders[c] = newSender()
		wg.Go(func() {
			s := &senders[c]
			<-start
			for seq := 0; ctx.Err() == nil; seq++ {
				if (cfg.PerClient > 0 && seq >= cfg.PerClient) || (cfg.PerClient <= 0 && !time.Now().Before(end)) {
					return
				}
				req, err := cfg.Next(c, seq)
				if err != nil {
					s.err = err
					return
				}
				s.send(ctx, lc, req, time.Time{}, cfg.OnAnswer)
			}
		})
	}
	began = time.Now()
	end = began.Add(cfg.Duration)
	close(start)
	wg.Wait()
	return merge(senders, time.Since(began))
}

// lossCause names why a request got no answer, in a few words.
func lossCause(err error) string {
	var ne net.Error
	switch {
	case errors.Is(err, context.Canceled):
		return "cancelled"
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, os.ErrDeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return "client timeout"
	case errors.Is(err, syscall.ECONNRESET):
		return "connection reset"
	case errors.Is(err, syscall.EPIPE):
		return "broken pipe"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused"
	case errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF):
		return "connection closed early"
	}
	// The innermost error: the outer ones name addresses and ports, which
	// would make every failure a cause of its own.
	for {
		next := errors.Unwrap(err)
		if next == nil {
			return truncate(err.Error(), 80)
		}
		err = next
	}
}

// openConfig is one open-loop run: requests start on a schedule, Rate a
// second for Duration, whatever the server's pace, on at most Conns
// connections at once. A request whose turn comes while every connection
// is busy waits for one, and its latency counts from when it was due: a
// slow server shows as latency, not as a slower schedule (no coordinated
// omission).
type openConfig struct {
	Rate     float64
	Duration time.Duration
	Conns    int
	// Next returns the request of sequence number seq, from the sending
	// goroutines at once.
	Next     func(seq int) (request, error)
	OnAnswer func(request, answer)
}

// openLoop runs cfg and waits for every request to end. Latencies count
// from each request's scheduled time; Elapsed from the first scheduled
// time to the last answer.
func (lc *loadClient) openLoop(ctx context.Context, cfg openConfig) (*loadResult, error) {
	total := int(cfg.Rate * cfg.Duration.Seconds())
	if total < 1 || cfg.Conns < 1 {
		return nil, errors.New("open loop: no request to send")
	}
	type due struct {
		seq int
		at  time.Time
	}
	queue := make(chan due, total)
	senders := make([]sender, cfg.Conns)
	start := time.Now()
	var wg sync.WaitGroup
	for c := range cfg.Conns {
		senders[c] = newSender()
		wg.Go(func() {
			s := &senders[c]
			for d := range queue {
				if ctx.Err() != nil {
					continue // drain: requests never sent are not counted
				}
				req, err := cfg.Next(d.seq)
				if err != nil {
					s.err = err
					continue
				}
				s.send(ctx, lc, req, d.at, cfg.OnAnswer)
			}
		})
	}
	// The schedule: every request due by now is queued, checked every
	// half millisecond (timers are coarser than the gaps at high rates).
	interval := time.Duration(float64(time.Second) / cfg.Rate)
	tick := time.NewTicker(500 * time.Microsecond)
	next := 0
	for next < total && ctx.Err() == nil {
		now := time.Now()
		for next < total {
			at := start.Add(time.Duration(next) * interval)
			if at.After(now) {
				break
			}
			queue <- due{next, at}
			next++
		}
		select {
		case <-tick.C:
		case <-ctx.Done():
		}
	}
	tick.Stop()
	close(queue)
	wg.Wait()

	return merge(senders, time.Since(start))
}
