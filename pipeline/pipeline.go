// Package pipeline runs the Pulsedive side of one relay request (spec
// sections 4 to 6): it deduplicates the observables, fans them into a
// bounded worker pool, fetches each document through the cache, in-flight
// collapse and the Pulsedive client (which waits on the per-key limiter),
// and folds the answers into CTIM in request order.
//
// Imports go one way, and TestImportRule holds it: cache, limiter, metrics
// and pulsedive import no other package of the relay; ctim imports
// pulsedive alone, whose documents it maps; pipeline imports them;
// transport imports pipeline, ctim and pulsedive; cluster (the state
// replicas share over Redis) imports pipeline and limiter; only
// internal/relay, the program, imports everything.
package pipeline

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"time"

	"golang.org/x/sync/singleflight"

	"github.com/pulsedive-relay/relay/ctim"
	"github.com/pulsedive-relay/relay/pulsedive"
)

// Fetcher gets Pulsedive's documents; *pulsedive.Client is one. Both
// methods return pulsedive.ErrNotFound when Pulsedive has no data.
type Fetcher interface {
	Indicator(ctx context.Context, key pulsedive.APIKey, value string) (*pulsedive.Indicator, error)
	Links(ctx context.Context, key pulsedive.APIKey, value string) (*pulsedive.Links, error)
}

// Pinger makes the health endpoint's cheap call; *pulsedive.Client is one.
type Pinger interface {
	Health(ctx context.Context, key pulsedive.APIKey) error
}

// Store keeps documents between requests; *cache.Cache[Document] is one.
// It is an interface so that a shared store can take its place. Get's
// fresh is false for an expired entry still kept for stale-if-error.
type Store interface {
	Get(key string) (doc Document, fresh, ok bool)
	Set(key string, doc Document, cost int64, ttl, staleTTL time.Duration) bool
}

// Collapser shares one Pulsedive call among the replicas that miss the same
// document at once; *cluster.Collapser is one. Within a process the
// pipeline already shares calls (singleflight); a Collapser extends that
// across processes through the Store. Lead reports whether this process
// should make the call for key, and returns done, to call once the answer
// is stored. Await waits, within ctx, for the process that leads, and
// reports whether its answer is in the Store; when not, the caller calls
// Pulsedive itself.
type Collapser interface {
	Lead(ctx context.Context, key string) (lead bool, done func())
	Await(ctx context.Context, key string) bool
}

// Observer receives the pipeline's measurements; metrics.Metrics is one.
type Observer interface {
	CacheLookup(kind, result string)
	Observable(typ string)
	SharedCall(kind string)
	// PanicRecovered counts a panic recovered inside a shared call, under
	// the route PanicRoute.
	PanicRecovered(route string)
}

// Config configures a Pipeline. Zero durations and counts take the
// defaults of CONTRACT.md section 7.
type Config struct {
	Fetcher Fetcher // required
	Pinger  Pinger  // required for Health
	// Store caches documents; nil disables caching.
	Store Store
	// Collapser shares calls with other replicas through Store; nil (or a
	// nil Store) means each process calls for itself.
	Collapser Collapser
	// Workers bounds the documents one request fetches at once (32).
	Workers int
	// RequestTimeout bounds a whole request (25s); when it passes, the
	// answer holds what is done and an error for the rest.
	RequestTimeout time.Duration
	// MappingBytes bounds the observe answers mapped from cached documents
	// that are kept to answer the same documents again without mapping
	// them (4 MiB); a negative value keeps none. Nothing is kept without a
	// Store.
	MappingBytes int64
	// CacheTTL keeps documents Pulsedive knows (1h), NegativeTTL its "no
	// data" answers (10m), StaleTTL expired entries for stale-if-error (24h).
	CacheTTL, NegativeTTL, StaleTTL time.Duration
	// LinksMaxWait bounds how long a links (Active DNS) call waits for the
	// key's budget once the request's verdicts are in (5s), never past the
	// request deadline; a negative value means links never wait and take
	// only budget free at once (RELAY_LINKS_MAX_WAIT=0).
	LinksMaxWait time.Duration
	// Budget is the per-key budget the Fetcher's limiter keeps. It only
	// shapes the retry time of the folded rate-limit error; the zero value
	// means unknown, and the retry time is then the latest the refusals
	// themselves gave.
	Budget Budget
	// Now is the clock of the mapping (which verdicts are current, the
	// 90-day Active DNS window); time.Now when nil. NewID returns the
	// UUIDs of transient ids; nil means random ones. They are passed in,
	// as the style guide asks of constructors, so that tests fix them:
	// valid times, the window and uuid4 ids are then the same on every
	// run, which the golden answers need.
	Now      func() time.Time
	NewID    func() string
	Observer Observer
	Logger   *slog.Logger
}

