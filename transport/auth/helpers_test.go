package auth_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/pulsedive-relay/relay/transport/auth"
	"github.com/pulsedive-relay/relay/transport/authtest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

const (
	testAudience = "https://relay.example"
	testAPIKey   = "pd-secret-api-key"
	testKID      = "kid-1"
)

var epoch = time.Date(2020, 4, 15, 0, 0, 0, 0, time.UTC)

// testKeys are generated once per test binary: RSA key generation is slow.
// They are never modified.
var testKeys = sync.OnceValues(func() ([3]*authtest.Key, error) {
	var ks [3]*authtest.Key
	for i, kid := range []string{testKID, testKID, "kid-2"} {
		k, err := authtest.NewKey(kid)
		if err != nil {
			return ks, err
		}
		ks[i] = k
	}
	return ks, nil
})

// keys returns the signing key (kid-1), a foreign key published nowhere
// under the same kid, and a second key (kid-2).
func keys(t testing.TB) (signing, foreign, second *authtest.Key) {
	t.Helper()
	ks, err := testKeys()
	if err != nil {
		t.Fatal(err)
	}
	return ks[0], ks[1], ks[2]
}

type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// countingObserver records JWKS fetch outcomes and refusals.
type countingObserver struct {
	mu       sync.Mutex
	outcomes map[string]int
	failures map[string]int
}

func (o *countingObserver) AuthFailure(kind string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.failures == nil {
		o.failures = map[string]int{}
	}
	o.failures[kind]++
}

func (o *countingObserver) refusals() map[string]int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return maps.Clone(o.failures)
}

func (o *countingObserver) JWKSFetch(outcome string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.outcomes == nil {
		o.outcomes = map[string]int{}
	}
	o.outcomes[outcome]++
}

func (o *countingObserver) counts() map[string]int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return maps.Clone(o.outcomes)
}

// fixture is an Authenticator whose allow-list holds one JWKS server
// (serving the signing key and the second key), a second server outside the
// allow-list ("evil") that counts what reaches it, a fake clock, an
// observer and a log kept at debug level.
type fixture struct {
	t     testing.TB
	key   *authtest.Key
	srv   *authtest.JWKSServer
	evil  *authtest.JWKSServer
	clock *fakeClock
	obs   *countingObserver
	logs  *logCapture
	auth  *auth.Authenticator
}

func newServer(t testing.TB, jwks []byte) *authtest.JWKSServer {
	t.Helper()
	srv, err := authtest.NewJWKSServer(authtest.ServerConfig{JWKS: jwks})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	return srv
}

// newFixture builds a fixture; edit adjusts the Config before New.
func newFixture(t testing.TB, edit func(*auth.Config)) *fixture {
	t.Helper()
	signing, _, second := keys(t)
	doc, err := authtest.JWKS(signing, second)
	if err != nil {
		t.Fatal(err)
	}
	evilDoc, err := authtest.JWKS(signing)
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{
		t:     t,
		key:   signing,
		srv:   newServer(t, doc),
		evil:  newServer(t, evilDoc),
		clock: &fakeClock{now: epoch},
		obs:   &countingObserver{},
		logs:  &logCapture{},
	}
	cfg := auth.Config{
		JWKSHosts:  []string{f.srv.Host()},
		Audiences:  []string{testAudience},
		HTTPClient: trustingClient(t, f.srv, f.evil),
		Now:        f.clock.Now,
		Observer:   f.obs,
		Logger:     f.logs.logger(slog.LevelDebug),
	}
	if edit != nil {
		edit(&cfg)
	}
	f.auth, err = auth.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// trustingClient trusts every given server and, unlike the relay's client,
// follows redirects: the Authenticator must refuse them itself.
func trustingClient(t testing.TB, srvs ...*authtest.JWKSServer) *http.Client {
	t.Helper()
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: srvs[0].CertPool()}}
	for _, s := range srvs[1:] {
		tr.TLSClientConfig.RootCAs.AddCert(s.Certificate())
	}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}

// dialRecorder is an HTTP client that sends every connection, whatever
// host it names, to one server (verifying its certificate as example.com)
// and records the addresses dialled. It lets tests use DNS names in the
// allow-list and prove that no other address was dialled.
type dialRecorder struct {
	mu    sync.Mutex
	dials []string
}

