package pulsedive

import (
	"encoding/json"
	"errors"
	"net/url"
	"strings"
	"testing"
)

// FuzzScrub: whatever Pulsedive's text and whatever the key, the key
// comes out of scrub in none of its forms, and a text without the key
// comes out unchanged.
func FuzzScrub(f *testing.F) {
	for _, seed := range [][2]string{
		{"Invalid API key s3cr3t.", "s3cr3t"},
		{"key=S3CR3T%2Fx and s3cr3t/x", "s3cr3t/x"},
		{"nothing to see", "0123456789abcdef"},
		{"", "k"},
		{"ü%C3%BC", "ü"},
	} {
		f.Add(seed[0], seed[1])
	}
	f.Fuzz(func(t *testing.T, text, key string) {
		got := APIKey(key).scrub(text)
		if key == "" {
			if got != text {
				t.Errorf("scrub with no key changed %q to %q", text, got)
			}
			return
		}
		forms := []string{key, url.QueryEscape(key), url.PathEscape(key)}
		if !containsFolded(text, forms) && got != text {
			t.Errorf("scrub changed %q (no key in it) to %q", text, got)
		}
		// The marker itself may spell a short key ("da" is in "redacted"):
		// look for the key outside the markers only when it cannot be.
		if strings.ContainsAny(strings.ToLower(key), "[redacted]") {
			return
		}
		for _, form := range forms {
			if containsFolded(got, []string{form}) {
				t.Errorf("scrub(%q) = %q still holds %q", text, got, form)
			}
		}
	})
}

// containsFolded says whether text holds one of forms, ASCII letters in
// any case, as scrub matches.
func containsFolded(text string, forms []string) bool {
	lower := func(s string) string {
		b := []byte(s)
		for i, c := range b {
			b[i] = lowerASCII(c)
		}
		return string(b)
	}
	for _, form := range forms {
		if form != "" && strings.Contains(lower(text), lower(form)) {
			return true
		}
	}
	return false
}

// FuzzStatusError: a "no data" status is ErrNotFound exactly when the
// body is an object with an "error" string, an *UnexpectedAnswerError
// otherwise; a 3xx is a *RedirectError; nothing panics.
func FuzzStatusError(f *testing.F) {
	for _, seed := range []string{
		`{"error":"Indicator not found."}`, `{"error":null}`, `{"error":1}`, `[]`, `<html></html>`, ``,
		`{"error":"a","error":2}`, `{"message":"x"}`, `"error"`, `{"error":"\u00e9"}`,
	} {
		for _, status := range []int{400, 404, 406, 302, 500, 429} {
			f.Add(status, []byte(seed))
		}
	}
	f.Fuzz(func(t *testing.T, status int, body []byte) {
		err := statusError(status, body)
		switch {
		case status == 200:
			if err != nil {
				t.Errorf("200: %v", err)
			}
		case status == 400 || status == 404 || status == 406:
			var doc map[string]any
			_, isString := doc["error"].(string)
			if json.Unmarshal(body, &doc) == nil {
				_, isString = doc["error"].(string)
			}
			var unexpected *UnexpectedAnswerError
			switch {
			case isString && !errors.Is(err, ErrNotFound):
				t.Errorf("%d %q: %v, want ErrNotFound", status, body, err)
			case !isString && (!errors.As(err, &unexpected) || unexpected.StatusCode != status):
				t.Errorf("%d %q: %v, want an unexpected answer", status, body, err)
			}
		case status >= 300 && status < 400:
			var redirect *RedirectError
			if !errors.As(err, &redirect) || redirect.StatusCode != status {
				t.Errorf("%d: %v, want a redirect", status, err)
			}
		default:
			var se *StatusError
			if !errors.As(err, &se) || se.StatusCode != status {
				t.Errorf("%d: %v, want a *StatusError", status, err)
			}
		}
	})
}
