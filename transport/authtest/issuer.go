package authtest

import (
	"fmt"
	"time"
)

// Issuer plays Threat Response: a key and a JWKS server publishing it. It
// is what tests of other packages and the demo need to mint tokens the
// relay accepts: allow-list Server.Host() and fetch with Server.Client()
// (or SSL_CERT_FILE from Server.WriteCAFile).
type Issuer struct {
	Key    *Key
	Server *JWKSServer
}

// NewIssuer generates a key published under kid and serves its JWKS on a
// free loopback port. Close it when done.
func NewIssuer(kid string) (*Issuer, error) {
	k, err := NewKey(kid)
	if err != nil {
		return nil, fmt.Errorf("issuer: %w", err)
	}
	return NewIssuerWithKey(k, ServerConfig{})
}

// NewIssuerWithKey serves k's JWKS with cfg (cfg.JWKS is replaced by k's
// document), for a fixed key or listen address.
func NewIssuerWithKey(k *Key, cfg ServerConfig) (*Issuer, error) {
	doc, err := k.JWKS()
	if err != nil {
		return nil, fmt.Errorf("issuer: %w", err)
	}
	cfg.JWKS = doc
	srv, err := NewJWKSServer(cfg)
	if err != nil {
		return nil, fmt.Errorf("issuer: %w", err)
	}
	return &Issuer{Key: k, Server: srv}, nil
}

// Token mints a token naming this issuer's server as jwks_host, for
// audience aud and the Pulsedive key apiKey, issued at now and expiring
// ttl later (no exp when ttl is 0).
func (i *Issuer) Token(aud, apiKey string, now time.Time, ttl time.Duration) (string, error) {
	return i.Key.Mint(Claims(i.Server.Host(), aud, apiKey, now, ttl))
}

// Close shuts the server down.
func (i *Issuer) Close() { i.Server.Close() }
