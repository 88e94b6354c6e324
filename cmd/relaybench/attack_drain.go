package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/pulsedive-relay/relay/pulsedive/pulsedivetest"
)

// drainRows is SIGTERM under load: requests keep coming through the drain,
// half of them running the whole request timeout (Pulsedive never
// answers), and none the relay took may go unanswered.
func drainRows(short bool) []attackRow {
	// The deployment's drain and request timeout; Pulsedive's timeout
	// above the request's, so that a hanging lookup runs the whole
	// request timeout.
	drain, timeout, call := "5s", "25s", "30s"
	if short {
		drain, timeout, call = "1s", "3s", "5s"
	}
	return []attackRow{{
		name:  "sigterm",
		title: fmt.Sprintf("SIGTERM under load: a request every 50 ms, half of them running the %s request timeout, %s drain", timeout, drain),
		env:   map[string]string{"RELAY_DRAIN_DELAY": drain, "RELAY_REQUEST_TIMEOUT": timeout, "PULSEDIVE_TIMEOUT": call, "LOG_LEVEL": "info"},
		own:   true,
		run:   runSIGTERM,
	}}
}

func runSIGTERM(ctx context.Context, a *attack) error {
	if a.st.relay == nil {
		a.r.note("sigterm needs a relay relaybench launched: skipped")
		return nil
	}
	// An open loop, as callers keep coming whatever is in flight: a new
	// request every tick, so that some are taken at the very end of the
	// drain.
	const tick, most = 50 * time.Millisecond, 400
	lc := newLoadClient(a.st.url, most, 2*time.Minute)
	defer lc.closeIdle()
	hang := pulsedivetest.Fault{Mode: pulsedivetest.ModeHang}
	var sent, answered atomic.Int64
	var mu sync.Mutex
	type failure struct{ cause, value string }
	failed := map[string]failure{} // by request id
	done := a.st.relay.done
	loadCtx, stopLoad := context.WithCancel(ctx)
	defer stopLoad()
	var wg sync.WaitGroup
	slots := make(chan struct{}, most)
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(tick)
		defer t.Stop()
		for n := 1; ; n++ {
			select {
			case <-done:
				return
			case <-loadCtx.Done():
				return
			case <-t.C:
			}
			select {
			case slots <- struct{}{}:
			default:
				continue // as many in flight as the load allows
			}
			o := a.b.values.next()
			if n%2 == 0 {
				a.st.fake.SetFault(o.Value, hang)
			}
			req, err := a.b.observeRequest(a.key, []observable{o})
			if err != nil {
				return
			}
			req.ID = fmt.Sprintf("sigterm-%s-%d", a.b.nonce, n)
			sent.Add(1)
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer func() { <-slots }()
				if _, err := lc.do(loadCtx, req); err != nil {
					mu.Lock()
					failed[req.ID] = failure{lossCause(err), o.Value}
					mu.Unlock()
					return
				}
				answered.Add(1)
			}()
		}
	}()

	// Load first, then the signal, then load through the drain until the
	// relay has exited.
	pause(ctx, max(a.c.Duration/4, time.Second))
	a.b.progress("attack sigterm: SIGTERM")
	signalled := time.Now()
	if err := a.st.relay.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		return err
	}
	select {
	case <-done:
	case <-time.After(2 * time.Minute):
		stopLoad()
		wg.Wait()
		return errors.New("the relay did not exit within 2 minutes of SIGTERM")
	}
	exited := time.Since(signalled)
	stopLoad()
	wg.Wait()
	a.st.stopped, a.st.exitCode = true, a.st.relay.stop(0)

	handled, incomplete, err := accessLog(a.st.relay.logPath)
	if err != nil {
		return err
	}
	// Taken: the relay logged the request, or asked Pulsedive about its
	// value (a request cut off while it waits is never logged).
	lost := map[string]int{}
	notTaken := map[string]int{}
	for id, f := range failed {
		if handled[id] || a.st.fake.CallsFor(pulsedivetest.KindInfo, f.value) > 0 {
			lost[f.cause]++
		} else {
			notTaken[f.cause]++
		}
	}
	nLost := 0
	for _, n := range lost {
		nLost += n
	}
	a.r.add("drain_sent", "requests sent", float64(sent.Load()), unitCount)
	a.r.add("drain_answered", "answered in full", float64(answered.Load()), unitCount).headline()
	a.r.add("drain_not_taken", "not taken by the relay (refused once the listener closed)", float64(len(failed)-nLost), unitCount)
	a.r.add("drain_lost", "taken by the relay (logged, or its value asked of Pulsedive) but not answered in full", float64(nLost), unitCount).want(opEqual, 0).headline()
	a.r.add("drain_incomplete", "\"shutdown incomplete\" log lines", float64(incomplete), unitCount).want(opEqual, 0)
	a.r.addDuration("drain_exit_ms", "from SIGTERM to exit", exited)
	countMap(a.r, "requests not taken, by cause", notTaken)
	if nLost > 0 {
		countMap(a.r, "requests lost, by cause", lost)
	}
	return nil
}

// accessLog reads the relay's log: the request ids of its access lines, and
// how many lines say the shutdown cut requests off.
func accessLog(path string) (ids map[string]bool, incomplete int, err error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, 0, err
	}
	defer f.Close()
	ids = map[string]bool{}
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := sc.Bytes()
		if !bytes.HasPrefix(line, []byte("{")) {
			continue
		}
		var rec struct {
			Msg string `json:"msg"`
			ID  string `json:"request_id"`
		}
		if json.Unmarshal(line, &rec) != nil {
			continue
		}
		switch rec.Msg {
		case "request":
			ids[rec.ID] = true
		case "shutdown incomplete: closing remaining connections":
			incomplete++
		}
	}
	return ids, incomplete, sc.Err()
}
