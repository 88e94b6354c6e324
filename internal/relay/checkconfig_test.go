package relay

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/pulsedive-relay/relay/pulsedive/pulsedivetest"
)

// TestCheckConfigCases runs check-config over the values issue 11 found
// passing check-config only to fail later, and the warnings it added.
// Each refusal names the variable and says what it accepts.
func TestCheckConfigCases(t *testing.T) {
	dir := t.TempDir()
	ca := newTestCA(t)
	good := ca.issue(t, "relay", time.Now().Add(time.Hour))
	good.write(t, filepath.Join(mkdir(t, dir, "good")))
	other := ca.issue(t, "other", time.Now().Add(time.Hour))
	other.write(t, filepath.Join(mkdir(t, dir, "other")))
	file := func(name string, data []byte) string {
		t.Helper()
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	caFile := file("ca.pem", ca.pem)
	notPEM := file("notes.txt", []byte("not a certificate\n"))
	pubDER, err := x509.MarshalPKIXPublicKey(ca.key.Public())
	if err != nil {
		t.Fatal(err)
	}
	publicKey := file("public.pem", pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER}))
	encrypted := file("encrypted.pem", pem.EncodeToMemory(&pem.Block{Type: "ENCRYPTED PRIVATE KEY", Bytes: []byte("x")}))
	emptyDir := mkdir(t, dir, "empty")
	caDir := mkdir(t, dir, "cas")
	if err := os.WriteFile(filepath.Join(caDir, "ca.pem"), ca.pem, 0o600); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(dir, "absent.pem")

	tests := []struct {
		name    string
		env     map[string]string
		wantErr []string // lines of the error, after "invalid configuration:"
		want    []string // lines of stdout
		warn    []string // lines of stderr
	}{
		// Listen addresses.
		{name: "port out of range", env: map[string]string{"RELAY_ADDR": ":99999"},
			wantErr: []string{`RELAY_ADDR=":99999": port "99999" is not a number from 0 to 65535 (host:port or :port; 0 picks a free port)`}},
		{name: "metrics port out of range", env: map[string]string{"METRICS_ADDR": "127.0.0.1:70000"},
			wantErr: []string{`METRICS_ADDR="127.0.0.1:70000": port "70000" is not a number from 0 to 65535 (host:port or :port; 0 picks a free port)`}},
		{name: "same address twice", env: map[string]string{"RELAY_ADDR": ":8080", "METRICS_ADDR": ":8080"},
			wantErr: []string{`METRICS_ADDR=":8080": must differ from RELAY_ADDR (:8080), or the second listener cannot bind; give another port, or leave it empty to serve /metrics on RELAY_ADDR`}},
		{name: "every interface and one of them", env: map[string]string{"RELAY_ADDR": "127.0.0.1:8080", "METRICS_ADDR": "[::]:8080"},
			wantErr: []string{`METRICS_ADDR="[::]:8080": must differ from RELAY_ADDR (127.0.0.1:8080), or the second listener cannot bind; give another port, or leave it empty to serve /metrics on RELAY_ADDR`}},
		{name: "same port, other interfaces", env: map[string]string{"RELAY_ADDR": "127.0.0.1:8080", "METRICS_ADDR": "127.0.0.2:8080"},
			want: []string{"METRICS_ADDR=127.0.0.2:8080\t(env)"}},
		{name: "both on free ports", env: map[string]string{"RELAY_ADDR": ":0", "METRICS_ADDR": ":0"},
			want: []string{"RELAY_ADDR=:0\t(env)", "METRICS_ADDR=:0\t(env)"}},

		// Audiences.
		{name: "audience without a scheme", env: map[string]string{"RELAY_AUDIENCE": "relay.example.com"},
			wantErr: []string{`RELAY_AUDIENCE="relay.example.com": "relay.example.com" has no scheme: ` + audienceForm}},
		{name: "audience with a trailing slash", env: map[string]string{"RELAY_AUDIENCE": "https://relay.example.com/"},
			wantErr: []string{`RELAY_AUDIENCE="https://relay.example.com/": "https://relay.example.com/" ends in a slash: ` + audienceForm}},
		{name: "audience with a path", env: map[string]string{"RELAY_AUDIENCE": "https://relay.example.com,https://example.com/relay"},
			wantErr: []string{`RELAY_AUDIENCE="https://relay.example.com,https://example.com/relay": "https://example.com/relay" has a path: ` + audienceForm}},
		{name: "audiences as derived", env: map[string]string{"RELAY_AUDIENCE": "https://relay.example.com, http://10.0.0.5:9090,HTTPS://Relay.Example.com:8443"},
			want: []string{"RELAY_AUDIENCE=https://relay.example.com, http://10.0.0.5:9090,HTTPS://Relay.Example.com:8443\t(env)"}},

		// Go's CA settings.
		{name: "CA file missing", env: map[string]string{"SSL_CERT_FILE": missing},
			wantErr: []string{fmt.Sprintf(`SSL_CERT_FILE=%q: does not exist; name a PEM file of CA certificates, or leave it unset for the system's`, missing)}},
		{name: "CA file without a certificate", env: map[string]string{"SSL_CERT_FILE": notPEM},
			wantErr: []string{fmt.Sprintf(`SSL_CERT_FILE=%q: holds no PEM certificate (-----BEGIN CERTIFICATE-----); name a PEM file of CA certificates, or leave it unset for the system's`, notPEM)}},
		{name: "CA file a directory", env: map[string]string{"SSL_CERT_FILE": dir},
			wantErr: []string{fmt.Sprintf(`SSL_CERT_FILE=%q: is a directory, not a file; name a PEM file of CA certificates, or leave it unset for the system's`, dir)}},
		{name: "CA file", env: map[string]string{"SSL_CERT_FILE": caFile},
			want: []string{"SSL_CERT_FILE=" + caFile + "\t(env)"}},
		{name: "CA directories", env: map[string]string{"SSL_CERT_DIR": caDir + ":" + emptyDir + ":" + missing + ":" + caFile},
			wantErr: []string{fmt.Sprintf(`SSL_CERT_DIR=%q: %s holds no PEM certificate; %s does not exist; %s is not a directory; name directories of PEM CA certificates, or leave it unset for the system's`,
				caDir+":"+emptyDir+":"+missing+":"+caFile, emptyDir, missing, caFile)}},
		{name: "CA directory", env: map[string]string{"SSL_CERT_DIR": caDir},
			want: []string{"SSL_CERT_DIR=" + caDir + "\t(env)"}},

		// The relay's own TLS.
		{name: "TLS certificate without key", env: map[string]string{"RELAY_TLS_CERT_FILE": good.certFile},
			wantErr: []string{`RELAY_TLS_KEY_FILE="": must be set when RELAY_TLS_CERT_FILE is: set both to serve HTTPS, or neither for plain HTTP`}},
		{name: "TLS key without certificate", env: map[string]string{"RELAY_TLS_KEY_FILE": good.keyFile},
			wantErr: []string{fmt.Sprintf(`RELAY_TLS_KEY_FILE=%q: is set but RELAY_TLS_CERT_FILE is not: set both to serve HTTPS, or neither for plain HTTP`, good.keyFile)}},
		{name: "TLS certificate missing", env: map[string]string{"RELAY_TLS_CERT_FILE": missing, "RELAY_TLS_KEY_FILE": good.keyFile},
			wantErr: []string{fmt.Sprintf(`RELAY_TLS_CERT_FILE=%q: does not exist`, missing)}},
		{name: "TLS certificate not PEM", env: map[string]string{"RELAY_TLS_CERT_FILE": notPEM, "RELAY_TLS_KEY_FILE": good.keyFile},
			wantErr: []string{fmt.Sprintf(`RELAY_TLS_CERT_FILE=%q: holds no PEM certificate (-----BEGIN CERTIFICATE-----); give the server certificate, then any intermediates`, notPEM)}},
		{name: "TLS key of another certificate", env: map[string]string{"RELAY_TLS_CERT_FILE": good.certFile, "RELAY_TLS_KEY_FILE": other.keyFile},
			wantErr: []string{fmt.Sprintf(`RELAY_TLS_KEY_FILE=%q: does not go with the certificate of RELAY_TLS_CERT_FILE (%s): tls: private key does not match public key`, other.keyFile, good.certFile)}},
		{name: "TLS key a public key", env: map[string]string{"RELAY_TLS_CERT_FILE": good.certFile, "RELAY_TLS_KEY_FILE": publicKey},
			wantErr: []string{fmt.Sprintf(`RELAY_TLS_KEY_FILE=%q: holds a public key, not a private key; give the private key`, publicKey)}},
		{name: "TLS key encrypted", env: map[string]string{"RELAY_TLS_CERT_FILE": good.certFile, "RELAY_TLS_KEY_FILE": encrypted},
			wantErr: []string{fmt.Sprintf(`RELAY_TLS_KEY_FILE=%q: is an encrypted private key, which is not supported; decrypt it with: openssl pkey -in KEY.pem -out KEY-plain.pem`, encrypted)}},
		{name: "TLS both missing", env: map[string]string{"RELAY_TLS_CERT_FILE": missing, "RELAY_TLS_KEY_FILE": missing},
			wantErr: []string{fmt.Sprintf(`RELAY_TLS_CERT_FILE=%q: does not exist`, missing), fmt.Sprintf(`RELAY_TLS_KEY_FILE=%q: does not exist`, missing)}},
		{name: "TLS", env: map[string]string{"RELAY_TLS_CERT_FILE": good.certFile, "RELAY_TLS_KEY_FILE": good.keyFile},
			want: []string{"RELAY_TLS_CERT_FILE=" + good.certFile + "\t(env)", "RELAY_TLS_KEY_FILE=" + good.keyFile + "\t(env)"}},

		// The effective burst.
		{name: "burst capped", env: map[string]string{"PULSEDIVE_RATE_LIMIT": "10", "PULSEDIVE_BURST": "20"},
			want: []string{"PULSEDIVE_BURST=20\t(env; effective 5: at most half of PULSEDIVE_RATE_LIMIT)"}},
		{name: "default burst capped", env: map[string]string{"PULSEDIVE_RATE_LIMIT": "6"},
			want: []string{"PULSEDIVE_BURST=10\t(default; effective 3: at most half of PULSEDIVE_RATE_LIMIT)"}},
		{name: "burst within half", env: map[string]string{"PULSEDIVE_RATE_LIMIT": "20", "PULSEDIVE_BURST": "10"},
			want: []string{"PULSEDIVE_BURST=10\t(env)"}},
		{name: "no rate limit", env: map[string]string{"PULSEDIVE_RATE_LIMIT": "0", "PULSEDIVE_BURST": "50"},
			want: []string{"PULSEDIVE_BURST=50\t(env)"}},

		// Log level.
		{name: "log level", env: map[string]string{"LOG_LEVEL": "verbose"},
			wantErr: []string{`LOG_LEVEL="verbose": must be one of debug, info, warn, error`}},
		{name: "log level in capitals", env: map[string]string{"LOG_LEVEL": "WARN"},
			want: []string{"LOG_LEVEL=WARN\t(env)"}},

		// Variables that are no setting.
		{name: "misspelt variables", env: map[string]string{"RELAY_ADRR": ":8080", "PULSEDIVE_RATE_LIMT": "60"},
			want: []string{"RELAY_ADDR=:9090\t(default)", "PULSEDIVE_RATE_LIMIT=30\t(default)", "configuration OK, with 2 warnings"},
			warn: []string{
				"relay: warning: PULSEDIVE_RATE_LIMT is not a setting of the relay; did you mean PULSEDIVE_RATE_LIMIT?",
				"relay: warning: RELAY_ADRR is not a setting of the relay; did you mean RELAY_ADDR?",
			}},
		{name: "other strays", env: map[string]string{
			"relay_workers": "8", "CACHE_SIZE": "1", "RELAY_DEMO": "1", "PULSEDIVE_API_KEY": "pd-secret", "LOG_LEVL": "debug",
			"CTR_ENTITY_LIMIT": "5", "BREAKER_FAILURE": "3", "METRICS_PORT": "9091", "REDIS_HOST": "redis",
		},
			want: []string{"configuration OK, with 9 warnings"},
			warn: []string{
				"relay: warning: BREAKER_FAILURE is not a setting of the relay; did you mean BREAKER_FAILURES?",
				"relay: warning: CACHE_SIZE is not a setting of the relay ('relay check-config' lists the settings)",
				"relay: warning: CTR_ENTITY_LIMIT is not a setting of the relay; did you mean CTR_ENTITIES_LIMIT?",
				"relay: warning: LOG_LEVL is not a setting of the relay; did you mean LOG_LEVEL?",
				"relay: warning: METRICS_PORT is not a setting of the relay ('relay check-config' lists the settings)",
				"relay: warning: PULSEDIVE_API_KEY is not a setting of the relay: Pulsedive keys arrive in each request's configuration token",
				"relay: warning: REDIS_HOST is not a setting of the relay ('relay check-config' lists the settings)",
				"relay: warning: RELAY_DEMO is not a setting of the relay ('relay check-config' lists the settings)",
				"relay: warning: relay_workers is not a setting of the relay; did you mean RELAY_WORKERS?",
			}},
		{name: "Kubernetes service links", env: map[string]string{
			"PULSEDIVE_RELAY_SERVICE_HOST": "10.0.0.1", "PULSEDIVE_RELAY_SERVICE_PORT": "9090", "PULSEDIVE_RELAY_SERVICE_PORT_HTTP": "9090",
			"PULSEDIVE_RELAY_PORT": "tcp://10.0.0.1:9090", "PULSEDIVE_RELAY_PORT_9090_TCP": "tcp://10.0.0.1:9090",
			"PULSEDIVE_RELAY_PORT_9090_TCP_PROTO": "tcp", "PULSEDIVE_RELAY_PORT_9090_TCP_PORT": "9090", "PULSEDIVE_RELAY_PORT_9090_TCP_ADDR": "10.0.0.1",
			"REDIS_PORT": "tcp://10.0.0.2:6379", "REDIS_SERVICE_HOST": "10.0.0.2",
			"GOMEMLIMIT": "200MiB", "HOME": "/", "PATH": "/bin", "SSL_CERT_FILE": caFile,
		},
			want: []string{"configuration OK"}},
		{name: "strays and a bad value", env: map[string]string{"RELAY_WORKERZ": "8", "RELAY_WORKERS": "0"},
			wantErr: []string{`RELAY_WORKERS="0": must be between 1 and 4096`},
			warn:    []string{"relay: warning: RELAY_WORKERZ is not a setting of the relay; did you mean RELAY_WORKERS?"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			stdout, stderr, err := runCLI(t, tt.env, "check-config")
			if tt.wantErr != nil {
				if err == nil {
					t.Fatalf("check-config accepted %v\n%s", tt.env, stdout)
				}
				want := "invalid configuration:\n" + strings.Join(tt.wantErr, "\n")
				if diff := cmp.Diff(want, err.Error()); diff != "" {
					t.Errorf("error (-want +got):\n%s", diff)
				}
				for _, leak := range []string{"slog", "unknown name", "asn1", "pd-secret"} {
					if strings.Contains(err.Error(), leak) {
						t.Errorf("error shows %q: %v", leak, err)
					}
				}
				if stdout != "" {
					t.Errorf("printed to stdout:\n%s", stdout)
				}
			} else if err != nil {
				t.Fatalf("check-config: %v\n%s", err, stderr)
			}
			for _, want := range tt.want {
				if !strings.Contains("\n"+stdout, "\n"+want+"\n") {
					t.Errorf("stdout lacks the line %q:\n%s", want, stdout)
				}
			}
			var warnings []string
			for _, line := range strings.Split(stderr, "\n") {
				if strings.HasPrefix(line, "relay: warning: ") {
					warnings = append(warnings, line)
				}
			}
			if diff := cmp.Diff(tt.warn, warnings); diff != "" {
				t.Errorf("warnings (-want +got):\n%s", diff)
			}
			if strings.Contains(stdout+stderr, "pd-secret") {
				t.Errorf("check-config shows a variable's value:\n%s%s", stdout, stderr)
			}
		})
	}
}

