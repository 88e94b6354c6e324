package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pulsedive-relay/relay/pulsedive/pulsedivetest"
)

// Rows where Pulsedive's answers, or another tenant, are the weapon.
func pulsediveRows() []attackRow {
	return []attackRow{
		{
			name:  "redirect",
			title: "Pulsedive answers 302 to a foreign host",
			owner: "the Pulsedive client (no redirect, no Referer, key scrubbed)",
			run:   runRedirect,
		},
		{
			name:  "error-text-key",
			title: "Pulsedive error texts holding the caller's API key (403 and an error field)",
			owner: "the Pulsedive client (key scrubbed from Pulsedive text)",
			env:   map[string]string{"LOG_LEVEL": "debug"},
			run:   runErrorTextKey,
		},
		{
			name:     "rotating-keys",
			title:    "one tenant rotating 64 keys on values Pulsedive never answers; another tenant's new lookups measured",
			owner:    "the Pulsedive client (per-key fair share of RELAY_MAX_INFLIGHT)",
			env:      map[string]string{"PULSEDIVE_TIMEOUT": "5s"},
			legit:    newLookups,
			legitP99: time.Second,
			run:      runRotatingKeys,
		},
	}
}

// newLookups is the legitimate traffic of a row that needs Pulsedive: one
// new observable a request, so that every one is a Pulsedive call.
func newLookups(a *attack) (func(int, int) (request, error), error) {
	return func(int, int) (request, error) {
		return a.b.observeRequest(a.key, []observable{a.b.values.next()})
	}, nil
}

// capture is a foreign host that notes who reached it and what they gave
// away.
type capture struct {
	srv      *http.Server
	url      string
	hits     atomic.Int64
	mu       sync.Mutex
	referers []string
}

func startCapture() (*capture, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	c := &capture{url: "http://" + ln.Addr().String()}
	c.srv = &http.Server{ReadHeaderTimeout: 5 * time.Second, ErrorLog: log.New(io.Discard, "", 0),
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			c.hits.Add(1)
			c.mu.Lock()
			c.referers = append(c.referers, r.Header.Get("Referer")+" "+r.URL.String())
			c.mu.Unlock()
			w.Header().Set("Content-Type", "application/json")
			_, _ = io.WriteString(w, `{"error":"foreign host was here"}`)
		})}
	go func() { _ = c.srv.Serve(ln) }()
	return c, nil
}

func (c *capture) close() { _ = c.srv.Close() }

// leaked counts what reached the capture holding key, raw or escaped.
func (c *capture) leaked(key string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, s := range c.referers {
		if strings.Contains(s, key) || strings.Contains(s, url.QueryEscape(key)) {
			n++
		}
	}
	return n
}

func runRedirect(ctx context.Context, a *attack) error {
	c, err := startCapture()
	if err != nil {
		return err
	}
	defer c.close()
	key := a.b.apiKey("redirect-victim")
	fault := pulsedivetest.Fault{Mode: pulsedivetest.ModeStatus, Status: http.StatusFound, Kind: pulsedivetest.KindInfo,
		Header: http.Header{"Location": {c.url + "/steal"}}, Body: []byte(`{}`)}
	echoed := a.faultyLookups(ctx, key, "requests on redirected lookups", func(int64) pulsedivetest.Fault { return fault }, []byte("foreign host"))
	a.r.add("foreign_hits", "requests that reached the foreign host", float64(c.hits.Load()), unitCount).want(opEqual, 0).headline()
	a.r.add("foreign_key_leaks", "of them carrying the API key (URL or Referer)", float64(c.leaked(key)), unitCount).want(opEqual, 0).headline()
	a.r.add("foreign_echoed", "answers echoing the foreign host's body", float64(echoed), unitCount).want(opEqual, 0)
	return nil
}

func runErrorTextKey(ctx context.Context, a *attack) error {
	key := a.b.apiKey("error-text-victim")
	faults := []pulsedivetest.Fault{
		{Mode: pulsedivetest.ModeStatus, Status: http.StatusForbidden, Kind: pulsedivetest.KindInfo, Message: "API key " + key + " has no access to this endpoint."},
		{Mode: pulsedivetest.ModeErrorField, Kind: pulsedivetest.KindInfo, Message: "Invalid API key: " + key},
	}
	leaks := a.faultyLookups(ctx, key, "requests on failing lookups", func(n int64) pulsedivetest.Fault { return faults[n%2] }, []byte(key))
	a.r.add("key_in_answers", "answers holding the caller's API key", float64(leaks), unitCount).want(opEqual, 0).headline()
	if a.st.relay != nil {
		logs, err := os.ReadFile(a.st.relay.logPath)
		if err != nil {
			return err
		}
		a.r.add("key_in_log", "relay log lines holding the API key (LOG_LEVEL=debug)", float64(countLines(logs, key)), unitCount).want(opEqual, 0).headline()
	}
	return nil
}

// faultyLookups has four attackers look up fresh values under key, the
// nth given fault(n) at Pulsedive, until ctx ends, reports what they got
// under what, and returns how many answers held needle.
func (a *attack) faultyLookups(ctx context.Context, key, what string, fault func(n int64) pulsedivetest.Fault, needle []byte) int64 {
	var held, n atomic.Int64
	a.crowd(ctx, 4, 30*time.Second, what, func(ctx context.Context, lc *loadClient, t *outcomes) error {
		o := a.b.values.next()
		a.st.fake.SetFault(o.Value, fault(n.Add(1)))
		req, err := a.b.observeRequest(key, []observable{o})
		if err != nil {
			return err
		}
		if ans, err := t.send(ctx, lc, req); err == nil && bytes.Contains(ans.Body, needle) {
			held.Add(1)
		}
		return nil
	})
	return held.Load()
}

func countLines(text []byte, s string) int {
	n := 0
	for _, line := range bytes.Split(text, []byte("\n")) {
		if bytes.Contains(line, []byte(s)) {
			n++
		}
	}
	return n
}

func runRotatingKeys(ctx context.Context, a *attack) error {
	const keys, clients, batch = 64, 64, 8
	var turn atomic.Int64
	hang := pulsedivetest.Fault{Mode: pulsedivetest.ModeHang}
	a.crowd(ctx, clients, time.Minute, "requests of the rotating tenant", func(ctx context.Context, lc *loadClient, t *outcomes) error {
		t.add("sent")
		obs := make([]observable, batch)
		for i := range obs {
			obs[i] = a.b.values.named("never")
			a.st.fake.SetFault(obs[i].Value, hang)
		}
		req, err := a.b.observeRequest(a.b.apiKey(fmt.Sprintf("rotating-%d", turn.Add(1)%keys)), obs)
		if err != nil {
			return err
		}
		_, err = t.send(ctx, lc, req)
		return err
	})
	a.r.note("The legitimate requests here are new lookups (one Pulsedive call each), under a key of their own; without a fair share they wait for one of RELAY_MAX_INFLIGHT's slots, which the rotating tenant holds for PULSEDIVE_TIMEOUT.")
	return nil
}
