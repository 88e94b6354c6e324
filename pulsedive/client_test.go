package pulsedive_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/pulsedive-relay/relay/pulsedive"
	"github.com/pulsedive-relay/relay/pulsedive/pulsedivetest"
)

const rateLimitText = "API rate limit exceeded: 30 requests per minute. Requests disabled for 1 minute. Please visit pulsedive.com/api to increase your limit."

func TestIndicatorFixtures(t *testing.T) {
	manyFactors := &pulsedive.Indicator{
		IID: "424242", Indicator: "many-factors.example", Type: "domain", Risk: "low", Retired: true, RetiredReason: "No recent activity",
		StampSeen: "2020-03-31 14:47:36",
	}
	for i := range 120 {
		manyFactors.RiskFactors = append(manyFactors.RiskFactors,
			pulsedive.RiskFactor{Description: fmt.Sprintf("synthetic risk factor %03d", i), Risk: "low"})
	}
	tests := []struct {
		value   string
		want    *pulsedive.Indicator
		wantErr error
	}{
		{value: "parkingcrew.net", want: &pulsedive.Indicator{
			IID: "118", Indicator: "parkingcrew.net", Type: "domain", Risk: "medium", Retired: true, RetiredReason: "No recent activity", StampSeen: "2020-03-31 14:47:36",
			RiskFactors: []pulsedive.RiskFactor{{Description: "found in threat feeds", Risk: "medium"}, {Description: "registration recently updated", Risk: "medium"}},
			Threats: []pulsedive.Threat{
				{TID: "108", Name: "JS Crypto Miner", Category: "abuse", Risk: "unknown", StampLinked: "2018-08-06 03:44:07"},
				{TID: "9", Name: "Kraken Botnet", Category: "malware", Risk: "unknown", StampLinked: "2019-01-01 04:01:30"},
			},
			Feeds: []pulsedive.Feed{{FID: "13", Name: "BBcan177 DNSBL", Category: "general", Organization: "BBcan177", StampLinked: "2020-02-10 07:41:05"}},
		}},
		{value: "185.141.25.242", want: &pulsedive.Indicator{
			IID: "5401", Indicator: "185.141.25.242", Type: "ip", Risk: "high", StampSeen: "2020-04-10 08:30:00",
			RiskFactors: []pulsedive.RiskFactor{{Description: "found in threat feeds", Risk: "high"}, {Description: "malware distribution", Risk: "high"}, {Description: "self-signed ssl certificate", Risk: "low"}},
			Threats: []pulsedive.Threat{
				{TID: "41", Name: "Emotet", Category: "malware", Risk: "critical", StampLinked: "2020-03-01 12:00:00"},
				{TID: "7", Name: "Zeus", Category: "malware", Risk: "high", StampLinked: "2020-04-02 00:00:01"},
			},
			Feeds: []pulsedive.Feed{
				{FID: "60", Name: "ZeroDot1's Bad IPs Feed", Category: "abuse", Organization: "ZeroDot1", StampLinked: "2020-01-15 10:00:00"},
				{FID: "2", Name: "Feodo Tracker", Category: "malware", Organization: "abuse.ch", StampLinked: "2020-04-01 06:00:00"},
			},
		}},
		{value: "http://51jianli.cn/images", want: &pulsedive.Indicator{
			IID: "7712", Indicator: "http://51jianli.cn/images", Type: "url", Risk: "critical", StampSeen: "2020-02-02 02:02:02",
			RiskFactors: []pulsedive.RiskFactor{{Description: "phishing page", Risk: "critical"}},
			Feeds:       []pulsedive.Feed{{FID: "31", Name: "OpenPhish Feed", Category: "phishing", Organization: "OpenPhish", StampLinked: "2020-02-02 02:00:00"}},
		}},
		{value: "2001:420:1101:1::185", want: &pulsedive.Indicator{
			IID: "66001", Indicator: "2001:420:1101:1::185", Type: "ipv6", Risk: "none", Retired: true, RetiredReason: "No recent activity",
			StampSeen: "2019-10-01 00:00:00", StampRetired: "2020-01-01 00:00:00",
		}},
		{value: "110.174.93.63", want: &pulsedive.Indicator{
			IID: "8123", Indicator: "110.174.93.63", Type: "ip", Risk: "none", StampSeen: "2020-03-03 03:03:03",
		}},
		// A changed document: no risk, no stamp_retired, no lists. The
		// decoder keeps what is there; the mapping decides it is broken.
		{value: "broken.example", want: &pulsedive.Indicator{
			IID: "3658835", Indicator: "broken.example", Type: "domain", Retired: true, RetiredReason: "No recent activity", StampSeen: "2019-11-13 03:36:17",
		}},
		{value: "many-factors.example", want: manyFactors},
		{value: "23.23.23.23", wantErr: pulsedive.ErrNotFound},
		{value: "rate-limited.example", wantErr: &pulsedive.StatusError{StatusCode: 429, Message: rateLimitText}},
		{value: "processing.example", wantErr: &pulsedive.StatusError{StatusCode: 408, Message: "Request(s) still processing."}},
	}
	srv := newFake(t, pulsedivetest.Config{})
	c := newClient(t, srv.URL(), nil)
	for _, tc := range tests {
		t.Run(tc.value, func(t *testing.T) {
			got, err := c.Indicator(context.Background(), testKey, tc.value)
			checkErr(t, err, tc.wantErr)
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("Indicator (-want +got):\n%s", diff)
			}
		})
	}
}

