// Package pulsedivetest is a fake Pulsedive info.php (CONTRACT.md section 6) for
// tests, load runs and the relay's demo: fixture or synthetic answers, API
// key checks, Pulsedive's rate limits, latency, injected faults and call
// counters.
//
// A Fake serves GET <BasePath>info.php:
//
//	?indicator=V&key=K            the info answer for V (status and body)
//	?indicator=V&get=links&key=K  the links answer for V
//	?iid=N&key=K                  an indicator document, 200 (the relay's health call)
//
// Answers come from the shared fixtures (Fixtures), Config.Indicators and
// SetIndicator; other values are answered 404 {"error":"Indicator not
// found."}, or, in synthetic mode, with Synthetic's made-up document. Every
// "no data" answer (400, 404, 406) of info.php is Pulsedive's JSON error;
// paths other than info.php are answered 404 with an HTML page, as the web
// server in front of Pulsedive's API would.
// Each call then goes through, in order: counting, latency, the key check,
// the rate limits, and the fault set for its value (SetFault).
//
// It does not import package testing: constructors return errors. It does
// not import package pulsedive either, so that package's own tests can use
// it; the Kind constants here equal pulsedive's.
package pulsedivetest

import (
	"bytes"
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log"
	"maps"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// Kinds of call, as pulsedive names them.
const (
	KindInfo   = "info"   // ?indicator=V
	KindLinks  = "links"  // ?indicator=V&get=links
	KindHealth = "health" // ?iid=N
)

// AnyValue, given to SetFault, makes a fault apply to every value that has
// no fault of its own.
const AnyValue = ""

// Config configures a Fake. The zero Config serves the fixtures, accepts any
// key, sets no limit and answers at once.
type Config struct {
	// Synthetic answers values absent from the fixtures with Synthetic's
	// made-up documents instead of 404 "Indicator not found.".
	Synthetic bool
	// Indicators adds answers to the fixture set, or replaces fixture ones,
	// by indicator value. A zero Status means 200.
	Indicators map[string]Entry

	// Keys lists the accepted API keys. When empty, every key is accepted,
	// none included. Otherwise a request without a key is answered 401
	// "API key required." and one with another key 401 "Invalid API key.".
	Keys []string
	// ForbiddenKeys are answered 403 "Access denied for this API key.",
	// whatever Keys says.
	ForbiddenKeys []string

	// PerMinute is each key's budget per minute, a token bucket holding
	// Burst tokens (PerMinute when zero). Like Pulsedive, a key that runs
	// dry is answered 429 "API rate limit exceeded: N requests per minute.
	// Requests disabled for 1 minute. ..." for one minute. Zero means no
	// limit.
	PerMinute int
	Burst     int
	// PerSecond, PerDay and PerMonth are each key's quota per calendar
	// second, UTC day and UTC month. Each that is set makes every answer
	// except a 429 carry X-Requests-Remaining-Second, -Day or -Month (what
	// is left after this call); a call over it is answered 429. Zero means
	// no limit, and no header.
	PerSecond, PerDay, PerMonth int

	// Latency delays every answer; Jitter adds a uniformly random extra in
	// [0, Jitter). The wait ends early, with no answer, when the client's
	// request ends. SetLatency changes both while running.
	Latency, Jitter time.Duration

	// Now is the clock of the rate limits; time.Now by default.
	Now func() time.Time
	// BasePath is where info.php lives, "/api/" by default: requests to
	// BasePath+"info.php" are served, others are answered 404.
	BasePath string
	// OnCall, when set, is called with each request once it is counted,
	// before anything else happens to it, on the handler's goroutine: tests
	// use it to know a call has arrived. It must not hold the call up
	// for long.
	OnCall func(Request)
	// ErrorLog receives the HTTP server's errors when the fake runs under
	// NewServer or NewTLSServer; nil discards them.
	ErrorLog *log.Logger
}

// Fake is an http.Handler answering like Pulsedive's info.php. All its
// methods are safe for concurrent use, also while it serves.
type Fake struct {
	cfg      Config
	now      func() time.Time
	infoPath string
	health   Answer
	accepted map[string]bool // key fingerprints; nil accepts all
	denied   map[string]bool
	done     chan struct{}
	stop     sync.Once

	mu        sync.Mutex
	entries   map[string]Entry
	synthetic bool
	latency   time.Duration
	jitter    time.Duration
	faults    map[string]*faultState
	limits    map[string]*keyLimits // by key fingerprint
	stats     Stats
	last      *Request
}

type faultState struct {
	f     Fault
	calls int
}

// Document names one document the fake serves: a kind and the indicator
// value (the iid for KindHealth).
type Document struct{ Kind, Value string }

// Stats is a snapshot of the fake's counters since New or the last Reset.
type Stats struct {
	// Calls counts every request the handler saw, rejected ones included.
	Calls int
	// ByDocument counts calls per document requested.
	ByDocument map[Document]int
	// ByKey counts calls per API key, keyed by KeyFingerprint(key).
	ByKey map[string]int
	// ByStatus counts the status codes sent.
	ByStatus map[int]int
	// RateLimited counts 429 answers, whatever their cause.
	RateLimited int
	// InFlight is the number of calls being served now; MaxInFlight the
	// most served at once.
	InFlight, MaxInFlight int
	// BytesWritten counts body bytes written to clients.
	BytesWritten int64
}

// Request is what the fake saw of a call.
type Request struct {
	Kind      string // KindInfo, KindLinks, KindHealth or "" when malformed
	Value     string // the indicator, or the iid for KindHealth
	Key       string // the key query parameter, decoded
	UserAgent string
	Query     url.Values
}

// New returns a Fake serving the shared fixtures and cfg.Indicators.
func New(cfg Config) (*Fake, error) {
	entries, err := Fixtures()
	if err != nil {
		return nil, err
	}
	for v, e := range cfg.Indicators {
		if entries[v], err = normalize(v, e); err != nil {
			return nil, err
		}
	}
	for name, n := range map[string]int{"PerMinute": cfg.PerMinute, "Burst": cfg.Burst, "PerSecond": cfg.PerSecond, "PerDay": cfg.PerDay, "PerMonth": cfg.PerMonth} {
		if n < 0 {
			return nil, fmt.Errorf("pulsedivetest: %s %d is negative", name, n)
		}
	}
	if cfg.Latency < 0 || cfg.Jitter < 0 {
		return nil, errors.New("pulsedivetest: latency and jitter must not be negative")
	}
	base := cmp.Or(cfg.BasePath, "/api/")
	if !strings.HasPrefix(base, "/") || !strings.HasSuffix(base, "/") {
		return nil, fmt.Errorf("pulsedivetest: base path %q must start and end with /", base)
	}
	fk := &Fake{
		cfg:       cfg,
		now:       cfg.Now,
		infoPath:  base + "info.php",
		health:    Synthetic("pulsedive.com").Info,
		denied:    fingerprints(cfg.ForbiddenKeys),
		done:      make(chan struct{}),
		entries:   entries,
		synthetic: cfg.Synthetic,
		latency:   cfg.Latency,
		jitter:    cfg.Jitter,
		faults:    map[string]*faultState{},
		limits:    map[string]*keyLimits{},
	}
	if cfg.Now == nil {
		fk.now = time.Now
	}
	if len(cfg.Keys) > 0 {
		fk.accepted = fingerprints(cfg.Keys)
	}
	fk.stats = newStats()
	return fk, nil
}

func newStats() Stats {
	return Stats{ByDocument: map[Document]int{}, ByKey: map[string]int{}, ByStatus: map[int]int{}}
}

// KeyFingerprint identifies a key in Stats.ByKey without holding it: the
// first 16 bytes of its SHA-256, hex-encoded, as pulsedive.APIKey's
// Fingerprint.
func KeyFingerprint(key string) string {
	sum := sha256.Sum256([]byte(key))
	return hex.EncodeToString(sum[:16])
}

func fingerprints(keys []string) map[string]bool {
	m := make(map[string]bool, len(keys))
	for _, k := range keys {
		m[KeyFingerprint(k)] = true
	}
	return m
}

// Close ends every wait of the fake: hanging, latent and dripping calls are
// aborted (the connection is closed without an answer). It does not stop a
// server; Server.Close does both. Close is idempotent.
func (fk *Fake) Close() { fk.stop.Do(func() { close(fk.done) }) }

func (fk *Fake) closed() bool {
	select {
	case <-fk.done:
		return true
	default:
		return false
	}
}

// SetFault makes calls for value (every value without a fault of its own,
// for AnyValue) fail as f says, replacing the value's previous fault and
// restarting f's FirstN and Every count. A value's own fault decides the
// calls its Kind matches; the AnyValue fault decides the others. A Status
// outside 100-599 is answered as 500 with an "error" naming the mistake.
func (fk *Fake) SetFault(value string, f Fault) {
	f.Body = bytes.Clone(f.Body)
	f.Header = f.Header.Clone()
	fk.mu.Lock()
	defer fk.mu.Unlock()
	fk.faults[value] = &faultState{f: f}
}

// ClearFault removes value's fault (the AnyValue fault, for AnyValue).
func (fk *Fake) ClearFault(value string) {
	fk.mu.Lock()
	defer fk.mu.Unlock()
	delete(fk.faults, value)
}

// ClearFaults removes every fault.
func (fk *Fake) ClearFaults() {
	fk.mu.Lock()
	defer fk.mu.Unlock()
	clear(fk.faults)
}

// SetIndicator makes the fake answer value with e, in place of a fixture
// or synthetic answer. A zero Status means 200; one outside 100-599 is an
// error.
func (fk *Fake) SetIndicator(value string, e Entry) error {
	e, err := normalize(value, e)
	if err != nil {
		return err
	}
	fk.mu.Lock()
	defer fk.mu.Unlock()
	fk.entries[value] = e
	return nil
}

func normalize(value string, e Entry) (Entry, error) {
	for _, a := range []*Answer{&e.Info, &e.Links} {
		a.Status = cmp.Or(a.Status, http.StatusOK)
		if a.Status < 100 || a.Status > 599 {
			return Entry{}, fmt.Errorf("pulsedivetest: indicator %q: status %d is not an HTTP status", value, a.Status)
		}
		a.Body = compact(a.Body)
	}
	return e, nil
}

// SetSynthetic turns synthetic mode on or off (see Config.Synthetic).
func (fk *Fake) SetSynthetic(on bool) {
	fk.mu.Lock()
	defer fk.mu.Unlock()
	fk.synthetic = on
}

// SetLatency changes Config.Latency and Config.Jitter for calls that start
// after it; negative values count as zero.
func (fk *Fake) SetLatency(fixed, jitter time.Duration) {
	fk.mu.Lock()
	defer fk.mu.Unlock()
	fk.latency, fk.jitter = max(fixed, 0), max(jitter, 0)
}

// Stats returns a copy of the counters.
func (fk *Fake) Stats() Stats {
	fk.mu.Lock()
	defer fk.mu.Unlock()
	s := fk.stats
	s.ByDocument = maps.Clone(s.ByDocument)
	s.ByKey = maps.Clone(s.ByKey)
	s.ByStatus = maps.Clone(s.ByStatus)
	return s
}

// Calls returns the number of requests seen.
func (fk *Fake) Calls() int {
	fk.mu.Lock()
	defer fk.mu.Unlock()
	return fk.stats.Calls
}

// CallsFor returns the number of calls for one document: kind KindInfo or
// KindLinks with an indicator value, or KindHealth with an iid.
func (fk *Fake) CallsFor(kind, value string) int {
	fk.mu.Lock()
	defer fk.mu.Unlock()
	return fk.stats.ByDocument[Document{kind, value}]
}

// CallsByKey returns the number of calls made with key (exactly this
// string, after query decoding).
func (fk *Fake) CallsByKey(key string) int {
	fk.mu.Lock()
	defer fk.mu.Unlock()
	return fk.stats.ByKey[KeyFingerprint(key)]
}

// RateLimited returns the number of 429 answers sent.
func (fk *Fake) RateLimited() int {
	fk.mu.Lock()
	defer fk.mu.Unlock()
	return fk.stats.RateLimited
}

// MaxInFlight returns the most calls served at once.
func (fk *Fake) MaxInFlight() int {
	fk.mu.Lock()
	defer fk.mu.Unlock()
	return fk.stats.MaxInFlight
}

// LastRequest returns the most recent request, and false before the first.
// It holds the key as sent: this is a test fake.
func (fk *Fake) LastRequest() (Request, bool) {
	fk.mu.Lock()
	defer fk.mu.Unlock()
	if fk.last == nil {
		return Request{}, false
	}
	r := *fk.last
	r.Query = maps.Clone(r.Query)
	return r, true
}

// Reset zeroes the counters (InFlight excepted: it counts calls still
// running) and forgets the last request. Faults, rate-limit state and
// indicators stay.
func (fk *Fake) Reset() {
	fk.mu.Lock()
	defer fk.mu.Unlock()
	inFlight := fk.stats.InFlight
	fk.stats = newStats()
	fk.stats.InFlight, fk.stats.MaxInFlight = inFlight, inFlight
	fk.last = nil
}

// ServeHTTP answers GET <BasePath>info.php as Pulsedive would, after the
// configured latency, key check, rate limits and faults, in this order.
func (fk *Fake) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	req := parseRequest(r)
	fk.begin(req)
	defer fk.end()
	if fk.cfg.OnCall != nil {
		fk.cfg.OnCall(req)
	}

	if r.URL.Path != fk.infoPath {
		// Pulsedive's API lives at one path; anything else reaches the web
		// server in front of it, which answers as web servers do: an HTML
		// page, not Pulsedive's JSON error. A relay whose PULSEDIVE_API_URL
		// lacks "api/" sees this.
		fk.write(w, http.StatusNotFound, "text/html", nil, proxyPage(http.StatusNotFound))
		return
	}
	if r.Method != http.MethodGet {
		w.Header().Set("Allow", http.MethodGet)
		fk.write(w, http.StatusMethodNotAllowed, "application/json", nil, errorBody("Method not allowed."))
		return
	}
	if !fk.delay(r.Context()) {
		if fk.closed() {
			abort(w)
		}
		return // the client left; nobody reads an answer
	}
	if status, msg := fk.checkKey(req.Key); status != 0 {
		fk.write(w, status, "application/json", nil, errorBody(msg))
		return
	}
	if req.Kind == "" {
		fk.write(w, http.StatusBadRequest, "application/json", nil, errorBody("Invalid request."))
		return
	}
	remaining, msg := fk.admit(KeyFingerprint(req.Key))
	if msg != "" {
		fk.write(w, http.StatusTooManyRequests, "application/json", nil, errorBody(msg))
		return
	}
	maps.Copy(w.Header(), remaining)

	normal, f := fk.lookup(req)
	if f != nil {
		fk.inject(w, r, f, normal)
		return
	}
	fk.write(w, normal.Status, "application/json", nil, normal.Body)
}