// Pipeline serves observe, deliberate, refer and health. It is safe for
// concurrent use; concurrent requests share cache entries and in-flight
// Pulsedive calls.
type Pipeline struct {
	cfg    Config
	mapper ctim.Mapper
	mapped *observations // nil when none are kept
	flight singleflight.Group
	obs    Observer
	log    *slog.Logger
}

// Defaults applied by New to zero Config fields, and of the relay's
// settings (RELAY_WORKERS, RELAY_REQUEST_TIMEOUT, RELAY_LINKS_MAX_WAIT,
// CACHE_TTL, CACHE_NEGATIVE_TTL, CACHE_STALE_TTL).
const (
	DefaultWorkers        = 32
	DefaultRequestTimeout = 25 * time.Second
	DefaultLinksMaxWait   = 5 * time.Second
	DefaultCacheTTL       = time.Hour
	DefaultNegativeTTL    = 10 * time.Minute
	DefaultStaleTTL       = 24 * time.Hour
)

// New checks cfg and returns a pipeline.
func New(cfg Config) (*Pipeline, error) {
	if cfg.Fetcher == nil {
		return nil, errors.New("pipeline: Fetcher is required")
	}
	setDefault(&cfg.Workers, DefaultWorkers)
	setDefault(&cfg.RequestTimeout, DefaultRequestTimeout)
	setDefault(&cfg.CacheTTL, DefaultCacheTTL)
	setDefault(&cfg.NegativeTTL, DefaultNegativeTTL)
	setDefault(&cfg.StaleTTL, DefaultStaleTTL)
	if cfg.LinksMaxWait == 0 {
		cfg.LinksMaxWait = DefaultLinksMaxWait
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	p := &Pipeline{
		cfg:    cfg,
		mapper: ctim.Mapper{Now: cfg.Now, NewID: cfg.NewID},
		obs:    cfg.Observer,
		log:    cfg.Logger,
	}
	if cfg.Store != nil && cfg.MappingBytes >= 0 {
		if cfg.MappingBytes == 0 {
			cfg.MappingBytes = 4 << 20
		}
		p.mapped = newObservations(cfg.MappingBytes)
	}
	if p.obs == nil {
		p.obs = nopObserver{}
	}
	if p.log == nil {
		p.log = slog.New(slog.DiscardHandler)
	}
	return p, nil
}

func setDefault[T int | time.Duration](v *T, def T) {
	if *v <= 0 {
		*v = def
	}
}

// Request is one batch of observables for one API key. Observables hold
// supported types only, lower case; duplicates are looked up once.
type Request struct {
	Key pulsedive.APIKey
	// KeyFingerprint is Key.Fingerprint() when the caller has it already
	// (the transport charges its bounds to it); empty, it is computed.
	KeyFingerprint string
	EntitiesLimit  int
	Observables    []ctim.Observable

	caller caller // Key and its fingerprint, set by run
}

// Result is an observe or deliberate answer: what was found, in request
// order, and the failures in request order: one per failed document, except
// that every refusal of the relay's own budget is folded into one
// *BudgetError, at the place of the first (the transport reports each
// distinct failure once).
type Result struct {
	Bundle *ctim.Bundle
	Errors []error
}

// ReferResult is a refer answer: pivots in request order and failures,
// refusals folded as in Result.
type ReferResult struct {
	References []ctim.Reference
	Errors     []error
}

// Observe enriches the observables: verdicts, judgements, indicators,
// sightings and relationships (CONTRACT.md section 4). Verdicts come first: every
// indicator call of the request goes before its links (Active DNS) calls,
// which take only budget the verdicts leave (see run and budgetedLinks).
func (p *Pipeline) Observe(ctx context.Context, req Request) Result {
	return p.fold(p.run(ctx, req, p.observeOne))
}

// Deliberate answers verdicts only, from the same documents as Observe:
// the current ones, without judgement_id (there are no judgements). It
// never asks for links.
func (p *Pipeline) Deliberate(ctx context.Context, req Request) Result {
	return p.fold(p.run(ctx, req, p.deliberateOne))
}

// fold gathers the outcomes of observe or deliberate, in request order,
// into one answer.
func (p *Pipeline) fold(outs []outcome) Result {
	res := Result{Bundle: &ctim.Bundle{}}
	for _, o := range outs {
		switch {
		case o.observation != nil:
			res.Bundle.Add(p.mapper.Entities(o.observation))
		case o.verdict != nil:
			res.Bundle.AddVerdict(*o.verdict)
		}
	}
	res.Errors = p.foldErrors(outs)
	return res
}

// Refer answers a search pivot for every observable and a browse pivot for
// each one Pulsedive knows (CONTRACT.md section 5). A failed lookup leaves the
// search pivot in place and reports the failure.
func (p *Pipeline) Refer(ctx context.Context, req Request) ReferResult {
	outs := p.run(ctx, req, p.referOne)
	var res ReferResult
	for _, o := range outs {
		res.References = append(res.References, o.refs...)
	}
	res.Errors = p.foldErrors(outs)
	return res
}

// Health makes one cheap Pulsedive call with the caller's key, bypassing
// the cache, within the request timeout.
func (p *Pipeline) Health(ctx context.Context, key pulsedive.APIKey) error {
	if p.cfg.Pinger == nil {
		return errors.New("pipeline: no Pinger configured")
	}
	ctx, cancel := context.WithTimeout(ctx, p.cfg.RequestTimeout)
	defer cancel()
	return p.cfg.Pinger.Health(ctx, key)
}

// outcome is what one observable produced.
type outcome struct {
	// observation is observe's answer, given fresh transient ids as it is
	// folded.
	observation *ctim.Observation
	verdict     *ctim.Verdict
	refs        []ctim.Reference
	errs        []error
	// linked says Pulsedive knows the observable and its Active DNS was
	// asked for: it counts in the n of "skipped for k of n".
	linked bool
}

// dedupe returns the observables without repeats, in order; obs itself
// when it has none.
func dedupe(obs []ctim.Observable) []ctim.Observable {
	if len(obs) <= scanObservables {
		dup := false
		for i := 1; i < len(obs) && !dup; i++ {
			dup = slices.Contains(obs[:i], obs[i])
		}
		if !dup {
			return obs
		}
	}
	seen := make(map[ctim.Observable]struct{}, len(obs))
	out := make([]ctim.Observable, 0, len(obs))
	for _, o := range obs {
		if _, dup := seen[o]; dup {
			continue
		}
		seen[o] = struct{}{}
		out = append(out, o)
	}
	return out
}

// scanObservables is how many observables dedupe compares with each other
// rather than through a set.
const scanObservables = 8

// observeOne is observe's first step: the indicator. When Pulsedive knows
// the observable, the links follow as a second step.
func (p *Pipeline) observeOne(ctx context.Context, s *schedule, req Request, o ctim.Observable) (outcome, func() outcome) {
	info, out, found := p.found(ctx, req, o)
	if !found {
		return out, nil
	}
	// Check the fields every entity needs before spending budget on links
	// (a document mapped before has them).
	if p.mapped == nil || !p.mapped.mapped(o, info, req.EntitiesLimit) {
		if _, _, err := p.mapper.Verdict(o, info); err != nil {
			return failed(err), nil
		}
	}
	return outcome{}, func() outcome { return p.observeLinks(ctx, s, req, o, info) }
}

// found fetches o's indicator document for observe and deliberate. When
// it is not found, out is the observable's whole outcome: nothing when
// Pulsedive has no data, the failure when the call failed.
func (p *Pipeline) found(ctx context.Context, req Request, o ctim.Observable) (info *pulsedive.Indicator, out outcome, found bool) {
	info, err := p.indicator(ctx, req.caller, o.Value)
	if err != nil {
		return nil, failed(err), false
	}
	return info, outcome{}, info != nil
}

// observeLinks is observe's second step: the links, within what the
// budget leaves, then the whole mapping. Without links (refused, failed)
// the observable keeps its verdict, judgements and indicators.
func (p *Pipeline) observeLinks(ctx context.Context, s *schedule, req Request, o ctim.Observable, info *pulsedive.Indicator) outcome {
	out := outcome{linked: true}
	links, err := p.budgetedLinks(ctx, s, req.caller, o.Value)
	if err != nil {
		out.errs = append(out.errs, noteRefusal(err, true))
		links = nil
	}
	ob, err := p.observation(o, info, links, req.EntitiesLimit)
	if err != nil {
		return failed(err)
	}
	if err := ob.LinksErr(); err != nil {
		out.errs = append(out.errs, err)
	}
	out.observation = ob
	return out
}

// observation maps o's documents under limit, or finds them mapped before:
// a mapping is reused until its documents change (the cache's copy is
// refreshed or evicted) or the mapping itself may change with the clock
// (ctim.Observation.Current).
func (p *Pipeline) observation(o ctim.Observable, info *pulsedive.Indicator, links *pulsedive.Links, limit int) (*ctim.Observation, error) {
	if p.mapped != nil {
		if ob := p.mapped.get(o, info, links, limit, p.cfg.Now()); ob != nil {
			return ob, nil
		}
	}
	ob, err := p.mapper.Observation(o, info, links, limit)
	if err != nil {
		return nil, err
	}
	if p.mapped != nil {
		p.mapped.put(o, info, links, limit, ob)
	}
	return ob, nil
}

func (p *Pipeline) deliberateOne(ctx context.Context, _ *schedule, req Request, o ctim.Observable) (outcome, func() outcome) {
	info, out, found := p.found(ctx, req, o)
	if !found {
		return out, nil
	}
	v, current, err := p.mapper.Verdict(o, info)
	if err != nil {
		return failed(err), nil
	}
	if !current { // expired verdicts are left out, as in observe (CONTRACT.md section 4b)
		return outcome{}, nil
	}
	return outcome{verdict: &v}, nil
}

func (p *Pipeline) referOne(ctx context.Context, _ *schedule, req Request, o ctim.Observable) (outcome, func() outcome) {
	out := outcome{refs: []ctim.Reference{ctim.SearchReference(o)}}
	info, err := p.indicator(ctx, req.caller, o.Value)
	switch {
	case err != nil:
		out.errs = []error{noteRefusal(err, false)}
	case info == nil:
	case info.IID == "":
		out.errs = []error{ctim.ErrBroken}
	default:
		ref, err := ctim.BrowseReference(o, info.IID)
		if err != nil {
			out.errs = []error{err}
			break
		}
		out.refs = append(out.refs, ref)
	}
	return out, nil
}

// failed is the outcome of an observable whose indicator (or mapping)
// failed.
func failed(err error) outcome { return outcome{errs: []error{noteRefusal(err, false)}} }

type nopObserver struct{}

func (nopObserver) CacheLookup(string, string) {}
func (nopObserver) Observable(string)          {}
func (nopObserver) SharedCall(string)          {}
func (nopObserver) PanicRecovered(string)      {}