func TestLinksFixtures(t *testing.T) {
	tests := []struct {
		value   string
		want    *pulsedive.Links
		wantErr error
	}{
		// Other groups ("Related URLs") are skipped; summaries are objects.
		{value: "parkingcrew.net", want: &pulsedive.Links{ActiveDNS: []pulsedive.Link{
			{IID: "3", Indicator: "187.191.98.202", Type: "ip", StampLinked: "2020-04-01 10:46:47"},
			{IID: "4", Indicator: "185.53.179.29", Type: "ip", StampLinked: "2019-06-22 10:46:47"},
		}}},
		{value: "185.141.25.242", want: &pulsedive.Links{ActiveDNS: []pulsedive.Link{
			{IID: "901", Indicator: "bad-cdn.example", Type: "domain", StampLinked: "2020-04-09 00:00:00"},
			{IID: "902", Indicator: "mail.bad-cdn.example", Type: "domain", StampLinked: "2020-03-20 12:00:00"},
			{IID: "903", Indicator: "old-name.example", Type: "domain", StampLinked: "2019-01-01 00:00:00"},
			{IID: "904", Indicator: "185.141.25.243", Type: "ip", StampLinked: "2020-04-09 00:00:00"},
		}}},
		// A single object, not a list.
		{value: "2001:420:1101:1::185", want: &pulsedive.Links{ActiveDNS: []pulsedive.Link{
			{IID: "905", Indicator: "www.cisco.com", Type: "domain", StampLinked: "2020-04-01 00:00:00"},
		}}},
		{value: "http://51jianli.cn/images", want: &pulsedive.Links{}},
		{value: "broken.example", want: &pulsedive.Links{}},
		{value: "many-factors.example", want: &pulsedive.Links{}},
		{value: "110.174.93.63", wantErr: pulsedive.ErrNotFound},
		{value: "23.23.23.23", wantErr: pulsedive.ErrNotFound},
		{value: "rate-limited.example", wantErr: &pulsedive.StatusError{StatusCode: 429, Message: rateLimitText}},
		{value: "processing.example", wantErr: &pulsedive.StatusError{StatusCode: 408, Message: "Request(s) still processing."}},
	}
	srv := newFake(t, pulsedivetest.Config{})
	c := newClient(t, srv.URL(), nil)
	for _, tc := range tests {
		t.Run(tc.value, func(t *testing.T) {
			got, err := c.Links(context.Background(), testKey, tc.value)
			checkErr(t, err, tc.wantErr)
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("Links (-want +got):\n%s", diff)
			}
			if n := srv.CallsFor(pulsedivetest.KindLinks, tc.value); n != 1 {
				t.Errorf("links calls = %d, want 1", n)
			}
		})
	}
}

// TestLenientIndicator serves documents in the loose shapes Pulsedive
// sends and checks the fields that vary.
func TestLenientIndicator(t *testing.T) {
	type shape struct {
		IID, StampRetired string
		Retired           bool
		Threats, Feeds    int
	}
	tests := []struct {
		name string
		body string
		want shape
	}{
		{"iid number", `{"iid":118,"retired":""}`, shape{IID: "118"}},
		{"iid string", `{"iid":"118","retired":""}`, shape{IID: "118"}},
		{"retired empty string", `{"iid":1,"retired":""}`, shape{IID: "1"}},
		{"retired zero", `{"iid":1,"retired":0}`, shape{IID: "1"}},
		{"retired null", `{"iid":1,"retired":null}`, shape{IID: "1"}},
		{"retired absent", `{"iid":1}`, shape{IID: "1"}},
		{"retired reason", `{"iid":1,"retired":"No recent activity"}`, shape{IID: "1", Retired: true}},
		{"retired one", `{"iid":1,"retired":1}`, shape{IID: "1", Retired: true}},
		{"stamp_retired null", `{"iid":1,"stamp_retired":null}`, shape{IID: "1"}},
		{"stamp_retired empty", `{"iid":1,"stamp_retired":""}`, shape{IID: "1"}},
		{"stamp_retired set", `{"iid":1,"stamp_retired":"2020-01-01 00:00:00"}`, shape{IID: "1", StampRetired: "2020-01-01 00:00:00"}},
		{"lists as empty objects", `{"iid":1,"threats":{},"feeds":{},"riskfactors":{}}`, shape{IID: "1"}},
		{"lists null", `{"iid":1,"threats":null,"feeds":null,"riskfactors":null}`, shape{IID: "1"}},
		{"one threat as an object", `{"iid":1,"threats":{"tid":7,"name":"Zeus"},"feeds":[{"fid":"2"},{"fid":3}]}`, shape{IID: "1", Threats: 1, Feeds: 2}},
	}
	srv := newFake(t, pulsedivetest.Config{})
	c := newClient(t, srv.URL(), nil)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			value := "lenient-" + strings.ReplaceAll(tc.name, " ", "-") + ".example"
			if err := srv.SetIndicator(value, pulsedivetest.Entry{Info: pulsedivetest.Answer{Body: json.RawMessage(tc.body)}}); err != nil {
				t.Fatal(err)
			}
			ind, err := c.Indicator(context.Background(), testKey, value)
			if err != nil {
				t.Fatalf("Indicator: %v", err)
			}
			got := shape{IID: ind.IID, StampRetired: ind.StampRetired, Retired: ind.Retired, Threats: len(ind.Threats), Feeds: len(ind.Feeds)}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("decoded (-want +got):\n%s", diff)
			}
		})
	}
}

func TestLenientLinks(t *testing.T) {
	tests := []struct {
		name string
		body string
		want []pulsedive.Link
	}{
		{"summary empty object", `{"Active DNS":[{"iid":1,"indicator":"a.example","type":"domain","stamp_linked":"2020-04-01 00:00:00","summary":{}}]}`,
			[]pulsedive.Link{{IID: "1", Indicator: "a.example", Type: "domain", StampLinked: "2020-04-01 00:00:00"}}},
		{"summary empty list", `{"Active DNS":[{"iid":"1","indicator":"a.example","type":"domain","summary":[]}]}`,
			[]pulsedive.Link{{IID: "1", Indicator: "a.example", Type: "domain"}}},
		{"one object", `{"Active DNS":{"iid":2,"indicator":"10.0.0.1","type":"ip","summary":[]}}`,
			[]pulsedive.Link{{IID: "2", Indicator: "10.0.0.1", Type: "ip"}}},
		{"empty group object", `{"Active DNS":{}}`, nil},
		{"empty group list", `{"Active DNS":[]}`, nil},
		{"no groups", `{}`, nil},
	}
	srv := newFake(t, pulsedivetest.Config{})
	c := newClient(t, srv.URL(), nil)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			value := "links-" + strings.ReplaceAll(tc.name, " ", "-") + ".example"
			err := srv.SetIndicator(value, pulsedivetest.Entry{
				Info:  pulsedivetest.Answer{Body: json.RawMessage(`{"iid":1}`)},
				Links: pulsedivetest.Answer{Body: json.RawMessage(tc.body)},
			})
			if err != nil {
				t.Fatal(err)
			}
			got, err := c.Links(context.Background(), testKey, value)
			if err != nil {
				t.Fatalf("Links: %v", err)
			}
			if diff := cmp.Diff(tc.want, got.ActiveDNS); diff != "" {
				t.Errorf("Active DNS (-want +got):\n%s", diff)
			}
		})
	}
}

