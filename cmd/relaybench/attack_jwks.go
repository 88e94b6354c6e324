package main

import (
	"context"
	"fmt"
	"math"
	"net/http"
	"os/exec"
	"strings"
	"sync/atomic"
	"time"

	"github.com/pulsedive-relay/relay/transport/authtest"
)

// jwksHostsPlaceholder, in a row's env, stands for the bench's JWKS host.
const jwksHostsPlaceholder = "{jwks}"

// jwksTTLSetting is the relay setting that shortens its JWKS cache, so
// that a row can outlive the cache in seconds rather than ten minutes. A
// relay without it cannot run jwks-down, which then fails saying so.
const jwksTTLSetting = "RELAY_JWKS_TTL"

// Rows of the JWKS host failing.
func jwksRows() []attackRow {
	return []attackRow{
		{
			name:  "jwks-down",
			title: "the JWKS host down once the cached JWKS has expired; tokens verified before keep coming",
			owner: "transport/auth (keep the last good keys)",
			env:   map[string]string{jwksTTLSetting: "2s"},
			run:   runJWKSDown,
		},
		{
			name:  "forged-tokens",
			title: "the JWKS host failing, 2,000 forged tokens with unknown kids",
			owner: "transport/auth (at most one fetch per host per 30 s)",
			env:   map[string]string{"RELAY_JWKS_HOSTS": jwksHostsPlaceholder + "," + deadJWKSHost},
			run:   runForgedTokens,
		},
	}
}

// relayHasSetting says whether the relay binary knows the setting: its
// check-config lists every one.
func (a *attack) relayHasSetting(ctx context.Context, name string) (bool, error) {
	if a.st.relay == nil {
		return true, nil // an external relay: the operator's word
	}
	bin, err := a.b.binary(ctx)
	if err != nil {
		return false, err
	}
	out, err := exec.CommandContext(ctx, bin, "check-config").Output()
	if err != nil {
		return false, fmt.Errorf("%s check-config: %w", bin, err)
	}
	return strings.Contains(string(out), "\n"+name+"="), nil
}

func runJWKSDown(ctx context.Context, a *attack) error {
	ok, err := a.relayHasSetting(ctx, jwksTTLSetting)
	if err != nil {
		return err
	}
	// Not an invariant: whether the outage can be staged depends on a
	// setting, not on the relay's behaviour; -strict makes it decisive.
	f := a.r.add("jwks_expired", "JWKS cache expired during the row ("+jwksTTLSetting+" honoured)", 0, unitCount).aim(opEqual, 1)
	if !ok {
		a.r.note("This relay has no %s: its JWKS cache (10 minutes) cannot expire within the row, so the outage was not reproduced.", jwksTTLSetting)
	}
	jwks := a.b.jwks
	jwks.SetStatus(http.StatusServiceUnavailable)
	defer jwks.SetStatus(0)
	before := jwks.Requests(authtest.JWKSPath)
	start := time.Now()
	<-ctx.Done()
	// The relay's own count of failures would include none made before
	// the row; the host's count of requests is exact.
	if ok && time.Since(start) > 2*time.Second {
		f.Value = 1
	}
	a.jwksFetches(jwks.Requests(authtest.JWKSPath)-before, time.Since(start))
	return nil
}

// deadJWKSHost is a jwks_host the forged-tokens row allows besides the
// bench's own: nothing listens there, so every fetch of it fails at once.
const deadJWKSHost = "127.0.0.1:1"

func runForgedTokens(ctx context.Context, a *attack) error {
	forger, err := authtest.NewKey("forger")
	if err != nil {
		return err
	}
	const tokens = 2000
	forged := make([]string, tokens)
	for i := range forged {
		claims := authtest.Claims(deadJWKSHost, a.b.opts.Audience, a.b.apiKey("forged"), time.Now(), time.Hour)
		if forged[i], err = forger.MintHeader(map[string]any{"kid": fmt.Sprintf("forged-%d", i)}, claims); err != nil {
			return err
		}
	}
	before, err := a.jwksErrors(ctx)
	if err != nil {
		return err
	}
	start := time.Now()
	body := body([]observable{a.b.values.next()})
	var next atomic.Int64
	a.crowd(ctx, 50, 30*time.Second, "forged-token requests", func(ctx context.Context, lc *loadClient, t *outcomes) error {
		i := next.Add(1) - 1
		if i >= tokens {
			<-ctx.Done() // all sent: the row's time runs out
			return nil
		}
		_, err := t.send(ctx, lc, request{Kind: "observe", Path: "/observe/observables", Body: body, Token: forged[i]})
		return err
	})
	after, err := a.jwksErrors(context.WithoutCancel(ctx))
	if err != nil {
		return err
	}
	a.jwksFetches(int(after-before), time.Since(start))
	return nil
}

// jwksErrors is the relay's count of failed JWKS fetches.
func (a *attack) jwksErrors(ctx context.Context) (float64, error) {
	m, err := a.st.scrape(ctx)
	if err != nil {
		return 0, err
	}
	return float64(m.byLabel("pulsedive_relay_jwks_fetches_total", "outcome")["error"]), nil
}

// jwksFetches adds how often the failing JWKS host was asked, against the
// contract's at most once per 30 s.
func (a *attack) jwksFetches(n int, d time.Duration) {
	allowed := math.Ceil(d.Seconds() / 30)
	a.r.add("jwks_fetches", fmt.Sprintf("fetches of the failing JWKS host in %.0f s", d.Seconds()), float64(n), unitCount).want(opAtMost, allowed).headline()
}
