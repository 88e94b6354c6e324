package auth_test

import (
	"context"
	"crypto/tls"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/pulsedive-relay/relay/metrics"
	"github.com/pulsedive-relay/relay/transport/auth"
	"github.com/pulsedive-relay/relay/transport/authtest"
)

// TestRefusalLogNamesTheCause: every cause of a refusal produces one warn
// line "token refused" that names it (the kind, the contract's message, the
// JWKS fetch error, the audiences, the kid, the host), holds neither the
// token, nor its payload or signature, nor the key; and the caller's error
// is the contract's text alone.
func TestRefusalLogNamesTheCause(t *testing.T) {
	_, foreign, _ := keys(t)
	signed := func(fields map[string]any) func(*fixture) *http.Request {
		return func(f *fixture) *http.Request { return bearer(f.mint(with(f.claims(), fields))) }
	}
	withKID := func(kid string) func(*fixture) *http.Request {
		return func(f *fixture) *http.Request {
			tok, err := f.key.MintHeader(map[string]any{"kid": kid}, f.claims())
			if err != nil {
				t.Fatal(err)
			}
			return bearer(tok)
		}
	}
	client := func(tr func(f *fixture) *http.Transport) func(*fixture) *http.Client {
		return func(f *fixture) *http.Client {
			t := tr(f)
			f.t.Cleanup(t.CloseIdleConnections)
			return &http.Client{Transport: t}
		}
	}
	now := epoch.Unix()

	tests := []struct {
		name   string
		client func(*fixture) *http.Client // the JWKS client; nil trusts the fixture's servers
		setup  func(*fixture)
		req    func(*fixture) *http.Request
		reason string
		// fields the line must have: each value is a substring of the field.
		fields map[string]string
	}{
		{name: "missing header", req: func(*fixture) *http.Request { return request() },
			reason: auth.ReasonMissingHeader, fields: map[string]string{"reason": "missing_header"}},
		{name: "wrong scheme", req: func(f *fixture) *http.Request { return request("Basic " + f.mint(f.claims())) },
			reason: auth.ReasonWrongType, fields: map[string]string{"reason": "wrong_type", "detail": "not Bearer"}},
		{name: "token without scheme", req: func(f *fixture) *http.Request { return request(f.mint(f.claims())) },
			reason: auth.ReasonWrongType, fields: map[string]string{"reason": "wrong_type", "detail": "not two words"}},
		{name: "not a JWT", req: func(f *fixture) *http.Request { return bearer("abc.def") },
			reason: auth.ReasonWrongStructure, fields: map[string]string{"reason": "wrong_structure", "detail": "base64url"}},
		{name: "jwks_host missing", req: signed(map[string]any{"jwks_host": nil}),
			reason: auth.ReasonMissingJWKSHost, fields: map[string]string{"reason": "missing_jwks_host", "kid": testKID}},
		{name: "jwks_host a number", req: signed(map[string]any{"jwks_host": 443}),
			reason: auth.ReasonMissingJWKSHost, fields: map[string]string{"reason": "missing_jwks_host", "detail": "jwks_host is the number 443"}},
		{name: "jwks_host not allowed", req: func(f *fixture) *http.Request {
			return bearer(f.mint(with(f.claims(), map[string]any{"jwks_host": "evil.example"})))
		}, reason: auth.ReasonWrongJWKSHost, fields: map[string]string{
			"reason": "jwks_host_not_allowed", "jwks_host": "evil.example", "detail": "not in the allow-list"}},
		{name: "alg none", req: func(f *fixture) *http.Request {
			tok, err := authtest.MintWith("none", nil, testKID, f.claims())
			if err != nil {
				t.Fatal(err)
			}
			return bearer(tok)
		}, reason: auth.ReasonWrongKey, fields: map[string]string{"reason": "wrong_key", "detail": `alg is "none", not RS256`}},
		{name: "JWKS TLS unknown authority", client: func(*fixture) *http.Client { return &http.Client{} },
			req: signed(nil), reason: auth.ReasonWrongJWKSHost, fields: map[string]string{
				"reason": "jwks_unavailable", "fetch_error": "tls_unknown_authority",
				"cause": "certificate signed by unknown authority", "detail": "no keys were ever fetched"}},
		{name: "JWKS TLS wrong name", client: client(func(f *fixture) *http.Transport {
			return &http.Transport{TLSClientConfig: &tls.Config{RootCAs: f.srv.CertPool(), ServerName: "jwks.other.example"}}
		}), req: signed(nil), reason: auth.ReasonWrongJWKSHost, fields: map[string]string{
			"reason": "jwks_unavailable", "fetch_error": "tls_certificate", "cause": "jwks.other.example"}},
		{name: "JWKS connection refused", setup: func(f *fixture) { f.srv.Close() },
			req: signed(nil), reason: auth.ReasonWrongJWKSHost, fields: map[string]string{
				"reason": "jwks_unavailable", "fetch_error": "connection_refused", "cause": "connection refused"}},
		{name: "JWKS DNS", client: client(func(*fixture) *http.Transport {
			return &http.Transport{DialContext: func(_ context.Context, _, addr string) (net.Conn, error) {
				return nil, &net.DNSError{Err: "no such host", Name: addr, IsNotFound: true}
			}}
		}), req: signed(nil), reason: auth.ReasonWrongJWKSHost, fields: map[string]string{
			"reason": "jwks_unavailable", "fetch_error": "dns", "cause": "no such host"}},
		{name: "JWKS HTTP 500", setup: func(f *fixture) { f.srv.SetStatus(http.StatusInternalServerError) },
			req: signed(nil), reason: auth.ReasonWrongJWKSHost, fields: map[string]string{
				"reason": "jwks_unavailable", "fetch_error": "http_status", "cause": "HTTP 500"}},
		{name: "JWKS redirect", setup: func(f *fixture) { f.srv.SetRedirect(f.evil.URL()) },
			req: signed(nil), reason: auth.ReasonWrongJWKSHost, fields: map[string]string{
				"reason": "jwks_unavailable", "fetch_error": "redirect", "cause": "HTTP 302"}},
		{name: "JWKS not a JWKS", setup: func(f *fixture) { f.srv.SetJWKS([]byte("<html>hello</html>")) },
			req: signed(nil), reason: auth.ReasonWrongJWKSHost, fields: map[string]string{
				"reason": "jwks_unavailable", "fetch_error": "not_jwks", "cause": "not a JWKS"}},
		{name: "JWKS without keys list", setup: func(f *fixture) { f.srv.SetJWKS([]byte(`{}`)) },
			req: signed(nil), reason: auth.ReasonWrongJWKSHost, fields: map[string]string{
				"reason": "jwks_unavailable", "fetch_error": "not_jwks", "cause": "no keys list"}},
		{name: "JWKS without a usable key", setup: func(f *fixture) { f.srv.SetJWKS([]byte(`{"keys":[{"kty":"EC"}]}`)) },
			req: signed(nil), reason: auth.ReasonWrongJWKSHost, fields: map[string]string{
				"reason": "jwks_unavailable", "fetch_error": "no_usable_key", "cause": "no usable RSA signing key"}},
		{name: "JWKS over 1 MiB", setup: func(f *fixture) { f.srv.SetJWKS([]byte(strings.Repeat(" ", 1<<20+1))) },
			req: signed(nil), reason: auth.ReasonWrongJWKSHost, fields: map[string]string{
				"reason": "jwks_unavailable", "fetch_error": "too_large", "cause": "over 1048576 bytes"}},
		{name: "kid not found", req: withKID("kid-9"), reason: auth.ReasonKIDNotFound, fields: map[string]string{
			"reason": "kid_not_found", "kid": "kid-9", "known_kids": `["kid-1","kid-2"]`}},
		{name: "bad signature", req: func(f *fixture) *http.Request {
			tok, err := foreign.Mint(f.claims())
			if err != nil {
				t.Fatal(err)
			}
			return bearer(tok)
		}, reason: auth.ReasonWrongKey, fields: map[string]string{"reason": "wrong_key", "kid": testKID, "detail": "signature does not verify"}},
		{name: "expired", req: signed(map[string]any{"exp": now - 60}), reason: auth.ReasonExpired, fields: map[string]string{
			"reason": "expired", "exp": epoch.Add(-time.Minute).Format(time.RFC3339)}},
		{name: "not yet valid", req: signed(map[string]any{"nbf": now + 60}), reason: auth.ReasonNotYetValid, fields: map[string]string{
			"reason": "not_yet_valid", "nbf": epoch.Add(time.Minute).Format(time.RFC3339)}},
		{name: "wrong audience", req: signed(map[string]any{"aud": "https://other.example"}), reason: auth.ReasonWrongAudience, fields: map[string]string{
			"reason": "wrong_audience", "aud": "https://other.example", "expected_audiences": `["` + testAudience + `"]`}},
		{name: "audience list", req: signed(map[string]any{"aud": []any{"https://a.example", 7}}), reason: auth.ReasonWrongAudience, fields: map[string]string{
			"reason": "wrong_audience", "aud": `["https://a.example","(the number 7)"]`}},
		{name: "no key", req: signed(map[string]any{"key": nil}), reason: auth.ReasonWrongPayload, fields: map[string]string{
			"reason": "wrong_payload", "detail": "key is missing"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, nil)
			if tt.client != nil {
				f.auth = f.rebuild(t, tt.client(f))
			}
			if tt.setup != nil {
				tt.setup(f)
			}
			r := tt.req(f)
			_, err := f.auth.Authenticate(r)
			if got := reasonOf(t, err); got != tt.reason {
				t.Fatalf("reason %q, want %q", got, tt.reason)
			}
			lines := f.logs.records(t, "token refused")
			if len(lines) != 1 {
				t.Fatalf("%d \"token refused\" lines, want 1:\n%s", len(lines), f.logs.text())
			}
			line := lines[0]
			want := map[string]string{"level": "WARN", "message": err.Error()}
			for k, v := range tt.fields {
				want[k] = v
			}
			for field, sub := range want {
				if got := line.str(field); !strings.Contains(got, sub) {
					t.Errorf("%s = %q, want it to hold %q", field, got, sub)
				}
			}
			if kind := tt.fields["reason"]; !cmp.Equal(f.obs.refusals(), map[string]int{kind: 1}) {
				t.Errorf("observed refusals %v, want one %s", f.obs.refusals(), kind)
			}
			text := f.logs.text()
			for _, s := range secretsOf(strings.TrimSpace(strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer"))) {
				if strings.Contains(text, s) {
					t.Errorf("the log holds a secret %q:\n%s", s, text)
				}
			}
			if t.Failed() {
				t.Logf("log:\n%s", text)
			}
		})
	}
}

