package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.uber.org/goleak"

	"github.com/pulsedive-relay/relay/internal/relay"
)

func TestMain(m *testing.M) {
	// The throughput scenario starts its own binary again as the bare
	// server: here, the test binary.
	if path := os.Getenv(bareEnv); path != "" {
		os.Exit(bareMain(path, os.Stdout, os.Stderr))
	}
	goleak.VerifyTestMain(m)
}

// output is what run prints under -json.
type output struct {
	Reports []*report `json:"reports"`
	Passed  bool      `json:"passed"`
}

// buildRelay builds the relay binary into a temporary directory.
func buildRelay(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "relay")
	out, err := exec.CommandContext(t.Context(), "go", "build", "-o", bin, relayPackage).CombinedOutput()
	if err != nil {
		t.Fatalf("go build %s: %v\n%s", relayPackage, err, out)
	}
	return bin
}

// runJSON runs relaybench with -json -q and decodes its one report.
func runJSON(t *testing.T, args ...string) *report {
	t.Helper()
	var stdout, stderr bytes.Buffer
	err := run(t.Context(), append(args, "-json", "-q"), &stdout, &stderr)
	if err != nil {
		t.Errorf("run %s: %v\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), err, stdout.String(), stderr.String())
	}
	var got output
	if err := json.Unmarshal(stdout.Bytes(), &got); err != nil {
		t.Fatalf("run %s: output is not JSON: %v\n%s", strings.Join(args, " "), err, stdout.String())
	}
	if len(got.Reports) != 1 {
		t.Fatalf("run %s: %d reports, want 1", strings.Join(args, " "), len(got.Reports))
	}
	return got.Reports[0]
}

// figures returns the report's figures by key.
func figures(r *report) map[string]float64 {
	m := make(map[string]float64, len(r.Figures))
	for _, f := range r.Figures {
		m[f.Key] = f.Value
	}
	return m
}

// wantFigures checks that each key is present with the wanted value.
func wantFigures(t *testing.T, r *report, want map[string]float64) {
	t.Helper()
	all := figures(r)
	got := make(map[string]float64, len(want))
	for k := range want {
		if v, ok := all[k]; ok {
			got[k] = v
		}
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("%s figures (-want +got):\n%s", r.Scenario, diff)
	}
}

// TestScenarios runs a tiny soak, two attack rows, a short throughput run
// and small cold and warm batches against the real relay binary and checks
// the invariants of their reports.
func TestScenarios(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and launches the relay")
	}
	bin := buildRelay(t)

	t.Run("soak", func(t *testing.T) {
		r := runJSON(t, "soak", "-relay-bin", bin, "-duration", "3s", "-clients", "8", "-keys", "2")
		wantFigures(t, r, map[string]float64{"soak_lost": 0, "soak_5xx": 0, "soak_malformed": 0, "relay_exit_code": 0})
		got := figures(r)
		if got["soak_sent"] == 0 || got["soak_answered"] != got["soak_sent"] {
			t.Errorf("sent %v, answered %v: want some requests, every one answered", got["soak_sent"], got["soak_answered"])
		}
		for _, k := range []string{"goroutines_before", "goroutines_after", "rss_peak_mib"} {
			if _, ok := got[k]; !ok {
				t.Errorf("figure %s missing", k)
			}
		}
		if !r.Passed {
			t.Errorf("soak failed: %v", r.Failed)
		}
	})

	t.Run("attack", func(t *testing.T) {
		var stdout, stderr bytes.Buffer
		err := run(t.Context(), []string{"attack", "-relay-bin", bin, "-short", "-duration", "2s", "-rows", "wide-object,sigterm", "-json", "-q"}, &stdout, &stderr)
		if err != nil {
			t.Errorf("attack: %v\nstderr:\n%s", err, stderr.String())
		}
		var got output
		if err := json.Unmarshal(stdout.Bytes(), &got); err != nil || len(got.Reports) != 2 {
			t.Fatalf("attack: %d reports, %v\n%s", len(got.Reports), err, stdout.String())
		}
		wantFigures(t, got.Reports[0], map[string]float64{"survived": 1, "legit_answered": 1, "relay_exit_code": 0})
		wantFigures(t, got.Reports[1], map[string]float64{"drain_lost": 0, "drain_incomplete": 0, "relay_exit_code": 0})
		for _, r := range got.Reports {
			if f := figures(r); f["rss_hwm_mib"] <= 0 || f["rss_hwm_mib"] >= deployPodLimitMi {
				t.Errorf("%s: VmHWM %v MiB, want some, under %d", r.Scenario, f["rss_hwm_mib"], deployPodLimitMi)
			}
			if !r.Passed {
				t.Errorf("%s failed: %v", r.Scenario, r.Failed)
			}
		}
	})

	t.Run("throughput", func(t *testing.T) {
		// The bare server is this test binary started again (TestMain).
		r := runJSON(t, "throughput", "-relay-bin", bin, "-duration", "1s", "-rounds", "2", "-clients", "4")
		wantFigures(t, r, map[string]float64{"relay_bad": 0, "relay_lost": 0, "relay_pulsedive_calls": 0, "relay_exit_code": 0})
		got := figures(r)
		for _, k := range []string{"relay_rps", "bare_rps", "relay_share", "relay_cpu_us", "bare_cpu_us"} {
			if got[k] <= 0 {
				t.Errorf("figure %s = %v, want a measurement", k, got[k])
			}
		}
	})

	t.Run("scaling", func(t *testing.T) {
		r := runJSON(t, "scaling", "-relay-bin", bin, "-sizes", "40", "-concurrent", "2", "-latency", "50ms")
		wantFigures(t, r, map[string]float64{
			"alone_40_calls":         80, // an info and a links call each
			"alone_40_judgements":    40,
			"warm_calls":             0,
			"warm_judgements":        40,
			"concurrent_40_calls":    160,
			"concurrent_40_complete": 2,
		})
		if !r.Passed {
			t.Errorf("scaling failed: %v", r.Failed)
		}
	})
}

