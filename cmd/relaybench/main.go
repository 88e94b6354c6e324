// Command relaybench measures the relay under load and soaks it under
// Pulsedive faults (CONTRACT.md sections 4 to 7: collapse, cache, per-key rate
// budget, and the no-5xx, no-leak promises): it runs the fake Pulsedive and a
// loopback JWKS server in its own process, launches the relay binary as a
// child, drives it with its own HTTP load generator, and prints a report.
//
// Usage:
//
//	relaybench <scenario> [flags]
//
// Scenarios: scaling (cold batches of 100 to 1,000, alone and 10 at once,
// and the first again warm), throughput (the cached path in rounds against
// a bare net/http server in a process of its own; -rate for an open loop),
// latency (the cached path's latency against the rate, open loop, up to
// the knee), memory, soak, scaleout (several relays over one Redis; needs
// redis-server), attack (hostile load, one attack a row, on the
// deployment's memory limit), and all (scaling, throughput and memory,
// with one summary table). What the relay's logic decides rather than the
// machine (the per-key budget, the in-flight collapse) is measured on a
// fake clock by tests of internal/relay: TestBudgetByBatch,
// TestRateLimitSpendsTheBudget, TestCollapseSharesCalls. Every report names
// its figures, the target each must meet and whether it did;
// -json prints the same as JSON. The exit status is 1 when an invariant
// fails (a 5xx, a lost answer, a leak, a wrong call count, RSS over budget),
// and also when a timing target is missed under -strict; 2 for a bad
// command line (relay.ExitCode).
//
// From the module root:
//
//	go run ./cmd/relaybench all                            # the README's table
//	go run ./cmd/relaybench soak -duration 15s -clients 50 # the CI gates
//	go run ./cmd/relaybench attack -short
//
// Each scenario launches its own relay (built with go build unless
// -relay-bin names one) with the environment it needs, and stops it with
// SIGTERM at the end. With -relay-url it targets a relay already running
// instead: start that relay with PULSEDIVE_API_URL, RELAY_JWKS_HOSTS,
// SSL_CERT_FILE and RELAY_AUDIENCE pointing at relaybench's fixed
// -pulsedive-addr, -jwks-addr, -ca-file and -audience, and pass -key-file
// so that runs share one signing key.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"

	"github.com/pulsedive-relay/relay/internal/relay"
)

func main() {
	if path := os.Getenv(bareEnv); path != "" {
		os.Exit(bareMain(path, os.Stdout, os.Stderr))
	}
	// net/http's client logs through the standard logger when a server
	// answers on a connection it had not used yet, which is how the relay
	// refuses connections over its bound: the attack run would drown in it.
	log.SetOutput(io.Discard)
	// The relay's Main would let a second signal kill at once, leaving
	// the relays relaybench launched (process groups of their own)
	// running: here every signal after the first is ignored until they
	// are stopped.
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "relaybench:", err)
		}
		stop()
		os.Exit(relay.ExitCode(err))
	}
}

// errTargetsMissed is returned by run after the report is printed when a
// target that decides the exit status was missed.
var errTargetsMissed = errors.New("targets missed (see the report)")

// usageError is a command line relaybench does not understand: exit
// status 2.
func usageError(msg string) error { return relay.UsageError{Msg: msg} }

// scenario is one subcommand: register adds its own flags to the common
// ones and returns what runs it once they are parsed.
type scenario struct {
	name     string
	summary  string
	register func(fs *flag.FlagSet) func(ctx context.Context, b *bench) ([]*report, error)
}

// one runs a scenario of one report with the configuration c, which its
// flags fill.
func one[C any](run func(context.Context, *bench, C) (*report, error), c *C) func(context.Context, *bench) ([]*report, error) {
	return func(ctx context.Context, b *bench) ([]*report, error) {
		r, err := run(ctx, b, *c)
		if r == nil {
			return nil, err
		}
		return []*report{r}, err
	}
}

func scenarios() []scenario {
	return []scenario{
		{"scaling", "cold batches of 100, 500 and 1,000 new observables at 100 ms Pulsedive latency, alone and 10 at once, against the ideal; the first again, warm", registerScaling},
		{"throughput", "cached path: 64 clients on one cached observe, in rounds against a bare net/http server", registerThroughput},
		{"latency", "cached path, open loop: latency against the request rate up to the knee, beside the bare server", registerLatency},
		{"memory", "a minute of mixed load filling the cache: peak and final RSS", registerMemory},
		{"soak", "mixed traffic with Pulsedive faults: no 5xx, no lost answer, no leak, RSS in budget", registerSoak},
		{"scaleout", "3 relays sharing one Redis: one budget, one cache, one call per document, Redis killed and back", registerScaleOut},
		{"attack", "hostile load, one attack a row, on a relay held to the deployment's memory: survival, peak RSS, legitimate traffic", registerAttack},
		{"all", "scaling, throughput and memory in sequence, with one summary table", registerAll},
	}
}

