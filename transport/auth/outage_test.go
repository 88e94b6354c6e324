package auth_test

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pulsedive-relay/relay/transport/auth"
	"github.com/pulsedive-relay/relay/transport/authtest"
)

// outages are the ways a JWKS host fails once it has served good keys.
// Each breaks the fixture's host and names what the fetch-failure log
// line must say.
var outages = []struct {
	name      string
	fail      func(*fixture)
	restore   func(*fixture) // nil: the host cannot come back
	fetchErr  string
	causeText string
}{
	{name: "HTTP 500",
		fail:     func(f *fixture) { f.srv.SetStatus(http.StatusInternalServerError) },
		restore:  func(f *fixture) { f.srv.SetStatus(0) },
		fetchErr: "http_status", causeText: "HTTP 500"},
	{name: "not a JWKS",
		fail:     func(f *fixture) { f.srv.SetJWKS([]byte("<html>maintenance</html>")) },
		restore:  func(f *fixture) { f.serveKeys() },
		fetchErr: "not_jwks", causeText: "not a JWKS"},
	{name: "no usable key",
		fail:     func(f *fixture) { f.srv.SetJWKS([]byte(`{"keys":[]}`)) },
		restore:  func(f *fixture) { f.serveKeys() },
		fetchErr: "no_usable_key", causeText: "no usable RSA signing key"},
	{name: "redirect",
		fail:     func(f *fixture) { f.srv.SetRedirect(f.evil.URL()) },
		restore:  func(f *fixture) { f.srv.SetRedirect("") },
		fetchErr: "redirect", causeText: "HTTP 302"},
	{name: "host down",
		fail:     func(f *fixture) { f.srv.Close() },
		fetchErr: "connection_refused", causeText: "connection refused"},
}

// serveKeys serves the fixture's usual document again.
func (f *fixture) serveKeys() {
	f.t.Helper()
	signing, _, second := keys(f.t)
	doc, err := authtest.JWKS(signing, second)
	if err != nil {
		f.t.Fatal(err)
	}
	f.srv.SetJWKS(doc)
}

// fetches is how many JWKS fetches reached for the network, failed ones
// included (a closed server counts none itself).
func (f *fixture) fetches() int {
	c := f.obs.counts()
	return c["ok"] + c["error"]
}

