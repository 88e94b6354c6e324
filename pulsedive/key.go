package pulsedive

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net/url"
	"slices"
	"strings"
)

// APIKey is a caller's Pulsedive API key. It prints as "[redacted]" through
// fmt, %v, %s, %q, %#v and slog, so a key that slips into a log line or an
// error message does not leak; only Reveal returns the key itself, and the
// client calls it in exactly one place: when it builds the query string.
type APIKey string

const redacted = "[redacted]"

// String redacts the key.
func (APIKey) String() string { return redacted }

// GoString redacts the key under %#v.
func (APIKey) GoString() string { return redacted }

// LogValue redacts the key in slog output.
func (APIKey) LogValue() slog.Value { return slog.StringValue(redacted) }

// Format redacts the key under every fmt verb, %x and %d included.
func (APIKey) Format(f fmt.State, _ rune) { _, _ = f.Write([]byte(redacted)) }

// MarshalText redacts the key when it is encoded as JSON or text.
func (APIKey) MarshalText() ([]byte, error) { return []byte(redacted), nil }

// Reveal returns the key itself. Call it only to put the key on the wire.
func (k APIKey) Reveal() string { return string(k) }

// Fingerprint identifies the key without revealing it: the first 16 bytes of
// its SHA-256, hex-encoded. Cache keys, limiter buckets and breaker names use
// it so that no store in the relay holds a key.
func (k APIKey) Fingerprint() string {
	sum := sha256.Sum256([]byte(k))
	return hex.EncodeToString(sum[:16])
}

// scrub replaces every form of the key in text with "[redacted]": the key
// as is, query-escaped and path-escaped (the forms a server may echo from
// the request URL), with ASCII letters in any case (an escape may come
// back as %2f or %2F). The client scrubs every Pulsedive text it passes on
// with it (CONTRACT.md section 6). Any key and any text are fine, invalid UTF-8
// included: bytes other than ASCII letters must match exactly.
func (k APIKey) scrub(text string) string {
	if k == "" || text == "" {
		return text
	}
	raw := string(k)
	forms := []string{raw, url.QueryEscape(raw), url.PathEscape(raw)}
	// Longest first, so that an escaped form is not cut short by the raw one.
	slices.SortFunc(forms, func(a, b string) int { return len(b) - len(a) })
	match := func(i int) int {
		for _, f := range forms {
			if len(text)-i >= len(f) && equalFoldASCII(text[i:i+len(f)], f) {
				return len(f)
			}
		}
		return 0
	}
	var b strings.Builder
	done := 0 // text[:done] is in b
	for i := 0; i < len(text); {
		n := match(i)
		if n == 0 {
			i++
			continue
		}
		b.WriteString(text[done:i])
		b.WriteString(redacted)
		i += n
		done = i
	}
	if done == 0 {
		return text // no form found
	}
	b.WriteString(text[done:])
	return b.String()
}

// equalFoldASCII compares a and b, of equal length, ignoring the case of
// ASCII letters only.
func equalFoldASCII(a, b string) bool {
	for i := range len(a) {
		if lowerASCII(a[i]) != lowerASCII(b[i]) {
			return false
		}
	}
	return true
}

func lowerASCII(c byte) byte {
	if 'A' <= c && c <= 'Z' {
		return c + 'a' - 'A'
	}
	return c
}
