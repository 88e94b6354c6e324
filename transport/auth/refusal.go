package auth

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"strconv"
	"sync"
	"time"
	"unicode/utf8"
)

// The kinds of refusal, the bounded names that log lines and the
// Observer use. They follow the Reason constants, except that "Wrong
// jwks_host" is two kinds: a host outside the allow-list (a forged or
// misdirected token) and an allowed host whose keys could not be had (a
// JWKS outage, a TLS or CA problem: a login outage).
const (
	kindMissingHeader      = "missing_header"
	kindWrongType          = "wrong_type"
	kindWrongStructure     = "wrong_structure"
	kindMissingJWKSHost    = "missing_jwks_host"
	kindJWKSHostNotAllowed = "jwks_host_not_allowed"
	kindJWKSUnavailable    = "jwks_unavailable"
	kindWrongKey           = "wrong_key"
	kindKIDNotFound        = "kid_not_found"
	kindExpired            = "expired"
	kindNotYetValid        = "not_yet_valid"
	kindWrongAudience      = "wrong_audience"
	kindWrongPayload       = "wrong_payload"
)

// FailureKinds lists every kind of refusal Observer.AuthFailure and the
// "reason" field of a refusal's log line can carry, in the order the
// checks run.
func FailureKinds() []string {
	return []string{
		kindMissingHeader, kindWrongType, kindWrongStructure, kindMissingJWKSHost,
		kindJWKSHostNotAllowed, kindJWKSUnavailable, kindWrongKey, kindKIDNotFound,
		kindExpired, kindNotYetValid, kindWrongAudience, kindWrongPayload,
	}
}

// kindOf is the kind of a refusal for reason; a failed JWKS fetch sets
// kindJWKSUnavailable itself.
func kindOf(reason string) string {
	switch reason {
	case ReasonMissingHeader:
		return kindMissingHeader
	case ReasonWrongType:
		return kindWrongType
	case ReasonWrongStructure:
		return kindWrongStructure
	case ReasonMissingJWKSHost:
		return kindMissingJWKSHost
	case ReasonWrongJWKSHost:
		return kindJWKSHostNotAllowed
	case ReasonWrongKey:
		return kindWrongKey
	case ReasonKIDNotFound:
		return kindKIDNotFound
	case ReasonExpired:
		return kindExpired
	case ReasonNotYetValid:
		return kindNotYetValid
	case ReasonWrongAudience:
		return kindWrongAudience
	case ReasonWrongPayload:
		return kindWrongPayload
	}
	return "other"
}

// scene is what Authenticate learned about a token before refusing it, for
// the log line. It never holds the token, its signature or the key.
type scene struct {
	host    string // jwks_host as the token names it (clipped), normalized once allowed
	allowed bool   // host is on the allow-list
	kid     string // the header's kid (clipped)
	hasKID  bool
}

// refused counts a refusal and logs it: at warn level when the rate limit
// lets it (once per RefusalLogEvery for each kind, fetch-error kind and
// allow-listed host), else at debug level, so that LOG_LEVEL=debug shows
// one line per refused request.
func (a *Authenticator) refused(ctx context.Context, err error, sc *scene) {
	var e *Error
	if !errors.As(err, &e) {
		return
	}
	if a.observer != nil {
		a.observer.AuthFailure(e.kind)
	}
	key := refusalKey{kind: e.kind}
	var fe *fetchError
	if errors.As(e.cause, &fe) {
		key.cause = fe.kind
	}
	if sc.allowed {
		// Only allow-listed hosts make keys: the map stays bounded
		// whatever hosts forged tokens name.
		key.host = sc.host
	}
	warn, suppressed := a.refusals.allow(key, a.now())
	level := slog.LevelWarn
	if !warn {
		level = slog.LevelDebug
	}
	if !a.log.Enabled(ctx, level) {
		return
	}
	attrs := make([]slog.Attr, 0, 6+len(e.attrs))
	attrs = append(attrs, slog.String("reason", e.kind), slog.String("message", e.Error()))
	if sc.host != "" {
		attrs = append(attrs, slog.String("jwks_host", sc.host))
	}
	if sc.hasKID {
		attrs = append(attrs, slog.String("kid", sc.kid))
	}
	attrs = append(attrs, e.attrs...)
	if e.cause != nil {
		attrs = append(attrs, slog.String("cause", e.cause.Error()))
	}
	if suppressed > 0 {
		attrs = append(attrs, slog.Int("suppressed", suppressed))
	}
	a.log.LogAttrs(ctx, level, "token refused", attrs...)
}

// refusalKey is what the warn-level rate limit counts by. Every field comes
// from a bounded set: a kind, an allow-listed host or "", a fetch-error
// kind or "".
type refusalKey struct{ kind, host, cause string }

// refusalLog rate-limits warn lines: the first line of a key in a window
// is written at warn level and opens the window; the others in it are
// counted, and the count is told by the key's next warn line. It starts no
// goroutine, so a count is told only when the key comes again.
type refusalLog struct {
	every   time.Duration
	mu      sync.Mutex
	windows map[refusalKey]*refusalWindow
}

type refusalWindow struct {
	start      time.Time
	suppressed int
}

func newRefusalLog(every time.Duration) *refusalLog {
	return &refusalLog{every: every, windows: map[refusalKey]*refusalWindow{}}
}

// allow reports whether a line of key may be written at warn level at
// now, and how many lines of key were held back since its last warn line.
func (l *refusalLog) allow(key refusalKey, now time.Time) (warn bool, suppressed int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	w := l.windows[key]
	if w == nil {
		l.windows[key] = &refusalWindow{start: now}
		return true, 0
	}
	if now.Before(w.start.Add(l.every)) {
		w.suppressed++
		return false, 0
	}
	suppressed = w.suppressed
	w.start, w.suppressed = now, 0
	return true, suppressed
}

// maxLogString bounds a string from a token in a log line.
const maxLogString = 128

// clip shortens s, which a token supplied, to maxLogString bytes on a rune
// boundary, marking the cut.
func clip(s string) string {
	if len(s) <= maxLogString {
		return s
	}
	cut := maxLogString
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}

// clipAll clips every string of ss into a new slice.
func clipAll(ss []string) []string {
	out := make([]string, len(ss))
	for i, s := range ss {
		out[i] = clip(s)
	}
	return out
}

func detail(s string) slog.Attr { return slog.String("detail", s) }

// describe names a JSON value from a token's header or payload for a log
// line: a string quoted and clipped, a number as is, other values by type.
func describe(v any) string {
	switch x := v.(type) {
	case nil:
		return "null"
	case string:
		return strconv.Quote(clip(x))
	case json.Number:
		return "the number " + clip(string(x))
	case float64:
		return "the number " + strconv.FormatFloat(x, 'g', -1, 64)
	case bool:
		return "a boolean"
	case []any:
		return "a list"
	case map[string]any:
		return "an object"
	}
	return "a value of an unexpected type"
}

// audienceForLog is a token's aud for a log line (aud is not secret): a
// string as is, a list as a list of at most 8 strings, anything else
// described; all clipped.
func audienceForLog(aud any) any {
	switch v := aud.(type) {
	case nil:
		return "(none)"
	case string:
		return clip(v)
	case []any:
		out := make([]string, 0, min(len(v), 9))
		for i, e := range v {
			if i == 8 {
				out = append(out, "(and "+strconv.Itoa(len(v)-8)+" more)")
				break
			}
			if s, ok := e.(string); ok {
				out = append(out, clip(s))
				continue
			}
			out = append(out, "("+describe(e)+")")
		}
		return out
	}
	return "(" + describe(aud) + ")"
}
