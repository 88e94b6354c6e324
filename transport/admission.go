package transport

import (
	"net/http"
	"strconv"
	"sync"

	"github.com/pulsedive-relay/relay/transport/auth"
)

// Admission bounds what the relay holds for the requests it serves at once,
// so that memory stays within the limit it was sized for however many
// clients call. A zero field leaves that bound off. Over a bound a request
// is answered at once (the envelope's "too many requests", HTTP 200, with
// Retry-After): nothing waits in a queue.
//
// Every bound is shared out: one API key may hold at most half of it, and
// every caller without a valid token together at most a quarter (both
// never less than the largest single request, so that one always fits an
// idle relay). One tenant, or an unauthenticated crowd, cannot starve the
// others.
type Admission struct {
	// Requests bounds the requests being served at once on the observable
	// endpoints and /health.
	Requests int
	// BodyBytes bounds the request body bytes held in memory at once: a
	// body is charged by its Content-Length before it is read (by 32 KiB
	// steps when chunked) and given back once it is parsed.
	BodyBytes int64
	// Observables bounds the observables being answered at once: their
	// documents, entities and answers are what a request holds longest.
	Observables int
}

// The bounds, as the refusals metric labels them.
const (
	BoundConnections = "connections"
	BoundRequests    = "requests"
	BoundBodyBytes   = "body_bytes"
	BoundObservables = "observables"
)

// Bounds lists the bounds, as the metrics label them.
func Bounds() []string {
	return []string{BoundConnections, BoundRequests, BoundBodyBytes, BoundObservables}
}

// Shares of a bound: one API key, and every unverified caller together.
const (
	keyShareDiv        = 2
	unverifiedShareDiv = 4
)

// overload is a request refused because a bound is reached.
type overload struct{ bound string }

func (e *overload) Error() string { return "relay busy: " + e.bound + " at the limit" }

// message is the envelope's text for the refusal.
func (e *overload) message() string {
	what := map[string]string{
		BoundRequests:    "too many requests in progress",
		BoundBodyBytes:   "too many request bodies in memory",
		BoundObservables: "too many observables in progress",
	}[e.bound]
	return "The relay is busy: " + what + "; retry in " + strconv.Itoa(retryAfterSeconds) + " s"
}

// retryAfterSeconds is what a refused caller is told to wait: the bounds
// free up as requests end, within seconds.
const retryAfterSeconds = 1

// tenant is who a request is charged to: an API key's fingerprint, or ""
// for every caller without a valid token.
type tenant string

const unverified tenant = ""

func tenantOf(claims auth.Claims, authErr error) tenant {
	if authErr != nil {
		return unverified
	}
	return tenant(claims.Key.Fingerprint())
}

// pool is one bound: at most total units held at once, at most a share
// of them per tenant. It never waits. A nil *pool admits everything.
type pool struct {
	bound   string
	total   int64
	largest int64 // the largest single request, below which no share falls
	obs     Observer

	mu   sync.Mutex
	used int64
	by   map[tenant]int64
}

func newPool(bound string, total, largest int64, obs Observer) *pool {
	if total <= 0 {
		return nil
	}
	return &pool{bound: bound, total: total, largest: largest, obs: obs, by: map[tenant]int64{}}
}

// share is the most t may hold at once.
func (p *pool) share(t tenant) int64 {
	div := int64(keyShareDiv)
	if t == unverified {
		div = unverifiedShareDiv
	}
	return max(p.total/div, min(p.largest, p.total))
}

// acquire takes n units for t, or returns an *overload and takes nothing.
func (p *pool) acquire(t tenant, n int64) error {
	if p == nil || n <= 0 {
		return nil
	}
	p.mu.Lock()
	ok := p.used+n <= p.total && p.by[t]+n <= p.share(t)
	if ok {
		p.used += n
		p.by[t] += n
	}
	p.mu.Unlock()
	if !ok {
		p.obs.AdmissionRefused(p.bound)
		return &overload{bound: p.bound}
	}
	p.obs.AdmissionInUse(p.bound, n)
	return nil
}

// release gives back n units t acquired.
func (p *pool) release(t tenant, n int64) {
	if p == nil || n <= 0 {
		return
	}
	p.mu.Lock()
	p.used -= n
	if left := p.by[t] - n; left > 0 {
		p.by[t] = left
	} else {
		delete(p.by, t) // the map holds active tenants only
	}
	p.mu.Unlock()
	p.obs.AdmissionInUse(p.bound, -n)
}

// pools are the request-level bounds of a handler.
type pools struct {
	requests, bodyBytes, observables *pool
}

func newPools(a Admission, lim bodyLimits, obs Observer) pools {
	return pools{
		requests:    newPool(BoundRequests, int64(a.Requests), 1, obs),
		bodyBytes:   newPool(BoundBodyBytes, a.BodyBytes, lim.maxBytes, obs),
		observables: newPool(BoundObservables, int64(a.Observables), int64(lim.maxObservables), obs),
	}
}

// refuse answers a request over a bound. A body left unread is not
// drained: the connection closes after the answer.
func (h *handler) refuse(w http.ResponseWriter, r *http.Request, err error, bodyRead bool) {
	w.Header().Set("Retry-After", strconv.Itoa(retryAfterSeconds))
	if !bodyRead && r.ContentLength != 0 {
		w.Header().Set("Connection", "close")
	}
	h.fail(w, r, err)
}
