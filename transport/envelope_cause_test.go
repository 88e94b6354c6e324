package transport

import (
	"fmt"
	"testing"

	"github.com/pulsedive-relay/relay/pulsedive"
)

// TestEnvelopeSwitchesOnCause: the envelope's code of a Pulsedive failure
// follows its type and cause, whatever its text says; only the message
// carries the text.
func TestEnvelopeSwitchesOnCause(t *testing.T) {
	for _, cause := range pulsedive.Causes() {
		for _, reason := range []string{cause.String(), "reworded", "", "Indicator not found.", "rate limiter failed"} {
			t.Run(fmt.Sprintf("%d/%q", cause, reason), func(t *testing.T) {
				err := fmt.Errorf("info: %w", &pulsedive.UnavailableError{Cause: cause, Reason: reason})
				got, known := envelopeOf(err)
				want := apiError{Type: "fatal", Code: "service unavailable", Message: msgUnavailable + reason}
				if !known || got != want {
					t.Errorf("envelope = %+v (known %t), want %+v", got, known, want)
				}
			})
		}
	}
	tests := []struct {
		err  error
		want apiError
	}{
		{&pulsedive.RedirectError{StatusCode: 301}, apiError{Type: "fatal", Code: "unknown", Message: "Pulsedive answered with a redirect"}},
		{&pulsedive.RedirectError{StatusCode: 307}, apiError{Type: "fatal", Code: "unknown", Message: "Pulsedive answered with a redirect"}},
		{&pulsedive.UnexpectedAnswerError{StatusCode: 404}, apiError{Type: "fatal", Code: "unknown", Message: "Pulsedive answered unexpectedly (HTTP 404); check PULSEDIVE_API_URL"}},
		{&pulsedive.UnexpectedAnswerError{StatusCode: 200}, apiError{Type: "fatal", Code: "unknown", Message: "Pulsedive answered unexpectedly (HTTP 200); check PULSEDIVE_API_URL"}},
		{&pulsedive.TLSError{Reason: "Certificate signed by unknown authority"}, apiError{Type: "fatal", Code: "unknown", Message: "Unable to verify SSL certificate: Certificate signed by unknown authority"}},
	}
	for _, tt := range tests {
		t.Run(tt.err.Error(), func(t *testing.T) {
			got, known := envelopeOf(fmt.Errorf("links: %w", tt.err))
			if !known || got != tt.want {
				t.Errorf("envelope = %+v (known %t), want %+v", got, known, tt.want)
			}
		})
	}
}