func parseRequest(r *http.Request) Request {
	q := r.URL.Query()
	req := Request{Key: q.Get("key"), UserAgent: r.UserAgent(), Query: q}
	switch {
	case q.Has("indicator") && q.Get("get") == "links":
		req.Kind, req.Value = KindLinks, q.Get("indicator")
	case q.Has("indicator") && !q.Has("get"):
		req.Kind, req.Value = KindInfo, q.Get("indicator")
	case q.Has("iid") && !q.Has("indicator"):
		req.Kind, req.Value = KindHealth, q.Get("iid")
	}
	return req
}

func (fk *Fake) begin(req Request) {
	fk.mu.Lock()
	defer fk.mu.Unlock()
	s := &fk.stats
	s.Calls++
	if req.Kind != "" {
		s.ByDocument[Document{req.Kind, req.Value}]++
	}
	s.ByKey[KeyFingerprint(req.Key)]++
	s.InFlight++
	s.MaxInFlight = max(s.MaxInFlight, s.InFlight)
	fk.last = &req
}

func (fk *Fake) end() {
	fk.mu.Lock()
	defer fk.mu.Unlock()
	fk.stats.InFlight--
}

// count records an answer's status (when not zero) and body bytes.
func (fk *Fake) count(status int, n int64) {
	fk.mu.Lock()
	defer fk.mu.Unlock()
	if status != 0 {
		fk.stats.ByStatus[status]++
		if status == http.StatusTooManyRequests {
			fk.stats.RateLimited++
		}
	}
	fk.stats.BytesWritten += n
}