func (d *dialRecorder) client(t testing.TB, srv *authtest.JWKSServer) *http.Client {
	t.Helper()
	var dialer net.Dialer
	tr := &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: srv.CertPool(), ServerName: "example.com"},
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			d.mu.Lock()
			d.dials = append(d.dials, addr)
			d.mu.Unlock()
			return dialer.DialContext(ctx, network, srv.Host())
		},
	}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}

func (d *dialRecorder) addrs() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.Clone(d.dials)
}

// claims is a valid payload for the fixture's allowed host.
func (f *fixture) claims() map[string]any {
	return authtest.Claims(f.srv.Host(), testAudience, testAPIKey, f.clock.Now(), time.Hour)
}

func (f *fixture) mint(claims map[string]any) string {
	f.t.Helper()
	tok, err := f.key.Mint(claims)
	if err != nil {
		f.t.Fatal(err)
	}
	return tok
}

// with is claims with fields set; a nil value deletes the field.
func with(claims map[string]any, fields map[string]any) map[string]any {
	for k, v := range fields {
		if v == nil {
			delete(claims, k)
			continue
		}
		claims[k] = v
	}
	return claims
}

func request(authorization ...string) *http.Request {
	r := httptest.NewRequest(http.MethodPost, "http://relay.example/observe/observables", nil)
	for _, v := range authorization {
		r.Header.Add("Authorization", v)
	}
	return r
}

func bearer(token string) *http.Request { return request("Bearer " + token) }

// reasonOf is err's Reason, "" for nil; any other error type fails the test.
func reasonOf(t testing.TB, err error) string {
	t.Helper()
	if err == nil {
		return ""
	}
	var ae *auth.Error
	if !errors.As(err, &ae) {
		t.Fatalf("error %v (%T) is not *auth.Error", err, err)
	}
	if got, want := err.Error(), "Authorization failed: "+ae.Reason; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
	if !slices.Contains(auth.Reasons(), ae.Reason) {
		t.Errorf("reason %q is not one of auth.Reasons()", ae.Reason)
	}
	return ae.Reason
}

// logCapture keeps what a JSON slog handler writes, as the relay logs in
// production, so tests see both the text (for secrets) and the fields.
type logCapture struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (c *logCapture) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.buf.Write(p)
}

// logger is a JSON logger at level writing to c, with the time left out.
func (c *logCapture) logger(level slog.Level) *slog.Logger {
	return slog.New(slog.NewJSONHandler(c, &slog.HandlerOptions{
		Level: level,
		ReplaceAttr: func(groups []string, a slog.Attr) slog.Attr {
			if len(groups) == 0 && a.Key == slog.TimeKey {
				return slog.Attr{}
			}
			return a
		},
	}))
}

func (c *logCapture) text() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.buf.String()
}

// reset forgets what was written so far.
func (c *logCapture) reset() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.buf.Reset()
}

// logLine is one record: its fields, values as JSON decoded them.
type logLine map[string]any

func (l logLine) str(key string) string {
	switch v := l[key].(type) {
	case nil:
		return ""
	case string:
		return v
	default:
		b, _ := json.Marshal(v)
		return string(b)
	}
}

// records are the records written so far whose msg is msg ("" for all).
func (c *logCapture) records(t testing.TB, msg string) []logLine {
	t.Helper()
	var out []logLine
	for line := range strings.SplitSeq(strings.TrimSpace(c.text()), "\n") {
		if line == "" {
			continue
		}
		var l logLine
		if err := json.Unmarshal([]byte(line), &l); err != nil {
			t.Fatalf("log line is not JSON: %v\n%s", err, line)
		}
		if msg == "" || l["msg"] == msg {
			out = append(out, l)
		}
	}
	return out
}

// levels counts records whose msg is msg by level.
func (c *logCapture) levels(t testing.TB, msg string) map[string]int {
	t.Helper()
	out := map[string]int{}
	for _, l := range c.records(t, msg) {
		out[l.str("level")]++
	}
	return out
}

// secretsOf are the forms of a token and its key that must never reach a
// log line: the key, the token, its payload and its signature segments.
func secretsOf(token string) []string {
	out := []string{testAPIKey}
	if len(token) > 8 {
		out = append(out, token)
	}
	parts := strings.Split(token, ".")
	if len(parts) == 3 {
		for _, p := range parts[1:] {
			if len(p) > 8 {
				out = append(out, p)
			}
		}
	}
	return out
}
