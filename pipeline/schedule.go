package pipeline

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pulsedive-relay/relay/ctim"
	"github.com/pulsedive-relay/relay/pulsedive"
)

// task is what a request does for one observable. Its first step (the
// indicator) runs at once on the request's pool; when the observable needs
// a second step (its links), first returns it and run queues it behind
// every first step of the request. A nil second step means the outcome is
// final; otherwise the second step's outcome replaces it.
type task func(ctx context.Context, s *schedule, req Request, o ctim.Observable) (outcome, func() outcome)

// schedule tells a request's second steps whether its first steps (the
// verdicts) are all done, and since when.
type schedule struct {
	verdicts chan struct{} // closed when every first step has ended
	at       time.Time     // when; written before verdicts is closed
	// drained is set when a links call found no budget free at once while
	// verdicts were outstanding: the others then wait for the verdicts
	// without asking, rather than each counting one more refusal.
	drained atomic.Bool
}

// verdictsDone reports whether every first step has ended, and when.
func (s *schedule) verdictsDone() (time.Time, bool) {
	select {
	case <-s.verdicts:
		return s.at, true
	default:
		return time.Time{}, false
	}
}

// run deduplicates the observables and runs their tasks on at most Workers
// goroutines (the caller's among them, so a single lookup starts none),
// under the request timeout. The first steps of every observable are
// started before any second step: a worker takes a queued links call only
// when no indicator call of the request is left to start, so verdicts never
// wait behind Active DNS. Every task runs to its end (collecting its
// errors, never cancelling the others), and each returns promptly once the
// deadline passes, so run never outlives the request timeout by more than
// a task's bookkeeping.
func (p *Pipeline) run(ctx context.Context, req Request, t task) []outcome {
	ctx, cancel := context.WithTimeout(ctx, p.cfg.RequestTimeout)
	defer cancel()
	req.caller = newCaller(req)
	obs := dedupe(req.Observables)
	for _, o := range obs {
		p.obs.Observable(o.Type)
	}
	switch len(obs) {
	case 0:
		return nil
	case 1:
		return []outcome{p.runOne(ctx, req, t, obs[0])}
	}
	return p.runQueue(ctx, req, t, obs)
}

// runQueue is run for several observables, on a queue of their steps. (A
// function of its own: the workers' closures would move run's context and
// request to the heap for every request, one observable's included.)
func (p *Pipeline) runQueue(ctx context.Context, req Request, t task, obs []ctim.Observable) []outcome {
	q := &queue{
		obs:       obs,
		outs:      make([]outcome, len(obs)),
		firstLeft: len(obs),
		sched:     &schedule{verdicts: make(chan struct{})},
	}
	q.cond = sync.NewCond(&q.mu)
	var wg sync.WaitGroup
	for range min(p.cfg.Workers, len(obs)) - 1 {
		wg.Go(func() { q.work(ctx, req, t) })
	}
	q.work(ctx, req, t)
	wg.Wait()
	return q.outs
}

// closedVerdicts is the verdicts channel of a request of one observable.
var closedVerdicts = func() chan struct{} {
	c := make(chan struct{})
	close(c)
	return c
}()

// runOne is run for a single observable, on the caller's goroutine and
// without a queue: its first step is the request's only one, so its second
// step may follow at once.
func (p *Pipeline) runOne(ctx context.Context, req Request, t task, o ctim.Observable) outcome {
	// Only second steps look at verdicts, and they run once the first
	// step has ended.
	s := &schedule{verdicts: closedVerdicts}
	out, then := t(ctx, s, req, o)
	if then == nil {
		return out
	}
	s.at = time.Now()
	return then()
}

// queue is one request's work: first steps by index, second steps as their
// first steps return them.
type queue struct {
	obs   []ctim.Observable
	sched *schedule

	mu        sync.Mutex
	cond      *sync.Cond // signalled when a second step is queued or the last first step ends
	outs      []outcome
	next      int // the next first step to start
	firstLeft int // first steps not yet ended
	seconds   []second
}

type second struct {
	i    int
	step func() outcome
}

// work runs steps until none is left or can come: first steps while any is
// left to start, then second steps.
func (q *queue) work(ctx context.Context, req Request, t task) {
	for {
		i, step, ok := q.take()
		switch {
		case !ok:
			return
		case step == nil:
			q.first(ctx, req, t, i)
		default:
			q.second(i, step)
		}
	}
}

// take hands out the next step: a first step (step nil) while any is left
// to start, else a queued second step. It waits for more only while first
// steps are still running, since only they queue second steps; ok is false
// when nothing is left.
func (q *queue) take() (i int, step func() outcome, ok bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	for {
		switch {
		case q.next < len(q.obs):
			q.next++
			return q.next - 1, nil, true
		case len(q.seconds) > 0:
			s := q.seconds[0]
			q.seconds = q.seconds[1:]
			return s.i, s.step, true
		case q.firstLeft == 0:
			return 0, nil, false
		}
		q.cond.Wait()
	}
}

// first runs observable i's first step and queues its second. The
// bookkeeping is deferred so that even a step that panics counts as ended:
// no other worker then waits for it.
func (q *queue) first(ctx context.Context, req Request, t task, i int) {
	var (
		out  outcome
		then func() outcome
	)
	defer func() {
		q.mu.Lock()
		defer q.mu.Unlock()
		q.outs[i] = out
		if then != nil {
			q.seconds = append(q.seconds, second{i, then})
			q.cond.Signal()
		}
		if q.firstLeft--; q.firstLeft == 0 {
			q.sched.at = time.Now()
			close(q.sched.verdicts)
			q.cond.Broadcast()
		}
	}()
	out, then = t(ctx, q.sched, req, q.obs[i])
}

func (q *queue) second(i int, step func() outcome) {
	out := step()
	q.mu.Lock()
	defer q.mu.Unlock()
	q.outs[i] = out
}

// budgetedLinks fetches the links of value with what the key's budget
// leaves after the request's verdicts (CONTRACT.md section 6, tight budgets).
// While indicator calls of the request are outstanding, it takes only
// budget free at once, so it never takes a token an indicator call is
// waiting for; refused, it waits for the verdicts, and so do the request's
// later links calls without asking. Once they are all in, it
// waits for budget until LinksMaxWait after that moment, never past the
// request deadline, and is refused (a *pulsedive.RateLimitError, nothing
// spent, nothing cached) when no token comes in time. An indicator call
// that a worker has started but that has not reached the limiter yet is
// not waiting for anything: a links call may take the token it would have
// got, which costs that verdict one refill interval; with indicator calls
// a network round trip long, and links calls only after one, this is rare.
func (p *Pipeline) budgetedLinks(ctx context.Context, s *schedule, c caller, value string) (*pulsedive.Links, error) {
	at, done := s.verdictsDone()
	if !done {
		var err error = &pulsedive.RateLimitError{}
		if !s.drained.Load() {
			var links *pulsedive.Links
			links, err = p.links(ctx, c, value, time.Now())
			if !errors.As(err, new(*pulsedive.RateLimitError)) {
				return links, err
			}
			s.drained.Store(true)
		}
		select {
		case <-s.verdicts:
			at = s.at
		case <-ctx.Done():
			return nil, err
		}
	}
	return p.links(ctx, c, value, at.Add(max(p.cfg.LinksMaxWait, 0)))
}
