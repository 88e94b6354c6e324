package transport

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"

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

// readObservables reads the body of an observable endpoint (spec section
// 1): a JSON array of {"type", "value"} with both fields non-blank strings;
// extra fields are ignored. The count limit applies to every item before
// unsupported types are dropped. It returns the supported observables,
// type lower-cased, value as sent, in body order (duplicates kept; the
// pipeline looks each up once).
func readObservables(r *http.Request, lim bodyLimits) ([]ctim.Observable, error) {
	body, err := io.ReadAll(io.LimitReader(r.Body, lim.maxBytes+1))
	if err != nil {
		return nil, schemaProblem("The request body could not be read.")
	}
	if int64(len(body)) > lim.maxBytes {
		return nil, schemaProblem("The request body is larger than " + strconv.FormatInt(lim.maxBytes, 10) + " bytes.")
	}
	return parseObservables(body, lim.maxObservables)
}

// parseObservables is readObservables on bytes already read; the fuzz
// target calls it directly.
func parseObservables(body []byte, maxObservables int) ([]ctim.Observable, error) {
	// Only JSON's own whitespace: TrimSpace would also drop \v, \f and
	// Unicode spaces, which JSON does not allow around a value.
	trimmed := bytes.Trim(body, " \t\r\n")
	if len(trimmed) == 0 || !json.Valid(trimmed) {
		return nil, schemaProblem("The request body is not valid JSON.")
	}
	if trimmed[0] != '[' {
		return nil, schemaProblem("Invalid input type: expected a list of observables.")
	}
	var items []json.RawMessage
	if err := json.Unmarshal(trimmed, &items); err != nil {
		return nil, schemaProblem("The request body is not valid JSON.")
	}
	if len(items) > maxObservables {
		return nil, schemaProblem(fmt.Sprintf("Too many observables: %d, the limit is %d.", len(items), maxObservables))
	}
	out := make([]ctim.Observable, 0, len(items))
	for i, raw := range items {
		typ, value, err := parseItem(i, raw)
		if err != nil {
			return nil, err
		}
		typ = strings.ToLower(typ)
		if ctim.Supported(typ) {
			out = append(out, ctim.Observable{Type: typ, Value: value})
		}
	}
	return out, nil
}

func parseItem(i int, raw json.RawMessage) (typ, value string, err error) {
	var fields map[string]json.RawMessage
	if len(raw) == 0 || raw[0] != '{' || json.Unmarshal(raw, &fields) != nil {
		return "", "", fieldProblem(i, "_schema", "Invalid input type: expected an object.")
	}
	if typ, err = stringField(i, fields, "type"); err != nil {
		return "", "", err
	}
	if value, err = stringField(i, fields, "value"); err != nil {
		return "", "", err
	}
	return typ, value, nil
}

func stringField(i int, fields map[string]json.RawMessage, name string) (string, error) {
	raw, ok := fields[name]
	if !ok {
		return "", fieldProblem(i, name, "Missing data for required field.")
	}
	if string(raw) == "null" {
		return "", fieldProblem(i, name, "Field may not be null.")
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return "", fieldProblem(i, name, "Not a valid string.")
	}
	if strings.TrimSpace(s) == "" {
		return "", fieldProblem(i, name, "Field may not be blank.")
	}
	return s, nil
}