// TestKeysOutliveTheirHost: once a host's JWKS is past its TTL and every
// refetch fails, tokens of the keys fetched before keep verifying up to
// MaxKeyAge (24 h by default), and are refused as "Wrong jwks_host" after
// it, cached tokens included; the host is asked at most once per 30 s; the
// failure is logged with its cause, and the recovery once.
func TestKeysOutliveTheirHost(t *testing.T) {
	for _, o := range outages {
		for _, cache := range []struct {
			name string
			size int
		}{{"token cache", 0}, {"no token cache", -1}} {
			t.Run(o.name+"/"+cache.name, func(t *testing.T) {
				f := newFixture(t, func(c *auth.Config) { c.TokenCacheSize = cache.size })
				_, _, secondKey := keys(t)
				var held string // a token verified shortly before MaxKeyAge ends
				steps := []struct {
					at          time.Duration // since the first fetch
					kid         string        // "" signs with kid-1; "held" reuses held
					want        string
					wantFetches int
				}{
					{at: 0, wantFetches: 1},
					// The host breaks here. Past the TTL: one fetch, which
					// fails, and the keys held still verify.
					{at: 10 * time.Minute, wantFetches: 2},
					{at: 10*time.Minute + time.Second, kid: "kid-2", wantFetches: 2},
					{at: 10*time.Minute + 29*time.Second, kid: "kid-9", want: auth.ReasonKIDNotFound, wantFetches: 2},
					{at: 10*time.Minute + 30*time.Second, wantFetches: 3},
					{at: 10*time.Minute + 31*time.Second, wantFetches: 3},
					{at: 23*time.Hour + 55*time.Minute, kid: "mint held", wantFetches: 4},
					{at: 24*time.Hour - time.Second, kid: "kid-2", wantFetches: 5},
					// MaxKeyAge after the last good fetch: refused, without
					// a fetch (the host was asked a second ago).
					{at: 24 * time.Hour, kid: "held", want: auth.ReasonWrongJWKSHost, wantFetches: 5},
					{at: 24 * time.Hour, want: auth.ReasonWrongJWKSHost, wantFetches: 5},
					{at: 24*time.Hour + 28*time.Second, want: auth.ReasonWrongJWKSHost, wantFetches: 5},
					{at: 24*time.Hour + 29*time.Second, want: auth.ReasonWrongJWKSHost, wantFetches: 6},
				}
				for i, s := range steps {
					if i == 1 {
						o.fail(f)
					}
					f.clock.Advance(epoch.Add(s.at).Sub(f.clock.Now()))
					var tok string
					switch s.kid {
					case "held":
						tok = held
					case "kid-2":
						var err error
						if tok, err = secondKey.Mint(f.claims()); err != nil {
							t.Fatal(err)
						}
					case "kid-9":
						var err error
						if tok, err = f.key.MintHeader(map[string]any{"kid": "kid-9"}, f.claims()); err != nil {
							t.Fatal(err)
						}
					default:
						tok = f.mint(f.claims())
						if s.kid == "mint held" {
							held = tok
						}
					}
					_, err := f.auth.Authenticate(bearer(tok))
					if got := reasonOf(t, err); got != s.want {
						t.Errorf("step %d at +%v: reason %q, want %q", i, s.at, got, s.want)
					}
					if got := f.fetches(); got != s.wantFetches {
						t.Errorf("step %d at +%v: %d fetches, want %d", i, s.at, got, s.wantFetches)
					}
				}

				failed := f.logs.records(t, "JWKS fetch failed")
				if len(failed) == 0 {
					t.Fatalf("no \"JWKS fetch failed\" line:\n%s", f.logs.text())
				}
				first := failed[0]
				for field, want := range map[string]string{
					"level": "WARN", "jwks_host": f.srv.Host(), "fetch_error": o.fetchErr,
					"cause": o.causeText, "keys": "the last good keys keep verifying",
					"keys_usable_until": epoch.Add(24 * time.Hour).Format(time.RFC3339),
				} {
					if got := first.str(field); !strings.Contains(got, want) {
						t.Errorf("first fetch-failure line: %s = %q, want it to hold %q\n%v", field, got, want, first)
					}
				}
				if got, want := failed[len(failed)-1].str("keys"), "past their maximum age"; !strings.Contains(got, want) {
					t.Errorf("last fetch-failure line: keys = %q, want it to hold %q", got, want)
				}

				if o.restore == nil {
					return
				}
				o.restore(f)
				f.logs.reset()
				for range 3 {
					f.clock.Advance(30 * time.Second)
					if err := second(f.auth.Authenticate(bearer(f.mint(f.claims())))); err != nil {
						t.Errorf("after the host came back: %v", err)
					}
				}
				if got := f.fetches(); got != 7 {
					t.Errorf("fetches after the host came back = %d, want 7", got)
				}
				if diff := f.logs.levels(t, ""); len(diff) != 1 || diff["INFO"] != 1 {
					t.Errorf("lines after the recovery = %v, want one INFO line\n%s", diff, f.logs.text())
				}
				if got := f.logs.records(t, "JWKS fetch succeeded again"); len(got) != 1 || got[0].str("failed_fetches") != "5" {
					t.Errorf("recovery lines = %v, want one with failed_fetches 5", got)
				}
			})
		}
	}
}

// forged is a token naming the fixture's host, signed by nobody: a kid
// (a random one when kid is ""), a valid-looking payload and 256 random
// bytes of signature. Minting is cheap, so thousands can be made.
func (f *fixture) forged(kid string) string {
	f.t.Helper()
	if kid == "" {
		kid = "forged-" + rand.Text()
	}
	h, err := json.Marshal(map[string]any{"alg": "RS256", "typ": "JWT", "kid": kid})
	if err != nil {
		f.t.Fatal(err)
	}
	p, err := json.Marshal(f.claims())
	if err != nil {
		f.t.Fatal(err)
	}
	sig := make([]byte, 256)
	_, _ = rand.Read(sig)
	enc := base64.RawURLEncoding.EncodeToString
	return enc(h) + "." + enc(p) + "." + enc(sig)
}