// TestFailures drives every failure through the fake and counts the calls
// that reached it: what is retried, what is not, and what comes back.
func TestFailures(t *testing.T) {
	tests := []struct {
		name      string
		fault     pulsedivetest.Fault
		timeout   time.Duration // per call; 5s when zero
		want      error
		wantCalls int
	}{
		{name: "400 is no data", fault: pulsedivetest.Fault{Status: 400}, want: pulsedive.ErrNotFound, wantCalls: 1},
		{name: "404 is no data", fault: pulsedivetest.Fault{Status: 404}, want: pulsedive.ErrNotFound, wantCalls: 1},
		{name: "406 is no data", fault: pulsedivetest.Fault{Status: 406, Message: "Invalid indicator."}, want: pulsedive.ErrNotFound, wantCalls: 1},
		{name: "200 not found text is no data", fault: pulsedivetest.Fault{Mode: pulsedivetest.ModeErrorField, Message: "Indicator not found."},
			want: pulsedive.ErrNotFound, wantCalls: 1},
		{name: "200 error text", fault: pulsedivetest.Fault{Mode: pulsedivetest.ModeErrorField, Message: "Something broke."},
			want: &pulsedive.APIError{Message: "Something broke."}, wantCalls: 1},
		{name: "401 not retried", fault: pulsedivetest.Fault{Status: 401},
			want: &pulsedive.StatusError{StatusCode: 401, Message: "Invalid API key."}, wantCalls: 1},
		{name: "403 not retried", fault: pulsedivetest.Fault{Status: 403},
			want: &pulsedive.StatusError{StatusCode: 403, Message: "Access denied for this API key."}, wantCalls: 1},
		{name: "408 processing", fault: pulsedivetest.Fault{Status: 408},
			want: &pulsedive.StatusError{StatusCode: 408, Message: "Request(s) still processing."}, wantCalls: 1},
		{name: "429 not retried", fault: pulsedivetest.Fault{Status: 429},
			want: &pulsedive.StatusError{StatusCode: 429, Message: rateLimitText}, wantCalls: 1},
		{name: "500 retried twice", fault: pulsedivetest.Fault{Status: 500, Message: "Oops."},
			want: &pulsedive.StatusError{StatusCode: 500, Message: "Oops."}, wantCalls: 3},
		{name: "502 HTML page retried twice", fault: pulsedivetest.Fault{Status: 502},
			want: &pulsedive.StatusError{StatusCode: 502}, wantCalls: 3},
		{name: "503 retried twice", fault: pulsedivetest.Fault{Status: 503},
			want: &pulsedive.StatusError{StatusCode: 503}, wantCalls: 3},
		{name: "503 twice then recovers", fault: pulsedivetest.Fault{Status: 503, FirstN: 2}, wantCalls: 3},
		{name: "503 flapping recovers", fault: pulsedivetest.Fault{Status: 503, Every: 2}, wantCalls: 2},
		{name: "504 three times is too many", fault: pulsedivetest.Fault{Status: 504, FirstN: 3},
			want: &pulsedive.StatusError{StatusCode: 504}, wantCalls: 3},
		{name: "reset retried twice", fault: pulsedivetest.Fault{Mode: pulsedivetest.ModeReset},
			want: unavailable(pulsedive.CauseReset, "connection reset"), wantCalls: 3},
		{name: "reset once then recovers", fault: pulsedivetest.Fault{Mode: pulsedivetest.ModeReset, FirstN: 1}, wantCalls: 2},
		{name: "disconnect mid-body retried", fault: pulsedivetest.Fault{Mode: pulsedivetest.ModeDisconnect},
			want: unavailable(pulsedive.CauseReset, "connection reset"), wantCalls: 3},
		{name: "truncated JSON", fault: pulsedivetest.Fault{Mode: pulsedivetest.ModeTruncate}, want: pulsedive.ErrInvalidJSON, wantCalls: 1},
		{name: "not JSON", fault: pulsedivetest.Fault{Mode: pulsedivetest.ModeNotJSON}, want: pulsedive.ErrInvalidJSON, wantCalls: 1},
		{name: "huge body", fault: pulsedivetest.Fault{Mode: pulsedivetest.ModeHuge}, want: pulsedive.ErrTooLarge, wantCalls: 1},
		{name: "hang is a timeout, not retried", fault: pulsedivetest.Fault{Mode: pulsedivetest.ModeHang}, timeout: 30 * time.Millisecond,
			want: unavailable(pulsedive.CauseTimeout, "timeout"), wantCalls: 1},
		{name: "slow drip is a timeout", fault: pulsedivetest.Fault{Mode: pulsedivetest.ModeDrip, DripEvery: 20 * time.Millisecond},
			timeout: 60 * time.Millisecond, want: unavailable(pulsedive.CauseTimeout, "timeout"), wantCalls: 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			// In a bubble: the retries' backoff costs no time.
			synctest.Test(t, func(t *testing.T) {
				fk := newBubbleFake(t, pulsedivetest.Config{})
				fk.SetFault("parkingcrew.net", tc.fault)
				lim := &recLimiter{}
				c := newBubbleClient(t, fk, func(cfg *pulsedive.Config) {
					cfg.Limiter = lim
					cfg.MaxBodyBytes = 64 << 10
					if tc.timeout > 0 {
						cfg.Timeout = tc.timeout
					}
				})
				got, err := c.Indicator(context.Background(), testKey, "parkingcrew.net")
				checkErr(t, err, tc.want)
				if (got != nil) != (tc.want == nil) {
					t.Errorf("document = %v with error %v", got, err)
				}
				if n := fk.CallsFor(pulsedivetest.KindInfo, "parkingcrew.net"); n != tc.wantCalls {
					t.Errorf("calls = %d, want %d", n, tc.wantCalls)
				}
				if n := lim.Waits(); n != tc.wantCalls {
					t.Errorf("limiter waits = %d, want one per call (%d)", n, tc.wantCalls)
				}
			})
		})
	}
}

