package relay

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/pulsedive-relay/relay/pulsedive/pulsedivetest"
	"github.com/pulsedive-relay/relay/transport/authtest"
)

// This file holds the helpers the operational tests share: a JWKS server
// every relay of the package trusts, the relay run in-process through run()
// or as a built binary, a stderr capture that learns the listening address,
// and small HTTP and polling helpers.

// suite is what TestMain sets up once for the package.
type suite struct {
	dir string
	// jwks serves the signing key's JWKS on loopback TLS. Its CA is in
	// caFile, which SSL_CERT_FILE names for this process (set before any TLS
	// verification, as Go reads it once) and for every relay binary.
	jwks   *authtest.JWKSServer
	key    *authtest.Key
	caFile string
	// binary builds the relay command once, on first use, into dir.
	binary func() (string, error)
}

// shared is set once by TestMain before any test runs and only read after.
var shared *suite

func TestMain(m *testing.M) { os.Exit(testMain(m)) }

// testMain runs the tests between setting the suite up and tearing it
// down, then looks for leaked goroutines (goleak.VerifyTestMain would look
// before the teardown, while the JWKS server still runs).
func testMain(m *testing.M) int {
	s, err := newSuite()
	if err != nil {
		fmt.Fprintln(os.Stderr, "test setup:", err)
		return 1
	}
	shared = s
	code := m.Run()
	s.close()
	if code != 0 {
		return code
	}
	if err := goleak.Find(); err != nil {
		fmt.Fprintln(os.Stderr, "goleak: leaked goroutines:", err)
		return 1
	}
	return 0
}

func newSuite() (*suite, error) {
	dir, err := os.MkdirTemp("", "relay-ops-test-")
	if err != nil {
		return nil, err
	}
	s := &suite{dir: dir, caFile: filepath.Join(dir, "jwks-ca.pem")}
	if s.key, err = authtest.NewKey("relay-ops-test"); err != nil {
		s.close()
		return nil, err
	}
	doc, err := s.key.JWKS()
	if err != nil {
		s.close()
		return nil, err
	}
	if s.jwks, err = authtest.NewJWKSServer(authtest.ServerConfig{JWKS: doc}); err != nil {
		s.close()
		return nil, err
	}
	if err := s.jwks.WriteCAFile(s.caFile); err != nil {
		s.close()
		return nil, err
	}
	if err := os.Setenv("SSL_CERT_FILE", s.caFile); err != nil {
		s.close()
		return nil, err
	}
	s.binary = sync.OnceValues(func() (string, error) {
		bin := filepath.Join(dir, "relay")
		cmd := exec.Command("go", "build", "-o", bin, "github.com/pulsedive-relay/relay/cmd/relay")
		if out, err := cmd.CombinedOutput(); err != nil {
			return "", fmt.Errorf("go build: %v\n%s", err, out)
		}
		return bin, nil
	})
	return s, nil
}

func (s *suite) close() {
	if s.jwks != nil {
		s.jwks.Close()
	}
	// The relays' JWKS client is http.DefaultTransport's: its connections
	// to the closed server end now instead of lingering for goleak.
	http.DefaultClient.CloseIdleConnections()
	os.RemoveAll(s.dir)
}

// relayBinary is the built relay command; the first call builds it.
func relayBinary(t *testing.T) string {
	t.Helper()
	bin, err := shared.binary()
	if err != nil {
		t.Fatal(err)
	}
	return bin
}

// startFake starts a fake Pulsedive on loopback, closed when the test ends.
func startFake(t *testing.T, cfg pulsedivetest.Config) *pulsedivetest.Server {
	t.Helper()
	fake, err := pulsedivetest.NewServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(fake.Close)
	return fake
}

// relayEnv is the environment of a relay under test: loopback on a free
// port, the fake Pulsedive at fakeURL, the suite's JWKS host allowed, a
// rate budget the tests never wait on, and no drain delay; then overrides
// (an empty value removes a variable).
func relayEnv(fakeURL string, overrides map[string]string) map[string]string {
	env := map[string]string{
		"RELAY_ADDR":             "127.0.0.1:0",
		"PULSEDIVE_API_URL":      fakeURL,
		"RELAY_JWKS_HOSTS":       shared.jwks.Host(),
		"PULSEDIVE_RATE_LIMIT":   "60000",
		"PULSEDIVE_BURST":        "1000",
		"RELAY_DRAIN_DELAY":      "0s",
		"RELAY_SHUTDOWN_TIMEOUT": "25s", // the least RELAY_REQUEST_TIMEOUT allows
	}
	for k, v := range overrides {
		if v == "" {
			delete(env, k)
			continue
		}
		env[k] = v
	}
	return env
}

