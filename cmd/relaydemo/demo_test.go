package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.uber.org/goleak"

	"github.com/pulsedive-relay/relay/internal/relay"
)

// The black-box tests run the built relaydemo binary (demoBinary) as a
// child process: the demo is a whole program, signals included.

func TestMain(m *testing.M) { os.Exit(testMain(m)) }

// testMain runs the tests, removes the binary they built, then looks for
// leaked goroutines: TestDemoInProcess leaves none of the fake Pulsedive,
// the JWKS server or the relay running.
func testMain(m *testing.M) int {
	code := m.Run()
	if built != nil {
		if bin, err := built(); err == nil {
			os.RemoveAll(filepath.Dir(bin))
		}
	}
	if code != 0 {
		return code
	}
	if err := goleak.Find(); err != nil {
		fmt.Fprintln(os.Stderr, "goleak: leaked goroutines:", err)
		return 1
	}
	return 0
}

// built builds the demo once, on first use (demoBinary).
var built func() (string, error)

func init() {
	built = sync.OnceValues(func() (string, error) {
		dir, err := os.MkdirTemp("", "relaydemo-test-")
		if err != nil {
			return "", err
		}
		bin := filepath.Join(dir, "relaydemo")
		if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
			return "", fmt.Errorf("go build: %v\n%s", err, out)
		}
		return bin, nil
	})
}

// demoBinary is the built relaydemo command; the first call builds it.
func demoBinary(t *testing.T) string {
	t.Helper()
	bin, err := built()
	if err != nil {
		t.Fatal(err)
	}
	return bin
}

