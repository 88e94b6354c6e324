package auth_test

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/pulsedive-relay/relay/transport/auth"
	"github.com/pulsedive-relay/relay/transport/authtest"
)

// noTokenCache makes every Authenticate verify, so the tests below see the
// JWKS cache alone.
func noTokenCache(c *auth.Config) { c.TokenCacheSize = -1 }

// step is one Authenticate in a sequence: advance the clock, optionally
// change the served document, authenticate with a token for kid, and expect
// a reason and a total number of JWKS fetches so far.
type step struct {
	advance     time.Duration
	serve       []*authtest.Key // nil keeps the document
	kid         string
	want        string
	wantFetches int
}

func runSteps(t *testing.T, f *fixture, steps []step) {
	t.Helper()
	for i, s := range steps {
		f.clock.Advance(s.advance)
		if s.serve != nil {
			doc, err := authtest.JWKS(s.serve...)
			if err != nil {
				t.Fatal(err)
			}
			f.srv.SetJWKS(doc)
		}
		signer := f.key
		if s.kid == "kid-2" {
			_, _, signer = keys(t)
		}
		tok, err := signer.MintHeader(map[string]any{"kid": s.kid}, f.claims())
		if err != nil {
			t.Fatal(err)
		}
		_, err = f.auth.Authenticate(bearer(tok))
		if got := reasonOf(t, err); got != s.want {
			t.Errorf("step %d (kid %s at +%v): reason %q, want %q", i, s.kid, f.clock.Now().Sub(epoch), got, s.want)
		}
		if got := f.srv.Requests(authtest.JWKSPath); got != s.wantFetches {
			t.Errorf("step %d (kid %s at +%v): %d fetches, want %d", i, s.kid, f.clock.Now().Sub(epoch), got, s.wantFetches)
		}
	}
}

func TestJWKSCache(t *testing.T) {
	signing, _, second := keys(t)
	tests := []struct {
		name  string
		steps []step
	}{
		{name: "second request is served from the cache", steps: []step{
			{kid: testKID, wantFetches: 1},
			{advance: time.Minute, kid: testKID, wantFetches: 1},
			{advance: time.Minute, kid: "kid-2", wantFetches: 1},
		}},
		{name: "cached for the TTL, fetched again after it", steps: []step{
			{kid: testKID, wantFetches: 1},
			{advance: 10*time.Minute - time.Second, kid: testKID, wantFetches: 1},
			{advance: time.Second, kid: testKID, wantFetches: 2},
			{advance: time.Second, kid: testKID, wantFetches: 2},
		}},
		{name: "a key gone after the TTL", steps: []step{
			{kid: "kid-2", wantFetches: 1},
			{serve: []*authtest.Key{signing}, advance: 5 * time.Minute, kid: "kid-2", wantFetches: 1},
			{advance: 5 * time.Minute, kid: "kid-2", want: auth.ReasonKIDNotFound, wantFetches: 2},
		}},
		{name: "unknown kid refreshes at most once per 30s", steps: []step{
			{serve: []*authtest.Key{signing}, kid: testKID, wantFetches: 1},
			// Just fetched: no refresh.
			{advance: time.Second, kid: "kid-2", want: auth.ReasonKIDNotFound, wantFetches: 1},
			{advance: 29 * time.Second, serve: []*authtest.Key{signing, second}, kid: "kid-2", wantFetches: 2},
			{advance: time.Second, kid: "kid-3", want: auth.ReasonKIDNotFound, wantFetches: 2},
			{advance: 28 * time.Second, kid: "kid-3", want: auth.ReasonKIDNotFound, wantFetches: 2},
			{advance: time.Second, kid: "kid-3", want: auth.ReasonKIDNotFound, wantFetches: 3},
			{advance: time.Second, kid: "kid-3", want: auth.ReasonKIDNotFound, wantFetches: 3},
			// Known kids are unaffected by the throttle.
			{advance: time.Second, kid: "kid-2", wantFetches: 3},
		}},
		{name: "a token without kid never refreshes", steps: []step{
			{kid: testKID, wantFetches: 1},
			{advance: time.Hour / 12, kid: "", want: auth.ReasonKIDNotFound, wantFetches: 1},
		}},
		{name: "key rotation is picked up by the refresh", steps: []step{
			{serve: []*authtest.Key{signing}, kid: testKID, wantFetches: 1},
			{advance: time.Minute, serve: []*authtest.Key{second}, kid: "kid-2", wantFetches: 2},
			// The refreshed document replaced the old one.
			{advance: time.Second, kid: testKID, want: auth.ReasonKIDNotFound, wantFetches: 2},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, noTokenCache)
			runSteps(t, f, tt.steps)
		})
	}
}

