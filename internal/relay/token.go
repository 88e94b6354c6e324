package relay

import (
	"bytes"
	"context"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/pulsedive-relay/relay/transport/auth/issue"
)

const tokenSummary = `Mint a configuration token as Threat Response does (CONTRACT.md section 3): RS256,
signed with the PEM private key, header kid, payload jwks_host, aud, key (the
Pulsedive API key), iat, exp and, with -entities-limit, CTR_ENTITIES_LIMIT.
Prints only the token. Publish the key's public part with 'relay jwks' at
https://JWKS-HOST/.well-known/jwks, and allow-list JWKS-HOST in the relay's
RELAY_JWKS_HOSTS.

Give the Pulsedive key in exactly one way. -pulsedive-key KEY is simplest but
lands in shell history and the process list; -pulsedive-key-env NAME reads
the environment variable NAME; -pulsedive-key-file PATH reads a file (use
/dev/stdin to pipe it, e.g. 'pass show pulsedive | relay token ...
-pulsedive-key-file /dev/stdin'); surrounding white space is trimmed.

Example:
  relay token -key key.pem -jwks-host jwks.example.com -aud https://relay.example.com \
    -pulsedive-key-env PULSEDIVE_API_KEY -ttl 1h`

const jwksSummary = `Print the JWKS document, {"keys":[...]}, holding the public part of the
PEM private key, for publishing at https://JWKS-HOST/.well-known/jwks: the
relay fetches it to verify tokens minted by 'relay token' with the same key.`

const kidUsage = "key id (kid) of the key; default: its RFC 7638 JWK thumbprint, the same in token and jwks"

// tokenCommand mints a configuration token (see tokenSummary). Its errors
// name flags, files and variables, never the Pulsedive key.
func tokenCommand(_ context.Context, args []string, env environment) error {
	fs := newFlagSet("token", tokenSummary, env)
	keyFile := fs.String("key", "", "PEM file of the RSA private key, PKCS#1 or PKCS#8 (required)")
	jwksHost := fs.String("jwks-host", "", "jwks_host claim: host[:port] serving /.well-known/jwks over HTTPS (required)")
	aud := fs.String("aud", "", "aud claim: the relay's audience, RELAY_AUDIENCE or its root URL (required)")
	apiKey := fs.String("pulsedive-key", "", "the Pulsedive API key, the key claim")
	apiKeyEnv := fs.String("pulsedive-key-env", "", "read the Pulsedive API key from this environment variable")
	apiKeyFile := fs.String("pulsedive-key-file", "", "read the Pulsedive API key from this file (/dev/stdin for a pipe)")
	limit := fs.Int("entities-limit", 0, "CTR_ENTITIES_LIMIT claim; 0 leaves it out (the relay's default applies)")
	ttl := fs.Duration("ttl", time.Hour, "lifetime: exp is iat plus this; 0 leaves exp out")
	kid := fs.String("kid", "", kidUsage)
	if done, err := parseFlags(fs, args, env); done {
		return err
	}

	var problems []string
	for _, req := range []struct{ flag, value string }{{"-key", *keyFile}, {"-jwks-host", *jwksHost}, {"-aud", *aud}} {
		if strings.TrimSpace(req.value) == "" {
			problems = append(problems, req.flag+" is required")
		}
	}
	if *jwksHost != "" {
		if err := checkJWKSHost(*jwksHost); err != nil {
			problems = append(problems, err.Error())
		}
	}
	sources := 0
	for _, v := range []string{*apiKey, *apiKeyEnv, *apiKeyFile} {
		if v != "" {
			sources++
		}
	}
	if sources != 1 {
		problems = append(problems, "give the Pulsedive key with exactly one of -pulsedive-key, -pulsedive-key-env, -pulsedive-key-file")
	}
	if *limit < 0 {
		problems = append(problems, "-entities-limit must be positive, or 0 to leave it out")
	}
	if *ttl < 0 {
		problems = append(problems, "-ttl must not be negative")
	}
	if len(problems) > 0 {
		return commandUsageError(fs, "token: "+strings.Join(problems, "; "))
	}

	secret, err := pulsediveKey(*apiKey, *apiKeyEnv, *apiKeyFile, env.getenv)
	if err != nil {
		return err
	}
	key, err := readKey(*keyFile, *kid)
	if err != nil {
		return err
	}
	claims := issue.Claims(strings.TrimSpace(*jwksHost), *aud, secret, time.Now(), *ttl)
	if *limit > 0 {
		claims["CTR_ENTITIES_LIMIT"] = *limit
	}
	token, err := key.Mint(claims)
	if err != nil {
		return fmt.Errorf("token: %w", err)
	}
	_, err = fmt.Fprintln(env.stdout, token)
	return err
}

