package pipeline

import (
	"errors"
	"fmt"
	"time"

	"github.com/pulsedive-relay/relay/pulsedive"
)

// Budget describes a key's token bucket as the Fetcher's limiter keeps it
// (limiter.Budget gives the numbers): Every is how long one call's worth of
// budget takes to come back, Burst the most the bucket holds.
type Budget struct {
	Every time.Duration
	Burst int
}

// BudgetError is every refusal of the relay's own per-key budget in one
// request, folded into one (CONTRACT.md section 6, tight budgets): calls the
// limiter would not allow before their bound, or made while the key is
// paused after a 429 or a spent quota. It unwraps to a
// *pulsedive.RateLimitError with the same RetryAfter.
type BudgetError struct {
	// LinksOnly says only links calls were refused: every verdict is in the
	// answer, and Skipped of Of observables lack Active DNS. Of counts the
	// observables of the request Pulsedive knows, whose Active DNS the
	// answer would carry; Skipped those of them whose links call was
	// refused.
	LinksOnly   bool
	Skipped, Of int
	// RetryAfter estimates how long until the budget allows every refused
	// call again, so that the same request then gets what this one missed.
	// It is advice: other requests of the key spend the same budget.
	RetryAfter time.Duration
}

func (e *BudgetError) Error() string {
	if e.LinksOnly {
		return fmt.Sprintf("pipeline: rate limit for this key reached: Active DNS skipped for %d of %d observables; retry in %s", e.Skipped, e.Of, e.RetryAfter)
	}
	return fmt.Sprintf("pipeline: rate limit for this key reached; retry in %s", e.RetryAfter)
}

// Unwrap gives the refusal as the client reports one.
func (e *BudgetError) Unwrap() error { return &pulsedive.RateLimitError{RetryAfter: e.RetryAfter} }

// refusal is one call the key's budget refused, as foldErrors gathers them:
// when the refusal said a token would come, and whether it was a links
// call.
type refusal struct {
	err   *pulsedive.RateLimitError
	ready time.Time
	links bool
}

func (r *refusal) Error() string { return r.err.Error() }
func (r *refusal) Unwrap() error { return r.err }

// noteRefusal marks err as a refusal of the budget, timed now, when it is
// one, and returns any other error as it is.
func noteRefusal(err error, links bool) error {
	var rl *pulsedive.RateLimitError
	if !errors.As(err, &rl) {
		return err
	}
	return &refusal{err: rl, ready: time.Now().Add(rl.RetryAfter), links: links}
}

// foldErrors lists the errors of the outcomes in request order, with every
// refusal folded into one *BudgetError at the place of the first.
func (p *Pipeline) foldErrors(outs []outcome) []error {
	var (
		errs    []error
		at      = -1 // where the BudgetError goes
		refused int
		skipped int
		linked  int
		latest  time.Time
		others  bool // a refusal of an indicator call
	)
	for _, o := range outs {
		if o.linked {
			linked++
		}
		for _, err := range o.errs {
			var r *refusal
			if !errors.As(err, &r) {
				errs = append(errs, err)
				continue
			}
			if at < 0 {
				at = len(errs)
				errs = append(errs, nil)
			}
			refused++
			if r.links {
				skipped++
			} else {
				others = true
			}
			if r.ready.After(latest) {
				latest = r.ready
			}
		}
	}
	if at >= 0 {
		errs[at] = &BudgetError{
			LinksOnly:  !others,
			Skipped:    skipped,
			Of:         linked,
			RetryAfter: p.retryAfter(latest, refused, time.Now()),
		}
	}
	return errs
}

// retryAfter estimates, at now, when the budget allows n refused calls
// again: the latest time a refusal said a token would come, plus the refill
// of the others up to the burst. Past the burst a bucket holds no more, so
// the advice is when it is full. A refusal by a paused key already says
// when the pause ends, and the bucket fills meanwhile: the estimate then
// runs long by at most the burst's refill.
func (p *Pipeline) retryAfter(latest time.Time, n int, now time.Time) time.Duration {
	d := latest.Sub(now)
	if b := p.cfg.Budget; b.Every > 0 && n > 1 {
		d += time.Duration(min(n, max(b.Burst, 1))-1) * b.Every
	}
	return max(d, 0)
}