func TestHugeBodyIsNotReadToTheEnd(t *testing.T) {
	srv := newFake(t, pulsedivetest.Config{})
	const size = 64 << 20
	srv.SetFault(pulsedivetest.AnyValue, pulsedivetest.Fault{Mode: pulsedivetest.ModeHuge, Size: size})
	c := newClient(t, srv.URL(), func(cfg *pulsedive.Config) { cfg.MaxBodyBytes = 1 << 20 })
	_, err := c.Indicator(context.Background(), testKey, "x")
	checkErr(t, err, pulsedive.ErrTooLarge)
	srv.Close() // waits for the handler, which stops when the client hangs up
	if n := srv.Stats().BytesWritten; n >= size {
		t.Errorf("the fake wrote all %d bytes; the client should have hung up after 1 MiB", n)
	}
}

func TestRetriesStopAtTheDeadline(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fk := newBubbleFake(t, pulsedivetest.Config{})
		fk.SetFault(pulsedivetest.AnyValue, pulsedivetest.Fault{Status: 503})
		c := newBubbleClient(t, fk, nil)
		// The bubble's clock stands still during the call, so a nanosecond
		// is left after it: less than the first backoff, drawn from [0,
		// 100ms], but for a chance of 2 in 10^8.
		ctx, cancel := context.WithTimeout(context.Background(), time.Nanosecond)
		defer cancel()
		_, err := c.Indicator(ctx, testKey, "parkingcrew.net")
		// The answer names what failed, not the deadline that cut the retries.
		checkErr(t, err, &pulsedive.StatusError{StatusCode: 503})
		if n := fk.Calls(); n != 1 {
			t.Errorf("calls = %d, want 1: a backoff past the deadline is not slept", n)
		}
	})
}

func TestRequestContext(t *testing.T) {
	t.Run("deadline", func(t *testing.T) {
		srv := newFake(t, pulsedivetest.Config{})
		srv.SetFault(pulsedivetest.AnyValue, pulsedivetest.Fault{Mode: pulsedivetest.ModeHang})
		c := newClient(t, srv.URL(), func(cfg *pulsedive.Config) { cfg.Timeout = time.Minute })
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
		defer cancel()
		_, err := c.Indicator(ctx, testKey, "parkingcrew.net")
		checkErr(t, err, unavailable(pulsedive.CauseDeadline, "request deadline exceeded"))
		if n := srv.Calls(); n != 1 {
			t.Errorf("calls = %d, want 1", n)
		}
	})
	t.Run("cancelled before", func(t *testing.T) {
		srv := newFake(t, pulsedivetest.Config{})
		lim := &recLimiter{}
		c := newClient(t, srv.URL(), func(cfg *pulsedive.Config) { cfg.Limiter = lim })
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		_, err := c.Indicator(ctx, testKey, "parkingcrew.net")
		checkErr(t, err, unavailable(pulsedive.CauseCancelled, "request cancelled"))
		if n, w := srv.Calls(), lim.Waits(); n != 0 || w != 0 {
			t.Errorf("calls = %d, limiter waits = %d; want none", n, w)
		}
	})
}

func TestConnectionRefusedIsRetried(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	// In a bubble, the backoff between the attempts costs no time; a
	// refused connection leaves nothing on the wire to wait for.
	synctest.Test(t, func(t *testing.T) {
		lim := &recLimiter{}
		c := newClient(t, "http://"+addr+"/api/", func(cfg *pulsedive.Config) { cfg.Limiter = lim })
		_, err := c.Indicator(context.Background(), testKey, "parkingcrew.net")
		checkErr(t, err, unavailable(pulsedive.CauseRefused, "connection refused"))
		if n := lim.Waits(); n != 3 {
			t.Errorf("attempts = %d, want 3", n)
		}
	})
}

func TestTLSUnknownAuthority(t *testing.T) {
	srv, err := pulsedivetest.NewTLSServer(pulsedivetest.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	lim := &recLimiter{}
	c := newClient(t, srv.URL(), func(cfg *pulsedive.Config) { cfg.Limiter = lim }) // system roots only
	_, err = c.Indicator(context.Background(), testKey, "parkingcrew.net")
	checkErr(t, err, &pulsedive.TLSError{Reason: "Certificate signed by unknown authority"})
	if n := lim.Waits(); n != 1 {
		t.Errorf("attempts = %d, want 1: verification failures are not retried", n)
	}

	trusting := newClient(t, srv.URL(), func(cfg *pulsedive.Config) { cfg.HTTPClient = srv.Client() })
	if _, err := trusting.Indicator(context.Background(), testKey, "parkingcrew.net"); err != nil {
		t.Errorf("with the server's CA: %v", err)
	}
}

func TestLimiter(t *testing.T) {
	t.Run("refusal is a RateLimitError", func(t *testing.T) {
		srv := newFake(t, pulsedivetest.Config{})
		lim := &recLimiter{refuse: fmt.Errorf("limiter: %w", retryAfterError{42 * time.Second})}
		c := newClient(t, srv.URL(), func(cfg *pulsedive.Config) { cfg.Limiter = lim })
		_, err := c.Indicator(context.Background(), testKey, "parkingcrew.net")
		checkErr(t, err, &pulsedive.RateLimitError{RetryAfter: 42 * time.Second})
		if n := srv.Calls(); n != 0 {
			t.Errorf("calls = %d, want 0", n)
		}
	})
	t.Run("other failure", func(t *testing.T) {
		srv := newFake(t, pulsedivetest.Config{})
		lim := &recLimiter{refuse: errors.New("limiter broke")}
		c := newClient(t, srv.URL(), func(cfg *pulsedive.Config) { cfg.Limiter = lim })
		_, err := c.Indicator(context.Background(), testKey, "parkingcrew.net")
		checkErr(t, err, unavailable(pulsedive.CauseLimiterFailed, "rate limiter failed"))
	})
	t.Run("keyed by fingerprint", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) { // the retry's backoff costs no time
			fk := newBubbleFake(t, pulsedivetest.Config{})
			fk.SetFault(pulsedivetest.AnyValue, pulsedivetest.Fault{Status: 503, FirstN: 1})
			lim := &recLimiter{}
			c := newBubbleClient(t, fk, func(cfg *pulsedive.Config) { cfg.Limiter = lim })
			if _, err := c.Indicator(context.Background(), testKey, "parkingcrew.net"); err != nil {
				t.Fatal(err)
			}
			want := []string{testKey.Fingerprint(), testKey.Fingerprint()}
			if diff := cmp.Diff(want, lim.waits); diff != "" {
				t.Errorf("waits (-want +got):\n%s", diff)
			}
		})
	})
}