// jwksCommand prints the JWKS document of a key file (see jwksSummary).
func jwksCommand(_ context.Context, args []string, env environment) error {
	fs := newFlagSet("jwks", jwksSummary, env)
	keyFile := fs.String("key", "", "PEM file of the RSA private key, PKCS#1 or PKCS#8 (required)")
	kid := fs.String("kid", "", kidUsage)
	if done, err := parseFlags(fs, args, env); done {
		return err
	}
	if *keyFile == "" {
		return commandUsageError(fs, "jwks: -key is required")
	}
	key, err := readKey(*keyFile, *kid)
	if err != nil {
		return err
	}
	doc, err := key.JWKS()
	if err != nil {
		return fmt.Errorf("jwks: %w", err)
	}
	var out bytes.Buffer
	if err := json.Indent(&out, doc, "", "  "); err != nil {
		return fmt.Errorf("jwks: %w", err)
	}
	out.WriteByte('\n')
	_, err = env.stdout.Write(out.Bytes())
	return err
}

// readKey reads the RSA private key of a PEM file; an empty kid becomes the
// key's JWK thumbprint, so token and jwks agree without naming one.
func readKey(path, kid string) (*issue.Key, error) {
	pemBytes, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read -key: %w", err)
	}
	priv, err := parseRSAPrivateKey(pemBytes)
	if err != nil {
		return nil, fmt.Errorf("-key %s: %w", path, err)
	}
	if kid == "" {
		kid = issue.Thumbprint(&priv.PublicKey)
	}
	return &issue.Key{ID: kid, Private: priv}, nil
}

// parseRSAPrivateKey reads the first private key of PEM data. Its errors
// say what the file is instead (a public key, an encrypted key) and what
// to give, never the parser's ASN.1 detail.
func parseRSAPrivateKey(data []byte) (*rsa.PrivateKey, error) {
	const want = `want an RSA private key PEM: "RSA PRIVATE KEY" or "PRIVATE KEY"`
	if block, _ := pem.Decode(data); block == nil {
		return nil, errors.New("no PEM block; " + want)
	}
	if err := checkPrivateKeyPEM(data); err != nil {
		return nil, err
	}
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			return nil, errors.New("no PEM private key; " + want)
		}
		if !strings.HasSuffix(block.Type, "PRIVATE KEY") {
			continue
		}
		if priv, err := x509.ParsePKCS1PrivateKey(block.Bytes); err == nil {
			return priv, nil
		}
		parsed, err := x509.ParsePKCS8PrivateKey(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("the %q block is neither PKCS#1 nor PKCS#8; %s", block.Type, want)
		}
		priv, ok := parsed.(*rsa.PrivateKey)
		if !ok {
			return nil, fmt.Errorf("a %s private key is not an RSA key; RS256 needs RSA (openssl genpkey -algorithm RSA)", keyAlgorithm(parsed))
		}
		return priv, nil
	}
}

// keyAlgorithm names a parsed private key's algorithm.
func keyAlgorithm(k any) string {
	switch k.(type) {
	case *ecdsa.PrivateKey:
		return "ECDSA"
	case ed25519.PrivateKey:
		return "Ed25519"
	case *ecdh.PrivateKey:
		return "X25519"
	}
	return fmt.Sprintf("%T", k)
}

// pulsediveKey takes the key from the one source given. Its errors name
// the source, never the key.
func pulsediveKey(literal, envName, file string, getenv func(string) string) (string, error) {
	var key string
	switch {
	case literal != "":
		key = literal
	case envName != "":
		key = getenv(envName)
		if strings.TrimSpace(key) == "" {
			return "", fmt.Errorf("-pulsedive-key-env: environment variable %s is unset or empty", envName)
		}
	default:
		b, err := os.ReadFile(file)
		if err != nil {
			return "", fmt.Errorf("-pulsedive-key-file: %w", err)
		}
		key = string(b)
	}
	key = strings.TrimSpace(key)
	if key == "" {
		return "", errors.New("the Pulsedive key is empty")
	}
	return key, nil
}

// checkJWKSHost accepts one host[:port], the form RELAY_JWKS_HOSTS
// allow-lists.
func checkJWKSHost(h string) error {
	h = strings.TrimSpace(h)
	if strings.Contains(h, ",") {
		return fmt.Errorf("-jwks-host %q: one host only", h)
	}
	var hosts []string
	if err := hostList(&hosts, h); err != nil {
		return fmt.Errorf("-jwks-host: %w", err)
	}
	return nil
}