// TestDemo runs relaydemo, performs the curl commands it prints exactly as
// printed, and stops it with SIGINT.
func TestDemo(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the relay binary")
	}
	p := startChild(t, []string{"LOG_LEVEL=info"}, "-addr", "127.0.0.1:0")
	out := p.readUntil(t, p.out, func(seen string) bool { return strings.Count(seen, "curl -sS -X POST") >= 4 })

	if !strings.Contains(out, "DEMO MODE - NOT FOR PRODUCTION") {
		t.Errorf("stdout lacks the demo banner:\n%s", out)
	}
	// stderr is read by its own goroutine and may trail stdout.
	p.readUntil(t, p.stderr, func(seen string) bool {
		for _, line := range strings.Split(seen, "\n") {
			if strings.Contains(line, "level=WARN") && strings.Contains(line, "DEMO MODE") {
				return true
			}
		}
		return false
	})

	cmds, err := curlCommands(out)
	if err != nil {
		t.Fatalf("parsing the printed curl commands: %v\n%s", err, out)
	}
	byPath := map[string]curlCommand{}
	for _, c := range cmds {
		u, err := url.Parse(c.url)
		if err != nil {
			t.Fatalf("curl URL %q: %v", c.url, err)
		}
		byPath[u.Path] = c
	}
	var paths []string
	for p := range byPath {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	wantPaths := []string{"/deliberate/observables", "/health", "/observe/observables", "/refer/observables"}
	if diff := cmp.Diff(wantPaths, paths); diff != "" {
		t.Fatalf("printed curl commands by path (-want +got):\n%s", diff)
	}
	for path, c := range byPath {
		if !strings.HasPrefix(c.url, "http://127.0.0.1:") || strings.HasSuffix(strings.TrimSuffix(c.url, path), ":0") {
			t.Errorf("curl URL %q does not carry the bound loopback address", c.url)
		}
		if !strings.HasPrefix(c.header.Get("Authorization"), "Bearer ey") {
			t.Errorf("%s: Authorization %q, want a bearer JWT", path, c.header.Get("Authorization"))
		}
	}

	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{}}
	t.Cleanup(client.CloseIdleConnections)

	wantObservables := []string{"domain parkingcrew.net", "ip 185.141.25.242", "ipv6 2001:420:1101:1::185"}
	// The ipv6 fixture was retired on 2020-01-01: at the demo's clock its
	// verdict has expired and is left out; its judgement stays.
	wantVerdicts, expired := wantObservables[:2], wantObservables[2]

	t.Run("observe", func(t *testing.T) {
		got := byPath["/observe/observables"].do(t, client)
		verdicts := observablesOf(t, got, "verdicts")
		for _, want := range wantVerdicts {
			if !slices.Contains(verdicts, want) {
				t.Errorf("observe: no verdict for %s; answer:\n%s", want, got)
			}
		}
		if slices.Contains(verdicts, expired) {
			t.Errorf("observe: an expired verdict for %s; answer:\n%s", expired, got)
		}
		for _, want := range wantObservables {
			for _, kind := range []string{"judgements", "sightings"} {
				if !slices.Contains(observablesOf(t, got, kind), want) {
					t.Errorf("observe: no %s for %s; answer:\n%s", kind, want, got)
				}
			}
		}
		var answer struct {
			Data map[string]struct{ Count int }
		}
		if err := json.Unmarshal(got, &answer); err != nil {
			t.Fatal(err)
		}
		for _, kind := range []string{"indicators", "relationships"} {
			if answer.Data[kind].Count == 0 {
				t.Errorf("observe: no %s in the answer:\n%s", kind, got)
			}
		}
		if !bytes.Contains(got, []byte(`"description":"Active DNS"`)) {
			t.Errorf("observe: no Active DNS sighting at the demo's clock:\n%s", got)
		}
	})
	t.Run("deliberate", func(t *testing.T) {
		got := byPath["/deliberate/observables"].do(t, client)
		verdicts := observablesOf(t, got, "verdicts")
		for _, want := range wantVerdicts {
			if !slices.Contains(verdicts, want) {
				t.Errorf("deliberate: no verdict for %s; answer:\n%s", want, got)
			}
		}
		if slices.Contains(verdicts, expired) {
			t.Errorf("deliberate: an expired verdict for %s; answer:\n%s", expired, got)
		}
		var answer struct{ Data map[string]json.RawMessage }
		if err := json.Unmarshal(got, &answer); err != nil {
			t.Fatal(err)
		}
		for kind := range answer.Data {
			if kind != "verdicts" {
				t.Errorf("deliberate answered %s; want verdicts only", kind)
			}
		}
	})
	t.Run("refer", func(t *testing.T) {
		got := byPath["/refer/observables"].do(t, client)
		var answer struct {
			Data []struct {
				ID         string   `json:"id"`
				URL        string   `json:"url"`
				Categories []string `json:"categories"`
			}
		}
		if err := json.Unmarshal(got, &answer); err != nil {
			t.Fatalf("refer answer: %v\n%s", err, got)
		}
		ids := map[string]bool{}
		for _, d := range answer.Data {
			ids[d.ID] = true
		}
		for _, want := range []string{
			"ref-pulsedive-search-ip-185.141.25.242", "ref-pulsedive-detail-ip-185.141.25.242",
			"ref-pulsedive-search-domain-parkingcrew.net", "ref-pulsedive-detail-domain-parkingcrew.net",
			"ref-pulsedive-search-ipv6-2001%3A420%3A1101%3A1%3A%3A185", "ref-pulsedive-detail-ipv6-2001%3A420%3A1101%3A1%3A%3A185",
		} {
			if !ids[want] {
				t.Errorf("refer: no pivot %s; answer:\n%s", want, got)
			}
		}
	})
	t.Run("health", func(t *testing.T) {
		got := byPath["/health"].do(t, client)
		if diff := cmp.Diff(`{"data":{"status":"ok"}}`, strings.TrimSpace(string(got))); diff != "" {
			t.Errorf("health (-want +got):\n%s", diff)
		}
	})

	if err := p.interrupt(t); err != nil {
		t.Errorf("after SIGINT the demo exited with %v, want status 0\nstderr:\n%s", err, p.stderr)
	}
}

