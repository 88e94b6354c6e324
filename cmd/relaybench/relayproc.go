package main

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"
)

// relayProcess is the relay binary running as a child process.
type relayProcess struct {
	cmd     *exec.Cmd
	addr    string
	logPath string
	done    chan struct{} // closed when the process has exited
	waitErr error         // set before done is closed
}

// startRelay launches bin with env on a free loopback port and waits until
// /readyz answers 200. A port taken between choosing and binding it is
// retried with another.
func startRelay(ctx context.Context, bin string, env []string, logPath string) (*relayProcess, error) {
	var lastErr error
	for range 3 {
		addr, err := freePort()
		if err != nil {
			return nil, err
		}
		p, err := launch(bin, append(slices.Clone(env), "RELAY_ADDR="+addr), addr, logPath)
		if err != nil {
			return nil, err
		}
		if err = p.waitReady(ctx, 20*time.Second); err == nil {
			return p, nil
		}
		p.stop(5 * time.Second)
		lastErr = err
		if !strings.Contains(p.logs().tail(), "address already in use") {
			break
		}
	}
	return nil, lastErr
}

func freePort() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("free port: %w", err)
	}
	addr := l.Addr().String()
	return addr, l.Close()
}

func launch(bin string, env []string, addr, logPath string) (*relayProcess, error) {
	f, err := os.Create(logPath)
	if err != nil {
		return nil, fmt.Errorf("relay log: %w", err)
	}
	p := &relayProcess{addr: addr, logPath: logPath, done: make(chan struct{})}
	// Not CommandContext: the relay is stopped with SIGTERM so that it
	// drains, never killed by a cancelled context.
	p.cmd = exec.Command(bin)
	p.cmd.Env = env
	// A process group of its own: a Ctrl-C at the terminal reaches
	// relaybench only, which then stops the relay as it stops it always.
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	// The file itself, not a pipe relaybench copies: a relay logging a
	// line per request would otherwise make relaybench spend the CPU it
	// measures the relay with. The log is read back when a report needs it.
	p.cmd.Stdout, p.cmd.Stderr = f, f
	if err := p.cmd.Start(); err != nil {
		f.Close()
		return nil, fmt.Errorf("start relay %s: %w", bin, err)
	}
	go func() {
		p.waitErr = p.cmd.Wait()
		f.Close()
		close(p.done)
	}()
	return p, nil
}

// relayEnv is the environment of a launched relay: relaybench's own, less
// every variable the relay reads, then base, then the scenario's settings,
// then extra (-relay-env), later entries winning.
func relayEnv(base, scenario map[string]string, extra []string) []string {
	var env []string
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		if relayVariable(name) {
			continue
		}
		env = append(env, kv)
	}
	for _, m := range []map[string]string{base, scenario} {
		for _, name := range sortedKeys(m) {
			env = append(env, name+"="+m[name])
		}
	}
	return append(env, extra...)
}

func relayVariable(name string) bool {
	for _, p := range []string{"RELAY_", "PULSEDIVE_", "CACHE_", "LOG_", "CTR_", "METRICS_ADDR", "SSL_CERT_", "REDIS_"} {
		if strings.HasPrefix(name, p) {
			return true
		}
	}
	return false
}

// url is the relay's base URL.
func (p *relayProcess) url() string { return "http://" + p.addr }

func (p *relayProcess) pid() int { return p.cmd.Process.Pid }

// errExited is waitOK's error when the process it waits for has exited.
var errExited = errors.New("exited")

// waitOK polls url until it answers 200, and fails when limit passes, ctx
// ends or exited (nil: none) is closed.
func waitOK(ctx context.Context, url string, limit time.Duration, exited <-chan struct{}) error {
	client := &http.Client{Timeout: time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	deadline := time.NewTimer(limit)
	defer deadline.Stop()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		resp, err := client.Get(url)
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = fmt.Errorf("status %d", resp.StatusCode)
		}
		select {
		case <-exited:
			return errExited
		case <-ctx.Done():
			return ctx.Err()
		case <-deadline.C:
			return fmt.Errorf("%s not answering 200 after %s: %w", url, limit, err)
		case <-tick.C:
		}
	}
}

// waitReady waits until the relay's /readyz answers 200.
func (p *relayProcess) waitReady(ctx context.Context, limit time.Duration) error {
	err := waitOK(ctx, p.url()+"/readyz", limit, p.done)
	switch {
	case errors.Is(err, errExited):
		return fmt.Errorf("relay exited before it was ready (%v); its last lines:\n%s", p.waitErr, p.logs().tail())
	case err != nil && ctx.Err() == nil:
		return fmt.Errorf("relay not ready: %w; its last lines:\n%s", err, p.logs().tail())
	}
	return err
}

// signal sends sig and waits up to grace for the relay to exit, then
// kills it; exited says whether it exited by itself.
func (p *relayProcess) signal(sig os.Signal, grace time.Duration) (exited bool, err error) {
	if err := p.cmd.Process.Signal(sig); err != nil {
		return false, err
	}
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case <-p.done:
		return true, nil
	case <-t.C:
		_ = p.cmd.Process.Kill()
		<-p.done
		return false, nil
	}
}

