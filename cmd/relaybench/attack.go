package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/pulsedive-relay/relay/pulsedive/pulsedivetest"
)

// The attack run tries the relay as an attacker would, one attack (a row)
// at a time, each against a relay of its own held to the deployment's
// memory (deploy/kubernetes: GOMEMLIMIT 200 MiB under a 256 MiB limit),
// while a steady stream of legitimate requests with a valid token is
// measured. Each row reports the relay's peak RSS (VmHWM) against the
// limit, whether it survived, and the legitimate requests answered and
// their p99; some add checks of their own. The rows live one family to a
// file: attack_bodies.go, attack_conns.go, attack_answers.go,
// attack_pulsedive.go, attack_jwks.go, attack_drain.go.

// Deployment figures the run holds the relay to.
const (
	deployMemLimit   = "200MiB" // the Deployment's GOMEMLIMIT
	deployPodLimitMi = 256      // its memory limit, MiB
)

// attackConfig is the run: every row, or those named, each for Duration.
type attackConfig struct {
	Short    bool
	Duration time.Duration
	Rows     string
	Legit    int
	MaxRSS   float64
	MemLimit string
}

func defaultAttack() attackConfig {
	return attackConfig{Duration: 20 * time.Second, Legit: 4, MaxRSS: deployPodLimitMi, MemLimit: deployMemLimit}
}

func registerAttack(fs *flag.FlagSet) func(context.Context, *bench) ([]*report, error) {
	c := defaultAttack()
	fs.BoolVar(&c.Short, "short", false, "a few seconds per row and smaller crowds where the row allows (the CI gate)")
	fs.DurationVar(&c.Duration, "duration", c.Duration, "how long each attack lasts (-short: 4s unless given)")
	fs.StringVar(&c.Rows, "rows", "", "comma-separated rows to run (default all: "+strings.Join(rowNames(), ", ")+")")
	fs.IntVar(&c.Legit, "legit", c.Legit, "concurrent legitimate clients measured during each attack")
	fs.Float64Var(&c.MaxRSS, "max-rss", c.MaxRSS, "the pod's memory limit, MiB: the relay's VmHWM must stay below it")
	fs.StringVar(&c.MemLimit, "gomemlimit", c.MemLimit, "the relay's GOMEMLIMIT, as deployed")
	return func(ctx context.Context, b *bench) ([]*report, error) {
		if c.Short && !flagSet(fs, "duration") {
			c.Duration = 4 * time.Second
		}
		return runAttacks(ctx, b, c)
	}
}

func flagSet(fs *flag.FlagSet, name string) bool {
	set := false
	fs.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}

// attackRow is one attack of the table.
type attackRow struct {
	name  string
	title string
	// owner names the part of issue 9 that fixes the row, for the report.
	owner string
	// env is the row's relay settings over the deployment's.
	env  map[string]string
	fake pulsedivetest.Config
	// legit, when set, makes the legitimate requests (a cached lookup by
	// default).
	legit func(a *attack) (func(client, seq int) (request, error), error)
	// legitP99, when set, is a timing target for the legitimate answers.
	legitP99 time.Duration
	// run attacks until ctx ends, adding the row's own figures to a.r.
	run func(ctx context.Context, a *attack) error
	// own rows measure their own traffic and end the relay themselves:
	// run gets the run's context, and no legitimate stream or survival
	// check is made.
	own bool
}

func attackRows(short bool) []attackRow {
	return slices.Concat(bodyRows(), connRows(), answerRows(), pulsediveRows(), jwksRows(), drainRows(short))
}

func rowNames() []string {
	var out []string
	for _, r := range attackRows(false) {
		out = append(out, r.name)
	}
	return out
}

// attack is one row running: its stack, report and settings.
type attack struct {
	b   *bench
	st  *stack
	r   *report
	c   attackConfig
	row attackRow
	key string // the legitimate tenant's API key
}

// short picks the value for -short or the full run.
func (a *attack) short(short, full int) int {
	if a.c.Short {
		return short
	}
	return full
}

