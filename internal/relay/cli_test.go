package relay

import (
	"errors"
	"maps"
	"os/exec"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// badValues holds, for every variable that can be wrong, values check-config
// must refuse (CONTRACT.md section 7). TestCheckConfigCoversEverySetting keeps it
// complete as settings grow.
var badValues = map[string][]string{
	"RELAY_ADDR":   {"9090", "localhost", "http://127.0.0.1:9090", ":99999", "127.0.0.1:65536", ":-1", ":http"},
	"METRICS_ADDR": {"9091", "metrics", ":99999", ":9090", "0.0.0.0:9090", "127.0.0.1:9090"}, // :9090: RELAY_ADDR's default
	// With the other half of the pair valid (companions).
	"RELAY_TLS_CERT_FILE": {"/nonexistent/relay.crt", "/dev/null", "/"},
	"RELAY_TLS_KEY_FILE":  {"/nonexistent/relay.key", "/dev/null", "/"},
	"RELAY_AUDIENCE": {"relay.example.com", "relay.example.com:443", "https://relay.example.com/", "https://relay.example.com/api",
		"ftp://relay.example.com", "https://user@relay.example.com", "https://relay.example.com:99999", "https://relay.example.com?x=1",
		"https://", "https://a.example.com,a.example.com"},
	"SSL_CERT_FILE":          {"/nonexistent/ca.pem", "/dev/null", "/"},
	"SSL_CERT_DIR":           {"/nonexistent", "/dev/null"},
	"PULSEDIVE_API_URL":      {"pulsedive.com/api/", "ftp://pulsedive.com/api/", "https://user:secret@pulsedive.com/api/", "https://"},
	"PULSEDIVE_RATE_LIMIT":   {"-1", "fast", "NaN", "1e12"},
	"PULSEDIVE_BURST":        {"0", "many", "1.5"},
	"PULSEDIVE_TIMEOUT":      {"10", "0s", "soon"},
	"RELAY_REQUEST_TIMEOUT":  {"25", "-1s"},
	"RELAY_LINKS_MAX_WAIT":   {"5", "-1s", "never"},
	"RELAY_WORKERS":          {"0", "4097", "lots"},
	"RELAY_MAX_INFLIGHT":     {"0", "x"},
	"RELAY_MAX_OBSERVABLES":  {"0", "1e3"},
	"RELAY_MAX_BODY_BYTES":   {"1", "1MiB"},
	"CACHE_MAX_BYTES":        {"-1", "64MB"},
	"CACHE_TTL":              {"500ms", "1hour"},
	"CACHE_NEGATIVE_TTL":     {"0s", "10"},
	"CACHE_STALE_TTL":        {"-1s", "a day"},
	"RELAY_JWKS_HOSTS":       {",", "https://visibility.amp.cisco.com/", "visibility.amp.cisco.com/keys", "user@visibility.amp.cisco.com", "bad host"},
	"CTR_ENTITIES_LIMIT":     {"0", "-5", "all"},
	"BREAKER_FAILURES":       {"-1", "ten"},
	"BREAKER_OPEN_FOR":       {"500ms", "30"},
	"RELAY_DRAIN_DELAY":      {"-1s", "5"},
	"RELAY_JWKS_TTL":         {"0s", "500ms", "often"},
	"RELAY_JWKS_MAX_KEY_AGE": {"1m", "forever"},         // 1m: shorter than RELAY_JWKS_TTL (10m)
	"RELAY_SHUTDOWN_TIMEOUT": {"-1s", "forever", "24s"}, // 24s: shorter than RELAY_REQUEST_TIMEOUT
	"LOG_LEVEL":              {"verbose", "trace", "info+2", "8"},
	"LOG_FORMAT":             {"xml", "logfmt"},

	// Above RELAY_MAX_INFLIGHT (256 by default).
	"RELAY_MAX_INFLIGHT_PER_KEY": {"0", "x", "257"},
	"REDIS_URL":                  {"http://redis.example", "redis://", "redis://redis.example/db1", "localhost:6379"},
	"REDIS_TIMEOUT":              {"0s", "fast"},
	"RELAY_REPLICAS":             {"0", "-1", "many"},
	// The memory plan. 1048575 and 999: one short of a single request.
	"RELAY_MEMORY_LIMIT":          {"0", "16MiB", "200MB", "lots", "-1"},
	"RELAY_MAX_CONNECTIONS":       {"0", "many"},
	"RELAY_MAX_REQUESTS":          {"0", "1.5"},
	"RELAY_BODY_BUDGET":           {"0", "1048575", "8MiB"},
	"RELAY_OBSERVABLES_IN_FLIGHT": {"0", "999"},
}

// neverBad are the settings every value is acceptable for.
var neverBad = map[string]bool{}

// companions give the settings that go in pairs the other half, valid, so
// that a bad value is refused for itself.
var companions = map[string]func(t *testing.T) map[string]string{
	"RELAY_TLS_CERT_FILE": func(t *testing.T) map[string]string {
		_, key := validTLSFiles(t)
		return map[string]string{"RELAY_TLS_KEY_FILE": key}
	},
	"RELAY_TLS_KEY_FILE": func(t *testing.T) map[string]string {
		cert, _ := validTLSFiles(t)
		return map[string]string{"RELAY_TLS_CERT_FILE": cert}
	},
}

func TestCheckConfigCoversEverySetting(t *testing.T) {
	known := map[string]bool{}
	for _, s := range settings {
		known[s.name] = true
		if len(badValues[s.name]) == 0 && !neverBad[s.name] {
			t.Errorf("setting %s has no bad value in badValues (or list it in neverBad)", s.name)
		}
	}
	for name := range badValues {
		if !known[name] {
			t.Errorf("badValues names %s, which is no setting", name)
		}
	}
}

func TestCheckConfigRejects(t *testing.T) {
	for _, s := range settings {
		for _, bad := range badValues[s.name] {
			t.Run(s.name+"="+bad, func(t *testing.T) {
				env := map[string]string{s.name: bad}
				if companion := companions[s.name]; companion != nil {
					maps.Copy(env, companion(t))
				}
				stdout, _, err := runCLI(t, env, "check-config")
				if err == nil {
					t.Fatalf("check-config accepted %s=%q\n%s", s.name, bad, stdout)
				}
				if !strings.Contains(err.Error(), s.name+"=") {
					t.Errorf("error %q does not name %s", err, s.name)
				}
				for _, other := range settings {
					if other.name != s.name && strings.Contains(err.Error(), other.name+"=") {
						t.Errorf("error %q blames %s too", err, other.name)
					}
				}
				if got := ExitCode(err); got == 0 {
					t.Errorf("exit code %d, want non-zero", got)
				}
				if strings.Contains(stdout, "configuration OK") {
					t.Errorf("check-config printed OK for a bad value:\n%s", stdout)
				}
			})
		}
	}
}

// TestCheckConfigReportsAll checks one run names every bad variable, so an
// operator fixes them in one round.
func TestCheckConfigReportsAll(t *testing.T) {
	env := map[string]string{"CACHE_TTL": "x", "LOG_LEVEL": "loud", "RELAY_ADDR": "nowhere"}
	_, _, err := runCLI(t, env, "check-config")
	if err == nil {
		t.Fatal("check-config accepted three bad values")
	}
	for name := range env {
		if !strings.Contains(err.Error(), name+"=") {
			t.Errorf("error %q does not name %s", err, name)
		}
	}
}

func TestCheckConfigPrints(t *testing.T) {
	tests := []struct {
		name string
		env  map[string]string
		want []string // lines that must be printed
	}{
		{"defaults", nil, []string{
			"RELAY_ADDR=:9090\t(default)",
			"PULSEDIVE_API_URL=https://pulsedive.com/api/\t(default)",
			"CACHE_TTL=1h\t(default)",
			"LOG_FORMAT=json\t(default)",
		}},
		{"from the environment", map[string]string{
			"RELAY_ADDR":           "127.0.0.1:8080",
			"PULSEDIVE_RATE_LIMIT": "120",
			"RELAY_JWKS_HOSTS":     "jwks.example.com:8443",
			"RELAY_AUDIENCE":       "https://relay.example.com",
			"LOG_LEVEL":            "debug",
		}, []string{
			"RELAY_ADDR=127.0.0.1:8080\t(env)",
			"PULSEDIVE_RATE_LIMIT=120\t(env)",
			"RELAY_JWKS_HOSTS=jwks.example.com:8443\t(env)",
			"RELAY_AUDIENCE=https://relay.example.com\t(env)",
			"LOG_LEVEL=debug\t(env)",
			"CACHE_TTL=1h\t(default)",
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			stdout, stderr, err := runCLI(t, tt.env, "check-config")
			if err != nil {
				t.Fatalf("check-config: %v\n%s", err, stderr)
			}
			lines := strings.Split(strings.TrimSuffix(stdout, "\n"), "\n")
			printed := map[string]bool{}
			for _, l := range lines {
				name, _, _ := strings.Cut(l, "=")
				printed[name] = true
			}
			for _, s := range settings {
				if !printed[s.name] {
					t.Errorf("check-config did not print %s:\n%s", s.name, stdout)
				}
			}
			for _, want := range tt.want {
				if !strings.Contains(stdout, want+"\n") {
					t.Errorf("check-config lacks the line %q:\n%s", want, stdout)
				}
			}
			if got := lines[len(lines)-1]; got != "configuration OK" {
				t.Errorf("last line %q, want configuration OK", got)
			}
		})
	}
}

// TestCheckConfigRedactsRedisPassword: a Redis URL's password is never
// printed, valid or not.
func TestCheckConfigRedactsRedisPassword(t *testing.T) {
	const secret = "s3cret-redis-pass"
	stdout, _, err := runCLI(t, map[string]string{"REDIS_URL": "rediss://relay:" + secret + "@redis.example:6380/1", "RELAY_REPLICAS": "6"}, "check-config")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"REDIS_URL=rediss://relay:xxxxx@redis.example:6380/1\t(env)", "RELAY_REPLICAS=6\t(env)", "REDIS_TIMEOUT=250ms\t(default)"} {
		if !strings.Contains(stdout, want+"\n") {
			t.Errorf("check-config lacks the line %q:\n%s", want, stdout)
		}
	}
	_, _, err = runCLI(t, map[string]string{"REDIS_URL": "redis://:" + secret + "@redis.example/notadb"}, "check-config")
	if err == nil {
		t.Fatal("a bad Redis URL was accepted")
	}
	if out := stdout + err.Error(); strings.Contains(out, secret) {
		t.Errorf("check-config shows the Redis password:\n%s", out)
	}
}