func TestRunUsage(t *testing.T) {
	tests := []struct {
		name string
		args []string
		code int // 0: no error
	}{
		{"help", []string{"help"}, 0},
		{"scenario help", []string{"soak", "-help"}, 0},
		{"no scenario", nil, 2},
		{"unknown scenario", []string{"bogus"}, 2},
		{"unknown flag", []string{"scaling", "-bogus"}, 2},
		{"stray argument", []string{"scaling", "extra"}, 2},
		{"pid without url", []string{"scaling", "-relay-pid", "1"}, 2},
		{"bad relay env", []string{"scaling", "-relay-env", "NOEQUALS"}, 2},
		{"unknown attack row", []string{"attack", "-rows", "big-bodies,bogus"}, 2},
		{"bad rate", []string{"latency", "-rates", "1000,-5"}, 2},
		{"bad size", []string{"scaling", "-sizes", "100,x"}, 2},
		{"no rounds", []string{"throughput", "-rounds", "0"}, 2},
		{"negative rate", []string{"throughput", "-rate", "-1"}, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			err := run(t.Context(), tt.args, &stdout, &stderr)
			got := 0
			if err != nil {
				got = relay.ExitCode(err)
			}
			if got != tt.code {
				t.Errorf("exit code %d (err %v), want %d", got, err, tt.code)
			}
		})
	}
}

func TestParseStatus(t *testing.T) {
	tests := []struct {
		name          string
		in            string
		rss, hwm      int64
		wantErrSubstr string
	}{
		{"both", "Name:\trelay\nVmHWM:\t   2048 kB\nVmRSS:\t   1024 kB\nThreads:\t9\n", 1 << 20, 2 << 20, ""},
		{"no hwm", "VmRSS:\t1 kB\n", 0, 0, "missing"},
		{"not kB", "VmRSS:\t1 MB\nVmHWM:\t1 kB\n", 0, 0, "not in kB"},
		{"not a number", "VmRSS:\tx kB\nVmHWM:\t1 kB\n", 0, 0, "VmRSS"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rss, hwm, err := parseStatus([]byte(tt.in))
			if tt.wantErrSubstr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErrSubstr) {
					t.Fatalf("err %v, want one containing %q", err, tt.wantErrSubstr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if rss != tt.rss || hwm != tt.hwm {
				t.Errorf("got rss %d hwm %d, want %d %d", rss, hwm, tt.rss, tt.hwm)
			}
		})
	}
}