// TestFetchesPerHostBounded: 2,000 forged tokens (random kids, and the
// known kid with a bad signature) cost a JWKS host at most one fetch per
// 30 s, counted on the server, whether it fails with no keys held, fails
// with keys past their TTL, or is healthy and asked for unknown kids; and
// one fetch in all when they arrive at once.
func TestFetchesPerHostBounded(t *testing.T) {
	const tokens = 2000
	hosts := []struct {
		name  string
		setup func(*fixture)
	}{
		{name: "failing host, no keys held", setup: func(f *fixture) {
			f.srv.SetStatus(http.StatusInternalServerError)
		}},
		{name: "failing host, keys past their TTL", setup: func(f *fixture) {
			if err := second(f.auth.Authenticate(bearer(f.mint(f.claims())))); err != nil {
				f.t.Fatal(err)
			}
			f.srv.SetStatus(http.StatusInternalServerError)
			f.clock.Advance(auth.DefaultJWKSTTL)
		}},
		{name: "healthy host, unknown kids"},
	}
	for _, h := range hosts {
		t.Run(h.name+"/one every 100ms", func(t *testing.T) {
			f := newFixture(t, noTokenCache)
			if h.setup != nil {
				h.setup(f)
			}
			before := f.srv.Requests(authtest.JWKSPath)
			start := f.clock.Now()
			for i := range tokens {
				kid := ""
				if i%2 == 1 {
					kid = testKID
				}
				if err := second(f.auth.Authenticate(bearer(f.forged(kid)))); err == nil {
					t.Fatal("a forged token was accepted")
				}
				f.clock.Advance(100 * time.Millisecond)
			}
			elapsed := f.clock.Now().Sub(start) // 200 s
			// Fetches at 0 s, 30 s, ..., 180 s.
			want := int((elapsed-time.Nanosecond)/auth.DefaultRefreshInterval) + 1
			if got := f.srv.Requests(authtest.JWKSPath) - before; got != want {
				t.Errorf("%d fetches in %v of fake time, want %d (one per 30 s)", got, elapsed, want)
			}
		})
		t.Run(h.name+"/all at once", func(t *testing.T) {
			f := newFixture(t, noTokenCache)
			if h.setup != nil {
				h.setup(f)
			}
			before := f.srv.Requests(authtest.JWKSPath)
			forged := make([]string, tokens)
			for i := range forged {
				kid := ""
				if i%2 == 1 {
					kid = testKID
				}
				forged[i] = f.forged(kid)
			}
			var wg sync.WaitGroup
			var accepted sync.Once
			for _, tok := range forged {
				wg.Go(func() {
					if err := second(f.auth.Authenticate(bearer(tok))); err == nil {
						accepted.Do(func() { t.Error("a forged token was accepted") })
					}
				})
			}
			wg.Wait()
			if got := f.srv.Requests(authtest.JWKSPath) - before; got != 1 {
				t.Errorf("%d fetches for %d concurrent forged tokens, want 1", got, tokens)
			}
		})
	}
}

// TestMaxKeyAge: the default is 24 h, a shorter value is honoured, and a
// value below the TTL counts as the TTL.
func TestMaxKeyAge(t *testing.T) {
	tests := []struct {
		name   string
		maxAge time.Duration
		ttl    time.Duration
		last   time.Duration // the last instant a token still verifies
	}{
		{name: "default", last: 24*time.Hour - time.Second},
		{name: "one hour", maxAge: time.Hour, last: time.Hour - time.Second},
		{name: "below the TTL", maxAge: time.Minute, ttl: 10 * time.Minute, last: 10*time.Minute - time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, func(c *auth.Config) {
				c.MaxKeyAge, c.JWKSTTL, c.TokenCacheSize = tt.maxAge, tt.ttl, -1
			})
			check := func(at time.Duration, want string) {
				t.Helper()
				f.clock.Advance(epoch.Add(at).Sub(f.clock.Now()))
				if got := reasonOf(t, second(f.auth.Authenticate(bearer(f.mint(f.claims()))))); got != want {
					t.Errorf("at +%v: reason %q, want %q", at, got, want)
				}
			}
			check(0, "")
			f.srv.SetStatus(http.StatusBadGateway)
			check(tt.last, "")
			check(tt.last+time.Second, auth.ReasonWrongJWKSHost)
		})
	}
}

func ExampleConfig_maxKeyAge() {
	a, err := auth.New(auth.Config{
		JWKSHosts: []string{"visibility.amp.cisco.com"},
		MaxKeyAge: 6 * time.Hour, // trust the last good keys for 6 h of JWKS outage
	})
	fmt.Println(a != nil, err)
	// Output: true <nil>
}