// TestPauses checks what the client tells the limiter after each answer.
func TestPauses(t *testing.T) {
	fp := testKey.Fingerprint()
	midnight := time.Date(2020, 4, 16, 0, 0, 0, 0, time.UTC)
	tests := []struct {
		name  string
		cfg   pulsedivetest.Config
		fault *pulsedivetest.Fault
		value string
		want  []pause
	}{
		{name: "429 disabled for 1 minute", value: "rate-limited.example", want: []pause{{fp, fixedNow.Add(time.Minute)}}},
		{name: "429 disabled for 10 seconds", value: "x",
			fault: &pulsedivetest.Fault{Status: 429, Message: "API rate limit exceeded. Requests disabled for 10 seconds."},
			want:  []pause{{fp, fixedNow.Add(10 * time.Second)}}},
		{name: "429 with Retry-After", value: "x",
			fault: &pulsedivetest.Fault{Status: 429, Header: http.Header{"Retry-After": {"7"}}},
			want:  []pause{{fp, fixedNow.Add(7 * time.Second)}}},
		{name: "429 per second, no period", value: "x",
			fault: &pulsedivetest.Fault{Status: 429, Message: "API rate limit exceeded: 1 requests per second."},
			want:  []pause{{fp, fixedNow.Add(pulsedive.DefaultPause)}}},
		{name: "last call of the day", value: "parkingcrew.net", cfg: pulsedivetest.Config{PerDay: 1},
			want: []pause{{fp, midnight}}},
		{name: "calls left", value: "parkingcrew.net", cfg: pulsedivetest.Config{PerDay: 2, PerMonth: 5}},
		{name: "no headers", value: "parkingcrew.net"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.cfg.Now = func() time.Time { return fixedNow }
			srv := newFake(t, tc.cfg)
			if tc.fault != nil {
				srv.SetFault(pulsedivetest.AnyValue, *tc.fault)
			}
			lim := &recLimiter{}
			c := newClient(t, srv.URL(), func(cfg *pulsedive.Config) { cfg.Limiter = lim })
			_, _ = c.Indicator(context.Background(), testKey, tc.value)
			if diff := cmp.Diff(tc.want, lim.Pauses()); diff != "" {
				t.Errorf("pauses (-want +got):\n%s", diff)
			}
		})
	}
}

func TestHealth(t *testing.T) {
	tests := []struct {
		name  string
		fault *pulsedivetest.Fault
		base  func(apiURL string) string // the client's base URL; the fake's when nil
		want  error
	}{
		{name: "ok"},
		{name: "no data is healthy", fault: &pulsedivetest.Fault{Status: 404}},
		{name: "an indicator the mapping cannot read is healthy", fault: &pulsedivetest.Fault{Status: 200, Body: []byte(`{"iid":2,"riskfactors":5}`)}},
		// Changed with CONTRACT.md section 4: any JSON used to be
		// healthy; an answer that is no indicator is not Pulsedive's.
		{name: "empty document is not Pulsedive", fault: &pulsedivetest.Fault{Status: 200, Body: []byte(`{}`)}, want: &pulsedive.UnexpectedAnswerError{StatusCode: 200}},
		{name: "JSON list is not Pulsedive", fault: &pulsedivetest.Fault{Status: 200, Body: []byte(`[{"iid":2}]`)}, want: &pulsedive.UnexpectedAnswerError{StatusCode: 200}},
		{name: "404 web page", fault: &pulsedivetest.Fault{Status: 404, Body: []byte("<html><body>Not Found</body></html>")}, want: &pulsedive.UnexpectedAnswerError{StatusCode: 404}},
		{name: "API URL without api/", base: func(apiURL string) string { return strings.TrimSuffix(apiURL, "api/") },
			want: &pulsedive.UnexpectedAnswerError{StatusCode: 404}},
		{name: "redirect", fault: &pulsedivetest.Fault{Status: 301, Header: http.Header{"Location": {"https://pulsedive.com/api/"}}}, want: &pulsedive.RedirectError{StatusCode: 301}},
		{name: "bad key", fault: &pulsedivetest.Fault{Status: 401}, want: &pulsedive.StatusError{StatusCode: 401, Message: "Invalid API key."}},
		{name: "API error", fault: &pulsedivetest.Fault{Mode: pulsedivetest.ModeErrorField, Message: "Maintenance."}, want: &pulsedive.APIError{Message: "Maintenance."}},
		{name: "not JSON", fault: &pulsedivetest.Fault{Mode: pulsedivetest.ModeNotJSON}, want: pulsedive.ErrInvalidJSON},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv := newFake(t, pulsedivetest.Config{})
			if tc.fault != nil {
				srv.SetFault(pulsedivetest.AnyValue, *tc.fault)
			}
			base := srv.URL()
			if tc.base != nil {
				base = tc.base(base)
			}
			c := newClient(t, base, nil)
			checkErr(t, c.Health(context.Background(), testKey), tc.want)
			if tc.base == nil {
				if n := srv.CallsFor(pulsedivetest.KindHealth, "2"); n != 1 {
					t.Errorf("health calls = %d, want 1 (info.php?iid=2)", n)
				}
			}
		})
	}
}