// relay is a relay under test, in-process or as a child process.
type relay struct {
	// addr is the main listener's host:port; metricsAddr that of
	// METRICS_ADDR, empty when /metrics is on the main listener.
	addr, metricsAddr string
	logs              *logBuffer
}

// URL is the relay's root URL, which is also the audience of its tokens.
func (r *relay) URL() string { return "http://" + r.addr }

// token mints a valid configuration token carrying apiKey, for this relay.
func (r *relay) token(t *testing.T, apiKey string) string {
	t.Helper()
	tok, err := shared.key.Mint(authtest.Claims(shared.jwks.Host(), r.URL(), apiKey, time.Now(), time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// startRelay runs the relay in-process through run() with env (see
// relayEnv) until the test ends; the test fails if run does not return nil
// then.
func startRelay(t *testing.T, env map[string]string) *relay {
	t.Helper()
	logs := newLogBuffer()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, nil, mapEnv(env), mapEnviron(env), io.Discard, logs)
	}()
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("run returned %v, want nil after a clean shutdown\nlogs:\n%s", err, logs)
			}
		case <-time.After(30 * time.Second):
			t.Errorf("run did not return within 30s of its context ending\nlogs:\n%s", logs)
		}
	}
	t.Cleanup(stop)

	select {
	case <-logs.listening:
	case err := <-done:
		stopped = true
		cancel()
		t.Fatalf("run returned %v before listening\nlogs:\n%s", err, logs)
	case <-time.After(15 * time.Second):
		t.Fatalf("no \"relay listening\" line within 15s\nlogs:\n%s", logs)
	}
	addr, metricsAddr := logs.addrs()
	return &relay{addr: addr, metricsAddr: metricsAddr, logs: logs}
}

// process is the relay binary running as a child process.
type process struct {
	*relay
	*watched
	cmd *exec.Cmd
}

// watched is a started child process whose exit is recorded.
type watched struct {
	exited chan struct{} // closed once the process has exited and err is set
	err    error         // cmd.Wait's result
}

// startWatched starts cmd and records its exit. The process is killed when
// the test ends if it still runs.
func startWatched(t *testing.T, cmd *exec.Cmd) *watched {
	t.Helper()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	w := &watched{exited: make(chan struct{})}
	go func() {
		w.err = cmd.Wait()
		close(w.exited)
	}()
	t.Cleanup(func() {
		select {
		case <-w.exited:
		default:
			_ = cmd.Process.Kill()
			<-w.exited
		}
	})
	return w
}

// startProcess runs the built relay binary with env (see relayEnv) and
// SSL_CERT_FILE naming the suite's CA, and nothing of the test's own
// environment. The process is killed when the test ends if it is still
// running.
func startProcess(t *testing.T, env map[string]string) *process {
	t.Helper()
	bin := relayBinary(t)
	logs := newLogBuffer()
	cmd := exec.Command(bin)
	cmd.Env = []string{"SSL_CERT_FILE=" + shared.caFile}
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	cmd.Stdout = io.Discard
	cmd.Stderr = logs
	p := &process{relay: &relay{logs: logs}, watched: startWatched(t, cmd), cmd: cmd}

	select {
	case <-logs.listening:
	case <-p.exited:
		t.Fatalf("relay exited (%v) before listening\nlogs:\n%s", p.err, logs)
	case <-time.After(15 * time.Second):
		t.Fatalf("no \"relay listening\" line within 15s\nlogs:\n%s", logs)
	}
	p.addr, p.metricsAddr = logs.addrs()
	return p
}

// logBuffer is a goroutine-safe io.Writer keeping everything a relay writes
// to stderr. It closes listening when the "relay listening" line arrives,
// in the JSON or the text format, and keeps the addresses it names.
type logBuffer struct {
	listening chan struct{}

	mu          sync.Mutex
	all         bytes.Buffer
	pending     []byte // an unfinished last line
	addr        string
	metricsAddr string
}

func newLogBuffer() *logBuffer { return &logBuffer{listening: make(chan struct{})} }

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.all.Write(p)
	b.pending = append(b.pending, p...)
	for {
		i := bytes.IndexByte(b.pending, '\n')
		if i < 0 {
			break
		}
		line := string(b.pending[:i])
		b.pending = b.pending[i+1:]
		if b.addr != "" {
			continue
		}
		if fields := logFields(line); fields["msg"] == "relay listening" && fields["addr"] != "" {
			b.addr, b.metricsAddr = fields["addr"], fields["metrics_addr"]
			close(b.listening)
		}
	}
	return len(p), nil
}

// String is everything written so far.
func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.all.String()
}

// lines is every complete line written so far.
func (b *logBuffer) lines() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []string
	sc := bufio.NewScanner(bytes.NewReader(b.all.Bytes()))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		out = append(out, sc.Text())
	}
	return out
}