// write sends a complete answer.
func (fk *Fake) write(w http.ResponseWriter, status int, ctype string, extra http.Header, body []byte) {
	h := w.Header()
	maps.Copy(h, extra)
	h.Set("Content-Type", ctype)
	h.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(status)
	fk.count(status, 0)
	n, _ := w.Write(body)
	fk.count(0, int64(n))
}

// delay waits out the latency. It reports false when ctx or the fake ended
// first.
func (fk *Fake) delay(ctx context.Context) bool {
	fk.mu.Lock()
	d := fk.latency
	if fk.jitter > 0 {
		d += rand.N(fk.jitter)
	}
	fk.mu.Unlock()
	if d <= 0 {
		return true
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	case <-fk.done:
		return false
	}
}

func (fk *Fake) checkKey(key string) (status int, message string) {
	fp := KeyFingerprint(key)
	switch {
	case fk.denied[fp]:
		return http.StatusForbidden, forbiddenKeyText
	case fk.accepted == nil || fk.accepted[fp]:
		return 0, ""
	case key == "":
		return http.StatusUnauthorized, missingKeyText
	default:
		return http.StatusUnauthorized, invalidKeyText
	}
}

// lookup finds the normal answer to req and the fault, if any, that
// replaces it.
func (fk *Fake) lookup(req Request) (Answer, *Fault) {
	fk.mu.Lock()
	e, known := fk.entries[req.Value]
	synthetic := fk.synthetic
	f := fk.fault(req)
	fk.mu.Unlock()

	if req.Kind == KindHealth {
		return fk.health, f
	}
	switch {
	case known:
	case synthetic:
		e = Synthetic(req.Value)
	default:
		nf := Answer{Status: http.StatusNotFound, Body: errorBody(notFoundText)}
		e = Entry{Info: nf, Links: nf}
	}
	if req.Kind == KindLinks {
		return e.Links, f
	}
	return e.Info, f
}

