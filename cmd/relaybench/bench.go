package main

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"time"

	"github.com/pulsedive-relay/relay/transport/authtest"
)

// relayPackage is what relaybench builds when no -relay-bin is given; go
// build resolves it from the current directory, which must be inside the
// module.
const relayPackage = "github.com/pulsedive-relay/relay/cmd/relay"

// bench is what one relaybench run shares across its scenarios: a work
// directory, the token signing key and the JWKS server that publishes it,
// the CA file the relay trusts it through, and the relay binary.
type bench struct {
	opts   options
	stderr io.Writer
	dir    string
	key    *authtest.Key
	jwks   *authtest.JWKSServer
	caFile string
	// nonce makes this run's observable values new to a relay that has
	// served earlier runs (-relay-url).
	nonce  string
	values *valueSource

	mu       sync.Mutex
	relayBin string
	tokens   map[string]string
}

func newBench(ctx context.Context, opts options, stderr io.Writer) (*bench, error) {
	dir, err := os.MkdirTemp("", "relaybench-")
	if err != nil {
		return nil, fmt.Errorf("work directory: %w", err)
	}
	b := &bench{opts: opts, stderr: stderr, dir: dir, relayBin: opts.RelayBin, tokens: map[string]string{}}
	ok := false
	defer func() {
		if !ok {
			b.close()
		}
	}()
	var n [4]byte
	_, _ = rand.Read(n[:])
	b.nonce = hex.EncodeToString(n[:])
	b.values = newValueSource(b.nonce)

	if b.key, err = signingKey(opts.KeyFile, "relaybench-"+b.nonce); err != nil {
		return nil, err
	}
	doc, err := b.key.JWKS()
	if err != nil {
		return nil, err
	}
	if b.jwks, err = authtest.NewJWKSServer(authtest.ServerConfig{JWKS: doc, Addr: opts.JWKSAddr}); err != nil {
		return nil, err
	}
	b.caFile = cmp.Or(opts.CAFile, filepath.Join(dir, "jwks-ca.pem"))
	if err := b.jwks.WriteCAFile(b.caFile); err != nil {
		return nil, err
	}
	if opts.RelayURL != "" {
		b.progress("targeting the relay at %s: it must run with RELAY_JWKS_HOSTS=%s SSL_CERT_FILE=%s RELAY_AUDIENCE=%s",
			opts.RelayURL, b.jwks.Host(), b.caFile, opts.Audience)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	ok = true
	return b, nil
}

// close stops the JWKS server and removes the work directory unless -keep.
func (b *bench) close() {
	if b.jwks != nil {
		b.jwks.Close()
	}
	if b.opts.Keep {
		b.progress("work directory kept: %s", b.dir)
		return
	}
	_ = os.RemoveAll(b.dir)
}

// progress writes one line on stderr unless -q.
func (b *bench) progress(format string, args ...any) {
	if b.opts.Quiet {
		return
	}
	fmt.Fprintf(b.stderr, "relaybench: "+format+"\n", args...)
}

// binary returns the relay binary, building it into the work directory on
// first use when -relay-bin was not given.
func (b *bench) binary(ctx context.Context) (string, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.relayBin != "" {
		return b.relayBin, nil
	}
	bin := filepath.Join(b.dir, "relay")
	b.progress("building the relay: go build -o %s %s", bin, relayPackage)
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, relayPackage)
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build %s (run relaybench from inside the module, or pass -relay-bin): %w\n%s", relayPackage, err, out)
	}
	b.relayBin = bin
	return bin, nil
}

// token returns a configuration token carrying apiKey, valid for two
// hours, minted once per key as Threat Response reuses its token.
func (b *bench) token(apiKey string) (string, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if tok, ok := b.tokens[apiKey]; ok {
		return tok, nil
	}
	tok, err := b.key.Mint(authtest.Claims(b.jwks.Host(), b.opts.Audience, apiKey, time.Now(), 2*time.Hour))
	if err != nil {
		return "", fmt.Errorf("mint token: %w", err)
	}
	b.tokens[apiKey] = tok
	return tok, nil
}

// apiKey names a Pulsedive key of this run: distinct per run so that a
// long-running relay's rate-limit state and cache do not carry over.
func (b *bench) apiKey(name string) string { return "relaybench-" + b.nonce + "-" + name }

// signingKey returns a new key published under kid, or, with a path, the
// key stored there under the kid "relaybench", creating the file when
// missing.
func signingKey(path, kid string) (*authtest.Key, error) {
	if path == "" {
		return authtest.NewKey(kid)
	}
	pemBytes, err := os.ReadFile(path)
	if err == nil {
		return authtest.ParseKeyPEM(pemBytes, "relaybench")
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("key file: %w", err)
	}
	key, err := authtest.NewKey("relaybench")
	if err != nil {
		return nil, err
	}
	if pemBytes, err = key.PrivateKeyPEM(); err != nil {
		return nil, err
	}
	if err := os.WriteFile(path, pemBytes, 0o600); err != nil {
		return nil, fmt.Errorf("key file: %w", err)
	}
	return key, nil
}
