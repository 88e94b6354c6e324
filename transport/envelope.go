package transport

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/pulsedive-relay/relay/ctim"
	"github.com/pulsedive-relay/relay/pipeline"
	"github.com/pulsedive-relay/relay/pulsedive"
	"github.com/pulsedive-relay/relay/transport/auth"
)

// apiError is one entry of the contract's error envelope (CONTRACT.md section 2).
type apiError struct {
	Type    string `json:"type"`
	Code    string `json:"code"`
	Message string `json:"message"`
}

// The codes of the envelope (CONTRACT.md section 2), besides a Pulsedive
// status's reason phrase.
const (
	codeAuthorization     = "authorization error"
	codeInvalidArgument   = "invalid argument"
	codeTooManyRequests   = "too many requests"
	codeUnknown           = "unknown"
	codeKeyError          = "key error"
	codeUnavailable       = "service unavailable"
	codeHealthCheckFailed = "health check failed"
)

// Messages of the contract that more than one error kind shares.
const (
	msgKeyError         = "The data structure of Pulsedive API has changed. The module is broken."
	msgAPIError         = "The Pulsedive API error."
	msgInvalidJSON      = "Pulsedive answered with invalid JSON"
	msgUnexpected       = "Unexpected error."
	msgUnavailable      = "Pulsedive is unavailable: "
	msgTooLarge         = "Pulsedive answered with a document over the size limit"
	msgLocalLimited     = "Pulsedive rate limit for this API key reached; retry in %d s"
	msgLinksSkipped     = "Pulsedive rate limit for this API key reached: Active DNS skipped for %d of %d observables; retry in %d s"
	msgRedirect         = "Pulsedive answered with a redirect"
	msgUnexpectedAnswer = "Pulsedive answered unexpectedly (HTTP %d); check PULSEDIVE_API_URL"
)

// envelopeOf is the one table from the relay's error kinds to the
// contract's codes and messages. It switches on error types, status codes
// and causes; only the message may carry an error's text. known is false
// for an error no row matches (a bug), which the caller logs.
func envelopeOf(err error) (e apiError, known bool) {
	var (
		authErr *auth.Error
		bad     *badRequest
		status  *pulsedive.StatusError
		apiErr  *pulsedive.APIError
		unavail *pulsedive.UnavailableError
		tlsErr  *pulsedive.TLSError
		limited *pulsedive.RateLimitError
		redir   *pulsedive.RedirectError
		unexp   *pulsedive.UnexpectedAnswerError
		budget  *pipeline.BudgetError
		panicky *pipeline.PanicError
		busy    *overload
	)
	known = true
	switch {
	case errors.As(err, &authErr):
		e = apiError{Code: codeAuthorization, Message: authErr.Error()}
	case errors.As(err, &bad):
		e = apiError{Code: codeInvalidArgument, Message: bad.Error()}
	case errors.As(err, &status):
		e = apiError{Code: reasonPhrase(status.StatusCode), Message: orDefault(status.Message, msgAPIError)}
	case errors.As(err, &apiErr):
		e = apiError{Code: codeUnknown, Message: orDefault(apiErr.Message, msgAPIError)}
	case errors.Is(err, ctim.ErrBroken), errors.Is(err, pulsedive.ErrSchema):
		e = apiError{Code: codeKeyError, Message: msgKeyError}
	case errors.Is(err, pulsedive.ErrInvalidJSON):
		e = apiError{Code: codeUnknown, Message: msgInvalidJSON}
	case errors.Is(err, pulsedive.ErrTooLarge):
		e = apiError{Code: codeUnknown, Message: msgTooLarge}
	case errors.As(err, &redir):
		e = apiError{Code: codeUnknown, Message: msgRedirect}
	case errors.As(err, &unexp):
		e = apiError{Code: codeUnknown, Message: fmt.Sprintf(msgUnexpectedAnswer, unexp.StatusCode)}
	case errors.As(err, &tlsErr):
		e = apiError{Code: codeUnknown, Message: "Unable to verify SSL certificate: " + tlsErr.Reason}
	case errors.As(err, &unavail):
		e = apiError{Code: codeUnavailable, Message: msgUnavailable + unavail.Reason}
	case errors.Is(err, context.DeadlineExceeded):
		e = apiError{Code: codeUnavailable, Message: msgUnavailable + "request deadline exceeded"}
	case errors.Is(err, context.Canceled):
		e = apiError{Code: codeUnavailable, Message: msgUnavailable + "request cancelled"}
	case errors.As(err, &budget) && budget.LinksOnly:
		e = apiError{Code: codeTooManyRequests, Message: fmt.Sprintf(msgLinksSkipped, budget.Skipped, budget.Of, retrySeconds(budget.RetryAfter))}
	case errors.As(err, &limited):
		e = apiError{Code: codeTooManyRequests, Message: fmt.Sprintf(msgLocalLimited, retrySeconds(limited.RetryAfter))}
	case errors.As(err, &busy):
		e = apiError{Code: codeTooManyRequests, Message: busy.message()}
	case errors.As(err, &panicky):
		// A bug, already logged once with its stack by the pipeline.
		e = apiError{Code: codeUnknown, Message: msgUnexpected}
	default:
		e, known = apiError{Code: codeUnknown, Message: msgUnexpected}, false
	}
	e.Type = "fatal"
	return e, known
}