// stop sends SIGTERM, waits up to grace for the relay to drain and exit,
// then kills it. It returns the exit code (-1 when killed or unknown).
func (p *relayProcess) stop(grace time.Duration) int {
	select {
	case <-p.done:
	default:
		if exited, err := p.signal(syscall.SIGTERM, grace); err == nil && !exited {
			return -1
		}
		<-p.done
	}
	var ee *exec.ExitError
	switch {
	case p.waitErr == nil:
		return 0
	case errors.As(p.waitErr, &ee):
		return ee.ExitCode()
	}
	return -1
}

// logs reads the relay's log so far.
func (p *relayProcess) logs() *logTail {
	l := newLogTail(40)
	if f, err := os.Open(p.logPath); err == nil {
		_, _ = io.Copy(l, f)
		f.Close()
	}
	return l
}

// logTail counts the relay's log lines by level and keeps the last few and
// the commonest messages, for the report. It is an io.Writer safe for
// concurrent use.
type logTail struct {
	mu      sync.Mutex
	keep    int
	partial []byte
	last    []string
	levels  map[string]int
	msgs    map[string]int
}

func newLogTail(keep int) *logTail {
	return &logTail{keep: keep, levels: map[string]int{}, msgs: map[string]int{}}
}

func (l *logTail) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.partial = append(l.partial, p...)
	for {
		i := bytes.IndexByte(l.partial, '\n')
		if i < 0 {
			break
		}
		l.line(string(l.partial[:i]))
		l.partial = l.partial[i+1:]
	}
	return len(p), nil
}

// line notes one log line: JSON lines by their level and msg, other lines
// (a panic, the Go runtime) as level "other".
func (l *logTail) line(s string) {
	if strings.TrimSpace(s) == "" {
		return
	}
	var rec struct {
		Level string `json:"level"`
		Msg   string `json:"msg"`
	}
	level, msg := "other", s
	if json.Unmarshal([]byte(s), &rec) == nil && rec.Level != "" {
		level, msg = strings.ToLower(rec.Level), rec.Msg
	}
	l.levels[level]++
	// Distinct messages are bounded so a relay logging a value in its
	// message cannot grow this without limit.
	key := level + ": " + truncate(msg, 120)
	if _, seen := l.msgs[key]; seen || len(l.msgs) < 200 {
		l.msgs[key]++
	}
	l.last = append(l.last, s)
	if len(l.last) > l.keep {
		l.last = l.last[len(l.last)-l.keep:]
	}
}

func (l *logTail) tail() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.last, "\n")
}

// summary returns the line counts by level and the commonest messages with
// their counts, most frequent first, at most n.
func (l *logTail) summary(n int) (levels map[string]int, top []countEntry) {
	l.mu.Lock()
	defer l.mu.Unlock()
	levels = make(map[string]int, len(l.levels))
	for k, v := range l.levels {
		levels[k] = v
	}
	top = topCounts(l.msgs, n)
	return levels, top
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// dumpGoroutines makes the relay print every goroutine's stack and exit
// (SIGQUIT, Go's runtime default), then tallies the stacks of its log by
// state and first frame of the relay's own code (or the first frame when
// none is). The relay is gone afterwards.
func (p *relayProcess) dumpGoroutines(grace time.Duration) (map[string]int, error) {
	select {
	case <-p.done:
		return nil, errors.New("relay already exited")
	default:
	}
	if _, err := p.signal(syscall.SIGQUIT, grace); err != nil {
		return nil, fmt.Errorf("SIGQUIT: %w", err)
	}
	b, err := os.ReadFile(p.logPath)
	if err != nil {
		return nil, fmt.Errorf("read relay log: %w", err)
	}
	return tallyStacks(string(b)), nil
}

// tallyStacks counts the goroutines of a Go traceback by "[state] frame",
// frame being the first function of package main or of the relay's
// packages, else the first outside the runtime (runtime.gopark says
// nothing), else the first.
func tallyStacks(dump string) map[string]int {
	out := map[string]int{}
	var state, first, lib, own string
	flush := func() {
		if state == "" {
			return
		}
		out["["+state+"] "+cmp.Or(own, lib, first)]++
		state, first, lib, own = "", "", "", ""
	}
	for _, line := range strings.Split(dump, "\n") {
		switch {
		case strings.HasPrefix(line, "goroutine ") && strings.HasSuffix(line, ":"):
			flush()
			_, rest, _ := strings.Cut(line, "[")
			state, _, _ = strings.Cut(rest, "]")
			// "IO wait, 2 minutes": the duration varies, the state does not.
			state, _, _ = strings.Cut(state, ",")
		case state == "" || line == "" || strings.HasPrefix(line, "\t") || strings.HasPrefix(line, "created by "):
			if line == "" {
				flush()
			}
		default:
			fn := line
			if i := strings.LastIndex(fn, "("); i > 0 {
				fn = fn[:i]
			}
			if first == "" {
				first = fn
			}
			if lib == "" && !strings.HasPrefix(fn, "runtime.") && !strings.HasPrefix(fn, "internal/") {
				lib = fn
			}
			if own == "" && (strings.HasPrefix(fn, "main.") || strings.HasPrefix(fn, "github.com/pulsedive-relay/")) {
				own = fn
			}
		}
	}
	flush()
	return out
}
