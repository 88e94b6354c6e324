package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"regexp"
	"sync"
)

// relayAnswer is the envelope of the relay's observable and health
// answers (CONTRACT.md section 2): data, errors, or both.
type relayAnswer struct {
	Data   json.RawMessage `json:"data"`
	Errors []apiError      `json:"errors"`
}

type apiError struct {
	Type    string `json:"type"`
	Code    string `json:"code"`
	Message string `json:"message"`
}

// parseAnswer decodes an answer body; an error means the relay answered
// something that is not its envelope.
func parseAnswer(body []byte) (relayAnswer, error) {
	var a relayAnswer
	if err := json.Unmarshal(body, &a); err != nil {
		return relayAnswer{}, fmt.Errorf("answer is not JSON: %w", err)
	}
	if len(a.Data) == 0 && len(a.Errors) == 0 {
		return relayAnswer{}, fmt.Errorf("answer has neither data nor errors: %s", truncate(string(body), 200))
	}
	return a, nil
}

// judgements returns the judgement count of an observe answer: one per
// observable Pulsedive knows. Verdicts would not do: an expired verdict is
// left out (CONTRACT.md section 4b), and the synthetic documents, made for a clock at
// 2020-04-15, have all expired by the relay's real clock.
func (a relayAnswer) judgements() int {
	var d struct {
		Judgements struct {
			Count int `json:"count"`
		} `json:"judgements"`
	}
	_ = json.Unmarshal(a.Data, &d) // refer's list, or no data: no judgements
	return d.Judgements.Count
}

// errorText lists the errors of an answer in a few words, for messages.
func (a relayAnswer) errorText() string {
	s := ""
	for i, e := range a.Errors {
		if i > 0 {
			s += "; "
		}
		s += e.Code + ": " + e.Message
	}
	return s
}

// post sends one request and decodes the relay's envelope; a status other
// than 200 or a body that is no envelope is an error.
func post(ctx context.Context, lc *loadClient, r request) (relayAnswer, answer, error) {
	a, err := lc.do(ctx, r)
	if err != nil {
		return relayAnswer{}, answer{}, fmt.Errorf("%s %s: %w", r.Kind, r.Path, err)
	}
	if a.Status != http.StatusOK {
		return relayAnswer{}, a, fmt.Errorf("%s %s: HTTP %d: %s", r.Kind, r.Path, a.Status, truncate(string(a.Body), 200))
	}
	ra, err := parseAnswer(a.Body)
	if err != nil {
		return relayAnswer{}, a, fmt.Errorf("%s %s: %w", r.Kind, r.Path, err)
	}
	return ra, a, nil
}

// observeRequest is a POST /observe/observables of obs under apiKey.
func (b *bench) observeRequest(apiKey string, obs []observable) (request, error) {
	return b.endpointRequest("observe", apiKey, obs)
}

// endpointRequest is a request to one of the observable endpoints (kind
// observe, deliberate or refer) or to /health (kind health, obs ignored).
func (b *bench) endpointRequest(kind, apiKey string, obs []observable) (request, error) {
	tok, err := b.token(apiKey)
	if err != nil {
		return request{}, err
	}
	if kind == "health" {
		return request{Kind: kind, Path: "/health", Token: tok}, nil
	}
	return request{Kind: kind, Path: "/" + kind + "/observables", Body: body(obs), Token: tok}, nil
}

// warmUp makes one health call with a key of its own, so that the relay
// has fetched the JWKS and dialled Pulsedive before anything is measured,
// without spending the budget of a measured key.
func (st *stack) warmUp(ctx context.Context, lc *loadClient) error {
	r, err := st.b.endpointRequest("health", st.b.apiKey(st.name+"-warmup"), nil)
	if err != nil {
		return err
	}
	ra, _, err := post(ctx, lc, r)
	if err != nil {
		return fmt.Errorf("warm-up: %w", err)
	}
	if len(ra.Errors) > 0 {
		return fmt.Errorf("warm-up: /health answered %s", ra.errorText())
	}
	return nil
}

// digits are replaced in error messages so that "retry in 49 s" and
// "retry in 50 s" count as one message.
var digits = regexp.MustCompile(`[0-9]+`)

// tally counts answers of a mixed load by endpoint, error code and shape.
// It is safe for concurrent use.
type tally struct {
	mu        sync.Mutex
	byKind    map[string]int
	codes     map[string]int
	messages  map[string]int
	partial   int // data and errors side by side
	malformed int // not the relay's envelope
	examples  []string
}

func newTally() *tally {
	return &tally{byKind: map[string]int{}, codes: map[string]int{}, messages: map[string]int{}}
}

func (t *tally) add(r request, a answer) {
	var ra relayAnswer
	var perr error
	if a.Status == http.StatusOK {
		ra, perr = parseAnswer(a.Body)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	t.byKind[r.Kind]++
	if a.Status != http.StatusOK {
		if len(t.examples) < 5 {
			t.examples = append(t.examples, fmt.Sprintf("%s: HTTP %d %s", r.Kind, a.Status, truncate(string(a.Body), 200)))
		}
		return
	}
	if perr != nil {
		t.malformed++
		if len(t.examples) < 5 {
			t.examples = append(t.examples, fmt.Sprintf("%s: %v", r.Kind, perr))
		}
		return
	}
	if len(ra.Data) > 0 && len(ra.Errors) > 0 {
		t.partial++
	}
	for _, e := range ra.Errors {
		t.codes[e.Code]++
		key := e.Code + ": " + truncate(digits.ReplaceAllString(e.Message, "N"), 90)
		if _, seen := t.messages[key]; seen || len(t.messages) < 100 {
			t.messages[key]++
		}
	}
}