func runAttacks(ctx context.Context, b *bench, c attackConfig) ([]*report, error) {
	if c.Duration <= 0 || c.Legit < 1 || c.MaxRSS <= 0 {
		return nil, usageError("attack: -duration must be positive, -legit at least 1, -max-rss positive")
	}
	rows := attackRows(c.Short)
	if c.Rows != "" {
		want := strings.Split(c.Rows, ",")
		for _, name := range want {
			if !slices.Contains(rowNames(), strings.TrimSpace(name)) {
				return nil, usageError(fmt.Sprintf("attack: no row %q (rows: %s)", name, strings.Join(rowNames(), ", ")))
			}
		}
		rows = slices.DeleteFunc(rows, func(r attackRow) bool {
			return !slices.ContainsFunc(want, func(n string) bool { return strings.TrimSpace(n) == r.name })
		})
	}
	var out []*report
	for _, row := range rows {
		r, err := runAttack(ctx, b, c, row)
		if r != nil {
			out = append(out, r)
		}
		if err != nil {
			return out, fmt.Errorf("attack %s: %w", row.name, err)
		}
	}
	return out, nil
}

// runAttack runs one row on a relay of its own.
func runAttack(ctx context.Context, b *bench, c attackConfig, row attackRow) (*report, error) {
	env := map[string]string{"GOMEMLIMIT": c.MemLimit, "PULSEDIVE_RATE_LIMIT": "0"}
	for k, v := range row.env {
		env[k] = strings.ReplaceAll(v, jwksHostsPlaceholder, b.jwks.Host())
	}
	st, err := b.start(ctx, stackConfig{
		name: "attack-" + row.name, scenario: "attack " + row.name, title: row.title,
		fake: row.fake, fakeText: "synthetic", env: env,
		clients: c.Legit, timeout: 20 * time.Second,
	})
	if err != nil {
		return nil, err
	}
	defer st.close()
	r, lc := st.r, st.lc
	if row.owner != "" {
		r.setting("fixed by", row.owner)
	}
	a := &attack{b: b, st: st, r: r, c: c, row: row, key: b.apiKey(row.name + "-legit")}
	b.progress("attack %s: %s", row.name, row.title)
	if row.own {
		if err := row.run(ctx, a); err != nil {
			return r, err
		}
		st.finish(ctx, r, nil, finishOptions{leakMargin: -1, maxRSS: c.MaxRSS, hwmTarget: true, settle: time.Second})
		return r, nil
	}
	next, err := a.legitRequests(ctx, lc)
	if err != nil {
		return nil, err
	}

	attackCtx, cancel := context.WithTimeout(ctx, c.Duration)
	defer cancel()
	lt := &legitTally{}
	var legit *loadResult
	var legitErr error
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		legit, legitErr = lc.run(ctx, loadConfig{Clients: c.Legit, Duration: c.Duration, Next: next, OnAnswer: lt.add})
	}()
	runErr := row.run(attackCtx, a)
	cancel()
	wg.Wait()
	if err := errors.Join(runErr, legitErr); err != nil {
		return r, err
	}
	a.survival(ctx)
	a.legitFigures(legit, lt)
	st.finish(ctx, r, lc, finishOptions{leakMargin: -1, maxRSS: c.MaxRSS, hwmTarget: true, settle: time.Second})
	return r, nil
}

// legitRequests returns the legitimate requests of the row: by default one
// observable, looked up once beforehand so that it is cached.
func (a *attack) legitRequests(ctx context.Context, lc *loadClient) (func(client, seq int) (request, error), error) {
	if a.row.legit != nil {
		return a.row.legit(a)
	}
	o := a.b.values.next()
	req, err := a.b.observeRequest(a.key, []observable{o})
	if err != nil {
		return nil, err
	}
	ra, _, err := post(ctx, lc, req)
	if err != nil {
		return nil, err
	}
	if len(ra.Errors) > 0 {
		return nil, fmt.Errorf("warming the legitimate lookup: %s", ra.errorText())
	}
	return func(int, int) (request, error) { return req, nil }, nil
}