// TestFailedFetchIsRetriedAfterTheInterval: a failed fetch is not cached
// as a document, but it stands for the host's fetches for RefreshInterval
// (the contract: a failing host is asked at most once per 30 s), then the
// host is asked again.
func TestFailedFetchIsRetriedAfterTheInterval(t *testing.T) {
	f := newFixture(t, noTokenCache)
	tok := f.mint(f.claims())

	f.srv.SetStatus(http.StatusServiceUnavailable)
	for i, advance := range []time.Duration{0, 29 * time.Second, time.Second} {
		f.clock.Advance(advance)
		if got := reasonOf(t, second(f.auth.Authenticate(bearer(tok)))); got != auth.ReasonWrongJWKSHost {
			t.Fatalf("attempt %d: reason %q, want %q", i, got, auth.ReasonWrongJWKSHost)
		}
	}
	if got := f.srv.Requests(authtest.JWKSPath); got != 2 {
		t.Errorf("fetches while failing = %d, want 2 (at 0s and 30s)", got)
	}
	f.srv.SetStatus(0)
	f.clock.Advance(29 * time.Second)
	if got := reasonOf(t, second(f.auth.Authenticate(bearer(tok)))); got != auth.ReasonWrongJWKSHost {
		t.Errorf("recovered host within the interval: reason %q, want %q", got, auth.ReasonWrongJWKSHost)
	}
	f.clock.Advance(time.Second)
	if err := second(f.auth.Authenticate(bearer(tok))); err != nil {
		t.Fatalf("after recovery: %v", err)
	}
	if got := f.srv.Requests(authtest.JWKSPath); got != 3 {
		t.Errorf("fetches = %d, want 3", got)
	}
	want := map[string]int{"error": 2, "ok": 1}
	if diff := cmp.Diff(want, f.obs.counts()); diff != "" {
		t.Errorf("observed fetches (-want +got):\n%s", diff)
	}
}

// TestFailedRefreshIsThrottled: a JWKS that fails while a cached one is
// still valid costs one fetch per refresh interval, not one per request.
func TestFailedRefreshIsThrottled(t *testing.T) {
	f := newFixture(t, noTokenCache)
	runSteps(t, f, []step{{kid: testKID, wantFetches: 1}})
	f.srv.SetStatus(http.StatusInternalServerError)
	runSteps(t, f, []step{
		{advance: 30 * time.Second, kid: "kid-9", want: auth.ReasonWrongJWKSHost, wantFetches: 2},
		{advance: time.Second, kid: "kid-9", want: auth.ReasonKIDNotFound, wantFetches: 2},
		// The cached document still serves known kids.
		{advance: time.Second, kid: testKID, wantFetches: 2},
	})
}

func second[T any](_ T, err error) error { return err }

func TestConcurrentFirstRequestsFetchOnce(t *testing.T) {
	f := newFixture(t, noTokenCache)
	tok := f.mint(f.claims())
	arrived, release := f.srv.Hold()

	const n = 8
	errs := make(chan error, n)
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			_, err := f.auth.Authenticate(bearer(tok))
			errs <- err
		})
	}
	<-arrived
	release()
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Errorf("Authenticate: %v", err)
		}
	}
	if got := f.srv.Requests(authtest.JWKSPath); got != 1 {
		t.Errorf("fetches = %d, want 1", got)
	}
	if diff := cmp.Diff(map[string]int{"ok": 1}, f.obs.counts()); diff != "" {
		t.Errorf("observed fetches (-want +got):\n%s", diff)
	}
}

// TestFetchOutlivesTheRequest: the fetch runs on a context detached from
// the caller's, so a caller whose request has ended does not cancel it.
func TestFetchOutlivesTheRequest(t *testing.T) {
	f := newFixture(t, noTokenCache)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	r := bearer(f.mint(f.claims())).WithContext(ctx)
	if _, err := f.auth.Authenticate(r); err != nil {
		t.Fatalf("Authenticate with a cancelled request: %v", err)
	}
	if _, err := f.auth.Authenticate(bearer(f.mint(f.claims()))); err != nil {
		t.Fatal(err)
	}
	if got := f.srv.Requests(authtest.JWKSPath); got != 1 {
		t.Errorf("fetches = %d, want 1 (the document fetched for the cancelled request is cached)", got)
	}
}