func TestVersion(t *testing.T) {
	stdout, _, err := runCLI(t, nil, "version")
	if err != nil {
		t.Fatal(err)
	}
	if want := version + "\n"; stdout != want {
		t.Errorf("version printed %q, want %q", stdout, want)
	}
}

func TestHelp(t *testing.T) {
	for _, arg := range []string{"--help", "-help", "-h", "help"} {
		t.Run("relay "+arg, func(t *testing.T) {
			stdout, stderr, err := runCLI(t, nil, arg)
			if err != nil {
				t.Fatalf("relay %s: %v", arg, err)
			}
			if !strings.HasPrefix(stdout, "Usage: relay") {
				t.Errorf("relay %s printed %q, want usage", arg, stdout)
			}
			for _, c := range commands() {
				if !strings.Contains(stdout, "\n  "+c.name+" ") {
					t.Errorf("usage does not list %s:\n%s", c.name, stdout)
				}
			}
			if stderr != "" {
				t.Errorf("relay %s wrote to stderr: %q", arg, stderr)
			}
		})
	}
	for _, c := range commands() {
		for _, arg := range []string{"--help", "-h"} {
			t.Run(c.name+" "+arg, func(t *testing.T) {
				stdout, stderr, err := runCLI(t, nil, c.name, arg)
				if err != nil {
					t.Fatalf("relay %s %s: %v", c.name, arg, err)
				}
				if want := "Usage: relay " + c.name + " "; !strings.HasPrefix(stdout, want) {
					t.Errorf("relay %s %s printed %q, want it to start %q", c.name, arg, stdout, want)
				}
				if stderr != "" {
					t.Errorf("relay %s %s wrote to stderr: %q", c.name, arg, stderr)
				}
			})
		}
	}
}

