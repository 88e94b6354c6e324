package pulsedive

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unicode"
	"unicode/utf8"
)

// transportError classifies a failed HTTP exchange. reqCtx is the caller's
// context, callCtx the per-call one derived from it. The *url.Error that
// net/http returns names the URL, which holds the API key: it is unwrapped
// here and never kept. retry says whether the failure is worth another
// attempt (refused, reset); timeouts and verification failures are not.
func transportError(reqCtx, callCtx context.Context, err error) (retry bool, _ error) {
	var uerr *url.Error
	if errors.As(err, &uerr) {
		err = uerr.Err
	}
	if reqCtx.Err() != nil {
		return false, contextError(reqCtx.Err())
	}
	if callCtx.Err() != nil || isTimeout(err) {
		return false, unavailable(CauseTimeout, err)
	}
	if reason, ok := tlsReason(err); ok {
		return false, &TLSError{Reason: reason, Err: err}
	}
	var dnsErr *net.DNSError
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return true, unavailable(CauseRefused, err)
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE),
		errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF):
		return true, unavailable(CauseReset, err)
	case errors.As(err, &dnsErr):
		return dnsErr.IsTemporary, unavailable(CauseDNS, err)
	}
	var opErr *net.OpError
	if errors.As(err, &opErr) {
		return true, unavailable(CauseConnect, err)
	}
	return false, unavailable(CauseConnect, err)
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout())
}

// contextError reports the end of the caller's context: its deadline passed
// or it was cancelled.
func contextError(err error) error {
	if errors.Is(err, context.DeadlineExceeded) {
		return unavailable(CauseDeadline, err)
	}
	return unavailable(CauseCancelled, err)
}

// tlsReason finds a certificate verification failure in err and words it as
// the contract wants: the verifier's text, package prefix dropped, first
// letter capital.
func tlsReason(err error) (string, bool) {
	var (
		verr  *tls.CertificateVerificationError
		uaErr x509.UnknownAuthorityError
		hErr  x509.HostnameError
		cErr  x509.CertificateInvalidError
		text  string
	)
	switch {
	case errors.As(err, &uaErr):
		text = uaErr.Error()
	case errors.As(err, &hErr):
		text = hErr.Error()
	case errors.As(err, &cErr):
		text = cErr.Error()
	case errors.As(err, &verr):
		text = verr.Err.Error()
	default:
		return "", false
	}
	text = strings.TrimPrefix(strings.TrimPrefix(text, "tls: "), "x509: ")
	r, size := utf8.DecodeRuneInString(text)
	return string(unicode.ToUpper(r)) + text[size:], true
}

// disabledFor reads Pulsedive's 429 text, "Requests disabled for 1 minute".
var disabledFor = regexp.MustCompile(`(?i)disabled for (\d+) (second|minute|hour|day)s?`)

// DefaultPause is how long a key rests after a 429 that says nothing of it.
const DefaultPause = time.Minute

// PauseFrom says until when a key must not call Pulsedive, given one
// answer: after a 429, for the period its Retry-After header or its message
// states (else DefaultPause); after an answer whose X-Requests-Remaining-Day
// or -Month header is 0, until that period rolls over (UTC); after
// X-Requests-Remaining-Second 0, for one second. A missing header means no
// limit for that period. ok is false when the key may go on.
func PauseFrom(status int, h http.Header, message string, now time.Time) (until time.Time, ok bool) {
	if status == http.StatusTooManyRequests {
		return now.Add(pauseAfter429(h, message, now)), true
	}
	now = now.UTC()
	if spent(h, "X-Requests-Remaining-Month") {
		until, ok = time.Date(now.Year(), now.Month()+1, 1, 0, 0, 0, 0, time.UTC), true
	}
	if !ok && spent(h, "X-Requests-Remaining-Day") {
		until, ok = time.Date(now.Year(), now.Month(), now.Day()+1, 0, 0, 0, 0, time.UTC), true
	}
	if !ok && spent(h, "X-Requests-Remaining-Second") {
		until, ok = now.Add(time.Second), true
	}
	return until, ok
}

func pauseAfter429(h http.Header, message string, now time.Time) time.Duration {
	if ra := strings.TrimSpace(h.Get("Retry-After")); ra != "" {
		if secs, err := strconv.Atoi(ra); err == nil && secs >= 0 {
			return time.Duration(secs) * time.Second
		}
		if t, err := http.ParseTime(ra); err == nil && t.After(now) {
			return t.Sub(now)
		}
	}
	if m := disabledFor.FindStringSubmatch(message); m != nil {
		n, err := strconv.Atoi(m[1])
		if err == nil && n > 0 && n < 100000 {
			unit := map[string]time.Duration{"second": time.Second, "minute": time.Minute, "hour": time.Hour, "day": 24 * time.Hour}[strings.ToLower(m[2])]
			return time.Duration(n) * unit
		}
	}
	return DefaultPause
}

func spent(h http.Header, name string) bool {
	v := strings.TrimSpace(h.Get(name))
	if v == "" {
		return false
	}
	n, err := strconv.ParseFloat(v, 64)
	return err == nil && n <= 0
}