func mkdir(t *testing.T, parent, name string) string {
	t.Helper()
	dir := filepath.Join(parent, name)
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	return dir
}

// TestEditDistance pins the distance behind the suggestions.
func TestEditDistance(t *testing.T) {
	for _, tt := range []struct {
		a, b string
		want int
	}{
		{"", "", 0}, {"RELAY_ADDR", "RELAY_ADDR", 0}, {"RELAY_ADRR", "RELAY_ADDR", 1},
		{"LIMT", "LIMIT", 1}, {"ADDR", "ADRD", 1}, {"ab", "ba", 1}, {"", "abc", 3}, {"kitten", "sitting", 3},
	} {
		if got := editDistance(tt.a, tt.b); got != tt.want {
			t.Errorf("editDistance(%q, %q) = %d, want %d", tt.a, tt.b, got, tt.want)
		}
		if got := editDistance(tt.b, tt.a); got != tt.want {
			t.Errorf("editDistance(%q, %q) = %d, want %d", tt.b, tt.a, got, tt.want)
		}
	}
}

// TestStartupLine: the "relay listening" line shows the effective
// configuration an operator checks first, no secret, and a warning for
// each misspelt variable comes before it.
func TestStartupLine(t *testing.T) {
	fake := startFake(t, pulsedivetest.Config{})
	const password = "redis-s3cret"
	env := relayEnv(fake.URL()+"?unused=1", map[string]string{
		"METRICS_ADDR":         "127.0.0.1:0",
		"PULSEDIVE_RATE_LIMIT": "10",
		"PULSEDIVE_BURST":      "20",
		"RELAY_AUDIENCE":       "https://relay.example.com",
		"RELAY_ADRR":           ":8080",
		"PULSEDIVE_API_KEY":    "pd-s3cret",
	})
	r := startRelay(t, env)
	var warned []map[string]string
	var listening map[string]string
	for _, line := range r.logs.lines() {
		f := logFields(line)
		switch f["msg"] {
		case "environment variable ignored: not a setting of the relay":
			if listening != nil {
				t.Errorf("a warning came after the listening line: %s", line)
			}
			warned = append(warned, f)
		case "relay listening":
			listening = f
		}
	}
	wantWarned := []map[string]string{
		{"level": "WARN", "variable": "PULSEDIVE_API_KEY", "note": "Pulsedive keys arrive in each request's configuration token"},
		{"level": "WARN", "variable": "RELAY_ADRR", "did_you_mean": "RELAY_ADDR"},
	}
	for _, w := range warned {
		delete(w, "time")
		delete(w, "msg")
	}
	if diff := cmp.Diff(wantWarned, warned); diff != "" {
		t.Errorf("warnings (-want +got):\n%s", diff)
	}
	delete(listening, "time")
	want := map[string]string{
		"level": "INFO", "msg": "relay listening",
		"addr": r.addr, "metrics_addr": r.metricsAddr, "version": version, "tls": "false",
		"pulsedive_url":         fake.URL(), // the query left out
		"jwks_hosts":            fmt.Sprintf("[%q]", shared.jwks.Host()),
		"audience":              "fixed",
		"audiences":             `["https://relay.example.com"]`,
		"rate_limit_per_minute": "10", "burst": "5",
		"workers": "32", "max_inflight": "256", "max_inflight_per_key": "64",
		"memory_limit": "134217728", "max_connections": "256", "max_requests": "256",
		"body_budget": "6291456", "observables_in_flight": "2000", "cache_max_bytes": "67108864",
		"redis": "none", "replicas": "1",
	}
	if diff := cmp.Diff(want, listening); diff != "" {
		t.Errorf("relay listening line (-want +got):\n%s", diff)
	}
	if strings.Contains(r.logs.String(), "pd-s3cret") || strings.Contains(r.logs.String(), password) {
		t.Errorf("the logs show a variable's value:\n%s", r.logs)
	}

	// The Redis URL, redacted; the audience derived.
	got := startupAttrs(config{RedisURL: "redis://relay:" + password + "@redis.example:6379/0", PulsediveURL: "https://pulsedive.com/api/"}, "a", "")
	fields := map[string]any{}
	for i := 0; i < len(got); i += 2 {
		fields[got[i].(string)] = got[i+1]
	}
	if fields["redis"] != "redis://relay:xxxxx@redis.example:6379/0" || fields["audience"] != "derived from the request" || fields["audiences"] != nil {
		t.Errorf("startup fields redis %v, audience %v, audiences %v", fields["redis"], fields["audience"], fields["audiences"])
	}
}