func TestPercentile(t *testing.T) {
	ms := func(ns ...int) []time.Duration {
		out := make([]time.Duration, len(ns))
		for i, n := range ns {
			out[i] = time.Duration(n) * time.Millisecond
		}
		return out
	}
	tests := []struct {
		name   string
		sorted []time.Duration
		p      float64
		want   time.Duration
	}{
		{"empty", nil, 0.5, 0},
		{"one", ms(7), 0.99, 7 * time.Millisecond},
		{"median of four", ms(1, 2, 3, 4), 0.5, 2 * time.Millisecond},
		{"p99 of hundred", ms(seq(100)...), 0.99, 99 * time.Millisecond},
		{"max", ms(1, 2, 3), 1, 3 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := percentile(tt.sorted, tt.p); got != tt.want {
				t.Errorf("percentile(%v) = %s, want %s", tt.p, got, tt.want)
			}
		})
	}
}

func seq(n int) []int {
	out := make([]int, n)
	for i := range out {
		out[i] = i + 1
	}
	return out
}

func TestFinalize(t *testing.T) {
	type verdict struct {
		Passed         bool
		Failed, Missed []string
	}
	tests := []struct {
		name   string
		strict bool
		extra  func(*report)
		want   verdict
	}{
		{"timing miss is not decisive", false, nil, verdict{Passed: true, Missed: []string{"ratio"}}},
		{"strict makes it decisive", true, nil, verdict{Failed: []string{"ratio"}}},
		{"invariant fails", false, func(r *report) { r.add("lost", "lost", 1, unitCount).want(opEqual, 0) },
			verdict{Failed: []string{"lost"}, Missed: []string{"ratio"}}},
		{"below is strict", false, func(r *report) { r.add("rss", "rss", 150, unitMiB).want(opBelow, 150) },
			verdict{Failed: []string{"rss"}, Missed: []string{"ratio"}}},
		{"at most holds at the limit", false, func(r *report) { r.add("g", "g", 25, unitCount).want(opAtMost, 25) },
			verdict{Passed: true, Missed: []string{"ratio"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newReport("x", "x")
			r.add("calls", "calls", 20, unitCount).want(opEqual, 20)
			r.add("ratio", "ratio", 1.7, unitRatio).aim(opAtMost, 1.5)
			if tt.extra != nil {
				tt.extra(r)
			}
			r.finalize(tt.strict)
			got := verdict{Passed: r.Passed, Failed: r.Failed, Missed: r.Missed}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("verdict (-want +got):\n%s", diff)
			}
		})
	}
}

// TestValueSource checks that generated values are new, of the type they
// claim, and that the types take turns.
func TestValueSource(t *testing.T) {
	s := newValueSource("abcd1234")
	seen := map[observable]bool{}
	types := map[string]int{}
	for _, o := range s.batch(400) {
		if seen[o] {
			t.Fatalf("value %v repeated", o)
		}
		seen[o] = true
		types[o.Type]++
		switch o.Type {
		case "ip", "ipv6":
			a, err := netip.ParseAddr(o.Value)
			if err != nil || a.Is4() != (o.Type == "ip") {
				t.Errorf("%v: not an address of its type (%v)", o, err)
			}
		case "domain":
			if !strings.HasSuffix(o.Value, ".abcd1234.relaybench.example") {
				t.Errorf("%v: not under the run's domain", o)
			}
		case "url":
			if !strings.HasPrefix(o.Value, "http://") {
				t.Errorf("%v: not a URL", o)
			}
		default:
			t.Errorf("%v: unexpected type", o)
		}
	}
	if diff := cmp.Diff(map[string]int{"ip": 100, "ipv6": 100, "domain": 100, "url": 100}, types); diff != "" {
		t.Errorf("types (-want +got):\n%s", diff)
	}
}

