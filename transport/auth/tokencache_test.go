package auth_test

import (
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/pulsedive-relay/relay/transport/auth"
	"github.com/pulsedive-relay/relay/transport/authtest"
)

// cacheStep advances the clock, then authenticates and expects want.
type cacheStep struct {
	advance time.Duration
	want    string
}

// TestTokenCache pins what a cached verification may and may not skip.
func TestTokenCache(t *testing.T) {
	tests := []struct {
		name string
		// exp of the token relative to the epoch; 0 omits it.
		exp   time.Duration
		steps []cacheStep
	}{
		{name: "a hit honours exp", exp: time.Minute, steps: []cacheStep{
			{},
			{advance: time.Minute - time.Second},
			{advance: time.Second, want: auth.ReasonExpired},
			{advance: time.Hour, want: auth.ReasonExpired},
		}},
		{name: "a token without exp stays valid", steps: []cacheStep{
			{},
			{advance: 24 * time.Hour},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, nil)
			claims := f.claims()
			delete(claims, "exp")
			if tt.exp != 0 {
				claims["exp"] = epoch.Add(tt.exp).Unix()
			}
			tok := f.mint(claims)
			for i, s := range tt.steps {
				f.clock.Advance(s.advance)
				_, err := f.auth.Authenticate(bearer(tok))
				if got := reasonOf(t, err); got != s.want {
					t.Errorf("step %d: reason %q, want %q", i, got, s.want)
				}
			}
		})
	}
}

// TestTokenCacheIsPerAudience: a token accepted for one request's audience
// is not accepted from the cache for another audience.
func TestTokenCacheIsPerAudience(t *testing.T) {
	f := newFixture(t, func(c *auth.Config) { c.Audiences = nil })
	tok := f.mint(with(f.claims(), map[string]any{"aud": "http://relay.example"}))
	for i, tt := range []struct {
		target string
		want   string
	}{
		{target: "http://relay.example/health"},
		{target: "http://relay.example/observe/observables"},
		{target: "http://relay.example:80/health"}, // another spelling of the same audience
		{target: "http://other.example/health", want: auth.ReasonWrongAudience},
		{target: "https://relay.example/health", want: auth.ReasonWrongAudience},
	} {
		r := httptest.NewRequest(http.MethodPost, tt.target, nil)
		r.Header.Set("Authorization", "Bearer "+tok)
		_, err := f.auth.Authenticate(r)
		if got := reasonOf(t, err); got != tt.want {
			t.Errorf("request %d to %s: reason %q, want %q", i, tt.target, got, tt.want)
		}
	}
}

// TestTokenCacheBoundedByJWKSTTL: a cached token is verified again once the
// JWKS it was verified with would have been refetched, so a key withdrawn
// from the JWKS stops working within JWKSTTL.
func TestTokenCacheBoundedByJWKSTTL(t *testing.T) {
	f := newFixture(t, nil)
	tok := f.mint(with(f.claims(), map[string]any{"exp": nil}))
	if _, err := f.auth.Authenticate(bearer(tok)); err != nil {
		t.Fatal(err)
	}
	_, _, second := keys(t)
	doc, err := authtest.JWKS(second)
	if err != nil {
		t.Fatal(err)
	}
	f.srv.SetJWKS(doc)
	f.clock.Advance(10*time.Minute - time.Second)
	if _, err := f.auth.Authenticate(bearer(tok)); err != nil {
		t.Errorf("within the TTL: %v", err)
	}
	f.clock.Advance(time.Second)
	_, err = f.auth.Authenticate(bearer(tok))
	if got := reasonOf(t, err); got != auth.ReasonKIDNotFound {
		t.Errorf("after the TTL: reason %q, want %q", got, auth.ReasonKIDNotFound)
	}
}
