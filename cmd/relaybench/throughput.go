package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/pulsedive-relay/relay/pulsedive/pulsedivetest"
)

// throughputConfig is the cached-path scenario: Clients concurrent clients
// send one cached observe request for Duration, to the relay and then to a
// bare net/http server answering the same bytes.
type throughputConfig struct {
	Clients  int
	Duration time.Duration
}

func defaultThroughput() throughputConfig {
	return throughputConfig{Clients: 64, Duration: 10 * time.Second}
}

func registerThroughput(fs *flag.FlagSet) func(context.Context, *bench) ([]*report, error) {
	c := defaultThroughput()
	fs.IntVar(&c.Clients, "clients", c.Clients, "concurrent keep-alive clients")
	fs.DurationVar(&c.Duration, "duration", c.Duration, "load duration, for the relay and again for the bare server")
	return func(ctx context.Context, b *bench) ([]*report, error) {
		r, err := runThroughput(ctx, b, c)
		return reports(r), err
	}
}

// runThroughput measures the relay's cached path against the ceiling of
// the machine: the same load generator on a server that only writes the
// answer's bytes.
func runThroughput(ctx context.Context, b *bench, c throughputConfig) (*report, error) {
	if c.Clients < 1 || c.Duration <= 0 {
		return nil, usageError{"throughput: -clients must be at least 1 and -duration positive"}
	}
	st, err := b.start(ctx, stackConfig{
		name: "throughput",
		fake: pulsedivetest.Config{},
		env:  map[string]string{"PULSEDIVE_RATE_LIMIT": "0"},
	})
	if err != nil {
		return nil, err
	}
	defer st.close()
	r := newReport("throughput", fmt.Sprintf("cached path: %d clients on one cached observe for %s, against a bare net/http server", c.Clients, c.Duration))
	st.describe(r, "synthetic, no latency, no rate limit")

	lc := newLoadClient(st.url, c.Clients, time.Minute)
	defer lc.closeIdle()
	if err := st.warmUp(ctx, lc); err != nil {
		return nil, err
	}
	req, err := b.observeRequest(b.apiKey("throughput"), b.values.batch(1))
	if err != nil {
		return nil, err
	}
	ra, first, err := post(ctx, lc, req)
	if err != nil {
		return nil, err
	}
	if ra.judgements() != 1 || len(ra.Errors) > 0 {
		return nil, fmt.Errorf("throughput: warming the cache: %d judgements, errors %q", ra.judgements(), ra.errorText())
	}
	st.baseline(ctx, lc)
	st.fake.Reset()

	var bad atomic.Int64
	check := func(_ request, a answer) {
		if a.Status != http.StatusOK || !bytes.Contains(a.Body, []byte(`"judgements"`)) || bytes.Contains(a.Body, []byte(`"errors"`)) {
			bad.Add(1)
		}
	}
	b.progress("throughput: %d clients on the relay for %s", c.Clients, c.Duration)
	relay, err := lc.run(ctx, loadConfig{Clients: c.Clients, Duration: c.Duration, Next: func(int, int) (request, error) { return req, nil }, OnAnswer: check})
	if err != nil {
		return nil, err
	}
	calls := st.fake.Calls()

	bare, err := startBare(first.Body)
	if err != nil {
		return nil, err
	}
	defer bare.close()
	blc := newLoadClient(bare.url, c.Clients, time.Minute)
	defer blc.closeIdle()
	b.progress("throughput: %d clients on a bare net/http server for %s", c.Clients, c.Duration)
	bareRes, err := blc.run(ctx, loadConfig{Clients: c.Clients, Duration: c.Duration, Next: func(int, int) (request, error) { return req, nil }})
	if err != nil {
		return nil, err
	}

	r.add("answer_bytes", "answer size", float64(len(first.Body)), unitBytes)
	r.add("relay_rps", "relay: requests/s", relay.rate(), unitRPS).headline()
	r.addDuration("relay_p50_ms", "relay: latency p50", relay.percentile(0.5)).headline()
	r.addDuration("relay_p99_ms", "relay: latency p99", relay.percentile(0.99)).headline()
	r.add("relay_requests", "relay: requests answered", float64(relay.Answered), unitCount)
	r.add("relay_bad", "relay: answers not 200 with judgements and no errors", float64(bad.Load()), unitCount).want(opEqual, 0)
	r.add("relay_lost", "relay: requests without an answer", float64(relay.lost()), unitCount).want(opEqual, 0)
	r.add("relay_pulsedive_calls", "relay: Pulsedive calls during the load", float64(calls), unitCount).want(opEqual, 0)
	r.add("bare_rps", "bare net/http: requests/s", bareRes.rate(), unitRPS).headline()
	r.addDuration("bare_p50_ms", "bare net/http: latency p50", bareRes.percentile(0.5))
	r.addDuration("bare_p99_ms", "bare net/http: latency p99", bareRes.percentile(0.99))
	if bareRes.rate() > 0 {
		r.add("relay_share", "relay requests/s / bare requests/s", relay.rate()/bareRes.rate(), unitRatio).aim(opAtLeast, 0.4)
	}
	if relay.lost() > 0 {
		countMap(r, "relay: lost requests by cause", relay.Lost)
	}
	r.note("Both servers run on this machine with the load generator; the bare server shares relaybench's process, the relay has its own. The share compares what the relay's auth, cache lookup and CTIM encoding cost against writing the bytes alone.")

	st.finish(ctx, r, lc, finishOptions{leakMargin: -1})
	return r, nil
}

// bareServer is a net/http server on loopback answering every POST with
// the same bytes: the ceiling of the machine and the load generator.
type bareServer struct {
	srv  *http.Server
	url  string
	done chan struct{}
}

func startBare(answer []byte) (*bareServer, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("bare server: %w", err)
	}
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(answer)
	})
	s := &bareServer{
		srv:  &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second, ErrorLog: log.New(io.Discard, "", 0)},
		url:  "http://" + ln.Addr().String(),
		done: make(chan struct{}),
	}
	go func() {
		defer close(s.done)
		// A failed listener shows as lost requests in the load run.
		_ = s.srv.Serve(ln)
	}()
	return s, nil
}

func (s *bareServer) close() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.srv.Shutdown(ctx); err != nil {
		_ = s.srv.Close()
	}
	<-s.done
}