func TestLogTail(t *testing.T) {
	l := newLogTail(2)
	lines := `{"level":"WARN","msg":"pulsedive call failed"}
{"level":"WARN","msg":"pulsedive call failed"}
{"level":"ERROR","msg":"unmapped error"}
panic: boom
`
	// Written in two pieces, split inside a line.
	_, _ = l.Write([]byte(lines[:30]))
	_, _ = l.Write([]byte(lines[30:]))
	levels, top := l.summary(2)
	if diff := cmp.Diff(map[string]int{"warn": 2, "error": 1, "other": 1}, levels); diff != "" {
		t.Errorf("levels (-want +got):\n%s", diff)
	}
	wantTop := []countEntry{{"warn: pulsedive call failed", 2}, {"error: unmapped error", 1}}
	if diff := cmp.Diff(wantTop, top); diff != "" {
		t.Errorf("top (-want +got):\n%s", diff)
	}
	if got, want := l.tail(), "{\"level\":\"ERROR\",\"msg\":\"unmapped error\"}\npanic: boom"; got != want {
		t.Errorf("tail = %q, want %q", got, want)
	}
}

func TestExitCode(t *testing.T) {
	if got := relay.ExitCode(errTargetsMissed); got != 1 {
		t.Errorf("ExitCode(targets missed) = %d, want 1", got)
	}
	if got := relay.ExitCode(errors.Join(usageError("x"))); got != 2 {
		t.Errorf("ExitCode(usage) = %d, want 2", got)
	}
}

func TestTallyStacks(t *testing.T) {
	dump := `SIGQUIT: quit
PC=0x47a2e1 m=0 sigcode=0

goroutine 0 gp=0x9 m=0 mp=0x1 [idle]:
runtime.futex(0x1, 0x80)
	/usr/local/go/src/runtime/sys_linux_amd64.s:557 +0x21

goroutine 1 gp=0xc000002380 m=nil [IO wait, 2 minutes]:
internal/poll.runtime_pollWait(0x7f, 0x72)
	/usr/local/go/src/runtime/netpoll.go:351 +0x85
main.serve(0xc0000b4000)
	/work/main/cmd/relay/serve.go:200 +0x1
created by main.main in goroutine 1
	/work/main/cmd/relay/main.go:20 +0x1

goroutine 7 gp=0xc000003 m=nil [select]:
github.com/pulsedive-relay/relay/pipeline.(*Pipeline).fetch(0xc000)
	/work/main/pipeline/fetch.go:50 +0x1

goroutine 8 gp=0xc000004 m=nil [select, 1 minutes]:
github.com/pulsedive-relay/relay/pipeline.(*Pipeline).fetch(0xc000)
	/work/main/pipeline/fetch.go:50 +0x1

goroutine 12 gp=0xc000006 m=nil [select]:
runtime.gopark(0x1?, 0x2?)
	/usr/local/go/src/runtime/proc.go:460 +0xce
runtime.selectgo(0xc000, 0xc000, 0x0?)
	/usr/local/go/src/runtime/select.go:351 +0x837
github.com/dgraph-io/ristretto/v2.(*Cache[...]).processItems(0xc000)
	/root/go/pkg/mod/github.com/dgraph-io/ristretto/v2@v2.4.2/cache.go:480 +0xc5

goroutine 9 gp=0xc000005 m=nil [chan receive]:
net/http.(*persistConn).readLoop(0xc000)
	/usr/local/go/src/net/http/transport.go:2000 +0x1
created by net/http.(*Transport).dialConn in goroutine 8
	/usr/local/go/src/net/http/transport.go:1800 +0x1
`
	want := map[string]int{
		"[idle] runtime.futex": 1,
		"[IO wait] main.serve": 1,
		"[select] github.com/pulsedive-relay/relay/pipeline.(*Pipeline).fetch":  2,
		"[chan receive] net/http.(*persistConn).readLoop":                       1,
		"[select] github.com/dgraph-io/ristretto/v2.(*Cache[...]).processItems": 1,
	}
	if diff := cmp.Diff(want, tallyStacks(dump)); diff != "" {
		t.Errorf("tallyStacks (-want +got):\n%s", diff)
	}
}