// rebuild replaces the fixture's Authenticator by one fetching with client,
// with the fixture's host, clock, observer and log.
func (f *fixture) rebuild(t *testing.T, client *http.Client) *auth.Authenticator {
	t.Helper()
	a, err := auth.New(auth.Config{
		JWKSHosts:  []string{f.srv.Host()},
		Audiences:  []string{testAudience},
		HTTPClient: client,
		Now:        f.clock.Now,
		Observer:   f.obs,
		Logger:     f.logs.logger(slog.LevelDebug),
	})
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// TestRefusalLogRateLimit: at info level a cause (kind, fetch error,
// allow-listed host) gets one warn line a minute, the next one counting
// those left out; other causes have their own; successes, before or after
// failures, write nothing. At debug level every refusal has a line.
func TestRefusalLogRateLimit(t *testing.T) {
	for _, level := range []string{"info", "debug"} {
		t.Run(level, func(t *testing.T) {
			logs := &logCapture{}
			f := newFixture(t, func(c *auth.Config) {
				c.TokenCacheSize = -1
				if level == "info" {
					c.Logger = logs.logger(slog.LevelInfo)
				} else {
					c.Logger = logs.logger(slog.LevelDebug)
				}
			})
			wrongAud := func() {
				_, _ = f.auth.Authenticate(bearer(f.mint(with(f.claims(), map[string]any{"aud": "https://x.example"}))))
			}
			expired := func() {
				_, _ = f.auth.Authenticate(bearer(f.mint(with(f.claims(), map[string]any{"exp": f.clock.Now().Unix()}))))
			}
			valid := func() {
				if err := second(f.auth.Authenticate(bearer(f.mint(f.claims())))); err != nil {
					t.Fatal(err)
				}
			}
			type line struct {
				Level, Reason, Suppressed, Cause string
			}
			seen := 0
			newLines := func() []line {
				t.Helper()
				all := logs.records(t, "")
				var out []line
				for _, l := range all[seen:] {
					out = append(out, line{l.str("level"), l.str("reason"), l.str("suppressed"), l.str("fetch_error")})
				}
				seen = len(all)
				return out
			}
			steps := []struct {
				name    string
				advance time.Duration
				do      func()
				times   int
				want    []line
			}{
				{name: "valid tokens", do: valid, times: 3},
				{name: "first wrong audience", do: wrongAud, times: 1, want: []line{{Level: "WARN", Reason: "wrong_audience"}}},
				{name: "four more in the second", do: wrongAud, times: 4, want: slices.Repeat([]line{{Level: "DEBUG", Reason: "wrong_audience"}}, 4)},
				{name: "one at 59 s", advance: 59 * time.Second, do: wrongAud, times: 1, want: []line{{Level: "DEBUG", Reason: "wrong_audience"}}},
				{name: "another cause", do: expired, times: 1, want: []line{{Level: "WARN", Reason: "expired"}}},
				{name: "valid tokens in between", do: valid, times: 3},
				{name: "a minute after the first", advance: time.Second, do: wrongAud, times: 1, want: []line{{Level: "WARN", Reason: "wrong_audience", Suppressed: "5"}}},
				{name: "JWKS failing", advance: 10 * time.Minute, do: func() {
					f.srv.SetStatus(http.StatusServiceUnavailable)
					_, _ = f.auth.Authenticate(bearer(f.mint(with(f.claims(), map[string]any{"aud": "https://x.example"}))))
				}, times: 1, want: []line{
					// The keys are past their TTL: the fetch fails, the
					// last good keys verify, the audience is wrong.
					{Level: "WARN", Cause: "http_status"},
					{Level: "WARN", Reason: "wrong_audience", Suppressed: ""},
				}},
				{name: "a kid the last good keys lack", advance: 30 * time.Second, do: func() {
					tok, err := f.key.MintHeader(map[string]any{"kid": "kid-9"}, f.claims())
					if err != nil {
						t.Fatal(err)
					}
					_, _ = f.auth.Authenticate(bearer(tok))
				}, times: 2, want: []line{
					{Level: "DEBUG", Cause: "http_status"}, // the second fetch failure within the minute
					{Level: "WARN", Reason: "jwks_unavailable", Cause: "http_status"},
					{Level: "WARN", Reason: "kid_not_found"}, // the second: the host was just asked
				}},
				{name: "another fetch error", advance: 30 * time.Second, do: func() {
					f.srv.SetStatus(0)
					f.srv.SetJWKS([]byte("oops"))
					tok, err := f.key.MintHeader(map[string]any{"kid": "kid-9"}, f.claims())
					if err != nil {
						t.Fatal(err)
					}
					_, _ = f.auth.Authenticate(bearer(tok))
				}, times: 1, want: []line{
					{Level: "WARN", Cause: "not_jwks"},
					{Level: "WARN", Reason: "jwks_unavailable", Cause: "not_jwks"},
				}},
			}
			for _, s := range steps {
				f.clock.Advance(s.advance)
				for range s.times {
					s.do()
				}
				got, want := newLines(), slices.Clone(s.want)
				if level == "info" {
					// The debug lines are not written at all.
					want = slices.DeleteFunc(want, func(l line) bool { return l.Level == "DEBUG" })
				}
				if diff := cmp.Diff(want, got, cmpopts.EquateEmpty()); diff != "" {
					t.Errorf("%s: lines (-want +got):\n%s", s.name, diff)
				}
			}
			if t.Failed() {
				t.Logf("log:\n%s", logs.text())
			}
		})
	}
}

// TestFailureKindsMatchMetrics: every kind of refusal is a pre-created
// label of pulsedive_relay_auth_failures_total, and the family has no
// other (but "other" for what no kind names).
func TestFailureKindsMatchMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	m, err := metrics.New(reg, metrics.Config{Labels: metrics.Labels{AuthFailures: auth.FailureKinds()}})
	if err != nil {
		t.Fatal(err)
	}
	var _ auth.Observer = m
	for _, kind := range auth.FailureKinds() {
		m.AuthFailure(kind)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		if mf.GetName() != "pulsedive_relay_auth_failures_total" {
			continue
		}
		for _, metric := range mf.GetMetric() {
			for _, l := range metric.GetLabel() {
				got[l.GetValue()] = metric.GetCounter().GetValue()
			}
		}
	}
	want := map[string]float64{}
	for _, kind := range auth.FailureKinds() {
		want[kind] = 1
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("auth_failures_total by reason (-want +got):\n%s", diff)
	}
	if n := len(auth.FailureKinds()); n != len(auth.Reasons())+1 {
		t.Errorf("%d failure kinds for %d reasons, want one more (wrong jwks_host is two kinds)", n, len(auth.Reasons()))
	}
}