// retrySeconds is a retry time in whole seconds, rounded up, at least 1.
func retrySeconds(d time.Duration) int { return max(1, int(math.Ceil(d.Seconds()))) }

// reasonPhrase is the lower-case HTTP reason phrase of status ("too many
// requests"), as the original relay reported Pulsedive's statuses.
func reasonPhrase(status int) string {
	if text := http.StatusText(status); text != "" {
		return strings.ToLower(text)
	}
	return codeUnknown
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// envelopeErrors maps errs and keeps each distinct (code, message) once, in
// first-seen order. Refusals of the relay's own budget (CONTRACT.md section 6,
// tight budgets) are one entry whatever their retry times: the one with the
// longest, at the place of the first. onUnknown is called for errors no row
// of the table matches.
func envelopeErrors(errs []error, onUnknown func(error)) []apiError {
	longest := -1 // the refusal reported for all
	var longestAfter time.Duration
	for i, err := range errs {
		var rl *pulsedive.RateLimitError
		if errors.As(err, &rl) && (longest < 0 || rl.RetryAfter > longestAfter) {
			longest, longestAfter = i, rl.RetryAfter
		}
	}
	out := make([]apiError, 0, len(errs))
	seen := make(map[apiError]struct{}, len(errs))
	folded := false
	for _, err := range errs {
		if errors.As(err, new(*pulsedive.RateLimitError)) {
			if folded {
				continue
			}
			err, folded = errs[longest], true
		}
		e, known := envelopeOf(err)
		if !known && onUnknown != nil {
			onUnknown(err)
		}
		if _, dup := seen[e]; dup {
			continue
		}
		seen[e] = struct{}{}
		out = append(out, e)
	}
	return out
}

// writeJSON encodes v into a buffer first, so that an encoding failure can
// still be answered cleanly, then writes it with the given status. Observe
// and deliberate answers, which may be large, go through answer instead.
func writeJSON(w http.ResponseWriter, status int, v any) {
	bp := buffers.Get().(*[]byte)
	buf := (*bp)[:0]
	defer func() { putBuffer(bp, buf) }()
	buf, err := appendJSON(buf, v)
	if err != nil {
		buf, _ = appendJSON(buf[:0], errorBody{Errors: []apiError{{Type: "fatal", Code: codeUnknown, Message: msgUnexpected}}})
		status = http.StatusOK
	}
	h := w.Header()
	h["Content-Type"] = jsonContentType
	h["Content-Length"] = []string{strconv.Itoa(len(buf))}
	w.WriteHeader(status)
	_, _ = w.Write(buf)
}

// buffers recycles answer buffers; an observe answer is often tens of KiB.
var buffers = sync.Pool{New: func() any { b := make([]byte, 0, 16<<10); return &b }}

const maxPooledBuffer = 1 << 20

// putBuffer returns buf to the pool, unless a rare huge document grew it.
func putBuffer(bp *[]byte, buf []byte) {
	if cap(buf) <= maxPooledBuffer {
		*bp = buf
		buffers.Put(bp)
	}
}

// appendJSON appends v as encoding/json writes it, HTML escaping off,
// followed by a newline.
func appendJSON(b []byte, v any) ([]byte, error) {
	buf := bytes.NewBuffer(b)
	enc := json.NewEncoder(buf)
	enc.SetEscapeHTML(false)
	err := enc.Encode(v)
	return buf.Bytes(), err
}

type errorBody struct {
	Errors []apiError `json:"errors"`
}