// TestFetchTimeout: a JWKS server that never answers costs FetchTimeout.
// The server holds the request until the test ends, so Authenticate
// returning at all shows the fetch was bounded.
func TestFetchTimeout(t *testing.T) {
	f := newFixture(t, func(c *auth.Config) { c.FetchTimeout = 50 * time.Millisecond })
	_, release := f.srv.Hold()
	t.Cleanup(release)
	_, err := f.auth.Authenticate(bearer(f.mint(f.claims())))
	if got := reasonOf(t, err); got != auth.ReasonWrongJWKSHost {
		t.Errorf("reason %q, want %q", got, auth.ReasonWrongJWKSHost)
	}
	if errors.Unwrap(err) == nil {
		t.Error("no cause to log")
	}
}

func TestUnreachableJWKSHost(t *testing.T) {
	f := newFixture(t, nil)
	host := f.srv.Host()
	f.srv.Close()
	_, err := f.auth.Authenticate(bearer(f.mint(f.claims())))
	if got := reasonOf(t, err); got != auth.ReasonWrongJWKSHost {
		t.Errorf("reason %q, want %q", got, auth.ReasonWrongJWKSHost)
	}
	cause := errors.Unwrap(err)
	if cause == nil || !strings.Contains(cause.Error(), host) {
		t.Errorf("cause %v should name the host %s", cause, host)
	}
	if diff := cmp.Diff(map[string]int{"error": 1}, f.obs.counts()); diff != "" {
		t.Errorf("observed fetches (-want +got):\n%s", diff)
	}
}

func TestUntrustedCertificate(t *testing.T) {
	f := newFixture(t, func(c *auth.Config) { c.HTTPClient = &http.Client{} })
	_, err := f.auth.Authenticate(bearer(f.mint(f.claims())))
	if got := reasonOf(t, err); got != auth.ReasonWrongJWKSHost {
		t.Errorf("reason %q, want %q", got, auth.ReasonWrongJWKSHost)
	}
	http.DefaultTransport.(*http.Transport).CloseIdleConnections()
}

// TestJWKSDocumentLimit: a document of exactly 1 MiB is read, one byte more
// is refused.
func TestJWKSDocumentLimit(t *testing.T) {
	doc, err := authtest.JWKS(func() *authtest.Key { k, _, _ := keys(t); return k }())
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name string
		size int
		want string
	}{
		{name: "exactly 1 MiB", size: 1 << 20},
		{name: "1 MiB and a byte", size: 1<<20 + 1, want: auth.ReasonWrongJWKSHost},
	} {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, nil)
			f.srv.SetJWKS(append(append([]byte{}, doc...), strings.Repeat(" ", tt.size-len(doc))...))
			_, err := f.auth.Authenticate(bearer(f.mint(f.claims())))
			if got := reasonOf(t, err); got != tt.want {
				t.Errorf("reason %q, want %q", got, tt.want)
			}
		})
	}
}

// TestKeyHeadersIgnored: jku, x5u, jwk and x5c name keys or key locations
// the token brings itself; none is fetched or trusted.
func TestKeyHeadersIgnored(t *testing.T) {
	_, foreign, _ := keys(t)
	foreignJWK := foreign.JWK()
	tests := []struct {
		name   string
		header func(f *fixture) map[string]any
		signer *authtest.Key
		want   string
	}{
		{name: "jku", header: func(f *fixture) map[string]any { return map[string]any{"jku": f.evil.URL()} }},
		{name: "x5u", header: func(f *fixture) map[string]any { return map[string]any{"x5u": f.evil.URL()} }},
		{name: "jku and x5u with a foreign signature", signer: foreign, want: auth.ReasonWrongKey,
			header: func(f *fixture) map[string]any {
				return map[string]any{"jku": f.evil.URL(), "x5u": "https://" + f.evil.Host() + "/cert.pem"}
			}},
		{name: "embedded jwk of the signing key", signer: foreign, want: auth.ReasonWrongKey,
			header: func(*fixture) map[string]any { return map[string]any{"jwk": foreignJWK} }},
		{name: "x5c", signer: foreign, want: auth.ReasonWrongKey,
			header: func(*fixture) map[string]any { return map[string]any{"x5c": []string{"MIIB"}} }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, nil)
			signer := f.key
			if tt.signer != nil {
				signer = tt.signer
			}
			tok, err := signer.MintHeader(tt.header(f), f.claims())
			if err != nil {
				t.Fatal(err)
			}
			_, err = f.auth.Authenticate(bearer(tok))
			if got := reasonOf(t, err); got != tt.want {
				t.Errorf("reason %q, want %q", got, tt.want)
			}
			if got := f.evil.TotalRequests(); got != 0 {
				t.Errorf("%d requests reached the URL in the header", got)
			}
		})
	}
}

