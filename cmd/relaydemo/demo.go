package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"time"

	"github.com/pulsedive-relay/relay/internal/relay"
	"github.com/pulsedive-relay/relay/pulsedive/pulsedivetest"
	"github.com/pulsedive-relay/relay/transport/authtest"
)

// The demo's fixed parts: what its token carries and where it listens
// unless told otherwise.
const (
	// demoAudience has the form of a relay's URL, as every audience must,
	// under a domain that can never resolve (RFC 2606).
	demoAudience     = "https://pulsedive-relay-demo.invalid"
	demoPulsediveKey = "demo-pulsedive-key"
	demoKeyID        = "pulsedive-relay-demo"
	demoDefaultAddr  = "127.0.0.1:9090"
)

// demoClock is the day the shared fixtures were recorded: the mapping runs
// at it so that their Active DNS links (and the synthetic ones) are within
// the 90-day window and show up. Tokens still use the real clock.
var demoClock = time.Date(2020, time.April, 15, 0, 0, 0, 0, time.UTC)

// demoObservables are fixture observables of every supported type, the body
// of the printed observe, deliberate and refer commands.
const demoObservables = `[{"type":"ip","value":"185.141.25.242"},` +
	`{"type":"domain","value":"parkingcrew.net"},` +
	`{"type":"ipv6","value":"2001:420:1101:1::185"},` +
	`{"type":"url","value":"http://51jianli.cn/images"}]`

const demoSummary = `Run the relay against a FAKE Pulsedive, with a throwaway signing key, on
loopback, and print ready-to-paste curl commands with a valid token.
NEVER FOR PRODUCTION: only this program enables demo mode; no environment
variable does, and the relay's own binary holds no fake.

In-process it starts the fake Pulsedive (shared fixtures, plus made-up
synthetic data for any other value; no rate limit, any API key), an
ephemeral RSA key and a TLS JWKS server on a free loopback port. The relay
trusts that JWKS server for this process only.

The environment configures the relay as for relay serve (LOG_LEVEL, CACHE_*,
RELAY_WORKERS, ...), except what the demo overrides:
  RELAY_ADDR            -addr, else RELAY_ADDR, else 127.0.0.1:9090; it must
                        be a loopback address
  METRICS_ADDR          empty: /metrics is served on the demo's address
  RELAY_TLS_CERT_FILE   empty, and RELAY_TLS_KEY_FILE: plain HTTP
  PULSEDIVE_API_URL     the fake Pulsedive
  PULSEDIVE_RATE_LIMIT  6000 a minute, PULSEDIVE_BURST 1000
  RELAY_JWKS_HOSTS      the demo's JWKS server only
  RELAY_AUDIENCE        ` + demoAudience + `
and two defaults that differ from serve when the variable is unset:
  RELAY_DRAIN_DELAY     0s (Ctrl-C stops at once)
  LOG_FORMAT            text
The CTIM mapping's clock is fixed at 2020-04-15, when the fixtures were
recorded, so their Active DNS links count as recent. Ctrl-C stops it all.`

// demo runs the relay in demo mode until ctx ends (see demoSummary), then
// closes the fake Pulsedive and the JWKS server. Demo mode exists only
// here: nothing in the environment reaches this code path.
func demo(ctx context.Context, args []string, env environment) error {
	fs, help := newFlagSet(env.stdout)
	addr := fs.String("addr", "", "listen address, loopback only (default RELAY_ADDR, else "+demoDefaultAddr+")")
	ttl := fs.Duration("token-ttl", 24*time.Hour, "lifetime of the printed token")
	if done, err := parseFlags(fs, help, args); done {
		return err
	}
	if *ttl <= 0 {
		return usageError(fmt.Sprintf("-token-ttl %s: must be positive", *ttl))
	}
	listen, source := listenAddr(*addr, env.getenv)
	if err := checkLoopback(listen); err != nil {
		return usageError(err.Error())
	}

	fake, err := pulsedivetest.NewServer(pulsedivetest.Config{Synthetic: true})
	if err != nil {
		return fmt.Errorf("fake Pulsedive: %w", err)
	}
	defer fake.Close()
	issuer, err := authtest.NewIssuer(demoKeyID)
	if err != nil {
		return err
	}
	defer issuer.Close()
	now := time.Now()
	token, err := issuer.Token(demoAudience, demoPulsediveKey, now, *ttl)
	if err != nil {
		return fmt.Errorf("token: %w", err)
	}

	getenv := demoGetenv(env.getenv, map[string]string{
		"RELAY_ADDR":           listen,
		"METRICS_ADDR":         "",
		"RELAY_TLS_CERT_FILE":  "",
		"RELAY_TLS_KEY_FILE":   "",
		"PULSEDIVE_API_URL":    fake.URL(),
		"PULSEDIVE_RATE_LIMIT": "6000",
		"PULSEDIVE_BURST":      "1000",
		"RELAY_JWKS_HOSTS":     issuer.Server.Host(),
		"RELAY_AUDIENCE":       demoAudience,
	}, map[string]string{
		"RELAY_DRAIN_DELAY": "0s",
		"LOG_FORMAT":        "text",
	})
	jwksClient := issuer.Server.Client()
	jwksClient.Timeout = 10 * time.Second
	return relay.Serve(ctx, getenv, env.environ(), relay.Deps{
		Stderr:     env.stderr,
		Listen:     source,
		JWKSClient: jwksClient,
		Now:        func() time.Time { return demoClock },
		Ready: func(log *slog.Logger, bound, _ string) {
			log.Warn("DEMO MODE: fake Pulsedive and a throwaway signing key; never use this for production",
				"addr", bound, "pulsedive_url", fake.URL(), "jwks_host", issuer.Server.Host())
			printDemo(env.stdout, demoInfo{
				base:      "http://" + bound,
				token:     token,
				expires:   now.Add(*ttl),
				pulsedive: fake.URL(),
				jwks:      issuer.Server.URL(),
			})
		},
	})
}