// TestUsageErrors: a command line the relay does not understand gets the
// error first, once, then a hint naming the help to read (issue 11: the
// usage came before the error, and the flag package's error came twice).
func TestUsageErrors(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want []string // the lines of stderr
	}{
		{"unknown command", []string{"launch"}, []string{`relay: unknown command "launch"`, "Run 'relay --help' for the commands."}},
		{"misspelt command", []string{"check-confg"}, []string{`relay: unknown command "check-confg"; did you mean check-config?`, "Run 'relay --help' for the commands."}},
		{"unknown flag of serve", []string{"serve", "-port", "80"}, []string{"relay: serve: flag provided but not defined: -port", "Run 'relay serve --help' for its flags."}},
		{"argument to serve", []string{"serve", "now"}, []string{`relay: serve: unexpected argument "now"`, "Run 'relay serve --help' for its flags."}},
		{"unknown flag of check-config", []string{"check-config", "-v"}, []string{"relay: check-config: flag provided but not defined: -v", "Run 'relay check-config --help' for its flags."}},
		{"argument to version", []string{"version", "2"}, []string{`relay: version: unexpected argument "2"`, "Run 'relay version --help' for its flags."}},
		{"demo, a command of its own", []string{"demo", "-addr", "127.0.0.1:0"}, []string{`relay: unknown command "demo": the demo is a program of its own, relaydemo (go run ./cmd/relaydemo)`, "Run 'relay --help' for the commands."}},
		{"unknown flag of token", []string{"token", "-alg", "HS256"}, []string{"relay: token: flag provided but not defined: -alg", "Run 'relay token --help' for its flags."}},
		{"missing flags of token", []string{"token", "-key", "k.pem"}, []string{"relay: token: -jwks-host is required; -aud is required; give the Pulsedive key with exactly one of -pulsedive-key, -pulsedive-key-env, -pulsedive-key-file", "Run 'relay token --help' for its flags."}},
		{"unknown flag of jwks", []string{"jwks", "-pub"}, []string{"relay: jwks: flag provided but not defined: -pub", "Run 'relay jwks --help' for its flags."}},
		{"missing flag of jwks", []string{"jwks"}, []string{"relay: jwks: -key is required", "Run 'relay jwks --help' for its flags."}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			stdout, stderr, err := runCLI(t, nil, tt.args...)
			if got := ExitCode(err); err == nil || got != 2 {
				t.Fatalf("relay %v: error %v, exit code %d; want a usage error, exit 2", tt.args, err, got)
			}
			if stdout != "" {
				t.Errorf("printed %q to stdout", stdout)
			}
			if diff := cmp.Diff(tt.want, strings.Split(strings.TrimSuffix(stderr, "\n"), "\n")); diff != "" {
				t.Errorf("stderr (-want +got):\n%s", diff)
			}
		})
	}
}