func (b *logBuffer) addrs() (addr, metricsAddr string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.addr, b.metricsAddr
}

// logFields reads one log line, JSON (slog's JSONHandler) or logfmt
// (slog's TextHandler), into its top-level fields as text; nil when the
// line is neither.
func logFields(line string) map[string]string {
	line = strings.TrimSpace(line)
	if strings.HasPrefix(line, "{") {
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			return nil
		}
		out := make(map[string]string, len(m))
		for k, v := range m {
			switch v := v.(type) {
			case string:
				out[k] = v
			default:
				b, _ := json.Marshal(v)
				out[k] = string(b)
			}
		}
		return out
	}
	return logfmtFields(line)
}

// logfmtFields parses key=value pairs separated by spaces, where a value
// may be a Go-quoted string, as slog's TextHandler writes them.
func logfmtFields(line string) map[string]string {
	out := map[string]string{}
	for line != "" {
		eq := strings.IndexByte(line, '=')
		if eq <= 0 || strings.ContainsAny(line[:eq], " \"") {
			return nil
		}
		key, rest := line[:eq], line[eq+1:]
		var val string
		if strings.HasPrefix(rest, `"`) {
			q, err := strconv.QuotedPrefix(rest)
			if err != nil {
				return nil
			}
			if val, err = strconv.Unquote(q); err != nil {
				return nil
			}
			rest = rest[len(q):]
		} else if sp := strings.IndexByte(rest, ' '); sp >= 0 {
			val, rest = rest[:sp], rest[sp:]
		} else {
			val, rest = rest, ""
		}
		out[key] = val
		line = strings.TrimLeft(rest, " ")
	}
	return out
}

// newClient is an HTTP client of its own, whose idle connections close when
// the test ends.
func newClient(t *testing.T) *http.Client {
	t.Helper()
	tr := http.DefaultTransport.(*http.Transport).Clone()
	c := &http.Client{Transport: tr, Timeout: 60 * time.Second}
	t.Cleanup(tr.CloseIdleConnections)
	return c
}

// reply is an HTTP answer, read whole.
type reply struct {
	status int
	header http.Header
	body   []byte
}

// object decodes the answer as a JSON object; the test fails if it is not one.
func (r reply) object(t *testing.T) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(r.body, &m); err != nil {
		t.Fatalf("answer is not a JSON object: %v\n%s", err, r.body)
	}
	return m
}

// request describes one HTTP request to a relay.
type request struct {
	method, path string
	auth         string // Authorization header; none when empty
	body         string
	header       map[string]string
}

// send makes req to the relay at base ("http://host:port") and reads the
// answer; a transport error fails the test.
func send(t *testing.T, c *http.Client, base string, req request) reply {
	t.Helper()
	r, err := trySend(c, base, req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.method, req.path, err)
	}
	return r
}

func trySend(c *http.Client, base string, req request) (reply, error) {
	var body io.Reader
	if req.body != "" {
		body = strings.NewReader(req.body)
	}
	hr, err := http.NewRequest(req.method, base+req.path, body)
	if err != nil {
		return reply{}, err
	}
	if req.body != "" {
		hr.Header.Set("Content-Type", "application/json")
	}
	if req.auth != "" {
		hr.Header.Set("Authorization", req.auth)
	}
	for k, v := range req.header {
		hr.Header.Set(k, v)
	}
	resp, err := c.Do(hr)
	if err != nil {
		return reply{}, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return reply{}, err
	}
	return reply{status: resp.StatusCode, header: resp.Header, body: data}, nil
}

// observables is a request body of the observable endpoints.
func observables(t *testing.T, pairs ...string) string {
	t.Helper()
	if len(pairs)%2 != 0 {
		t.Fatal("observables: want type, value pairs")
	}
	items := make([]map[string]string, 0, len(pairs)/2)
	for i := 0; i < len(pairs); i += 2 {
		items = append(items, map[string]string{"type": pairs[i], "value": pairs[i+1]})
	}
	b, err := json.Marshal(items)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// eventually calls check until it reports done, failing the test with
// check's last error when timeout passes first. It polls: the relay and
// Prometheus offer no event to wait on.
func eventually(t *testing.T, timeout time.Duration, what string, check func() (done bool, err error)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	var last error
	for {
		done, err := check()
		if done {
			return
		}
		last = err
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v (last error: %v)", what, timeout, last)
		}
		<-tick.C
	}
}

// freePort is a loopback port nothing listens on at the moment of the call,
// for programs that take a port rather than a listener.
func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// isRefused says whether err is a refused TCP connection.
func isRefused(err error) bool { return errors.Is(err, syscall.ECONNREFUSED) }
