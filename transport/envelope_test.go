package transport

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/pulsedive-relay/relay/pipeline"
	"github.com/pulsedive-relay/relay/pulsedive"
)

var update = flag.Bool("update", false, "rewrite the golden files of this package's own testdata")

// pulsedive429 is Pulsedive's own 429 text, which is never folded.
const pulsedive429 = "API rate limit exceeded: 30 requests per minute. Requests disabled for 1 minute. Please visit pulsedive.com/api to increase your limit."

// TestEnvelopeFoldsBudgetRefusals checks the envelope of refusals of the
// relay's own budget (CONTRACT.md section 6, tight budgets): one entry per
// request whatever their retry times, the longest, at the place of the
// first; Active DNS counts when only links were skipped; Pulsedive's own
// 429 texts as they are. The envelopes are compared with a golden file
// (go test ./transport -run TestEnvelopeFoldsBudgetRefusals -update
// rewrites it).
func TestEnvelopeFoldsBudgetRefusals(t *testing.T) {
	limited := func(d time.Duration) error { return &pulsedive.RateLimitError{RetryAfter: d} }
	linksSkipped := func(k, n int, d time.Duration) error {
		return &pipeline.BudgetError{LinksOnly: true, Skipped: k, Of: n, RetryAfter: d}
	}
	tests := []struct {
		name string
		errs []error
	}{
		{"links skipped", []error{linksSkipped(6, 10, 37200*time.Millisecond)}},
		{"links skipped after another failure", []error{&pulsedive.StatusError{StatusCode: 500}, linksSkipped(1, 1, 26900*time.Millisecond)}},
		{"verdicts refused too", []error{&pipeline.BudgetError{Skipped: 18, Of: 18, RetryAfter: 29900 * time.Millisecond}}},
		{"refusals one per observable", []error{limited(5 * time.Second), &pulsedive.StatusError{StatusCode: 503}, limited(60 * time.Second), limited(12 * time.Second)}},
		{"a longer plain refusal wins over the links count", []error{linksSkipped(3, 4, 27*time.Second), limited(90 * time.Second)}},
		{"Pulsedive's own 429 texts stay", []error{
			&pulsedive.StatusError{StatusCode: 429, Message: pulsedive429},
			limited(3 * time.Second),
			&pulsedive.StatusError{StatusCode: 429, Message: pulsedive429},
			limited(4 * time.Second),
		}},
		{"under a second rounds up", []error{limited(200 * time.Millisecond)}},
		{"a paused key", []error{limited(3*time.Hour + time.Second)}},
		{"no refusal", []error{context.DeadlineExceeded, &pulsedive.UnavailableError{Reason: "timeout"}, &pulsedive.UnavailableError{Reason: "timeout"}}},
	}
	got := map[string][]apiError{}
	for _, tt := range tests {
		env := envelopeErrors(tt.errs, func(err error) { t.Errorf("%s: unmapped error %v", tt.name, err) })
		refusals := 0
		for _, e := range env {
			if e.Code == "too many requests" && e.Message != pulsedive429 {
				refusals++
			}
		}
		if refusals > 1 {
			t.Errorf("%s: %d entries for the relay's own budget, want at most one", tt.name, refusals)
		}
		got[tt.name] = env
	}
	compareGoldenJSON(t, filepath.Join("testdata", "budget-envelopes.golden.json"), got)
}

// compareGoldenJSON compares v, as indented JSON, with the golden file, or
// rewrites the file under -update.
func compareGoldenJSON(t *testing.T, path string, v any) {
	t.Helper()
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		t.Fatal(err)
	}
	if *update {
		if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update to write it)", err)
	}
	if diff := cmp.Diff(string(want), buf.String()); diff != "" {
		t.Errorf("%s differs (-want +got):\n%s", path, diff)
	}
}

// TestLinksSkippedMessage pins the folded message's wording, the one Threat
// Response shows.
func TestLinksSkippedMessage(t *testing.T) {
	e, known := envelopeOf(fmt.Errorf("wrapped: %w", &pipeline.BudgetError{LinksOnly: true, Skipped: 6, Of: 10, RetryAfter: 37500 * time.Millisecond}))
	want := apiError{Type: "fatal", Code: "too many requests", Message: "Pulsedive rate limit for this API key reached: Active DNS skipped for 6 of 10 observables; retry in 38 s"}
	if diff := cmp.Diff(want, e); diff != "" || !known {
		t.Errorf("envelope (-want +got):\n%s", diff)
	}
}