func TestRelayEnv(t *testing.T) {
	t.Setenv("PULSEDIVE_RATE_LIMIT", "999") // the caller's own setting must not leak in
	t.Setenv("RELAYBENCH_TEST_KEEP", "yes")
	env := relayEnv(
		map[string]string{"LOG_LEVEL": "warn", "RELAY_AUDIENCE": "a"},
		map[string]string{"PULSEDIVE_RATE_LIMIT": "0"},
		[]string{"LOG_LEVEL=debug"},
	)
	var got []string
	for _, kv := range env {
		if strings.HasPrefix(kv, "PULSEDIVE_") || strings.HasPrefix(kv, "LOG_") || strings.HasPrefix(kv, "RELAY") {
			got = append(got, kv)
		}
	}
	want := []string{"RELAYBENCH_TEST_KEEP=yes", "LOG_LEVEL=warn", "RELAY_AUDIENCE=a", "PULSEDIVE_RATE_LIMIT=0", "LOG_LEVEL=debug"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("relay environment (-want +got):\n%s", diff)
	}
}

func TestAttackBodies(t *testing.T) {
	big := bigBody(1 << 20)
	if len(big) != 1<<20 || !json.Valid(big) {
		t.Errorf("bigBody: %d bytes, valid JSON %v; want exactly 1 MiB of JSON", len(big), json.Valid(big))
	}
	wide := wideBody(1 << 20)
	var items []map[string]int
	if err := json.Unmarshal(wide, &items); err != nil || len(wide) > 1<<20 {
		t.Fatalf("wideBody: %d bytes, %v", len(wide), err)
	}
	if n := len(items[0]); len(items) != 1 || n < 90_000 {
		t.Errorf("wideBody: %d items, %d fields; want one item of ~100k fields", len(items), n)
	}
}

func TestAccessLog(t *testing.T) {
	path := filepath.Join(t.TempDir(), "relay.log")
	log := `{"level":"INFO","msg":"request","request_id":"a","status":200}
not json: a panic line
{"level":"INFO","msg":"relay listening"}
{"level":"WARN","msg":"shutdown incomplete: closing remaining connections"}
{"level":"INFO","msg":"request","request_id":"b","status":200}
`
	if err := os.WriteFile(path, []byte(log), 0o600); err != nil {
		t.Fatal(err)
	}
	ids, incomplete, err := accessLog(path)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(map[string]bool{"a": true, "b": true}, ids); diff != "" || incomplete != 1 {
		t.Errorf("ids (-want +got):\n%s\nincomplete %d, want 1", diff, incomplete)
	}
}

// TestOpenLoop: the open-loop generator sends rate × duration requests,
// every one answered, on at most conns connections at once, and times
// each from when it was due.
func TestOpenLoop(t *testing.T) {
	var inFlight, most atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := inFlight.Add(1)
		defer inFlight.Add(-1)
		for {
			m := most.Load()
			if n <= m || most.CompareAndSwap(m, n) {
				break
			}
		}
		_, _ = io.Copy(io.Discard, r.Body)
		_, _ = w.Write([]byte("ok"))
	}))
	defer srv.Close()
	lc := newLoadClient(srv.URL, 3, 10*time.Second)
	defer lc.closeIdle()
	var answered atomic.Int64
	res, err := lc.openLoop(t.Context(), openConfig{
		Rate: 400, Duration: 250 * time.Millisecond, Conns: 3,
		Next:     func(int) (request, error) { return request{Path: "/", Body: []byte("x")}, nil },
		OnAnswer: func(request, answer) { answered.Add(1) },
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.Sent != 100 || res.Answered != 100 || res.Status[200] != 100 || answered.Load() != 100 {
		t.Errorf("sent %d, answered %d (%v), seen %d; want 100 each", res.Sent, res.Answered, res.Status, answered.Load())
	}
	if m := most.Load(); m > 3 {
		t.Errorf("%d requests in flight at once, over the 3 connections", m)
	}
	if len(res.Latencies) != 100 || res.Latencies[0] <= 0 {
		t.Errorf("latencies: %d, the least %v", len(res.Latencies), res.Latencies)
	}
}

// TestMedianOf: the middle value, or the mean of the middle two.
func TestMedianOf(t *testing.T) {
	for _, tt := range []struct {
		in   []float64
		want float64
	}{{nil, 0}, {[]float64{3}, 3}, {[]float64{3, 1, 2}, 2}, {[]float64{4, 1, 3, 2}, 2.5}} {
		if got := medianOf(tt.in); got != tt.want {
			t.Errorf("medianOf(%v) = %v, want %v", tt.in, got, tt.want)
		}
	}
}