// fault counts req against the fault that decides it and returns a copy of
// that fault when req fails. fk.mu must be held.
func (fk *Fake) fault(req Request) *Fault {
	fs := fk.faults[req.Value]
	if fs == nil || (fs.f.Kind != "" && fs.f.Kind != req.Kind) {
		fs = fk.faults[AnyValue]
	}
	if fs == nil || (fs.f.Kind != "" && fs.f.Kind != req.Kind) {
		return nil
	}
	fs.calls++
	if !fs.f.hits(fs.calls) {
		return nil
	}
	f := fs.f
	return &f
}

// keyLimits is one key's rate-limit state.
type keyLimits struct {
	bucket        *rate.Limiter
	disabledUntil time.Time
	second        window
	day           window
	month         window
}

// window counts calls in one calendar period, identified by id.
type window struct {
	id int64
	n  int
}

// admit applies the rate limits to one call of the key with fingerprint fp.
// It returns the remaining-quota headers for an admitted call, or the 429
// message for a refused one.
func (fk *Fake) admit(fp string) (http.Header, string) {
	cfg := fk.cfg
	if cfg.PerMinute == 0 && cfg.PerSecond == 0 && cfg.PerDay == 0 && cfg.PerMonth == 0 {
		return nil, ""
	}
	now := fk.now().UTC()
	fk.mu.Lock()
	defer fk.mu.Unlock()
	kl := fk.limits[fp]
	if kl == nil {
		kl = &keyLimits{}
		if cfg.PerMinute > 0 {
			kl.bucket = rate.NewLimiter(rate.Limit(float64(cfg.PerMinute)/60), cmp.Or(cfg.Burst, cfg.PerMinute))
		}
		fk.limits[fp] = kl
	}
	if now.Before(kl.disabledUntil) {
		return nil, perMinuteText(cfg.PerMinute)
	}

	windows := []struct {
		w      *window
		id     int64
		limit  int
		period string
		header string
	}{
		{&kl.month, int64(now.Year())*100 + int64(now.Month()), cfg.PerMonth, "month", "X-Requests-Remaining-Month"},
		{&kl.day, int64(now.Year())*10000 + int64(now.Month())*100 + int64(now.Day()), cfg.PerDay, "day", "X-Requests-Remaining-Day"},
		{&kl.second, now.Unix(), cfg.PerSecond, "second", "X-Requests-Remaining-Second"},
	}
	for _, p := range windows {
		if p.limit == 0 {
			continue
		}
		if p.w.id != p.id {
			*p.w = window{id: p.id}
		}
		if p.w.n >= p.limit {
			return nil, periodText(p.limit, p.period)
		}
	}
	if kl.bucket != nil && !kl.bucket.AllowN(now, 1) {
		kl.disabledUntil = now.Add(time.Minute)
		return nil, perMinuteText(cfg.PerMinute)
	}
	h := http.Header{}
	for _, p := range windows {
		if p.limit == 0 {
			continue
		}
		p.w.n++
		h.Set(p.header, strconv.Itoa(p.limit-p.w.n))
	}
	return h, ""
}
