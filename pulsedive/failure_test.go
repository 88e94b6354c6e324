package pulsedive_test

import (
	"net/http"
	"testing"
	"time"

	"github.com/pulsedive-relay/relay/pulsedive"
)

func TestPauseFrom(t *testing.T) {
	now := time.Date(2020, 4, 15, 10, 30, 0, 0, time.UTC)
	endOfYear := time.Date(2020, 12, 31, 23, 59, 59, 0, time.UTC)
	h := func(kv ...string) http.Header {
		out := http.Header{}
		for i := 0; i < len(kv); i += 2 {
			out.Set(kv[i], kv[i+1])
		}
		return out
	}
	tests := []struct {
		name    string
		status  int
		header  http.Header
		message string
		now     time.Time
		want    time.Time // zero: no pause
	}{
		{name: "429 one minute", status: 429, message: "API rate limit exceeded: 30 requests per minute. Requests disabled for 1 minute. Please visit pulsedive.com/api to increase your limit.",
			want: now.Add(time.Minute)},
		{name: "429 minutes", status: 429, message: "Requests disabled for 5 minutes.", want: now.Add(5 * time.Minute)},
		{name: "429 seconds", status: 429, message: "Requests disabled for 30 seconds.", want: now.Add(30 * time.Second)},
		{name: "429 hours", status: 429, message: "Requests disabled for 2 hours.", want: now.Add(2 * time.Hour)},
		{name: "429 a day, any case", status: 429, message: "REQUESTS DISABLED FOR 1 DAY", want: now.Add(24 * time.Hour)},
		{name: "429 without a period", status: 429, message: "API rate limit exceeded: 1 requests per second.", want: now.Add(pulsedive.DefaultPause)},
		{name: "429 without a message", status: 429, want: now.Add(pulsedive.DefaultPause)},
		{name: "429 absurd period", status: 429, message: "Requests disabled for 99999999999 days.", want: now.Add(pulsedive.DefaultPause)},
		{name: "Retry-After seconds", status: 429, header: h("Retry-After", "120"), message: "Requests disabled for 1 minute.", want: now.Add(2 * time.Minute)},
		{name: "Retry-After date", status: 429, header: h("Retry-After", now.Add(90*time.Second).Format(http.TimeFormat)), want: now.Add(90 * time.Second)},
		{name: "Retry-After date past", status: 429, header: h("Retry-After", now.Add(-time.Hour).Format(http.TimeFormat)), want: now.Add(pulsedive.DefaultPause)},
		{name: "Retry-After garbage", status: 429, header: h("Retry-After", "soon"), want: now.Add(pulsedive.DefaultPause)},
		{name: "day spent", status: 200, header: h("X-Requests-Remaining-Day", "0"), want: time.Date(2020, 4, 16, 0, 0, 0, 0, time.UTC)},
		{name: "day spent at year end", status: 200, header: h("X-Requests-Remaining-Day", "0"), now: endOfYear, want: time.Date(2021, 1, 1, 0, 0, 0, 0, time.UTC)},
		{name: "day spent, local clock", status: 200, header: h("X-Requests-Remaining-Day", "0"),
			now: time.Date(2020, 4, 15, 22, 0, 0, 0, time.FixedZone("UTC+5", 5*3600)), want: time.Date(2020, 4, 16, 0, 0, 0, 0, time.UTC)},
		{name: "month spent", status: 200, header: h("X-Requests-Remaining-Month", "0"), want: time.Date(2020, 5, 1, 0, 0, 0, 0, time.UTC)},
		{name: "month spent in December", status: 200, header: h("X-Requests-Remaining-Month", "0"), now: endOfYear, want: time.Date(2021, 1, 1, 0, 0, 0, 0, time.UTC)},
		{name: "month wins over day", status: 200, header: h("X-Requests-Remaining-Month", "0", "X-Requests-Remaining-Day", "0"), want: time.Date(2020, 5, 1, 0, 0, 0, 0, time.UTC)},
		{name: "second spent", status: 200, header: h("X-Requests-Remaining-Second", "0"), want: now.Add(time.Second)},
		{name: "negative counts as spent", status: 200, header: h("X-Requests-Remaining-Day", "-1"), want: time.Date(2020, 4, 16, 0, 0, 0, 0, time.UTC)},
		{name: "spent on an error answer", status: 500, header: h("X-Requests-Remaining-Day", "0"), want: time.Date(2020, 4, 16, 0, 0, 0, 0, time.UTC)},
		{name: "calls left", status: 200, header: h("X-Requests-Remaining-Second", "1", "X-Requests-Remaining-Day", "9", "X-Requests-Remaining-Month", "249")},
		{name: "garbage header", status: 200, header: h("X-Requests-Remaining-Day", "none")},
		{name: "missing headers", status: 200},
		{name: "not found", status: 404},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			at := tc.now
			if at.IsZero() {
				at = now
			}
			header := tc.header
			if header == nil {
				header = http.Header{}
			}
			got, ok := pulsedive.PauseFrom(tc.status, header, tc.message, at)
			if ok != !tc.want.IsZero() || !got.Equal(tc.want) {
				t.Errorf("PauseFrom = %v, %t; want %v, %t", got, ok, tc.want, !tc.want.IsZero())
			}
		})
	}
}

func TestJitteredBackoff(t *testing.T) {
	ceilings := map[int]time.Duration{1: 100 * time.Millisecond, 2: 200 * time.Millisecond, 3: 400 * time.Millisecond, 6: 2 * time.Second, 40: 2 * time.Second}
	for retry, ceiling := range ceilings {
		for range 200 {
			if d := pulsedive.JitteredBackoff(retry); d < 0 || d > ceiling {
				t.Fatalf("JitteredBackoff(%d) = %v, want within [0, %v]", retry, d, ceiling)
			}
		}
	}
}
