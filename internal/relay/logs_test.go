package relay

import (
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pulsedive-relay/relay/pulsedive/pulsedivetest"
	"github.com/pulsedive-relay/relay/transport/authtest"
)

// logsKey is a distinctive API key full of characters that URL, JSON and
// logfmt encoding change, so a leak in any of those forms is caught.
const logsKey = "LKs3cr3tLK/+&key=v?q#f%2F d=é\"'"

// TestLogsHoldNoSecrets runs a whole session at LOG_LEVEL=debug, auth
// successes and failures and every kind of Pulsedive failure, and looks for
// the API key and the tokens in everything the relay wrote and answered.
// Each refused token must have a line naming its cause: the expected
// audience for a wrong one, the TLS failure for a JWKS host whose CA the
// relay does not trust (the built binary, as deployed without its private
// CA in SSL_CERT_FILE).
func TestLogsHoldNoSecrets(t *testing.T) {
	fake := startFake(t, pulsedivetest.Config{})
	fake.SetFault("server-error.example", pulsedivetest.Fault{Status: http.StatusInternalServerError, Message: "Internal error."})
	fake.SetFault("bad-gateway.example", pulsedivetest.Fault{Status: http.StatusBadGateway})
	fake.SetFault("reset.example", pulsedivetest.Fault{Mode: pulsedivetest.ModeReset})
	fake.SetFault("slow.example", pulsedivetest.Fault{Mode: pulsedivetest.ModeHang})
	fake.SetFault("not-json.example", pulsedivetest.Fault{Mode: pulsedivetest.ModeNotJSON})
	// Pulsedive echoing the key in its error text, as sent and escaped.
	fake.SetFault("echo.example", pulsedivetest.Fault{Status: http.StatusUnauthorized,
		Message: "Invalid API key " + logsKey + " (" + url.QueryEscape(logsKey) + ", " + url.PathEscape(logsKey) + ")."})
	fake.SetFault("2", pulsedivetest.Fault{Kind: pulsedivetest.KindHealth, Status: http.StatusServiceUnavailable})
	r := startRelay(t, relayEnv(fake.URL(), map[string]string{
		"LOG_LEVEL":         "debug",
		"PULSEDIVE_TIMEOUT": "300ms",
		// Every failure below must reach Pulsedive, not an open breaker.
		"BREAKER_FAILURES": "0",
	}))
	// A second relay whose Pulsedive refuses connections: the error that
	// carries the request URL, key included, in net/http.
	dead := startRelay(t, relayEnv("http://"+freePort(t)+"/api/", map[string]string{"LOG_LEVEL": "debug"}))
	// A JWKS host with a self-signed certificate no CA of the relay's
	// signed.
	doc, err := shared.key.JWKS()
	if err != nil {
		t.Fatal(err)
	}
	untrustedJWKS, err := authtest.NewJWKSServer(authtest.ServerConfig{JWKS: doc, OwnCertificate: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(untrustedJWKS.Close)
	untrusted := startProcess(t, relayEnv(fake.URL(), map[string]string{
		"LOG_LEVEL":        "debug",
		"RELAY_JWKS_HOSTS": untrustedJWKS.Host(),
	}))

	c := newClient(t)
	tok := r.token(t, logsKey)
	otherKey, err := authtest.NewKey("not-in-the-jwks")
	if err != nil {
		t.Fatal(err)
	}
	mint := func(k *authtest.Key, claims map[string]any) string {
		t.Helper()
		s, err := k.Mint(claims)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	now := time.Now()
	tokens := map[string]string{
		"valid":          tok,
		"tampered":       tok[:len(tok)-4] + "AAAA",
		"unknown kid":    mint(otherKey, authtest.Claims(shared.jwks.Host(), r.URL(), logsKey, now, time.Hour)),
		"expired":        mint(shared.key, authtest.Claims(shared.jwks.Host(), r.URL(), logsKey, now.Add(-2*time.Hour), time.Hour)),
		"wrong audience": mint(shared.key, authtest.Claims(shared.jwks.Host(), "https://elsewhere.example", logsKey, now, time.Hour)),
		"dead relay":     dead.token(t, logsKey),
		"untrusted JWKS": mint(shared.key, authtest.Claims(untrustedJWKS.Host(), untrusted.URL(), logsKey, now, time.Hour)),
	}

	type step struct {
		name     string
		relay    *relay
		req      request
		wantCode string // an error code the answer must hold; "" for none
	}
	obs := func(pairs ...string) string { return observables(t, pairs...) }
	steps := []step{
		{"observe", r, request{method: http.MethodPost, path: "/observe/observables", auth: "Bearer " + tok, body: obs(fixtureObservables...)}, ""},
		{"deliberate", r, request{method: http.MethodPost, path: "/deliberate/observables", auth: "Bearer " + tok, body: obs("domain", "parkingcrew.net")}, ""},
		{"refer", r, request{method: http.MethodPost, path: "/refer/observables", auth: "Bearer " + tok, body: obs("ip", "185.141.25.242")}, ""},
		{"health", r, request{method: http.MethodPost, path: "/health", auth: "Bearer " + tok}, "service unavailable"},
		{"no token", r, request{method: http.MethodPost, path: "/observe/observables", body: obs("domain", "parkingcrew.net")}, "authorization error"},
		{"wrong scheme", r, request{method: http.MethodPost, path: "/observe/observables", auth: "Basic " + tok, body: obs("domain", "parkingcrew.net")}, "authorization error"},
		{"tampered", r, request{method: http.MethodPost, path: "/observe/observables", auth: "Bearer " + tokens["tampered"], body: obs("domain", "parkingcrew.net")}, "authorization error"},
		{"unknown kid", r, request{method: http.MethodPost, path: "/observe/observables", auth: "Bearer " + tokens["unknown kid"], body: obs("domain", "parkingcrew.net")}, "authorization error"},
		{"expired", r, request{method: http.MethodPost, path: "/observe/observables", auth: "Bearer " + tokens["expired"], body: obs("domain", "parkingcrew.net")}, "authorization error"},
		{"wrong audience", r, request{method: http.MethodPost, path: "/observe/observables", auth: "Bearer " + tokens["wrong audience"], body: obs("domain", "parkingcrew.net")}, "authorization error"},
		{"bad body", r, request{method: http.MethodPost, path: "/observe/observables", auth: "Bearer " + tok, body: `[{"type":"ip"}]`}, "invalid argument"},
		{"5xx", r, request{method: http.MethodPost, path: "/observe/observables", auth: "Bearer " + tok, body: obs("domain", "server-error.example")}, "internal server error"},
		{"5xx proxy page", r, request{method: http.MethodPost, path: "/observe/observables", auth: "Bearer " + tok, body: obs("domain", "bad-gateway.example")}, "bad gateway"},
		{"reset", r, request{method: http.MethodPost, path: "/observe/observables", auth: "Bearer " + tok, body: obs("domain", "reset.example")}, "service unavailable"},
		{"timeout", r, request{method: http.MethodPost, path: "/observe/observables", auth: "Bearer " + tok, body: obs("domain", "slow.example")}, "service unavailable"},
		{"not JSON", r, request{method: http.MethodPost, path: "/observe/observables", auth: "Bearer " + tok, body: obs("domain", "not-json.example")}, "unknown"},
		{"408", r, request{method: http.MethodPost, path: "/observe/observables", auth: "Bearer " + tok, body: obs("domain", "processing.example")}, "request timeout"},
		{"key in Pulsedive's text", r, request{method: http.MethodPost, path: "/observe/observables", auth: "Bearer " + tok, body: obs("domain", "echo.example")}, "unauthorized"},
		// Last on this key: a 429 pauses it.
		{"429", r, request{method: http.MethodPost, path: "/observe/observables", auth: "Bearer " + tok, body: obs("domain", "rate-limited.example")}, "too many requests"},
		{"paused key", r, request{method: http.MethodPost, path: "/observe/observables", auth: "Bearer " + tok, body: obs("domain", "many-factors.example")}, "too many requests"},
		{"connection refused", dead, request{method: http.MethodPost, path: "/observe/observables", auth: "Bearer " + tokens["dead relay"], body: obs("domain", "parkingcrew.net")}, "service unavailable"},
		{"health, connection refused", dead, request{method: http.MethodPost, path: "/health", auth: "Bearer " + tokens["dead relay"]}, "service unavailable"},
		{"untrusted JWKS CA", untrusted.relay, request{method: http.MethodPost, path: "/observe/observables", auth: "Bearer " + tokens["untrusted JWKS"], body: obs("domain", "parkingcrew.net")}, "authorization error"},
	}

	var secrets []secret
	for name, tk := range tokens {
		for _, s := range secretForms(logsKey, tk) {
			secrets = append(secrets, secret{s.what + " (" + name + " token)", s.text})
		}
	}
	for _, s := range steps {
		got := send(t, c, s.relay.URL(), s.req)
		if got.status != http.StatusOK {
			t.Errorf("%s: status %d, want 200\n%s", s.name, got.status, got.body)
		}
		if s.wantCode != "" && !strings.Contains(string(got.body), `"code":"`+s.wantCode+`"`) {
			t.Errorf("%s: answer %s, want error code %q", s.name, got.body, s.wantCode)
		}
		for _, sec := range secrets {
			if strings.Contains(string(got.body), sec.text) {
				t.Errorf("%s: the answer contains %s: %s", s.name, sec.what, got.body)
			}
		}
	}
	if fake.Calls() == 0 {
		t.Fatal("the fake saw no call: the session exercised nothing")
	}

	// Every refusal has its line, naming the cause. The child's stderr
	// arrives through a pipe: wait for the lines.
	refusals := []struct {
		name   string
		rl     *relay
		fields map[string]string // each value is a substring of the field
	}{
		{"no token", r, map[string]string{"msg": "token refused", "reason": "missing_header"}},
		{"wrong scheme", r, map[string]string{"msg": "token refused", "reason": "wrong_type", "detail": "not Bearer"}},
		{"tampered", r, map[string]string{"msg": "token refused", "reason": "wrong_key", "detail": "signature"}},
		{"unknown kid", r, map[string]string{"msg": "token refused", "reason": "kid_not_found", "kid": "not-in-the-jwks", "known_kids": shared.key.ID}},
		{"expired", r, map[string]string{"msg": "token refused", "reason": "expired", "exp": now.Add(-time.Hour).UTC().Format("2006-01-02T15:04")}},
		{"wrong audience", r, map[string]string{
			"msg": "token refused", "level": "WARN", "reason": "wrong_audience",
			"message": "Authorization failed: Wrong configuration-token-audience",
			"aud":     "https://elsewhere.example", "expected_audiences": `["` + r.URL() + `"]`}},
		{"untrusted JWKS CA", untrusted.relay, map[string]string{
			"msg": "token refused", "level": "WARN", "reason": "jwks_unavailable",
			"message":   "Authorization failed: Wrong jwks_host in JWT payload",
			"jwks_host": untrustedJWKS.Host(), "fetch_error": "tls_unknown_authority",
			"cause": "x509: certificate signed by unknown authority"}},
		{"untrusted JWKS CA, the fetch", untrusted.relay, map[string]string{
			"msg": "JWKS fetch failed", "level": "WARN", "jwks_host": untrustedJWKS.Host(),
			"fetch_error": "tls_unknown_authority", "cause": "x509: certificate signed by unknown authority"}},
	}
	for _, want := range refusals {
		eventually(t, 5*time.Second, want.name+" log line", func() (bool, error) {
			return slices.ContainsFunc(want.rl.logs.lines(), func(line string) bool {
				f := logFields(line)
				for k, v := range want.fields {
					if !strings.Contains(f[k], v) {
						return false
					}
				}
				return true
			}), nil
		})
	}

	for name, rl := range map[string]*relay{"relay": r, "relay with dead Pulsedive": dead, "relay with untrusted JWKS": untrusted.relay} {
		logs := rl.logs.String()
		if !strings.Contains(logs, `"msg":"request"`) {
			t.Errorf("%s: no access line in the logs:\n%s", name, logs)
		}
		for _, sec := range secrets {
			if strings.Contains(logs, sec.text) {
				t.Errorf("%s: the logs contain %s", name, sec.what)
			}
		}
		for i, line := range rl.logs.lines() {
			f := logFields(line)
			if f == nil || f["time"] == "" || f["level"] == "" || f["msg"] == "" {
				t.Errorf("%s: log line %d is not a JSON record with time, level and msg: %s", name, i+1, line)
			}
		}
	}
	if t.Failed() {
		t.Logf("relay logs:\n%s\nrelay with dead Pulsedive, logs:\n%s\nrelay with untrusted JWKS, logs:\n%s", r.logs, dead.logs, untrusted.logs)
	}
}

// TestSecretFormsCatchLeaks shows the leak checks above would see the key
// however a log handler or a URL writes it.
func TestSecretFormsCatchLeaks(t *testing.T) {
	forms := secretForms(logsKey, "h.p.s")
	leaks := map[string]func(w io.Writer){
		"json log": func(w io.Writer) { slog.New(slog.NewJSONHandler(w, nil)).Info("x", "key", logsKey) },
		"text log": func(w io.Writer) { slog.New(slog.NewTextHandler(w, nil)).Info("x", "key", logsKey) },
		"url": func(w io.Writer) {
			fmt.Fprint(w, "https://pulsedive.com/api/info.php?"+url.Values{"key": {logsKey}}.Encode())
		},
		"url path": func(w io.Writer) { fmt.Fprint(w, (&url.URL{Path: "/" + logsKey}).String()) },
		"%q":       func(w io.Writer) { fmt.Fprintf(w, "%q", logsKey) },
	}
	for name, leak := range leaks {
		t.Run(name, func(t *testing.T) {
			var b strings.Builder
			leak(&b)
			if !slices.ContainsFunc(forms, func(f secret) bool { return strings.Contains(b.String(), f.text) }) {
				t.Errorf("no secret form found in %s", b.String())
			}
		})
	}
}

// TestAccessLine checks the access line's fields and the request id, taken
// from X-Request-Id or made, echoed in the answer and logged, in both log
// formats.
func TestAccessLine(t *testing.T) {
	for _, format := range []string{"json", "text"} {
		t.Run(format, func(t *testing.T) {
			fake := startFake(t, pulsedivetest.Config{})
			r := startRelay(t, relayEnv(fake.URL(), map[string]string{"LOG_FORMAT": format}))
			c := newClient(t)
			tok := r.token(t, "access-line-key")

			given := send(t, c, r.URL(), request{
				method: http.MethodPost, path: "/observe/observables", auth: "Bearer " + tok,
				body:   observables(t, fixtureObservables...),
				header: map[string]string{"X-Request-Id": "ops-test-42"},
			})
			if got := given.header.Get("X-Request-Id"); got != "ops-test-42" {
				t.Errorf("X-Request-Id answered %q, want the given ops-test-42", got)
			}
			made := send(t, c, r.URL(), request{method: http.MethodGet, path: "/nowhere"})
			madeID := made.header.Get("X-Request-Id")
			if b, err := hex.DecodeString(madeID); err != nil || len(b) < 8 {
				t.Errorf("X-Request-Id made by the relay is %q, want a random hex id", madeID)
			}
			bad := send(t, c, r.URL(), request{method: http.MethodPost, path: "/version", header: map[string]string{"X-Request-Id": "has space"}})
			badID := bad.header.Get("X-Request-Id")
			if badID == "" || strings.Contains(badID, " ") {
				t.Errorf("X-Request-Id for an unprintable given id is %q, want a made one", badID)
			}

			// The access line is written after the answer: wait for it.
			var lines map[string]map[string]string
			eventually(t, 5*time.Second, "three access lines", func() (bool, error) {
				lines = accessLines(r.logs.lines())
				return lines["ops-test-42"] != nil && lines[madeID] != nil && lines[badID] != nil, nil
			})

			tests := []struct {
				id   string
				want map[string]string
			}{
				{"ops-test-42", map[string]string{"method": "POST", "route": "/observe/observables", "status": "200", "observables": "5"}},
				{madeID, map[string]string{"method": "GET", "route": "unmatched", "status": "404", "observables": "0"}},
				{badID, map[string]string{"method": "POST", "route": "/version", "status": "200", "observables": "0"}},
			}
			for _, tc := range tests {
				line := lines[tc.id]
				for k, want := range tc.want {
					if got := line[k]; got != want {
						t.Errorf("access line %s: %s=%q, want %q\n%v", tc.id, k, got, want, line)
					}
				}
				if d, err := strconv.ParseFloat(line["duration_ms"], 64); err != nil || d < 0 {
					t.Errorf("access line %s: duration_ms=%q, want a non-negative number", tc.id, line["duration_ms"])
				}
				if line["level"] != "INFO" {
					t.Errorf("access line %s: level=%q, want INFO", tc.id, line["level"])
				}
			}
			for i, line := range r.logs.lines() {
				if isJSON := strings.HasPrefix(line, "{"); isJSON != (format == "json") {
					t.Errorf("LOG_FORMAT=%s: line %d is in the other format: %s", format, i+1, line)
				}
			}
			if t.Failed() {
				t.Logf("logs:\n%s", r.logs)
			}
		})
	}
}

// accessLines are the relay's access lines ("request" records) by their
// request_id.
func accessLines(lines []string) map[string]map[string]string {
	out := map[string]map[string]string{}
	for _, l := range lines {
		if f := logFields(l); f["msg"] == "request" && f["request_id"] != "" {
			out[f["request_id"]] = f
		}
	}
	return out
}
