package relay

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pulsedive-relay/relay/transport/authtest"
)

// This file runs the built relay binary as a child process, with only the
// environment a test gives it, for the tests of a whole program: signals,
// exit status, what reaches stdout and stderr.

// TestNoDemoFromEnvironment starts the relay the normal way with every
// plausible "demo" variable set, and checks it serves as in production:
// no banner, no demo warning, the default JWKS allow-list.
func TestNoDemoFromEnvironment(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the relay binary")
	}
	demoVars := []string{
		"RELAY_DEMO=1", "DEMO=true", "DEMO_MODE=1", "RELAY_DEMO_MODE=true", "RELAY_MODE=demo",
		"MODE=demo", "PULSEDIVE_DEMO=1", "PULSEDIVE_RELAY_DEMO=1", "RELAY_FAKE_PULSEDIVE=1",
	}

	t.Run("check-config", func(t *testing.T) {
		env := map[string]string{}
		for _, kv := range demoVars {
			k, v, _ := strings.Cut(kv, "=")
			env[k] = v
		}
		var stdout, stderr bytes.Buffer
		if err := Run(context.Background(), []string{"check-config"}, mapEnv(env), mapEnviron(env), &stdout, &stderr); err != nil {
			t.Fatalf("check-config: %v", err)
		}
		for _, want := range []string{
			"RELAY_JWKS_HOSTS=visibility.amp.cisco.com,visibility.eu.amp.cisco.com,visibility.apjc.amp.cisco.com\t(default)",
			"PULSEDIVE_API_URL=https://pulsedive.com/api/\t(default)",
		} {
			if !strings.Contains(stdout.String(), want+"\n") {
				t.Errorf("check-config lacks %q:\n%s", want, stdout.String())
			}
		}
	})

	t.Run("serve", func(t *testing.T) {
		env := append([]string{"RELAY_ADDR=127.0.0.1:0", "RELAY_DRAIN_DELAY=0s"}, demoVars...)
		p := startChild(t, env)
		addr := p.listeningAddr(t)

		// A token from a loopback JWKS server, the demo's kind of issuer,
		// is refused without a fetch: the allow-list is production's.
		// (Its kid is logged with the refusal: it must not say "demo".)
		issuer, err := authtest.NewIssuer("loopback-issuer")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(issuer.Close)
		tok, err := issuer.Token("http://"+addr, "some-key", time.Now(), time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{}}
		t.Cleanup(client.CloseIdleConnections)
		got := okJSON(t, send(t, client, "http://"+addr, request{method: http.MethodPost, path: "/health", auth: "Bearer " + tok}))
		if !bytes.Contains(got, []byte("Wrong jwks_host")) {
			t.Errorf("health with a loopback-issued token answered %s; want the jwks_host refusal", got)
		}
		if n := issuer.Server.TotalRequests(); n != 0 {
			t.Errorf("the relay fetched the loopback JWKS %d times; want none", n)
		}

		if err := p.interrupt(t); err != nil {
			t.Errorf("after SIGINT the relay exited with %v, want status 0", err)
		}
		if out := p.stdout(); out != "" {
			t.Errorf("a normal start printed to stdout:\n%s", out)
		}
		// The variables with a setting's prefix are named as ignored; no
		// other line mentions a demo.
		ignored := map[string]bool{}
		for _, line := range strings.Split(p.stderr.String(), "\n") {
			var entry struct{ Msg, Variable string }
			if json.Unmarshal([]byte(line), &entry) == nil && entry.Msg == "environment variable ignored: not a setting of the relay" {
				ignored[entry.Variable] = true
				continue
			}
			if strings.Contains(strings.ToLower(line), "demo") {
				t.Errorf("a normal start logged about demo mode:\n%s", line)
			}
		}
		for _, kv := range demoVars {
			name, _, _ := strings.Cut(kv, "=")
			if want := hasSettingPrefix(name); ignored[name] != want {
				t.Errorf("%s named as an ignored variable: %v, want %v\n%s", name, ignored[name], want, p.stderr)
			}
		}
	})
}