// TestJWKSHostAllowList: the allow-list is matched exactly (case aside),
// and a jwks_host outside it dials nothing. The client sends every
// connection to the test server and records the address it was asked for.
func TestJWKSHostAllowList(t *testing.T) {
	signing, _, _ := keys(t)
	doc, err := signing.JWKS()
	if err != nil {
		t.Fatal(err)
	}
	srv := newServer(t, doc)
	port := srv.Host()[strings.LastIndexByte(srv.Host(), ':')+1:]
	otherPort := strconv.Itoa(func() int { p, _ := strconv.Atoi(port); return p%60000 + 1 }())
	allowed := []string{"JWKS.Example.com", "jwks.example.com:8443", srv.Host(), "[::1]:" + port}

	tests := []struct {
		host      string
		wantDials []string // nil: refused without a dial
	}{
		{host: "jwks.example.com", wantDials: []string{"jwks.example.com:443"}},
		{host: "JWKS.EXAMPLE.COM", wantDials: []string{"jwks.example.com:443"}},
		{host: "jwks.example.com:8443", wantDials: []string{"jwks.example.com:8443"}},
		{host: srv.Host(), wantDials: []string{srv.Host()}},
		{host: "[::1]:" + port, wantDials: []string{"[::1]:" + port}},
		// Port variations.
		{host: "jwks.example.com:443"},
		{host: "jwks.example.com:8444"},
		{host: "jwks.example.com:08443"},
		{host: "jwks.example.com:"},
		{host: "127.0.0.1"},
		{host: "127.0.0.1:" + otherPort},
		{host: "[::1]"},
		{host: "[0:0::1]:" + port},
		// Other names for an allowed address.
		{host: "localhost:" + port},
		{host: "127.1:" + port},
		{host: "2130706433:" + port},
		{host: "0x7f.0.0.1:" + port},
		{host: "127.0.0.2:" + port},
		{host: "jwks.example.com."},
		// Suffixes, prefixes and URL tricks.
		{host: "jwks.example.com.evil.com"},
		{host: "evil.jwks.example.com"},
		{host: "evil.com/jwks.example.com"},
		{host: "jwks.example.com/"},
		{host: "jwks.example.com/.well-known/jwks?"},
		{host: "jwks.example.com@evil.com"},
		{host: "jwks.example.com:443@evil.com"},
		{host: "jwks.example.com:8443@evil.com"},
		{host: srv.Host() + "@evil.com"},
		{host: "evil.com#@jwks.example.com"},
		{host: "evil.com?jwks.example.com"},
		{host: "jwks.example.com#"},
		{host: `jwks.example.com\@evil.com`},
		{host: "jwks.example.com%2F@evil.com"},
		{host: "https://jwks.example.com"},
		{host: "//jwks.example.com"},
		{host: " jwks.example.com"},
		{host: "jwks.example.com "},
		{host: "jwks.example.com\x00"},
		{host: "jwks.example.com\r\nHost: evil.com"},
		{host: "jwks\u3002example\u3002com"},
	}
	for _, tt := range tests {
		t.Run(tt.host, func(t *testing.T) {
			var rec dialRecorder
			f := newFixture(t, func(c *auth.Config) {
				c.JWKSHosts = allowed
				c.HTTPClient = rec.client(t, srv)
			})
			tok := f.mint(with(f.claims(), map[string]any{"jwks_host": tt.host}))
			_, err := f.auth.Authenticate(bearer(tok))
			want := ""
			if tt.wantDials == nil {
				want = auth.ReasonWrongJWKSHost
			}
			if got := reasonOf(t, err); got != want {
				t.Errorf("reason %q, want %q", got, want)
			}
			if diff := cmp.Diff(tt.wantDials, rec.addrs(), cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("dials (-want +got):\n%s", diff)
			}
		})
	}
}

func TestObserverOutcomes(t *testing.T) {
	f := newFixture(t, noTokenCache)
	steps := []func(){
		func() { f.srv.SetJWKS([]byte("not json")) },
		func() { f.srv.SetRedirect(f.evil.URL()) },
		func() { f.srv.SetRedirect(""); f.srv.SetStatus(http.StatusForbidden) },
		func() { f.srv.SetStatus(0); doc, _ := f.key.JWKS(); f.srv.SetJWKS(doc) },
	}
	for _, s := range steps {
		s()
		_, _ = f.auth.Authenticate(bearer(f.mint(f.claims())))
		// A failing host is asked again only after the refresh interval.
		f.clock.Advance(auth.DefaultRefreshInterval)
	}
	if diff := cmp.Diff(map[string]int{"error": 3, "ok": 1}, f.obs.counts()); diff != "" {
		t.Errorf("observed fetches (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(map[string]int{"jwks_unavailable": 3}, f.obs.refusals()); diff != "" {
		t.Errorf("observed refusals (-want +got):\n%s", diff)
	}
}
