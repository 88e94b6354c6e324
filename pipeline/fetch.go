package pipeline

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"runtime/debug"
	"time"

	"github.com/pulsedive-relay/relay/pulsedive"
)

// Document is one Pulsedive answer as the cache keeps it: the indicator
// (info) or its links, or neither for a "no data" answer. Cached documents
// are shared between requests and must not be modified.
type Document struct {
	Info  *pulsedive.Indicator `json:"info,omitempty"`
	Links *pulsedive.Links     `json:"links,omitempty"`
}

// caller is whom documents are fetched for: the API key, and its
// fingerprint, which names the key's cache entries and is computed once
// per request.
type caller struct {
	key pulsedive.APIKey
	fp  string
}

func newCaller(req Request) caller {
	fp := req.KeyFingerprint
	if fp == "" {
		fp = req.Key.Fingerprint()
	}
	return caller{key: req.Key, fp: fp}
}

// indicator returns the info document of value, nil when Pulsedive has no
// data.
func (p *Pipeline) indicator(ctx context.Context, c caller, value string) (*pulsedive.Indicator, error) {
	doc, err := p.document(ctx, c, pulsedive.KindInfo, value, time.Time{})
	return doc.Info, err
}

// links returns the links document of value, nil when Pulsedive has no
// data. A call to Pulsedive waits for the key's budget until budget at
// most (pulsedive.WithBudgetDeadline); a cached document needs none.
func (p *Pipeline) links(ctx context.Context, c caller, value string, budget time.Time) (*pulsedive.Links, error) {
	doc, err := p.document(ctx, c, pulsedive.KindLinks, value, budget)
	return doc.Links, err
}

// document goes through the steps of CONTRACT.md section 6 in order: a fresh
// cache entry; else a call shared with every concurrent request for the
// same key and document, waiting for budget until budget when it is set;
// on failure, an expired entry still kept (stale-if-error).
func (p *Pipeline) document(ctx context.Context, c caller, kind, value string, budget time.Time) (Document, error) {
	ck := fingerprintKey(c.fp, kind, value)
	var stale *Document
	if p.cfg.Store != nil {
		if doc, fresh, ok := p.cfg.Store.Get(ck); ok {
			if fresh {
				p.obs.CacheLookup(kind, resultHit)
				return doc, nil
			}
			stale = &doc
		}
	}
	if !budget.IsZero() {
		ctx = pulsedive.WithBudgetDeadline(ctx, budget)
	}
	doc, joined, err := p.shared(ctx, ck, c.key, kind, value)
	if joined && errors.As(err, new(*pulsedive.RateLimitError)) && (budget.IsZero() || budget.After(time.Now())) {
		// The call it joined was refused budget this one may still wait
		// for (it could take only budget free at once, or had an earlier
		// budget deadline): call again, on its own terms.
		doc, _, err = p.shared(ctx, ck, c.key, kind, value)
	}
	if err != nil && stale != nil && staleable(err) {
		p.obs.CacheLookup(kind, resultStale)
		p.log.DebugContext(ctx, "serving stale document", "kind", kind, "error", err.Error())
		return *stale, nil
	}
	p.obs.CacheLookup(kind, resultMiss)
	return doc, err
}

// shared makes the Pulsedive call, or joins the one another request is
// making for the same key and document. The call runs on a context
// detached from the caller's cancellation (a client going away does not
// fail the others) but bounded by the caller's deadline; a caller whose
// context ends stops waiting and leaves the call to the rest. joined says
// the answer is another request's call's.
func (p *Pipeline) shared(ctx context.Context, ck string, key pulsedive.APIKey, kind, value string) (_ Document, joined bool, _ error) {
	leader := false
	ch := p.flight.DoChan(ck, func() (_ any, err error) {
		defer p.recoverShared(kind, &err)
		leader = true
		callCtx, cancel := detach(ctx, p.cfg.RequestTimeout)
		defer cancel()
		doc, done, answered := p.acrossReplicas(callCtx, ck)
		if answered {
			return doc, nil
		}
		defer done() // after the answer is stored
		doc, err = p.call(callCtx, key, kind, value)
		if err == nil || errors.Is(err, pulsedive.ErrNotFound) {
			p.store(ck, doc)
			err = nil
		}
		return doc, err
	})
	select {
	case res := <-ch:
		if !leader { // safe: the send on ch follows the function's return
			p.obs.SharedCall(kind)
		}
		doc, _ := res.Val.(Document)
		return doc, !leader, res.Err
	case <-ctx.Done():
		return Document{}, false, ctx.Err()
	}
}