// mapEnv is a getenv reading m.
func mapEnv(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

// mapEnviron lists m as os.Environ does, NAME=value.
func mapEnviron(m map[string]string) func() []string {
	return func() []string {
		out := make([]string, 0, len(m))
		for k, v := range m {
			out = append(out, k+"="+v)
		}
		return out
	}
}

// okJSON is the body of an answer, failing the test unless the relay
// answered HTTP 200 with JSON.
func okJSON(t *testing.T, r reply) []byte {
	t.Helper()
	if r.status != http.StatusOK || !json.Valid(r.body) {
		t.Fatalf("HTTP %d, want 200 with JSON:\n%s", r.status, r.body)
	}
	return r.body
}

// observablesOf lists "type value" of the observable of every doc of kind
// in an observe or deliberate answer.
func observablesOf(t *testing.T, answer []byte, kind string) []string {
	t.Helper()
	var a struct {
		Data map[string]struct {
			Docs []struct {
				Observable  *struct{ Type, Value string }  `json:"observable"`
				Observables []struct{ Type, Value string } `json:"observables"`
			} `json:"docs"`
		} `json:"data"`
	}
	if err := json.Unmarshal(answer, &a); err != nil {
		t.Fatalf("answer is not JSON: %v\n%s", err, answer)
	}
	var out []string
	for _, d := range a.Data[kind].Docs {
		if d.Observable != nil {
			out = append(out, d.Observable.Type+" "+d.Observable.Value)
		}
		for _, o := range d.Observables {
			out = append(out, o.Type+" "+o.Value)
		}
	}
	return out
}

// child is the relay binary running as a child process with only the
// environment the test gives it, its stdout and stderr captured.
type child struct {
	*watched
	cmd    *exec.Cmd
	out    *lineBuffer
	stderr *lineBuffer
}

// startChild runs the relay binary with args and env (KEY=VALUE) and
// nothing of the test's environment; it is killed when the test ends if
// it still runs.
func startChild(t *testing.T, env []string, args ...string) *child {
	t.Helper()
	cmd := exec.Command(relayBinary(t), args...)
	cmd.Env = env
	if cmd.Env == nil {
		cmd.Env = []string{}
	}
	c := &child{cmd: cmd, out: newLineBuffer(), stderr: newLineBuffer()}
	cmd.Stdout, cmd.Stderr = c.out, c.stderr
	c.watched = startWatched(t, cmd)
	return c
}

// childDeadline bounds every wait on a child: it fails a broken test
// instead of hanging it, and is no assertion about speed.
const childDeadline = 60 * time.Second

// listeningAddr waits for the "relay listening" JSON log line and returns
// the address it names.
func (c *child) listeningAddr(t *testing.T) string {
	t.Helper()
	deadline := time.NewTimer(childDeadline)
	defer deadline.Stop()
	for {
		logs, changed := c.stderr.snapshot()
		for _, line := range strings.Split(logs, "\n") {
			var entry struct{ Msg, Addr string }
			if json.Unmarshal([]byte(line), &entry) == nil && entry.Msg == "relay listening" && entry.Addr != "" {
				return entry.Addr
			}
		}
		select {
		case <-changed:
		case <-c.exited:
			t.Fatalf("relay exited (%v) before listening; stderr:\n%s", c.err, c.stderr)
		case <-deadline.C:
			t.Fatalf("no \"relay listening\" line within %v; stderr:\n%s", childDeadline, logs)
		}
	}
}

// interrupt sends SIGINT and returns how the process exited.
func (c *child) interrupt(t *testing.T) error {
	t.Helper()
	if err := c.cmd.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	select {
	case <-c.exited:
		return c.err
	case <-time.After(childDeadline):
		t.Fatalf("relay still running %v after SIGINT; stderr:\n%s", childDeadline, c.stderr)
		return nil
	}
}

func (c *child) stdout() string {
	s, _ := c.out.snapshot()
	return s
}

// lineBuffer is a goroutine-safe io.Writer keeping what is written, and
// telling waiters when more arrives.
type lineBuffer struct {
	mu      sync.Mutex
	buf     bytes.Buffer
	changed chan struct{} // closed and replaced on every write
}

func newLineBuffer() *lineBuffer { return &lineBuffer{changed: make(chan struct{})} }

func (b *lineBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf.Write(p)
	close(b.changed)
	b.changed = make(chan struct{})
	return len(p), nil
}

// snapshot returns what was written so far and a channel closed on the
// next write.
func (b *lineBuffer) snapshot() (string, <-chan struct{}) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String(), b.changed
}

func (b *lineBuffer) String() string {
	s, _ := b.snapshot()
	return s
}