// TestNoDataNeedsPulsedivesBody: 400, 404 and 406 are "no data" only with
// Pulsedive's JSON error body (an object with an "error" string); any other
// body means the relay is not talking to Pulsedive (CONTRACT.md section 4).
func TestNoDataNeedsPulsedivesBody(t *testing.T) {
	tests := []struct {
		name   string
		status int
		body   string
		want   error
	}{
		{"404 Pulsedive's error", 404, `{"error":"Indicator not found."}`, pulsedive.ErrNotFound},
		{"400 Pulsedive's error", 400, `{"error":"Invalid indicator."}`, pulsedive.ErrNotFound},
		{"406 Pulsedive's error", 406, `{"error":"Invalid indicator.","status":"x"}`, pulsedive.ErrNotFound},
		{"404 empty error text", 404, `{"error":""}`, pulsedive.ErrNotFound},
		{"404 HTML page", 404, "<!DOCTYPE html><html><body><h1>Not Found</h1></body></html>", &pulsedive.UnexpectedAnswerError{StatusCode: 404}},
		{"404 plain text", 404, "404 page not found\n", &pulsedive.UnexpectedAnswerError{StatusCode: 404}},
		{"404 empty", 404, "", &pulsedive.UnexpectedAnswerError{StatusCode: 404}},
		{"404 other JSON", 404, `{"message":"Not Found","documentation_url":"https://example.com"}`, &pulsedive.UnexpectedAnswerError{StatusCode: 404}},
		{"404 error not a string", 404, `{"error":{"code":404}}`, &pulsedive.UnexpectedAnswerError{StatusCode: 404}},
		{"404 error null", 404, `{"error":null}`, &pulsedive.UnexpectedAnswerError{StatusCode: 404}},
		{"404 JSON list", 404, `[{"error":"Indicator not found."}]`, &pulsedive.UnexpectedAnswerError{StatusCode: 404}},
		{"404 JSON string", 404, `"Indicator not found."`, &pulsedive.UnexpectedAnswerError{StatusCode: 404}},
		{"400 HTML page", 400, "<html>Bad Request</html>", &pulsedive.UnexpectedAnswerError{StatusCode: 400}},
		{"406 plain text", 406, "Not Acceptable", &pulsedive.UnexpectedAnswerError{StatusCode: 406}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv := newFake(t, pulsedivetest.Config{})
			srv.SetFault(pulsedivetest.AnyValue, pulsedivetest.Fault{Status: tc.status, Body: []byte(tc.body)})
			obs := &recObserver{}
			c := newClient(t, srv.URL(), func(cfg *pulsedive.Config) { cfg.Observer = obs })
			_, err := c.Indicator(context.Background(), testKey, "parkingcrew.net")
			checkErr(t, err, tc.want)
			_, err = c.Links(context.Background(), testKey, "parkingcrew.net")
			checkErr(t, err, tc.want)
			if n := srv.Calls(); n != 2 {
				t.Errorf("calls = %d, want 2: an unexpected answer is not retried", n)
			}
			outcome := pulsedive.OutcomeNotFound
			if tc.want != pulsedive.ErrNotFound {
				outcome = pulsedive.OutcomeBadAnswer
			}
			all, _ := obs.Calls()
			if diff := cmp.Diff([]string{"info/" + outcome, "links/" + outcome}, all); diff != "" {
				t.Errorf("outcomes (-want +got):\n%s", diff)
			}
		})
	}

	// A wrong PULSEDIVE_API_URL: the fake without "api/", a plain file
	// server.
	files := httptest.NewServer(http.FileServer(http.Dir(t.TempDir())))
	t.Cleanup(files.Close)
	srv := newFake(t, pulsedivetest.Config{})
	for name, base := range map[string]string{
		"API URL without api/": strings.TrimSuffix(srv.URL(), "api/"),
		"file server":          files.URL + "/api/",
	} {
		t.Run(name, func(t *testing.T) {
			c := newClient(t, base, nil)
			_, err := c.Indicator(context.Background(), testKey, "parkingcrew.net")
			checkErr(t, err, &pulsedive.UnexpectedAnswerError{StatusCode: 404})
			checkErr(t, c.Health(context.Background(), testKey), &pulsedive.UnexpectedAnswerError{StatusCode: 404})
		})
	}
}

func TestRequestOnTheWire(t *testing.T) {
	srv := newFake(t, pulsedivetest.Config{Keys: []string{string(testKey)}})
	const value = "http://x.example/a?b=c&d=e#f"
	if err := srv.SetIndicator(value, pulsedivetest.Entry{Info: pulsedivetest.Answer{Body: json.RawMessage(`{"iid":1}`)}}); err != nil {
		t.Fatal(err)
	}
	c := newClient(t, strings.TrimSuffix(srv.URL(), "/"), nil) // no trailing slash: still .../api/info.php
	if _, err := c.Indicator(context.Background(), testKey, value); err != nil {
		t.Fatalf("Indicator: %v", err)
	}
	got, _ := srv.LastRequest()
	want := pulsedivetest.Request{
		Kind: pulsedivetest.KindInfo, Value: value, Key: string(testKey), UserAgent: "pulsedive-relay/1.2.3",
		Query: url.Values{"indicator": {value}, "key": {string(testKey)}},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("request (-want +got):\n%s", diff)
	}

	c = newClient(t, srv.URL(), func(cfg *pulsedive.Config) { cfg.UserAgent = "" })
	if _, err := c.Links(context.Background(), testKey, "parkingcrew.net"); err != nil {
		t.Fatalf("Links: %v", err)
	}
	got, _ = srv.LastRequest()
	if got.UserAgent != "pulsedive-relay" || got.Kind != pulsedivetest.KindLinks || got.Query.Get("get") != "links" {
		t.Errorf("links request = %+v; want get=links and the default User-Agent", got)
	}
}