// TestDemoInProcess runs the demo through run() and ends its context: run
// returns nil, and TestMain's leak check finds nothing of the fake
// Pulsedive, the JWKS server or the relay left running.
func TestDemoInProcess(t *testing.T) {
	stdout := newLineBuffer()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"-addr", "127.0.0.1:0", "-token-ttl", "5m"}, mapEnv(map[string]string{"LOG_LEVEL": "warn"}), mapEnviron(map[string]string{"LOG_LEVEL": "warn"}), stdout, io.Discard)
	}()
	t.Cleanup(cancel)

	deadline := time.NewTimer(childDeadline)
	defer deadline.Stop()
	var cmds []curlCommand
	for len(cmds) < 4 {
		out, changed := stdout.snapshot()
		var err error
		if cmds, err = curlCommands(out); err != nil {
			t.Fatal(err)
		}
		if len(cmds) >= 4 {
			break
		}
		select {
		case <-changed:
		case err := <-done:
			t.Fatalf("demo returned %v before printing its commands", err)
		case <-deadline.C:
			t.Fatalf("no curl commands within %v:\n%s", childDeadline, out)
		}
	}
	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{}}
	t.Cleanup(client.CloseIdleConnections)
	health := cmds[len(cmds)-1]
	if !strings.HasSuffix(health.url, "/health") {
		t.Fatalf("last printed command is for %s, want /health", health.url)
	}
	if got := health.do(t, client); !bytes.Contains(got, []byte(`"status":"ok"`)) {
		t.Errorf("%s answered %s, want status ok", health.url, got)
	}
	client.CloseIdleConnections()

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("demo returned %v after its context ended, want nil", err)
		}
	case <-deadline.C:
		t.Fatalf("demo still running %v after its context ended", childDeadline)
	}
}

// TestDemoFlags covers the demo's refusals, which come before anything starts.
func TestDemoFlags(t *testing.T) {
	tests := []struct {
		name string
		args []string
		env  map[string]string
		want string // in the error
	}{
		{"all interfaces", []string{"-addr", ":9090"}, nil, "loopback only"},
		{"any address", []string{"-addr", "0.0.0.0:9090"}, nil, "loopback only"},
		{"public address", []string{"-addr", "192.0.2.1:9090"}, nil, "loopback only"},
		{"host name", []string{"-addr", "example.com:9090"}, nil, "loopback only"},
		{"RELAY_ADDR on all interfaces", nil, map[string]string{"RELAY_ADDR": ":9090"}, "loopback only"},
		{"no port", []string{"-addr", "127.0.0.1"}, nil, "not host:port"},
		{"zero token ttl", []string{"-token-ttl", "0s"}, nil, "-token-ttl"},
		{"negative token ttl", []string{"-token-ttl", "-1h"}, nil, "-token-ttl"},
		{"unknown flag", []string{"-production"}, nil, "production"},
		{"argument", []string{"now"}, nil, "unexpected argument"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			err := run(context.Background(), tt.args, mapEnv(tt.env), mapEnviron(tt.env), &stdout, &stderr)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("relaydemo %v: error %v, want one containing %q", tt.args, err, tt.want)
			}
			if got := relay.ExitCode(err); got != 2 {
				t.Errorf("exit code %d, want 2", got)
			}
			if stdout.Len() != 0 {
				t.Errorf("printed to stdout:\n%s", stdout.String())
			}
		})
	}
}

// TestDemoHelpNamesOverrides checks --help says what the demo overrides.
func TestDemoHelpNamesOverrides(t *testing.T) {
	for _, arg := range []string{"--help", "-help", "-h"} {
		t.Run(arg, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			if err := run(context.Background(), []string{arg}, mapEnv(nil), mapEnviron(nil), &stdout, &stderr); err != nil {
				t.Fatal(err)
			}
			if !strings.HasPrefix(stdout.String(), "Usage: relaydemo [flags]\n") {
				t.Errorf("help printed %q, want usage first", stdout.String())
			}
			for _, want := range []string{"NEVER FOR PRODUCTION", "RELAY_ADDR", "METRICS_ADDR", "PULSEDIVE_API_URL", "PULSEDIVE_RATE_LIMIT", "RELAY_JWKS_HOSTS", "RELAY_AUDIENCE", "RELAY_DRAIN_DELAY", "LOG_FORMAT", "-addr", "-token-ttl"} {
				if !strings.Contains(stdout.String(), want) {
					t.Errorf("%s does not mention %s:\n%s", arg, want, stdout.String())
				}
			}
			if stderr.Len() != 0 {
				t.Errorf("%s wrote to stderr: %q", arg, stderr.String())
			}
		})
	}
}

