package relay

import (
	"context"
	"net"
	"net/http"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/pulsedive-relay/relay/pulsedive/pulsedivetest"
)

// TestShutdownDrains runs the relay binary, holds one observe request in
// flight at the fake Pulsedive, signals the process and follows the drain of
// CONTRACT.md section 1: /readyz answers 503 while the relay still serves, the
// listener then closes (new connections are refused) while the request is
// still in flight, the request completes with its data once Pulsedive
// answers, and the process exits 0.
//
// The in-flight call is held by the fake's OnCall hook until the test lets
// it go, rather than by a latency, so each step is ordered without timing.
func TestShutdownDrains(t *testing.T) {
	relayBinary(t) // build once, before the parallel subtests
	for name, sig := range map[string]syscall.Signal{"SIGTERM": syscall.SIGTERM, "SIGINT": syscall.SIGINT} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			testDrain(t, sig)
		})
	}
}

func testDrain(t *testing.T, sig syscall.Signal) {
	const held = "parkingcrew.net"
	arrived, release := make(chan struct{}), make(chan struct{})
	var arrivedOnce, releaseOnce sync.Once
	letGo := func() { releaseOnce.Do(func() { close(release) }) }
	fake := startFake(t, pulsedivetest.Config{OnCall: func(req pulsedivetest.Request) {
		if req.Kind == pulsedivetest.KindInfo && req.Value == held {
			arrivedOnce.Do(func() { close(arrived) })
			<-release
		}
	}})
	t.Cleanup(letGo) // runs before the fake's Close, which waits for the held call

	p := startProcess(t, relayEnv(fake.URL(), map[string]string{
		"RELAY_DRAIN_DELAY":      "1s",
		"RELAY_SHUTDOWN_TIMEOUT": "25s",
	}))
	c := newClient(t)
	if got := send(t, c, p.URL(), request{method: http.MethodGet, path: "/readyz"}); got.status != http.StatusOK {
		t.Fatalf("/readyz before the signal: status %d, want 200", got.status)
	}

	type result struct {
		reply reply
		err   error
	}
	inflight := make(chan result, 1)
	req := request{method: http.MethodPost, path: "/observe/observables", auth: "Bearer " + p.token(t, "shutdown-key"), body: observables(t, "domain", held)}
	inflightClient := newClient(t)
	go func() {
		r, err := trySend(inflightClient, p.URL(), req)
		inflight <- result{r, err}
	}()
	select {
	case <-arrived:
	case res := <-inflight:
		t.Fatalf("the observe request ended before reaching Pulsedive: %v %s", res.err, res.reply.body)
	case <-time.After(15 * time.Second):
		t.Fatalf("the observe request did not reach the fake within 15s\nlogs:\n%s", p.logs)
	}

	if err := p.cmd.Process.Signal(sig); err != nil {
		t.Fatal(err)
	}

	// Draining: /readyz turns 503 at once, and the relay still answers.
	readyz := newClient(t)
	eventually(t, 5*time.Second, "/readyz answering 503 after "+sig.String(), func() (bool, error) {
		got, err := trySend(readyz, p.URL(), request{method: http.MethodGet, path: "/readyz"})
		if isRefused(err) {
			t.Fatalf("the listener closed before /readyz was seen answering 503: %v\nlogs:\n%s", err, p.logs)
		}
		return err == nil && got.status == http.StatusServiceUnavailable, err
	})

	// After the drain delay the listener closes, with the request still in
	// flight (held at the fake) and the process still running.
	eventually(t, 10*time.Second, "new connections refused", func() (bool, error) {
		conn, err := net.DialTimeout("tcp", p.addr, time.Second)
		if err == nil {
			conn.Close()
			return false, nil
		}
		return isRefused(err), err
	})
	select {
	case res := <-inflight:
		t.Fatalf("the held request ended before Pulsedive answered: %v %s", res.err, res.reply.body)
	case <-p.exited:
		t.Fatalf("the relay exited (%v) with a request in flight\nlogs:\n%s", p.err, p.logs)
	default:
	}

	letGo()
	select {
	case res := <-inflight:
		if res.err != nil {
			t.Fatalf("the in-flight request failed: %v\nlogs:\n%s", res.err, p.logs)
		}
		got := res.reply.object(t)
		if errs, ok := got["errors"]; ok {
			t.Errorf("the in-flight request answered errors: %v", errs)
		}
		// A judgement, not a verdict: at the relay's real clock the
		// fixture's verdict has expired and is left out (CONTRACT.md section 4b).
		judgements, _ := got["data"].(map[string]any)["judgements"].(map[string]any)
		if n, _ := judgements["count"].(float64); n != 1 {
			t.Errorf("the in-flight request answered %s, want one judgement", res.reply.body)
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("the in-flight request did not complete within 20s of Pulsedive answering\nlogs:\n%s", p.logs)
	}

	select {
	case <-p.exited:
		if p.err != nil {
			t.Errorf("the relay exited with %v, want status 0\nlogs:\n%s", p.err, p.logs)
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("the relay did not exit within 20s of its last request\nlogs:\n%s", p.logs)
	}
	logs := p.logs.String()
	for _, want := range []string{`"msg":"shutting down: draining"`, `"msg":"relay stopped"`} {
		if !strings.Contains(logs, want) {
			t.Errorf("logs lack %s:\n%s", want, logs)
		}
	}
	if n := fake.CallsFor(pulsedivetest.KindLinks, held); n != 1 {
		t.Errorf("links calls for %s = %d, want 1: the request went on after the listener closed", held, n)
	}
}

// TestDrainAnswersTheLastRequest: a request the relay takes at the very
// end of the drain, just before the listener closes, gets its whole answer
// even when it runs its whole RELAY_REQUEST_TIMEOUT (Pulsedive never
// answers it), with RELAY_SHUTDOWN_TIMEOUT left to its default. Issue 9:
// the drain waited 20s for requests that may run 25s.
func TestDrainAnswersTheLastRequest(t *testing.T) {
	const held = "last-request.example"
	arrived := make(chan struct{})
	var once sync.Once
	fake := startFake(t, pulsedivetest.Config{OnCall: func(req pulsedivetest.Request) {
		if req.Value == held {
			once.Do(func() { close(arrived) })
		}
	}})
	fake.SetFault(held, pulsedivetest.Fault{Mode: pulsedivetest.ModeHang, Kind: pulsedivetest.KindInfo})
	env := relayEnv(fake.URL(), map[string]string{
		"RELAY_DRAIN_DELAY":      "50ms",
		"RELAY_REQUEST_TIMEOUT":  "2s",
		"RELAY_SHUTDOWN_TIMEOUT": "", // its default, derived from the request timeout
	})
	cfg, err := loadConfig(func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	if cfg.ShutdownTimeout < cfg.RequestTimeout {
		t.Fatalf("default RELAY_SHUTDOWN_TIMEOUT %v is shorter than RELAY_REQUEST_TIMEOUT %v", cfg.ShutdownTimeout, cfg.RequestTimeout)
	}

	// serve's phases, run one by one (serve runs them in this order): the
	// last request is sent once the drain delay is over, just before the
	// listeners close.
	logs := newLogBuffer()
	s, err := start(cfg, Deps{Stderr: logs})
	if err != nil {
		t.Fatalf("start: %v\nlogs:\n%s", err, logs)
	}
	shutdown := sync.OnceFunc(func() { s.shutdown(context.Background()) })
	t.Cleanup(shutdown)
	if err := s.drain(); err != nil {
		t.Fatalf("drain: %v\nlogs:\n%s", err, logs)
	}
	type result struct {
		reply reply
		err   error
	}
	last := make(chan result, 1)
	r := &relay{addr: s.addr}
	req := request{method: http.MethodPost, path: "/observe/observables", auth: "Bearer " + r.token(t, "drain-key"), body: observables(t, "domain", held)}
	c := newClient(t)
	go func() {
		got, err := trySend(c, r.URL(), req)
		last <- result{got, err}
	}()
	select {
	case <-arrived: // the relay has taken it and asked Pulsedive
	case res := <-last:
		t.Fatalf("the last request was answered before it reached Pulsedive: %+v\nlogs:\n%s", res, logs)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		shutdown()
	}()

	select {
	case res := <-last:
		if res.err != nil {
			t.Fatalf("the last request got no answer: %v\nlogs:\n%s", res.err, logs)
		}
		want := `{"errors":[{"type":"fatal","code":"service unavailable","message":"Pulsedive is unavailable: request deadline exceeded"}]}`
		if got := strings.TrimSpace(string(res.reply.body)); res.reply.status != http.StatusOK || got != want {
			t.Errorf("the last request answered %d %s, want 200 %s", res.reply.status, got, want)
		}
	case <-time.After(time.Minute):
		t.Fatalf("the last request was not answered within a minute\nlogs:\n%s", logs)
	}
	select {
	case <-done:
	case <-time.After(time.Minute):
		t.Fatalf("the shutdown did not end\nlogs:\n%s", logs)
	}
	if strings.Contains(logs.String(), "shutdown incomplete") {
		t.Errorf("the drain cut requests off:\n%s", logs)
	}
}