// TestKeyNeverLeaks makes the client fail in every way it can and looks
// for the key in everything a caller could print or log.
func TestKeyNeverLeaks(t *testing.T) {
	refused, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	refusedURL := "http://" + refused.Addr().String() + "/api/"
	refused.Close()
	tlsSrv, err := pulsedivetest.NewTLSServer(pulsedivetest.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(tlsSrv.Close)

	faults := []pulsedivetest.Fault{
		{Status: 500}, {Status: 401}, {Status: 429}, {Status: 404}, {Status: 408},
		// Pulsedive echoing the key, as sent or escaped.
		{Status: 401, Message: "Invalid API key: " + string(testKey)},
		{Status: 429, Message: "Too many calls for " + url.QueryEscape(string(testKey))},
		{Mode: pulsedivetest.ModeErrorField, Message: "No such key " + url.PathEscape(string(testKey))},
		{Status: 302, Header: http.Header{"Location": {"http://elsewhere.example/?key=" + url.QueryEscape(string(testKey))}}},
		{Status: 404, Body: []byte("<html>" + string(testKey) + "</html>")},
		{Mode: pulsedivetest.ModeErrorField, Message: "Bad."},
		{Mode: pulsedivetest.ModeNotJSON}, {Mode: pulsedivetest.ModeTruncate},
		{Mode: pulsedivetest.ModeHuge}, {Mode: pulsedivetest.ModeReset}, {Mode: pulsedivetest.ModeDisconnect},
		{Mode: pulsedivetest.ModeHang},
	}
	type failure struct {
		name string
		err  error
	}
	var failures []failure
	// In a bubble, the retries' backoff costs no time.
	synctest.Test(t, func(t *testing.T) {
		fk := newBubbleFake(t, pulsedivetest.Config{})
		for _, f := range faults {
			fk.SetFault(pulsedivetest.AnyValue, f)
			c := newBubbleClient(t, fk, func(cfg *pulsedive.Config) {
				cfg.Timeout = 30 * time.Millisecond
				cfg.MaxBodyBytes = 1 << 10
			})
			_, err := c.Indicator(context.Background(), testKey, "parkingcrew.net")
			failures = append(failures, failure{fmt.Sprintf("fault %s %d", f.Mode, f.Status), err})
		}
		fk.ClearFaults()
		fk.SetFault(pulsedivetest.AnyValue, pulsedivetest.Fault{Mode: pulsedivetest.ModeHang})
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
		defer cancel()
		_, err := newBubbleClient(t, fk, nil).Indicator(ctx, testKey, "x")
		failures = append(failures, failure{"request deadline", err})
		cancelled, cancelNow := context.WithCancel(context.Background())
		cancelNow()
		_, err = newBubbleClient(t, fk, nil).Indicator(cancelled, testKey, "x")
		failures = append(failures, failure{"cancelled", err})
		lim := &recLimiter{refuse: retryAfterError{time.Second}}
		_, err = newBubbleClient(t, fk, func(cfg *pulsedive.Config) { cfg.Limiter = lim }).Indicator(context.Background(), testKey, "x")
		failures = append(failures, failure{"limiter", err})
		// A real socket, refused: nothing stays on the wire.
		_, err = newClient(t, refusedURL, nil).Indicator(context.Background(), testKey, "x")
		failures = append(failures, failure{"refused", err})
	})
	// A real TLS handshake, outside the bubble: its failure is not retried.
	_, err = newClient(t, tlsSrv.URL(), nil).Indicator(context.Background(), testKey, "x")
	failures = append(failures, failure{"tls", err})

	for _, f := range failures {
		t.Run(f.name, func(t *testing.T) {
			if f.err == nil {
				t.Fatal("no error")
			}
			var logged bytes.Buffer
			slog.New(slog.NewJSONHandler(&logged, nil)).Error("call failed", "err", f.err, "key", testKey)
			slog.New(slog.NewTextHandler(&logged, nil)).Error("call failed", "err", f.err, "key", testKey)
			texts := []string{fmt.Sprintf("%v %+v %s %q", f.err, f.err, f.err, f.err), logged.String()}
			for e := f.err; e != nil; e = errors.Unwrap(e) {
				texts = append(texts, e.Error())
			}
			for _, s := range texts {
				if holdsKey(s) {
					t.Errorf("the key leaks: %s", s)
				}
			}
		})
	}
}

func TestObserver(t *testing.T) {
	synctest.Test(t, func(t *testing.T) { // the retries' backoff costs no time
		fk := newBubbleFake(t, pulsedivetest.Config{})
		fk.SetFault("parkingcrew.net", pulsedivetest.Fault{Status: 503, FirstN: 2})
		obs := &recObserver{}
		c := newBubbleClient(t, fk, func(cfg *pulsedive.Config) { cfg.Observer = obs; cfg.Limiter = &recLimiter{} })
		ctx := context.Background()
		if _, err := c.Indicator(ctx, testKey, "parkingcrew.net"); err != nil {
			t.Fatal(err)
		}
		_, _ = c.Links(ctx, testKey, "23.23.23.23")
		_, _ = c.Indicator(ctx, testKey, "rate-limited.example")
		_, _ = c.Indicator(ctx, testKey, "processing.example")
		want := []string{"info/server_error", "info/server_error", "info/ok", "links/not_found", "info/rate_limited", "info/client_error"}
		if diff := cmp.Diff(want, obs.calls); diff != "" {
			t.Errorf("calls (-want +got):\n%s", diff)
		}
		if obs.inFlight != 0 || obs.maxIn != 1 {
			t.Errorf("in flight = %d (max %d), want 0 (max 1)", obs.inFlight, obs.maxIn)
		}
		if obs.waits != 6 {
			t.Errorf("limiter waits observed = %d, want 6", obs.waits)
		}
	})
}

func TestNewRejectsBadBaseURL(t *testing.T) {
	for _, base := range []string{"ftp://pulsedive.com/api/", "pulsedive.com/api/", "http://", "://x"} {
		t.Run(base, func(t *testing.T) {
			if _, err := pulsedive.New(pulsedive.Config{BaseURL: base}); err == nil {
				t.Errorf("New(%q): no error", base)
			}
		})
	}
	if _, err := pulsedive.New(pulsedive.Config{}); err != nil {
		t.Errorf("New with defaults: %v", err)
	}
}

// captured is one request a capture server saw.
type captured struct {
	URL    string
	Header http.Header
}

// captureServer answers with handle and records every request it sees.
type captureServer struct {
	*httptest.Server
	mu   sync.Mutex
	seen []captured
}

func newCaptureServer(t *testing.T, handle http.HandlerFunc) *captureServer {
	t.Helper()
	c := &captureServer{}
	c.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c.mu.Lock()
		c.seen = append(c.seen, captured{URL: r.URL.String(), Header: r.Header.Clone()})
		c.mu.Unlock()
		handle(w, r)
	}))
	t.Cleanup(c.Close)
	return c
}

func (c *captureServer) requests() []captured {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]captured(nil), c.seen...)
}

// keyForms are the ways the test key may be written, in any letter case.
func keyForms() []string {
	raw := string(testKey)
	return []string{keyMarker, raw, url.QueryEscape(raw), url.PathEscape(raw)}
}

// holdsKey says whether s holds a form of the test key.
func holdsKey(s string) bool {
	for _, f := range keyForms() {
		if strings.Contains(strings.ToLower(s), strings.ToLower(f)) {
			return true
		}
	}
	return false
}