// TestDemoUsageErrors: a command line the demo does not understand gets
// the error first, once, then a hint naming the help to read.
func TestDemoUsageErrors(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want []string // the lines of stderr
	}{
		{"unknown flag", []string{"-prod"}, []string{"relaydemo: flag provided but not defined: -prod", "Run 'relaydemo --help' for its flags."}},
		{"bad value", []string{"-token-ttl", "0s"}, []string{"relaydemo: -token-ttl 0s: must be positive", "Run 'relaydemo --help' for its flags."}},
		{"flag without its value", []string{"-addr"}, []string{"relaydemo: flag needs an argument: -addr", "Run 'relaydemo --help' for its flags."}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			err := run(context.Background(), tt.args, mapEnv(nil), mapEnviron(nil), &stdout, &stderr)
			if got := relay.ExitCode(err); err == nil || got != 2 {
				t.Fatalf("relaydemo %v: error %v, exit code %d; want a usage error, exit 2", tt.args, err, got)
			}
			if stdout.Len() != 0 {
				t.Errorf("printed %q to stdout", stdout.String())
			}
			if diff := cmp.Diff(tt.want, strings.Split(strings.TrimSuffix(stderr.String(), "\n"), "\n")); diff != "" {
				t.Errorf("stderr (-want +got):\n%s", diff)
			}
		})
	}
}

// TestDemoExitStatus checks the statuses main gives the shell, through the
// built binary.
func TestDemoExitStatus(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the demo binary")
	}
	tests := []struct {
		name   string
		args   []string
		status int
		stdout string // a prefix of stdout
		stderr string // a prefix of stderr
	}{
		{"help", []string{"--help"}, 0, "Usage: relaydemo", ""},
		{"bad flag", []string{"-addr"}, 2, "", "relaydemo: flag needs an argument: -addr\n"},
		{"not loopback", []string{"-addr", "0.0.0.0:9090"}, 2, "", "relaydemo: demo listens on loopback only"},
		{"bad configuration", []string{"-addr", "127.0.0.1:0"}, 1, "", "relaydemo: "},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cmd := exec.Command(demoBinary(t), tt.args...)
			cmd.Env = []string{"RELAY_WORKERS=0"} // a bad value, read only once the demo starts the relay
			var stdout, stderr strings.Builder
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			err := cmd.Run()
			status := 0
			if ee := (*exec.ExitError)(nil); errors.As(err, &ee) {
				status = ee.ExitCode()
			} else if err != nil {
				t.Fatal(err)
			}
			if status != tt.status {
				t.Errorf("exit status %d, want %d\nstderr:\n%s", status, tt.status, stderr.String())
			}
			if !strings.HasPrefix(stdout.String(), tt.stdout) {
				t.Errorf("stdout %q, want it to start %q", stdout.String(), tt.stdout)
			}
			if !strings.HasPrefix(stderr.String(), tt.stderr) {
				t.Errorf("stderr %q, want it to start %q", stderr.String(), tt.stderr)
			}
		})
	}
}

// TestDemoListenErrors: an address the demo cannot bind is named with
// where it came from, and the fix points at -addr.
func TestDemoListenErrors(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { busy.Close() })
	addr := busy.Addr().String()
	const inUse = ": address already in use (another process listens there, perhaps another relay); "
	tests := []struct {
		name string
		args []string
		env  map[string]string
		want string
	}{
		{"-addr", []string{"-addr", addr}, map[string]string{"LOG_LEVEL": "error"},
			"cannot listen on -addr " + addr + inUse + "give another with -addr 127.0.0.1:PORT (port 0 picks a free one)"},
		{"RELAY_ADDR", nil, map[string]string{"RELAY_ADDR": addr, "LOG_LEVEL": "error"},
			"cannot listen on RELAY_ADDR " + addr + inUse + "give another with -addr 127.0.0.1:PORT (port 0 picks a free one), or change RELAY_ADDR"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			err := run(context.Background(), tt.args, mapEnv(tt.env), mapEnviron(tt.env), &stdout, &stderr)
			if err == nil || err.Error() != tt.want {
				t.Fatalf("error %v, want %q", err, tt.want)
			}
			if got := relay.ExitCode(err); got != 1 {
				t.Errorf("exit code %d, want 1", got)
			}
			if !strings.Contains(stderr.String(), "relaydemo: "+tt.want+"\n") {
				t.Errorf("stderr lacks the error:\n%s", stderr.String())
			}
		})
	}
}

