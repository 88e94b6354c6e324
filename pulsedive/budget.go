package pulsedive

import (
	"context"
	"time"
)

// budgetDeadlineKey carries the time set by WithBudgetDeadline.
type budgetDeadlineKey struct{}

// WithBudgetDeadline returns a context whose calls wait for the key's budget
// (the Limiter) until t at most, while their HTTP exchange keeps ctx's own
// deadline. The earlier of t and the request's bound wins. Once t has
// passed, or when t is now, a call still takes budget that is free at once
// (within atOnce) and is otherwise refused with a *RateLimitError without
// waiting: that is how the pipeline lets Active DNS use only what its
// verdicts leave (CONTRACT.md section 6, tight budgets). A deadline set again on a
// derived context replaces this one.
func WithBudgetDeadline(ctx context.Context, t time.Time) context.Context {
	return context.WithValue(ctx, budgetDeadlineKey{}, t)
}

// atOnce is how far ahead a token still counts as free at once: the
// limiter is given at least this long, so that a shared limiter (one round
// trip to Redis) can answer, and a token due within it is no loss to
// anyone.
const atOnce = 50 * time.Millisecond

// waitDeadline is when the limiter wait of a call made with ctx must end:
// ctx's deadline less the call margin, or the budget deadline when that is
// earlier (never closer than atOnce from now). byBudget says the budget
// deadline is the one that holds.
func waitDeadline(ctx context.Context, now time.Time) (deadline time.Time, ok, byBudget bool) {
	if deadline, ok = ctx.Deadline(); ok {
		margin := min(callMargin, deadline.Sub(now)/2)
		deadline = deadline.Add(-margin)
	}
	if t, set := ctx.Value(budgetDeadlineKey{}).(time.Time); set {
		if floor := now.Add(atOnce); t.Before(floor) {
			t = floor
		}
		if !ok || t.Before(deadline) {
			return t, true, true
		}
	}
	return deadline, ok, false
}