// TestListenErrors: an address the relay cannot bind is named with where
// it came from and how to choose another (the demo's tests cover its own
// sources).
func TestListenErrors(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { busy.Close() })
	addr := busy.Addr().String()
	fake := startFake(t, pulsedivetest.Config{})
	tests := []struct {
		name string
		args []string
		env  map[string]string
		want string
	}{
		{"serve", nil, relayEnv(fake.URL(), map[string]string{"RELAY_ADDR": addr}),
			"cannot listen on RELAY_ADDR " + addr + ": address already in use (another process listens there, perhaps another relay); set RELAY_ADDR to another address"},
		{"metrics", nil, relayEnv(fake.URL(), map[string]string{"METRICS_ADDR": addr}),
			"cannot listen on METRICS_ADDR " + addr + ": address already in use (another process listens there, perhaps another relay); set METRICS_ADDR to another address, or leave it empty to serve /metrics on RELAY_ADDR"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			err := Run(context.Background(), tt.args, mapEnv(tt.env), mapEnviron(tt.env), &stdout, &stderr)
			if err == nil || err.Error() != tt.want {
				t.Fatalf("error %v, want %q", err, tt.want)
			}
			if got := ExitCode(err); got != 1 {
				t.Errorf("exit code %d, want 1", got)
			}
			if !strings.Contains(stderr.String(), "relay: "+tt.want+"\n") {
				t.Errorf("stderr lacks the error:\n%s", stderr.String())
			}
		})
	}
	// A source other than RELAY_ADDR, as the demo gives, when busy.
	e := &listenError{ListenSource{"the demo's default address", "give another with -addr 127.0.0.1:PORT"}, "127.0.0.1:9090", &net.OpError{Op: "listen", Err: os.NewSyscallError("bind", syscall.EADDRINUSE)}}
	if got, want := e.Error(), "cannot listen on the demo's default address 127.0.0.1:9090: address already in use (another process listens there, perhaps another relay); give another with -addr 127.0.0.1:PORT"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

// FuzzCheckAudience: an audience check-config accepts is a root URL as
// the relay derives one from a request, scheme://host[:port] and nothing
// else.
func FuzzCheckAudience(f *testing.F) {
	for _, s := range []string{"https://relay.example.com", "http://10.0.0.1:9090", "https://[::1]:8443", "relay.example.com",
		"https://relay.example.com/", "https://a/b", "https://u@h", "https://h?q", "https://h#f", "https://h:", "HTTPS://H"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, a string) {
		if checkAudience(a) != nil {
			return
		}
		u, err := url.Parse(a)
		if err != nil {
			t.Fatalf("accepted %q, which does not parse: %v", a, err)
		}
		if got := strings.ToLower(u.Scheme) + "://" + u.Host; !strings.EqualFold(got, a) {
			t.Errorf("accepted %q, which is not scheme://host[:port] (%q)", a, got)
		}
		if s := strings.ToLower(u.Scheme); s != "http" && s != "https" {
			t.Errorf("accepted %q with scheme %q", a, u.Scheme)
		}
	})
}