// TestListenAddr: -addr wins over RELAY_ADDR, which wins over the demo's
// default; each names itself in the error a busy address gets.
func TestListenAddr(t *testing.T) {
	const another = "give another with -addr 127.0.0.1:PORT (port 0 picks a free one)"
	tests := []struct {
		name       string
		flag       string
		env        map[string]string
		wantAddr   string
		wantSource relay.ListenSource
	}{
		{"-addr", "127.0.0.1:1", map[string]string{"RELAY_ADDR": "127.0.0.1:2"}, "127.0.0.1:1", relay.ListenSource{Name: "-addr", Fix: another}},
		{"RELAY_ADDR", "", map[string]string{"RELAY_ADDR": " 127.0.0.1:2 "}, "127.0.0.1:2", relay.ListenSource{Name: "RELAY_ADDR", Fix: another + ", or change RELAY_ADDR"}},
		{"default", "", map[string]string{"RELAY_ADDR": " "}, "127.0.0.1:9090", relay.ListenSource{Name: "the demo's default address", Fix: another}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			addr, source := listenAddr(tt.flag, mapEnv(tt.env))
			if addr != tt.wantAddr {
				t.Errorf("address %q, want %q", addr, tt.wantAddr)
			}
			if diff := cmp.Diff(tt.wantSource, source); diff != "" {
				t.Errorf("source (-want +got):\n%s", diff)
			}
		})
	}
}

func TestCheckLoopback(t *testing.T) {
	tests := []struct {
		addr string
		ok   bool
	}{
		{"127.0.0.1:9090", true},
		{"127.0.0.1:0", true},
		{"127.1.2.3:80", true},
		{"[::1]:9090", true},
		{"localhost:9090", true},
		{":9090", false},
		{"0.0.0.0:9090", false},
		{"[::]:9090", false},
		{"10.0.0.1:9090", false},
		{"relay.example.com:9090", false},
		{"127.0.0.1", false},
		{"127.0.0.1:", false},
	}
	for _, tt := range tests {
		t.Run(tt.addr, func(t *testing.T) {
			err := checkLoopback(tt.addr)
			if got := err == nil; got != tt.ok {
				t.Errorf("checkLoopback(%q) = %v, want ok %v", tt.addr, err, tt.ok)
			}
		})
	}
}

func TestDemoGetenv(t *testing.T) {
	env := mapEnv(map[string]string{"RELAY_AUDIENCE": "from-env", "LOG_FORMAT": "json", "LOG_LEVEL": "debug", "RELAY_DRAIN_DELAY": "  "})
	getenv := demoGetenv(env, map[string]string{"RELAY_AUDIENCE": "demo", "METRICS_ADDR": ""}, map[string]string{"LOG_FORMAT": "text", "RELAY_DRAIN_DELAY": "0s"})
	tests := []struct{ name, want string }{
		{"RELAY_AUDIENCE", "demo"},  // override wins over the environment
		{"METRICS_ADDR", ""},        // an override may blank a variable
		{"LOG_FORMAT", "json"},      // the environment wins over a default
		{"RELAY_DRAIN_DELAY", "0s"}, // a blank variable takes the default
		{"LOG_LEVEL", "debug"},      // the rest passes through
		{"CACHE_TTL", ""},           // unset stays unset
	}
	for _, tt := range tests {
		if got := getenv(tt.name); got != tt.want {
			t.Errorf("getenv(%q) = %q, want %q", tt.name, got, tt.want)
		}
	}
}

