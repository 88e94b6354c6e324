package transport

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/pulsedive-relay/relay/ctim"
)

// badRequest is a request body the relay refuses: the contract's "invalid
// argument". Detail names what is wrong, marshmallow-style as the original
// relay did: {"<item index>": {"<field>": ["<problem>"]}}, or "_schema" for
// the body as a whole.
type badRequest struct{ Detail string }

func (e *badRequest) Error() string { return "Invalid JSON payload received. " + e.Detail }

func schemaProblem(problem string) *badRequest {
	return &badRequest{Detail: fmt.Sprintf(`{"_schema": [%s]}`, quote(problem))}
}

func fieldProblem(index int, field, problem string) *badRequest {
	return &badRequest{Detail: fmt.Sprintf(`{"%d": {%s: [%s]}}`, index, quote(field), quote(problem))}
}

func quote(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

// bodyLimits bound what one request may ask.
type bodyLimits struct {
	maxBytes       int64
	maxObservables int
}

// bodyChunk is the step by which a body of unknown length (chunked) is
// read, each step charged to the body budget before it is read.
const bodyChunk = 32 << 10

// readBody reads a request body of at most lim.maxBytes, charging every
// byte it will hold to charge before reading it: the whole Content-Length
// up front, or bodyChunk at a time for a body of unknown length. charge
// returns false when the budget is spent; readBody then stops at once with
// the *overload it returns. held is what was charged, to give back once
// the body is parsed, also on error.
func readBody(r *http.Request, lim bodyLimits, charge func(n int64) error) (body []byte, held int64, err error) {
	if n := r.ContentLength; n >= 0 {
		if n > lim.maxBytes {
			return nil, 0, tooLarge(lim)
		}
		if err := charge(n); err != nil {
			return nil, 0, err
		}
		body = make([]byte, n)
		if _, err := io.ReadFull(r.Body, body); err != nil {
			return nil, n, schemaProblem("The request body could not be read.")
		}
		return body, n, nil
	}
	// Read in chunks of bodyChunk, each charged before it is read, and
	// join them once at the end: growing one slice chunk by chunk would
	// copy what was read at every step, a cost quadratic in the body that
	// any client could ask for by leaving Content-Length out.
	var chunks [][]byte
	var size int64
	for {
		step := min(bodyChunk, lim.maxBytes+1-size)
		if step <= 0 {
			return nil, held, tooLarge(lim)
		}
		if err := charge(step); err != nil {
			return nil, held, err
		}
		held += step
		chunk := make([]byte, step)
		n, err := io.ReadFull(r.Body, chunk)
		chunks = append(chunks, chunk[:n])
		size += int64(n)
		switch {
		case err == nil:
			continue // the chunk is full: more may follow
		case err == io.EOF || err == io.ErrUnexpectedEOF:
			if size > lim.maxBytes {
				return nil, held, tooLarge(lim)
			}
			return bytes.Join(chunks, nil), held, nil
		default:
			return nil, held, schemaProblem("The request body could not be read.")
		}
	}
}

func tooLarge(lim bodyLimits) error {
	return schemaProblem("The request body is larger than " + strconv.FormatInt(lim.maxBytes, 10) + " bytes.")
}

// parseObservables reads the body of an observable endpoint (CONTRACT.md section
// 1): a JSON array of {"type", "value"} with both fields non-blank strings;
// extra fields are ignored. The count limit applies to every item before
// unsupported types are dropped. It returns the supported observables,
// type lower-cased, value as sent, in body order (duplicates kept; the
// pipeline looks each up once). The checks come in this order, each
// answering for the whole body: JSON at all, an array, the count, then the
// first item that is wrong.
//
// The returned observables do not refer to body, which may be released.
func parseObservables(body []byte, maxObservables int) ([]ctim.Observable, error) {
	if !json.Valid(body) { // also refuses an empty body
		return nil, schemaProblem("The request body is not valid JSON.")
	}
	start := skipSpace(body, 0)
	if body[start] != '[' {
		return nil, schemaProblem("Invalid input type: expected a list of observables.")
	}
	count := 0
	elements(body, start, func(_ []byte, _, _ int) bool { count++; return true })
	if count > maxObservables {
		return nil, schemaProblem(fmt.Sprintf("Too many observables: %d, the limit is %d.", count, maxObservables))
	}
	out := make([]ctim.Observable, 0, count)
	var err error
	i := 0
	elements(body, start, func(_ []byte, from, to int) bool {
		var typ, value string
		if typ, value, err = parseItem(i, body[from:to]); err != nil {
			return false
		}
		i++
		if ctim.Supported(typ) {
			out = append(out, ctim.Observable{Type: typ, Value: value})
		}
		return true
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// parseItem reads one item: an object whose "type" and "value" members
// (the last of each when repeated, names matched exactly) are checked in
// that order. typ is lower-cased.
func parseItem(i int, raw []byte) (typ, value string, err error) {
	if raw[0] != '{' {
		return "", "", fieldProblem(i, "_schema", "Invalid input type: expected an object.")
	}
	var typRaw, valueRaw []byte
	elements(raw, 0, func(key []byte, from, to int) bool {
		switch {
		case isName(key, "type"):
			typRaw = raw[from:to]
		case isName(key, "value"):
			valueRaw = raw[from:to]
		}
		return true
	})
	if typ = knownType(typRaw); typ == "" {
		if typ, err = stringField(i, "type", typRaw); err != nil {
			return "", "", err
		}
		typ = strings.ToLower(typ)
	}
	if value, err = stringField(i, "value", valueRaw); err != nil {
		return "", "", err
	}
	return typ, value, nil
}

// isName says whether a raw member name, quotes included, stands for name:
// compared as it is when it has no escape, decoded first when it has one
// ("\u0074ype" is "type").
func isName(raw []byte, name string) bool {
	inner := raw[1 : len(raw)-1]
	if bytes.IndexByte(inner, '\\') < 0 {
		return string(inner) == name
	}
	var s string
	return json.Unmarshal(raw, &s) == nil && s == name
}

// stringField checks one required string member; raw is nil when the item
// lacks it.
func stringField(i int, name string, raw []byte) (string, error) {
	if raw == nil {
		return "", fieldProblem(i, name, "Missing data for required field.")
	}
	if string(raw) == "null" {
		return "", fieldProblem(i, name, "Field may not be null.")
	}
	s, ok := decodeString(raw)
	if !ok {
		return "", fieldProblem(i, name, "Not a valid string.")
	}
	if strings.TrimSpace(s) == "" {
		return "", fieldProblem(i, name, "Field may not be blank.")
	}
	return s, nil
}

// decodeString reads a raw JSON value that json.Valid accepted as a
// string; ok is false for any other value.
func decodeString(raw []byte) (string, bool) {
	if raw[0] != '"' {
		return "", false
	}
	if inner := raw[1 : len(raw)-1]; bytes.IndexByte(inner, '\\') < 0 && utf8.Valid(inner) {
		// What json.Unmarshal gives a string without escapes, at a
		// fraction of its cost.
		return string(inner), true
	}
	return unmarshalString(raw)
}

// unmarshalString is json.Unmarshal into a string, in a function of its
// own so that the string escapes to the heap only on this path.
func unmarshalString(raw []byte) (string, bool) {
	var s string
	err := json.Unmarshal(raw, &s)
	return s, err == nil
}

// knownType returns the supported type a raw "type" member names, in the
// lower case constant of its own (no allocation), when it is a JSON string
// of ASCII letters and digits without escapes; else "", and the caller
// reads the member the long way.
func knownType(raw []byte) string {
	const longest = len("domain")
	if len(raw) < 2 || len(raw) > longest+2 || raw[0] != '"' {
		return ""
	}
	var buf [longest]byte
	n := copy(buf[:], raw[1:len(raw)-1])
	for i, c := range buf[:n] {
		switch {
		case 'A' <= c && c <= 'Z':
			buf[i] = c + 'a' - 'A'
		case 'a' <= c && c <= 'z', '0' <= c && c <= '9':
		default:
			return ""
		}
	}
	for _, t := range ctim.Types() {
		if string(buf[:n]) == t {
			return t
		}
	}
	return ""
}