// legitTally counts the legitimate answers that carry no error, and their
// latencies.
type legitTally struct {
	mu        sync.Mutex
	ok        int
	latencies []time.Duration
	codes     map[string]int
}

func (t *legitTally) add(_ request, a answer) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.codes == nil {
		t.codes = map[string]int{}
	}
	if a.Status != http.StatusOK {
		t.codes[fmt.Sprintf("HTTP %d", a.Status)]++
		return
	}
	ra, err := parseAnswer(a.Body)
	if err != nil {
		t.codes["not the envelope"]++
		return
	}
	for _, e := range ra.Errors {
		t.codes[e.Code]++
	}
	if len(ra.Errors) == 0 {
		t.ok++
		t.latencies = append(t.latencies, a.Latency)
	}
}

// legitFigures adds the share of legitimate requests answered without
// error and their p99.
func (a *attack) legitFigures(res *loadResult, t *legitTally) {
	t.mu.Lock()
	defer t.mu.Unlock()
	slices.Sort(t.latencies)
	share := 0.0
	if res.Sent > 0 {
		share = float64(t.ok) / float64(res.Sent)
	}
	a.r.add("legit_sent", "legitimate requests sent", float64(res.Sent), unitCount)
	answered := a.r.add("legit_answered", "legitimate requests answered without error (share)", share, unitRatio).headline()
	if a.c.Short {
		// The CI gate fails on a crash, a lost request or memory over the
		// limit; a few seconds of a row on a busy machine are too few to
		// judge the legitimate share by, so -short reports it only.
		answered.aim(opAtLeast, 0.99)
	} else {
		answered.want(opAtLeast, 0.99)
	}
	p99 := a.r.addDuration("legit_p99_ms", "legitimate answers, p99", percentile(t.latencies, 0.99)).headline()
	if a.row.legitP99 > 0 {
		p99.aim(opAtMost, float64(a.row.legitP99/time.Millisecond))
	}
	if len(t.codes) > 0 {
		countMap(a.r, "legitimate answers with errors, by code", t.codes)
	}
	if res.lost() > 0 {
		countMap(a.r, "legitimate requests without an answer, by cause", res.Lost)
	}
}

// survival checks the relay is still up after the attack: its process
// running and /healthz answering.
func (a *attack) survival(ctx context.Context) {
	alive := 1.0
	if a.st.relay != nil {
		select {
		case <-a.st.relay.done:
			alive = 0
			a.r.note("the relay exited during the attack (%v); its last lines:\n%s", a.st.relay.waitErr, a.st.relay.logs().tail())
		default:
		}
	}
	if alive == 1 {
		if err := waitOK(ctx, a.st.url+"/healthz", 10*time.Second, nil); err != nil {
			alive = 0
			a.r.note("/healthz after the attack: %v", err)
		}
	}
	a.r.add("survived", "relay alive and answering /healthz after the attack", alive, unitCount).want(opEqual, 1).headline()
}

// crowd has n attackers call once again and again until ctx ends
// (hammer), sharing a load client of n connections whose requests may
// take timeout, and reports what they got, under what.
func (a *attack) crowd(ctx context.Context, n int, timeout time.Duration, what string, once func(ctx context.Context, lc *loadClient, t *outcomes) error) {
	t := newOutcomes()
	lc := newLoadClient(a.st.url, n, timeout)
	defer lc.closeIdle()
	hammer(ctx, n, func(ctx context.Context, _ int) error { return once(ctx, lc, t) })
	t.report(a.r, what)
}

// hammer runs n attackers until ctx ends, each calling once again and
// again; a failed attempt pauses it a little, as a real client's retry
// would, so that refusals do not turn it into a busy loop.
func hammer(ctx context.Context, n int, once func(ctx context.Context, i int) error) {
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				if err := once(ctx, i); err != nil && !pause(ctx, 50*time.Millisecond) {
					return
				}
			}
		}()
	}
	wg.Wait()
}