// TestExitStatus checks the statuses main gives the shell, through the
// built binary.
func TestExitStatus(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the relay binary")
	}
	tests := []struct {
		name   string
		args   []string
		env    []string
		status int
		stdout string // a prefix of stdout
	}{
		{"help", []string{"--help"}, nil, 0, "Usage: relay"},
		{"command help", []string{"token", "--help"}, nil, 0, "Usage: relay token"},
		{"version", []string{"version"}, nil, 0, version + "\n"},
		{"--version", []string{"--version"}, nil, 0, version + "\n"},
		{"-version", []string{"-version"}, nil, 0, version + "\n"},
		{"good configuration", []string{"check-config"}, nil, 0, "RELAY_ADDR=:9090"},
		{"bad configuration", []string{"check-config"}, []string{"RELAY_WORKERS=0"}, 1, ""},
		{"bad configuration stops serve", nil, []string{"PULSEDIVE_TIMEOUT=10"}, 1, ""},
		{"unknown command", []string{"launch"}, nil, 2, ""},
		{"bad flag", []string{"token", "-key"}, nil, 2, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cmd := exec.Command(relayBinary(t), tt.args...)
			cmd.Env = append([]string{}, tt.env...)
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
			if tt.status != 0 && !strings.HasPrefix(stderr.String(), "relay: ") {
				t.Errorf("stderr %q, want it to start with the error after \"relay: \"", stderr.String())
			}
			if n := strings.Count(stderr.String(), "flag needs an argument"); n > 1 {
				t.Errorf("stderr names the flag error %d times:\n%s", n, stderr.String())
			}
		})
	}
}