// TestShellWords checks the test's shell parser against the demo's quoting.
func TestShellWords(t *testing.T) {
	for _, s := range []string{"", "plain", "two words", `it's`, `'quoted'`, `a\b`, `{"json":"yes"}`, "$HOME `x`", "multi\nline"} {
		got, err := shellWords("echo " + shellQuote(s))
		if err != nil {
			t.Fatalf("shellWords(%q): %v", shellQuote(s), err)
		}
		if diff := cmp.Diff([]string{"echo", s}, got); diff != "" {
			t.Errorf("round trip of %q (-want +got):\n%s", s, diff)
		}
	}
	got, err := shellWords("curl -X POST \\\n  -H \"A: b\" x\\ y")
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"curl", "-X", "POST", "-H", "A: b", "x y"}, got); diff != "" {
		t.Errorf("continuation and double quotes (-want +got):\n%s", diff)
	}
	for _, bad := range []string{"'open", `"open`, `trailing\`} {
		if _, err := shellWords(bad); err == nil {
			t.Errorf("shellWords(%q) succeeded, want an error", bad)
		}
	}
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

// curlCommand is one printed curl command line, parsed.
type curlCommand struct {
	method string
	url    string
	header http.Header
	body   string
}

// curlCommands finds every curl command in text (a line starting "curl ",
// with its backslash-continued lines) and parses the options the demo
// uses: -X, -H, -d, and -s/-S, which change nothing here.
func curlCommands(text string) ([]curlCommand, error) {
	var cmds []curlCommand
	lines := strings.Split(text, "\n")
	for i := 0; i < len(lines); i++ {
		if !strings.HasPrefix(lines[i], "curl ") {
			continue
		}
		cmdline := lines[i]
		for strings.HasSuffix(lines[i], `\`) && i+1 < len(lines) {
			i++
			cmdline += "\n" + lines[i]
		}
		words, err := shellWords(cmdline)
		if err != nil {
			return nil, fmt.Errorf("%q: %w", cmdline, err)
		}
		c := curlCommand{method: http.MethodGet, header: http.Header{}}
		for j := 1; j < len(words); j++ {
			w := words[j]
			next := func() (string, error) {
				if j+1 >= len(words) {
					return "", fmt.Errorf("%s without a value", w)
				}
				j++
				return words[j], nil
			}
			var v string
			switch w {
			case "-s", "-S", "-sS":
				continue
			case "-X", "-H", "-d":
				if v, err = next(); err != nil {
					return nil, err
				}
			default:
				if strings.HasPrefix(w, "-") {
					return nil, fmt.Errorf("curl option %s not understood", w)
				}
				if c.url != "" {
					return nil, fmt.Errorf("two URLs: %s and %s", c.url, w)
				}
				c.url = w
				continue
			}
			switch w {
			case "-X":
				c.method = v
			case "-H":
				name, value, ok := strings.Cut(v, ":")
				if !ok {
					return nil, fmt.Errorf("header %q has no colon", v)
				}
				c.header.Add(name, strings.TrimSpace(value))
			case "-d":
				c.body = v
				if c.method == http.MethodGet {
					c.method = http.MethodPost
				}
				if c.header.Get("Content-Type") == "" {
					c.header.Set("Content-Type", "application/x-www-form-urlencoded")
				}
			}
		}
		if c.url == "" {
			return nil, fmt.Errorf("%q names no URL", cmdline)
		}
		cmds = append(cmds, c)
	}
	return cmds, nil
}

// do performs the command and returns the answer's body, failing the test
// unless the relay answered HTTP 200 with JSON.
func (c curlCommand) do(t *testing.T, client *http.Client) []byte {
	t.Helper()
	var body io.Reader
	if c.body != "" {
		body = strings.NewReader(c.body)
	}
	req, err := http.NewRequest(c.method, c.url, body)
	if err != nil {
		t.Fatal(err)
	}
	req.Header = c.header.Clone()
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", c.method, c.url, err)
	}
	defer resp.Body.Close()
	got, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: %v", c.method, c.url, err)
	}
	if resp.StatusCode != http.StatusOK || !json.Valid(got) {
		t.Fatalf("%s %s: HTTP %d, want 200 with JSON:\n%s", c.method, c.url, resp.StatusCode, got)
	}
	return got
}

// shellWords splits a POSIX shell command line into words: single quotes,
// double quotes (no expansion), backslash escapes and line continuations.
// It is enough for the commands the demo prints.
func shellWords(s string) ([]string, error) {
	var words []string
	var cur strings.Builder
	inWord := false
	for i := 0; i < len(s); i++ {
		ch := s[i]
		switch {
		case ch == '\\':
			if i+1 >= len(s) {
				return nil, errors.New("trailing backslash")
			}
			i++
			if s[i] == '\n' {
				continue
			}
			cur.WriteByte(s[i])
			inWord = true
		case ch == '\'':
			end := strings.IndexByte(s[i+1:], '\'')
			if end < 0 {
				return nil, errors.New("unterminated single quote")
			}
			cur.WriteString(s[i+1 : i+1+end])
			i += end + 1
			inWord = true
		case ch == '"':
			i++
			for ; i < len(s) && s[i] != '"'; i++ {
				if s[i] == '\\' && i+1 < len(s) && strings.IndexByte("\"\\$`", s[i+1]) >= 0 {
					i++
				}
				cur.WriteByte(s[i])
			}
			if i >= len(s) {
				return nil, errors.New("unterminated double quote")
			}
			inWord = true
		case ch == ' ' || ch == '\t' || ch == '\n':
			if inWord {
				words = append(words, cur.String())
				cur.Reset()
				inWord = false
			}
		default:
			cur.WriteByte(ch)
			inWord = true
		}
	}
	if inWord {
		words = append(words, cur.String())
	}
	return words, nil
}