// listenAddr is where the demo listens: -addr, else RELAY_ADDR, else
// demoDefaultAddr; source names which, for the error when it is busy.
func listenAddr(flagAddr string, getenv func(string) string) (string, relay.ListenSource) {
	const another = "give another with -addr 127.0.0.1:PORT (port 0 picks a free one)"
	if flagAddr != "" {
		return flagAddr, relay.ListenSource{Name: "-addr", Fix: another}
	}
	if a := strings.TrimSpace(getenv("RELAY_ADDR")); a != "" {
		return a, relay.ListenSource{Name: "RELAY_ADDR", Fix: another + ", or change RELAY_ADDR"}
	}
	return demoDefaultAddr, relay.ListenSource{Name: "the demo's default address", Fix: another}
}

// demoGetenv is getenv with overrides, which win over the environment, and
// defaults, which apply only when the variable is unset or blank.
func demoGetenv(getenv func(string) string, overrides, defaults map[string]string) func(string) string {
	return func(name string) string {
		if v, ok := overrides[name]; ok {
			return v
		}
		if v := getenv(name); strings.TrimSpace(v) != "" {
			return v
		}
		return defaults[name]
	}
}

// checkLoopback accepts only listen addresses on a loopback interface:
// the demo accepts tokens anyone can mint from its output.
func checkLoopback(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil || port == "" {
		return fmt.Errorf("demo address %q is not host:port", addr)
	}
	if ip := net.ParseIP(host); host == "localhost" || (ip != nil && ip.IsLoopback()) {
		return nil
	}
	return fmt.Errorf("demo listens on loopback only; %q is not a loopback address (use -addr 127.0.0.1:PORT)", addr)
}

// demoInfo is what the demo prints once the relay is ready.
type demoInfo struct {
	base      string // the relay's root URL, http://host:port
	token     string
	expires   time.Time
	pulsedive string // the fake's API base
	jwks      string // the JWKS document's URL
}

func printDemo(w io.Writer, d demoInfo) {
	bar := strings.Repeat("=", 78)
	fmt.Fprintf(w, `%[1]s
  DEMO MODE - NOT FOR PRODUCTION
  Pulsedive is a FAKE serving test fixtures and made-up data: %[2]s
  Tokens are signed by a THROWAWAY key made at start-up and trusted by this
  process only (JWKS %[3]s).
  Never point Threat Response or real users at this relay.
%[1]s

Relay: %[4]s (Ctrl-C stops the demo)
Token, audience %[5]q, Pulsedive key %[6]q, valid until %[7]s:
%[8]s

`, bar, d.pulsedive, d.jwks, d.base, demoAudience, demoPulsediveKey, d.expires.UTC().Format(time.RFC3339), d.token)

	auth := "Authorization: Bearer " + d.token
	cmds := []struct{ comment, path, body string }{
		{"Observe: verdicts, judgements, indicators, sightings and relationships (CTIM)", "/observe/observables", demoObservables},
		{"Deliberate: verdicts only", "/deliberate/observables", demoObservables},
		{"Refer: search and browse pivots to pulsedive.com", "/refer/observables", demoObservables},
		{"Health: checks the token and makes one Pulsedive call", "/health", ""},
	}
	for _, c := range cmds {
		fmt.Fprintf(w, "# %s\n", c.comment)
		fmt.Fprintf(w, "curl -sS -X POST %s \\\n  -H %s", shellQuote(d.base+c.path), shellQuote(auth))
		if c.body != "" {
			fmt.Fprintf(w, " \\\n  -H %s \\\n  -d %s", shellQuote("Content-Type: application/json"), shellQuote(c.body))
		}
		fmt.Fprint(w, "\n\n")
	}
	fmt.Fprintf(w, "# Any other ip, ipv6, domain or url gets made-up synthetic data; pipe to jq . to read.\n")
	fmt.Fprintf(w, "# Also: curl -sS %s   and   curl -sS %s\n\n", shellQuote(d.base+"/metrics"), shellQuote(d.base+"/readyz"))
}

// shellQuote quotes s for a POSIX shell.
func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
