package auth

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"math"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/pulsedive-relay/relay/pulsedive"
)

// verify runs the checks that follow the header, in the contract's order,
// and returns the claims and how long they may be cached: until the
// token's exp or the end of its key's MaxKeyAge, whichever comes first. It
// notes the jwks_host and kid in sc as soon as they are read, for the log.
func (a *Authenticator) verify(r *http.Request, raw string, auds []string, sc *scene) (Claims, time.Time, error) {
	tok, ok := decodeToken(raw)
	if !ok {
		return Claims{}, time.Time{}, fail(ReasonWrongStructure, detail("not three base64url segments whose first two are JSON objects"))
	}
	kid, hasKID := tok.header["kid"].(string)
	sc.kid, sc.hasKID = clip(kid), hasKID
	host, _ := tok.payload["jwks_host"].(string)
	if host == "" {
		if v, present := tok.payload["jwks_host"]; present {
			return Claims{}, time.Time{}, fail(ReasonMissingJWKSHost, detail("jwks_host is "+describe(v)))
		}
		return Claims{}, time.Time{}, fail(ReasonMissingJWKSHost)
	}
	sc.host = clip(host)
	host, ok = normalizeHost(host)
	switch {
	case !ok:
		return Claims{}, time.Time{}, fail(ReasonWrongJWKSHost, detail("jwks_host is not a bare host[:port]"))
	case !a.hosts[host]:
		return Claims{}, time.Time{}, fail(ReasonWrongJWKSHost, detail("jwks_host is not in the allow-list"))
	}
	sc.host, sc.allowed = host, true
	// Only the exact name: "none", "None", HS256 (which would make the
	// public key a shared secret), ES*, PS* stop here, before a key is
	// fetched or used.
	if alg, _ := tok.header["alg"].(string); alg != jwt.SigningMethodRS256.Alg() {
		return Claims{}, time.Time{}, fail(ReasonWrongKey, detail("alg is "+describe(tok.header["alg"])+", not RS256"))
	}
	pub, keysUntil, err := a.publicKey(r.Context(), host, kid)
	if err != nil {
		return Claims{}, time.Time{}, err
	}
	if err := jwt.SigningMethodRS256.Verify(tok.signingInput, tok.signature, pub); err != nil {
		return Claims{}, time.Time{}, fail(ReasonWrongKey, detail("the signature does not verify with the key of this kid"))
	}

	claims := jwt.MapClaims(tok.payload)
	if err := a.validator.Validate(claims); err != nil {
		switch {
		case errors.Is(err, jwt.ErrTokenExpired):
			return Claims{}, time.Time{}, fail(ReasonExpired, timeClaim(claims.GetExpirationTime, "exp"))
		case errors.Is(err, jwt.ErrTokenNotValidYet):
			return Claims{}, time.Time{}, fail(ReasonNotYetValid, timeClaim(claims.GetNotBefore, "nbf"))
		default:
			// exp or nbf that is not a number: PyJWT, which the original
			// relay used, raised a DecodeError, shown as this reason.
			return Claims{}, time.Time{}, fail(ReasonWrongStructure, detail("exp or nbf is not a number"))
		}
	}
	if !audienceAccepted(tok.payload["aud"], auds) {
		return Claims{}, time.Time{}, fail(ReasonWrongAudience,
			slog.Any("aud", audienceForLog(tok.payload["aud"])),
			slog.Any("expected_audiences", clipAll(auds)))
	}
	key, _ := tok.payload["key"].(string)
	if key == "" {
		return Claims{}, time.Time{}, fail(ReasonWrongPayload, detail("key is missing, empty or not a string"))
	}

	until := keysUntil
	if exp, _ := claims.GetExpirationTime(); exp != nil && exp.Time.Before(until) {
		until = exp.Time
	}
	return Claims{
		Key:           pulsedive.APIKey(key),
		EntitiesLimit: entitiesLimit(tok.payload["CTR_ENTITIES_LIMIT"], a.defaultLimit),
	}, until, nil
}

// timeClaim is the log attribute of a time claim, exp or nbf.
func timeClaim(get func() (*jwt.NumericDate, error), name string) slog.Attr {
	if d, err := get(); err == nil && d != nil {
		return slog.Time(name, d.Time)
	}
	return slog.String(name, "unreadable")
}

// token is a JWT decoded but not verified.
type token struct {
	header, payload map[string]any
	signingInput    string
	signature       []byte
}