// TestRedirectsAreNeverFollowed: Pulsedive (a capture server here)
// answers a redirect to a foreign host (another capture server). The
// client reports the redirect and the foreign host hears nothing: not the
// key in the URL, not a Referer naming it. This holds for the client the
// relay builds and for a client passed in that would follow redirects.
func TestRedirectsAreNeverFollowed(t *testing.T) {
	foreign := newCaptureServer(t, func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"iid":1,"indicator":"stolen.example"}`))
	})
	clients := map[string]func() *http.Client{
		"the relay's own client": func() *http.Client { return nil },
		"a client that follows redirects": func() *http.Client {
			return &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return nil }}
		},
	}
	for _, status := range []int{301, 302, 303, 307, 308} {
		for name, client := range clients {
			t.Run(fmt.Sprintf("%d, %s", status, name), func(t *testing.T) {
				origin := newCaptureServer(t, func(w http.ResponseWriter, r *http.Request) {
					http.Redirect(w, r, foreign.URL+"/collect?from="+url.QueryEscape(r.URL.RawQuery), status)
				})
				before := len(foreign.requests())
				c := newClient(t, origin.URL+"/api/", func(cfg *pulsedive.Config) {
					if hc := client(); hc != nil {
						cfg.HTTPClient = hc
					}
				})
				_, err := c.Indicator(context.Background(), testKey, "parkingcrew.net")
				checkErr(t, err, &pulsedive.RedirectError{StatusCode: status})
				checkErr(t, c.Health(context.Background(), testKey), &pulsedive.RedirectError{StatusCode: status})
				if n := len(foreign.requests()) - before; n != 0 {
					t.Errorf("the foreign host got %d requests", n)
				}
				if n := len(origin.requests()); n != 2 {
					t.Errorf("Pulsedive got %d requests, want 2 (no retry of a redirect)", n)
				}
				for _, req := range origin.requests() {
					if ref := req.Header.Get("Referer"); ref != "" {
						t.Errorf("the request carries Referer %q", ref)
					}
					for name, values := range req.Header {
						for _, v := range values {
							if holdsKey(v) {
								t.Errorf("header %s carries the key: %q", name, v)
							}
						}
					}
				}
				if err != nil && holdsKey(err.Error()) {
					t.Errorf("the error names the key: %v", err)
				}
			})
		}
	}

	// The capture sees a leak when there is one: a plain client following
	// the same redirect hands the key to the foreign host.
	t.Run("a following client leaks, and the capture sees it", func(t *testing.T) {
		origin := newCaptureServer(t, func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, foreign.URL+"/collect", http.StatusFound)
		})
		before := len(foreign.requests())
		resp, err := http.Get(origin.URL + "/api/info.php?indicator=x&key=" + url.QueryEscape(string(testKey)))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		got := foreign.requests()[before:]
		if len(got) != 1 || !holdsKey(got[0].Header.Get("Referer")) {
			t.Errorf("foreign requests = %+v; want one whose Referer holds the key", got)
		}
	})
}

// TestPulsediveTextIsScrubbedOfTheKey: Pulsedive's error text, passed on
// to the caller as the envelope's message, never holds the caller's key,
// in whatever form Pulsedive echoes it.
func TestPulsediveTextIsScrubbedOfTheKey(t *testing.T) {
	raw := string(testKey)
	forms := map[string]string{
		"as sent":                   raw,
		"query-escaped":             url.QueryEscape(raw),
		"path-escaped":              url.PathEscape(raw),
		"query-escaped, lower case": strings.ToLower(url.QueryEscape(raw)),
		"upper case":                strings.ToUpper(raw),
		"twice":                     raw + " and " + url.QueryEscape(raw),
	}
	for formName, form := range forms {
		message := "API key " + form + " is not valid."
		want := "API key [redacted] is not valid."
		if formName == "twice" {
			want = "API key [redacted] and [redacted] is not valid."
		}
		faults := []struct {
			name  string
			fault pulsedivetest.Fault
			want  error
		}{
			{"401", pulsedivetest.Fault{Status: 401, Message: message}, &pulsedive.StatusError{StatusCode: 401, Message: want}},
			{"429", pulsedivetest.Fault{Status: 429, Message: message}, &pulsedive.StatusError{StatusCode: 429, Message: want}},
			{"500", pulsedivetest.Fault{Status: 500, Message: message}, &pulsedive.StatusError{StatusCode: 500, Message: want}},
			{"200 with an error", pulsedivetest.Fault{Mode: pulsedivetest.ModeErrorField, Message: message}, &pulsedive.APIError{Message: want}},
		}
		for _, f := range faults {
			t.Run(formName+"/"+f.name, func(t *testing.T) {
				srv := newFake(t, pulsedivetest.Config{})
				srv.SetFault(pulsedivetest.AnyValue, f.fault)
				c := newClient(t, srv.URL(), func(cfg *pulsedive.Config) { cfg.MaxRetries = -1 })
				_, err := c.Indicator(context.Background(), testKey, "parkingcrew.net")
				checkErr(t, err, f.want)
				_, err = c.Links(context.Background(), testKey, "parkingcrew.net")
				checkErr(t, err, f.want)
				if err != nil && holdsKey(err.Error()) {
					t.Errorf("the error holds the key: %v", err)
				}
			})
		}
	}
	t.Run("text without the key is kept", func(t *testing.T) {
		srv := newFake(t, pulsedivetest.Config{})
		srv.SetFault(pulsedivetest.AnyValue, pulsedivetest.Fault{Status: 401, Message: "Invalid API key."})
		_, err := newClient(t, srv.URL(), nil).Indicator(context.Background(), testKey, "parkingcrew.net")
		checkErr(t, err, &pulsedive.StatusError{StatusCode: 401, Message: "Invalid API key."})
	})
}

// TestRefusedCallsAreCountedNotTimed: a call the limiter or the breaker
// refuses is counted with its outcome but has no latency to observe.
func TestRefusedCallsAreCountedNotTimed(t *testing.T) {
	srv := newFake(t, pulsedivetest.Config{})
	obs := &recObserver{}
	lim := &recLimiter{refuse: retryAfterError{time.Second}}
	c := newClient(t, srv.URL(), func(cfg *pulsedive.Config) {
		cfg.Observer = obs
		cfg.Limiter = lim
		cfg.Breaker = pulsedive.BreakerConfig{Failures: 1, OpenFor: time.Hour}
		cfg.MaxRetries = -1
	})
	ctx := context.Background()
	_, err := c.Indicator(ctx, testKey, "parkingcrew.net")
	checkErr(t, err, &pulsedive.RateLimitError{RetryAfter: time.Second})
	lim.setRefuse(nil)
	srv.SetFault(pulsedivetest.AnyValue, pulsedivetest.Fault{Status: 503})
	_, err = c.Links(ctx, testKey, "parkingcrew.net")
	checkErr(t, err, outage)
	checkErr(t, c.Health(ctx, testKey), errBreakerOpen)

	all, timed := obs.Calls()
	if diff := cmp.Diff([]string{"info/refused", "links/server_error", "health/breaker_open"}, all); diff != "" {
		t.Errorf("calls counted (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"links/server_error"}, timed); diff != "" {
		t.Errorf("calls timed (-want +got):\n%s", diff)
	}
}