// child is the demo binary running as a child process with only the
// environment the test gives it, its stdout and stderr captured.
type child struct {
	cmd    *exec.Cmd
	out    *lineBuffer
	stderr *lineBuffer
	exited chan struct{} // closed once the process has exited and err is set
	err    error         // cmd.Wait's result
}

// startChild runs the demo binary with args and env (KEY=VALUE) and
// nothing of the test's environment; it is killed when the test ends if
// it still runs.
func startChild(t *testing.T, env []string, args ...string) *child {
	t.Helper()
	cmd := exec.Command(demoBinary(t), args...)
	cmd.Env = append([]string{}, env...)
	c := &child{cmd: cmd, out: newLineBuffer(), stderr: newLineBuffer(), exited: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = c.out, c.stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		c.err = cmd.Wait()
		close(c.exited)
	}()
	t.Cleanup(func() {
		select {
		case <-c.exited:
		default:
			_ = cmd.Process.Kill()
			<-c.exited
		}
	})
	return c
}

// childDeadline bounds every wait on a child: it fails a broken test
// instead of hanging it, and is no assertion about speed.
const childDeadline = 60 * time.Second

// readUntil waits until done accepts everything the child wrote so far to
// buf (its stdout or stderr), and returns it.
func (c *child) readUntil(t *testing.T, buf *lineBuffer, done func(string) bool) string {
	t.Helper()
	deadline := time.NewTimer(childDeadline)
	defer deadline.Stop()
	for {
		seen, changed := buf.snapshot()
		if done(seen) {
			return seen
		}
		select {
		case <-changed:
		case <-c.exited:
			seen, _ := buf.snapshot()
			if done(seen) {
				return seen
			}
			t.Fatalf("relaydemo exited (%v) early; stdout:\n%s\nstderr:\n%s", c.err, c.out, c.stderr)
		case <-deadline.C:
			t.Fatalf("relaydemo wrote nothing awaited within %v; stdout:\n%s\nstderr:\n%s", childDeadline, c.out, c.stderr)
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
		t.Fatalf("relaydemo still running %v after SIGINT; stderr:\n%s", childDeadline, c.stderr)
		return nil
	}
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