// decodeToken splits raw into exactly three base64url parts (padding
// tolerated, as PyJWT did) whose first two are JSON objects. Numbers in the
// payload stay json.Number, so exp 0 and integer limits keep their value.
func decodeToken(raw string) (token, bool) {
	h, rest, ok1 := strings.Cut(raw, ".")
	p, s, ok2 := strings.Cut(rest, ".")
	if !ok1 || !ok2 || strings.Contains(s, ".") {
		return token{}, false
	}
	var t token
	var ok bool
	if t.header, ok = decodeObject(h); !ok {
		return token{}, false
	}
	if t.payload, ok = decodeObject(p); !ok {
		return token{}, false
	}
	sig, err := decodeSegment(s)
	if err != nil {
		return token{}, false
	}
	t.signature = sig
	t.signingInput = raw[:len(h)+1+len(p)]
	return t, true
}

func decodeSegment(seg string) ([]byte, error) {
	return base64.RawURLEncoding.DecodeString(strings.TrimRight(seg, "="))
}

// decodeObject decodes one base64url segment holding exactly one JSON
// object.
func decodeObject(seg string) (map[string]any, bool) {
	b, err := decodeSegment(seg)
	if err != nil {
		return nil, false
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var m map[string]any
	if err := dec.Decode(&m); err != nil || m == nil {
		return nil, false
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, false
	}
	return m, true
}

// audienceAccepted reports whether aud, a string or a list of strings,
// holds one of the accepted audiences. A list with a non-string member is
// refused whole, as PyJWT did.
func audienceAccepted(aud any, accepted []string) bool {
	switch v := aud.(type) {
	case string:
		return slices.Contains(accepted, v)
	case []any:
		found := false
		for _, e := range v {
			s, ok := e.(string)
			if !ok {
				return false
			}
			found = found || slices.Contains(accepted, s)
		}
		return found
	}
	return false
}

// entitiesLimit is v when it is a positive integer: a JSON integer (7, or
// 7.0), or a string of decimal digits (" 7 " too); anything else (absent,
// 0, -1, 7.5, "7.5", "x", true) gives def.
func entitiesLimit(v any, def int) int {
	var s string
	switch x := v.(type) {
	case json.Number:
		s = string(x)
		if n, err := strconv.Atoi(s); err == nil {
			return positiveOr(n, def)
		}
		f, err := x.Float64()
		if err != nil || f != math.Trunc(f) || f < 1 || f > math.MaxInt32 {
			return def
		}
		return int(f)
	case string:
		s = strings.TrimSpace(x)
	default:
		return def
	}
	n, err := strconv.Atoi(s)
	if err != nil {
		return def
	}
	return positiveOr(n, def)
}

func positiveOr(n, def int) int {
	if n > 0 {
		return n
	}
	return def
}

// normalizeHost checks that s is a bare host[:port] — a DNS name, an IPv4
// address or a bracketed IPv6 address, and an optional decimal port
// 1-65535 without leading zeros — and lower-cases it. Userinfo, paths,
// queries, schemes, spaces, empty labels and trailing dots are refused.
func normalizeHost(s string) (string, bool) {
	if s == "" || len(s) > 261 {
		return "", false
	}
	host, port := s, ""
	if strings.HasPrefix(s, "[") {
		end := strings.IndexByte(s, ']')
		if end < 0 {
			return "", false
		}
		host, port = s[:end+1], s[end+1:]
		addr, err := netip.ParseAddr(host[1 : len(host)-1])
		if err != nil || !addr.Is6() || addr.Zone() != "" {
			return "", false
		}
		if port != "" && !strings.HasPrefix(port, ":") {
			return "", false
		}
		port = strings.TrimPrefix(port, ":")
		if port == "" && strings.HasSuffix(s, ":") {
			return "", false
		}
	} else {
		var hasPort bool
		host, port, hasPort = strings.Cut(s, ":")
		if hasPort && port == "" {
			return "", false
		}
		if !validDNSName(host) {
			return "", false
		}
	}
	if port != "" && !validPort(port) {
		return "", false
	}
	return strings.ToLower(s), true
}

func validDNSName(h string) bool {
	if h == "" || len(h) > 253 {
		return false
	}
	for label := range strings.SplitSeq(h, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-') {
				return false
			}
		}
	}
	return true
}

func validPort(p string) bool {
	if p == "" || p[0] == '0' || len(p) > 5 {
		return false
	}
	for i := 0; i < len(p); i++ {
		if p[i] < '0' || p[i] > '9' {
			return false
		}
	}
	n, _ := strconv.Atoi(p)
	return n <= 65535
}