// run is the whole program: main only adds the process's signals,
// arguments and standard streams, so tests run it in-process. Reports go to
// stdout, progress and the relay's trouble to stderr.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		usage(stderr)
		return usageError("no scenario given")
	}
	name, rest := args[0], args[1:]
	switch name {
	case "-h", "-help", "--help", "help":
		usage(stdout)
		return nil
	}
	var sc *scenario
	for _, s := range scenarios() {
		if s.name == name {
			sc = &s
			break
		}
	}
	if sc == nil {
		usage(stderr)
		return usageError(fmt.Sprintf("unknown scenario %q", name))
	}

	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	var opts options
	opts.register(fs)
	runScenario := sc.register(fs)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: relaybench %s [flags]\n\n%s.\n\nFlags:\n", sc.name, sc.summary)
		fs.PrintDefaults()
	}
	for _, a := range rest {
		if a == "-h" || a == "-help" || a == "--help" {
			fs.SetOutput(stdout)
			fs.Usage()
			return nil
		}
	}
	if err := fs.Parse(rest); err != nil {
		return usageError(err.Error())
	}
	if fs.NArg() > 0 {
		return usageError(fmt.Sprintf("unexpected argument %q", fs.Arg(0)))
	}
	if err := opts.validate(); err != nil {
		return usageError(err.Error())
	}

	b, err := newBench(ctx, opts, stderr)
	if err != nil {
		return err
	}
	defer b.close()
	reports, err := runScenario(ctx, b)
	if len(reports) > 0 {
		if perr := printReports(stdout, reports, opts); perr != nil && err == nil {
			err = perr
		}
	}
	if err != nil {
		return err
	}
	for _, r := range reports {
		if !r.Passed {
			return errTargetsMissed
		}
	}
	return nil
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "Usage: relaybench <scenario> [flags]")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Scenarios:")
	for _, s := range scenarios() {
		fmt.Fprintf(w, "  %-11s %s\n", s.name, s.summary)
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Run 'relaybench <scenario> -help' for its flags. By default relaybench builds")
	fmt.Fprintln(w, "the relay (go build ./cmd/relay, from inside the module) and runs it as a child")
	fmt.Fprintln(w, "process against its own fake Pulsedive and JWKS server.")
}

// options are the flags every scenario takes.
type options struct {
	JSON          bool
	Strict        bool
	Quiet         bool
	Keep          bool
	RelayBin      string
	RelayURL      string
	RelayPID      int
	PulsediveAddr string
	JWKSAddr      string
	CAFile        string
	KeyFile       string
	Audience      string
	RelayEnv      envFlag
}

func (o *options) register(fs *flag.FlagSet) {
	fs.BoolVar(&o.JSON, "json", false, "print the reports as JSON")
	fs.BoolVar(&o.Strict, "strict", false, "a missed timing target also makes the exit status non-zero")
	fs.BoolVar(&o.Quiet, "q", false, "no progress lines on stderr")
	fs.BoolVar(&o.Keep, "keep", false, "keep the work directory (relay binary, CA file, relay logs)")
	fs.StringVar(&o.RelayBin, "relay-bin", "", "relay binary to launch; empty builds ./cmd/relay with go build")
	fs.StringVar(&o.RelayURL, "relay-url", "", "target an already running relay at this base URL instead of launching one")
	fs.IntVar(&o.RelayPID, "relay-pid", 0, "with -relay-url: the relay's process id, for RSS figures")
	fs.StringVar(&o.PulsediveAddr, "pulsedive-addr", "", "listen address of the fake Pulsedive (default a free loopback port)")
	fs.StringVar(&o.JWKSAddr, "jwks-addr", "", "listen address of the JWKS server (default a free loopback port)")
	fs.StringVar(&o.CAFile, "ca-file", "", "where to write the JWKS server's CA for the relay's SSL_CERT_FILE (default in the work directory); with -relay-url, the relay must not have verified any certificate before relaybench writes it, since Go reads SSL_CERT_FILE once")
	fs.StringVar(&o.KeyFile, "key-file", "", "token signing key (PEM), created when missing: reuse it across runs against one long-running relay, which looks up a new kid at most once per 30 s")
	fs.StringVar(&o.Audience, "audience", "https://relaybench.invalid", "token audience (the relay's RELAY_AUDIENCE): scheme://host[:port], as the relay requires")
	fs.Var(&o.RelayEnv, "relay-env", "extra `NAME=VALUE` for the launched relay, over the scenario's own (repeatable)")
}

func (o *options) validate() error {
	if o.RelayPID != 0 && o.RelayURL == "" {
		return errors.New("-relay-pid needs -relay-url")
	}
	if o.RelayURL != "" && o.RelayBin != "" {
		return errors.New("-relay-url and -relay-bin exclude each other")
	}
	if o.RelayURL != "" && len(o.RelayEnv) > 0 {
		return errors.New("-relay-env applies only to a relay relaybench launches")
	}
	if strings.TrimSpace(o.Audience) == "" {
		return errors.New("-audience must not be empty")
	}
	return nil
}

// envFlag collects repeated NAME=VALUE flags, in order.
type envFlag []string

func (e *envFlag) String() string { return strings.Join(*e, " ") }

func (e *envFlag) Set(v string) error {
	name, _, ok := strings.Cut(v, "=")
	if !ok || name == "" {
		return fmt.Errorf("%q is not NAME=VALUE", v)
	}
	*e = append(*e, v)
	return nil
}

// numbers is a flag of comma-separated positive numbers.
type numbers[T int | float64] []T

func (l *numbers[T]) String() string {
	var parts []string
	for _, n := range *l {
		parts = append(parts, strconv.FormatFloat(float64(n), 'f', -1, 64))
	}
	return strings.Join(parts, ",")
}

func (l *numbers[T]) Set(v string) error {
	var out numbers[T]
	for _, p := range strings.Split(v, ",") {
		f, err := strconv.ParseFloat(strings.TrimSpace(p), 64)
		if n := T(f); err != nil || f <= 0 || float64(n) != f {
			return fmt.Errorf("%q is not a positive %T", p, n)
		}
		out = append(out, T(f))
	}
	*l = out
	return nil
}
