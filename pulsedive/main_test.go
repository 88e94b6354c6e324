package pulsedive_test

import (
	"context"
	"errors"
	"maps"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"go.uber.org/goleak"

	"github.com/pulsedive-relay/relay/pulsedive"
	"github.com/pulsedive-relay/relay/pulsedive/pulsedivetest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// testKey is the API key of most tests. Its distinctive part, keyMarker,
// must never show in an error or a log line.
const (
	keyMarker = "s3cr3t"
	testKey   = pulsedive.APIKey(keyMarker + `&key=evil#frag%41 +plus/?x=1`)
)

// fixedNow is the clock of every client under test: the fixtures' day.
var fixedNow = time.Date(2020, 4, 15, 10, 30, 0, 0, time.UTC)

// newFake starts a fake Pulsedive on loopback for the test.
func newFake(t *testing.T, cfg pulsedivetest.Config) *pulsedivetest.Server {
	t.Helper()
	srv, err := pulsedivetest.NewServer(cfg)
	if err != nil {
		t.Fatalf("pulsedivetest.NewServer: %v", err)
	}
	t.Cleanup(srv.Close)
	return srv
}

// newClient returns a client of baseURL with test defaults (fixed clock,
// its own transport), changed by edit when not nil. Its retries wait the
// real jittered backoff: a test that retries runs in a synctest bubble
// against newBubbleFake, where the waits cost no time.
func newClient(t *testing.T, baseURL string, edit func(*pulsedive.Config)) *pulsedive.Client {
	t.Helper()
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	cfg := pulsedive.Config{
		BaseURL:    baseURL,
		HTTPClient: &http.Client{Transport: tr},
		Timeout:    5 * time.Second,
		UserAgent:  "pulsedive-relay/1.2.3",
		Now:        func() time.Time { return fixedNow },
	}
	if edit != nil {
		edit(&cfg)
	}
	c, err := pulsedive.New(cfg)
	if err != nil {
		t.Fatalf("pulsedive.New: %v", err)
	}
	return c
}

// newBubbleFake makes a fake Pulsedive that newBubbleClient calls in
// process, for a test inside a testing/synctest bubble: make it in the
// bubble, so that its waits are on the bubble's clock. With a real
// connection the bubble's clock would not move while a call is on the
// wire.
func newBubbleFake(t *testing.T, cfg pulsedivetest.Config) *pulsedivetest.Fake {
	t.Helper()
	fk, err := pulsedivetest.New(cfg)
	if err != nil {
		t.Fatalf("pulsedivetest.New: %v", err)
	}
	t.Cleanup(fk.Close)
	return fk
}

// newBubbleClient is newClient calling fk in process.
func newBubbleClient(t *testing.T, fk *pulsedivetest.Fake, edit func(*pulsedive.Config)) *pulsedive.Client {
	t.Helper()
	return newClient(t, "http://pulsedive.test/api/", func(cfg *pulsedive.Config) {
		cfg.HTTPClient = &http.Client{Transport: fk.Transport()}
		if edit != nil {
			edit(cfg)
		}
	})
}

// pause is one PauseUntil call.
type pause struct {
	Key   string
	Until time.Time
}

// recLimiter is a Limiter that records its calls and says yes, or what
// refuse says.
type recLimiter struct {
	mu     sync.Mutex
	waits  []string
	pauses []pause
	refuse error
}

func (l *recLimiter) Wait(ctx context.Context, key string) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.waits = append(l.waits, key)
	return l.refuse
}

func (l *recLimiter) PauseUntil(key string, until time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.pauses = append(l.pauses, pause{key, until})
}

func (l *recLimiter) Waits() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.waits)
}

func (l *recLimiter) Pauses() []pause {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]pause(nil), l.pauses...)
}

// retryAfterError is how the limiter package refuses a call.
type retryAfterError struct{ d time.Duration }

func (e retryAfterError) Error() string             { return "budget spent" }
func (e retryAfterError) RetryAfter() time.Duration { return e.d }

// recObserver records the client's measurements.
type recObserver struct {
	mu       sync.Mutex
	calls    []string // kind/outcome of every call, made or refused
	timed    []string // kind/outcome of the calls whose latency was observed
	inFlight int
	maxIn    int
	waits    int
	breakers map[string]int // keys per breaker state, as last reported
}

func (o *recObserver) PulsediveCall(kind, outcome string, _ time.Duration) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.calls = append(o.calls, kind+"/"+outcome)
	o.timed = append(o.timed, kind+"/"+outcome)
}

func (o *recObserver) PulsediveRefused(kind, outcome string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.calls = append(o.calls, kind+"/"+outcome)
}

func (o *recObserver) BreakerKeys(state string, n int) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.breakers == nil {
		o.breakers = map[string]int{}
	}
	o.breakers[state] = n
}

// Calls returns the kind/outcome of every call, made or refused, and of
// those timed.
func (o *recObserver) Calls() (all, timed []string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([]string(nil), o.calls...), append([]string(nil), o.timed...)
}

// Breakers returns the keys per breaker state, as last reported; states
// never reported are absent.
func (o *recObserver) Breakers() map[string]int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return maps.Clone(o.breakers)
}

func (o *recObserver) PulsediveInFlight(delta int) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.inFlight += delta
	o.maxIn = max(o.maxIn, o.inFlight)
}

func (o *recObserver) LimiterWait(time.Duration) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.waits++
}

// unavailable is the error of a call that failed for cause, with the
// contract's text for it.
func unavailable(cause pulsedive.Cause, reason string) *pulsedive.UnavailableError {
	return &pulsedive.UnavailableError{Cause: cause, Reason: reason}
}

// checkErr fails the test unless got is the error want describes: nil;
// a sentinel (errors.Is); or one of the package's error types, compared
// by its safe fields (Reason, not the cause).
func checkErr(t *testing.T, got, want error) {
	t.Helper()
	switch w := want.(type) {
	case nil:
		if got != nil {
			t.Errorf("error = %v, want none", got)
		}
	case *pulsedive.StatusError:
		checkAs(t, got, w)
	case *pulsedive.APIError:
		checkAs(t, got, w)
	case *pulsedive.RateLimitError:
		checkAs(t, got, w)
	case *pulsedive.UnavailableError:
		checkAs(t, got, w, cmpopts.IgnoreFields(pulsedive.UnavailableError{}, "Err"))
	case *pulsedive.RedirectError:
		checkAs(t, got, w)
	case *pulsedive.UnexpectedAnswerError:
		checkAs(t, got, w)
	case *pulsedive.TLSError:
		checkAs(t, got, w, cmpopts.IgnoreFields(pulsedive.TLSError{}, "Err"))
	default:
		if !errors.Is(got, want) {
			t.Errorf("error = %v (%T), want %v", got, got, want)
		}
	}
}

// checkAs fails the test unless got holds an error of want's type equal to
// want under opts.
func checkAs[E error](t *testing.T, got error, want E, opts ...cmp.Option) {
	t.Helper()
	var g E
	if !errors.As(got, &g) {
		t.Errorf("error = %v (%T), want %v", got, got, want)
		return
	}
	if diff := cmp.Diff(want, g, opts...); diff != "" {
		t.Errorf("%T (-want +got):\n%s", want, diff)
	}
}
