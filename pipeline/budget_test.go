package pipeline

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/pulsedive-relay/relay/ctim"
	"github.com/pulsedive-relay/relay/pulsedive"
)

// TestFoldErrors checks how a request's errors are listed: in request
// order, every refusal of the budget folded into one BudgetError at the
// place of the first, counting the observables without Active DNS and
// estimating when the budget allows every refused call again.
func TestFoldErrors(t *testing.T) {
	unavailable := &pulsedive.UnavailableError{Reason: "timeout"}
	status := &pulsedive.StatusError{StatusCode: 500}
	// Outcomes: linked ones asked for their links; refused(d, links) is a
	// refusal whose token comes d from now.
	refused := func(d time.Duration, links bool) error {
		return noteRefusal(&pulsedive.RateLimitError{RetryAfter: d}, links)
	}
	linked := func(errs ...error) outcome { return outcome{linked: true, errs: errs} }
	plain := func(errs ...error) outcome { return outcome{errs: errs} }
	threeSeconds := Budget{Every: 3 * time.Second, Burst: 10}
	tests := []struct {
		name   string
		budget Budget
		outs   func() []outcome // made inside the test's bubble, on its clock
		want   []error
	}{
		{name: "no refusal", budget: threeSeconds,
			outs: func() []outcome { return []outcome{plain(status), linked(), linked(unavailable)} },
			want: []error{status, unavailable}},
		{name: "links skipped: one error where the first was, n counts the linked",
			budget: threeSeconds,
			outs: func() []outcome {
				return []outcome{plain(status), linked(refused(2*time.Second, true)), linked(), linked(unavailable), linked(refused(5*time.Second, true)), plain()}
			},
			want: []error{status, &BudgetError{LinksOnly: true, Skipped: 2, Of: 4, RetryAfter: 8 * time.Second}, unavailable}},
		{name: "the refill of the others stops at the burst",
			budget: Budget{Every: 3 * time.Second, Burst: 2},
			outs: func() []outcome {
				return []outcome{linked(refused(time.Second, true)), linked(refused(time.Second, true)), linked(refused(time.Second, true))}
			},
			want: []error{&BudgetError{LinksOnly: true, Skipped: 3, Of: 3, RetryAfter: 4 * time.Second}}},
		{name: "unknown budget: the latest refusal's time",
			outs: func() []outcome {
				return []outcome{linked(refused(time.Second, true)), linked(refused(7*time.Second, true))}
			},
			want: []error{&BudgetError{LinksOnly: true, Skipped: 2, Of: 2, RetryAfter: 7 * time.Second}}},
		{name: "a refused verdict: the plain form, the longest time",
			budget: threeSeconds,
			outs: func() []outcome {
				return []outcome{linked(refused(time.Second, true)), plain(refused(40*time.Second, false))}
			},
			want: []error{&BudgetError{Skipped: 1, Of: 1, RetryAfter: 43 * time.Second}}},
		{name: "a refusal wrapped on its way",
			budget: threeSeconds,
			outs: func() []outcome {
				return []outcome{plain(noteRefusal(errorsJoin(&pulsedive.RateLimitError{RetryAfter: time.Minute}), false))}
			},
			want: []error{&BudgetError{RetryAfter: time.Minute}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) { // time stands still: the refusals' times are exact
				p := newPipeline(t, &fakeFetcher{}, nil, func(c *Config) { c.Budget = tt.budget })
				got := p.foldErrors(tt.outs())
				if diff := cmp.Diff(tt.want, got, cmp.Comparer(func(a, b error) bool { return a == b || cmp.Equal(a, b) })); diff != "" {
					t.Errorf("errors (-want +got):\n%s", diff)
				}
			})
		})
	}
}

func errorsJoin(errs ...error) error { return errors.Join(errs...) }

// TestBudgetErrorUnwraps: a folded refusal is still a refusal to whoever
// asks with errors.As.
func TestBudgetErrorUnwraps(t *testing.T) {
	var rl *pulsedive.RateLimitError
	err := error(&BudgetError{LinksOnly: true, Skipped: 1, Of: 2, RetryAfter: 9 * time.Second})
	if !errors.As(err, &rl) || rl.RetryAfter != 9*time.Second {
		t.Errorf("errors.As(%v) = %v, want a RateLimitError of 9s", err, rl)
	}
}

// TestRefusedIndicatorIsFolded: an observable whose indicator call the
// budget refuses is one more refusal in the fold, in deliberate and refer
// as in observe.
func TestRefusedIndicatorIsFolded(t *testing.T) {
	f := &fakeFetcher{fail: func(_, value string) error {
		if value == "refused.example" || value == "refused2.example" {
			return &pulsedive.RateLimitError{RetryAfter: 30 * time.Second}
		}
		return nil
	}}
	p := newPipeline(t, f, nil)
	obs := []ctim.Observable{{Type: "domain", Value: "refused.example"}, {Type: "domain", Value: "ok.example"}, {Type: "domain", Value: "refused2.example"}}
	req := Request{Key: "k", EntitiesLimit: 100, Observables: obs}
	for name, errs := range map[string][]error{
		"observe":    p.Observe(t.Context(), req).Errors,
		"deliberate": p.Deliberate(t.Context(), req).Errors,
		"refer":      p.Refer(t.Context(), req).Errors,
	} {
		var be *BudgetError
		if len(errs) != 1 || !errors.As(errs[0], &be) || be.LinksOnly || be.RetryAfter <= 0 || be.RetryAfter > 30*time.Second {
			t.Errorf("%s errors = %v, want one plain BudgetError of at most 30s", name, errs)
		}
	}
}

// TestJoinedRefusalIsNotTaken: a links call that may take only budget
// free at once is refused where one allowed to wait would wait; a call
// allowed to wait that joined it does not take its refusal: it calls
// again, on its own terms.
func TestJoinedRefusalIsNotTaken(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := &firstLinksRefused{fakeFetcher: &fakeFetcher{}, entered: make(chan struct{}), release: make(chan struct{})}
		p := newPipeline(t, f, nil)
		c := caller{key: "k", fp: "fp"}
		ctx := context.Background()

		atOnce := make(chan error, 1)
		go func() {
			_, err := p.links(ctx, c, "a.example", time.Now())
			atOnce <- err
		}()
		<-f.entered
		waited := make(chan error, 1)
		go func() {
			_, err := p.links(ctx, c, "a.example", time.Now().Add(time.Minute))
			waited <- err
		}()
		synctest.Wait() // the waiting call has joined the held one
		close(f.release)
		if err := <-atOnce; !errors.As(err, new(*pulsedive.RateLimitError)) {
			t.Errorf("the at-once call: %v, want its refusal", err)
		}
		if err := <-waited; err != nil {
			t.Errorf("the call allowed to wait: %v, want the links of a call of its own", err)
		}
		if got := f.count(pulsedive.KindLinks, "a.example"); got != 2 {
			t.Errorf("links calls %d, want 2", got)
		}
	})
}

// firstLinksRefused holds the first links call until release, then
// refuses it as the limiter refuses a call finding no token free; the
// others are answered.
type firstLinksRefused struct {
	*fakeFetcher
	n                atomic.Int32
	entered, release chan struct{}
}

func (f *firstLinksRefused) Links(ctx context.Context, key pulsedive.APIKey, value string) (*pulsedive.Links, error) {
	if f.n.Add(1) == 1 {
		_ = f.fakeFetcher.enter(ctx, pulsedive.KindLinks, value)
		f.entered <- struct{}{}
		<-f.release
		return nil, &pulsedive.RateLimitError{}
	}
	return f.fakeFetcher.Links(ctx, key, value)
}