// acrossReplicas lets one replica of several call for ck (see Collapser).
// answered is true when the document came from another replica's call;
// otherwise this process calls, and then runs done.
func (p *Pipeline) acrossReplicas(ctx context.Context, ck string) (doc Document, done func(), answered bool) {
	nothing := func() {}
	c := p.cfg.Collapser
	if c == nil || p.cfg.Store == nil {
		return Document{}, nothing, false
	}
	lead, done := c.Lead(ctx, ck)
	if lead {
		// Another replica may have stored the document between this
		// process's miss and the lock.
		if doc, fresh, ok := p.cfg.Store.Get(ck); ok && fresh {
			done()
			return doc, nothing, true
		}
		return Document{}, done, false
	}
	// Keep time to call after a wait in vain, as the client keeps time to
	// call after waiting for budget.
	waitCtx := ctx
	if dl, ok := ctx.Deadline(); ok {
		var cancel context.CancelFunc
		waitCtx, cancel = context.WithDeadline(ctx, dl.Add(-min(time.Second, time.Until(dl)/2)))
		defer cancel()
	}
	if c.Await(waitCtx, ck) {
		if doc, fresh, ok := p.cfg.Store.Get(ck); ok && fresh {
			return doc, nothing, true
		}
	}
	return Document{}, nothing, false
}

// PanicError is what every request waiting on a shared call gets when the
// call panicked (a bug in fetching, decoding or caching a document). Its
// text names the document kind only, never the panic's value.
type PanicError struct{ Kind string }

func (e *PanicError) Error() string { return "pipeline: the shared " + e.Kind + " call panicked" }

// recoverShared, deferred in the function the singleflight runs, turns a
// panic into a *PanicError for the leader and every request that joined
// it. It must be: singleflight.DoChan re-panics on a goroutine of its own,
// out of any handler's recovery, and would end the process. The panic is
// counted and logged once, with its stack.
func (p *Pipeline) recoverShared(kind string, err *error) {
	v := recover()
	if v == nil {
		return
	}
	p.obs.PanicRecovered(PanicRoute)
	p.log.Error("panic recovered in a shared Pulsedive call", "kind", kind, "panic", PanicText(v), "stack", string(debug.Stack()))
	*err = &PanicError{Kind: kind}
}

// PanicRoute is the route Observer.PanicRecovered gets for a panic in a
// call shared by several requests, which no single route owns.
const PanicRoute = "pipeline"

// The results Observer.CacheLookup gets: a fresh document, an expired one
// standing in for a failed call, or none.
const (
	resultHit   = "hit"
	resultStale = "stale"
	resultMiss  = "miss"
)

// CacheResults lists the results Observer.CacheLookup gets.
func CacheResults() []string { return []string{resultHit, resultStale, resultMiss} }

// PanicText describes a recovered panic without echoing arbitrary values
// that might hold request data. The transport's recovery words the panics
// of handlers with it too.
func PanicText(v any) string {
	if err, ok := v.(error); ok {
		return "error: " + err.Error()
	}
	if s, ok := v.(string); ok {
		return s
	}
	return "non-error panic value"
}

// detach returns a context that ignores the parent's cancellation but keeps
// its deadline (or gets max from now when it has none), and its values.
func detach(parent context.Context, max time.Duration) (context.Context, context.CancelFunc) {
	deadline, ok := parent.Deadline()
	if !ok {
		deadline = time.Now().Add(max)
	}
	return context.WithDeadline(context.WithoutCancel(parent), deadline)
}

func (p *Pipeline) call(ctx context.Context, key pulsedive.APIKey, kind, value string) (Document, error) {
	switch kind {
	case pulsedive.KindInfo:
		info, err := p.cfg.Fetcher.Indicator(ctx, key, value)
		return Document{Info: info}, err
	default:
		links, err := p.cfg.Fetcher.Links(ctx, key, value)
		return Document{Links: links}, err
	}
}

// store caches an answer: documents for CacheTTL, "no data" for
// NegativeTTL, both kept StaleTTL longer for stale-if-error. The cost is
// the document's encoded size.
func (p *Pipeline) store(ck string, doc Document) {
	if p.cfg.Store == nil {
		return
	}
	ttl := p.cfg.CacheTTL
	if doc.Info == nil && doc.Links == nil {
		ttl = p.cfg.NegativeTTL
	}
	encoded, err := json.Marshal(doc)
	if err != nil {
		return
	}
	p.cfg.Store.Set(ck, doc, int64(len(encoded)+len(ck)), ttl, p.cfg.StaleTTL)
}

// staleable says whether an expired entry may stand in for a failed call.
// Every failure of Pulsedive or of the way to it qualifies. A key that
// Pulsedive refuses (401, 403) does not, so a revoked key reads nothing;
// nor does an answer that is not Pulsedive's (a redirect, a "no data"
// status without Pulsedive's body), which a wrong PULSEDIVE_API_URL gives:
// stale answers would hide the misconfiguration for CACHE_STALE_TTL.
func staleable(err error) bool {
	var se *pulsedive.StatusError
	switch {
	case errors.As(err, &se):
		return se.StatusCode != http.StatusUnauthorized && se.StatusCode != http.StatusForbidden
	case errors.As(err, new(*pulsedive.RedirectError)), errors.As(err, new(*pulsedive.UnexpectedAnswerError)):
		return false
	}
	return true
}

// fingerprintKey names a document for one API key, by the key's
// fingerprint (caller.fp), never the key.
func fingerprintKey(fp, kind, value string) string {
	return fp + "\x00" + kind + "\x00" + value
}
