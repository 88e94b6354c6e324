// Package relay is the relay program (CONTRACT.md sections 1 to 8): its
// command line, its configuration from the environment, the wiring of every
// part and the server that runs them until drained. It is the only package
// that imports every other one. cmd/relay is its main; cmd/relaydemo runs
// the same wiring against fakes through Serve, so that no fake is linked
// into the relay's binary.
package relay

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"
)

// version is the relay's semantic version, answered by POST /version and
// `relay version`; release builds set it with
// -ldflags "-X github.com/pulsedive-relay/relay/internal/relay.version=…".
var version = "1.0.0"

// Main runs a program of the relay (Run, or the demo's) as the process:
// with its arguments, environment and standard streams, and a context that
// ends at the first SIGTERM or SIGINT, when the relay drains; a second
// signal kills it at once. An error run returns sets the exit status
// (ExitCode).
func Main(run func(ctx context.Context, args []string, getenv func(string) string, environ func() []string, stdout, stderr io.Writer) error) {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	// Once the first signal starts the drain, a second one kills at once.
	context.AfterFunc(ctx, stop)
	if err := run(ctx, os.Args[1:], os.Getenv, os.Environ, os.Stdout, os.Stderr); err != nil {
		stop()
		os.Exit(ExitCode(err))
	}
}

// SetMemoryLimit gives the Go runtime a soft memory limit when the operator
// set no GOMEMLIMIT: RELAY_MEMORY_LIMIT, by default the cache budget plus
// room for the requests in flight (memoryLimit). Cached documents are
// charged at their encoded size and take a little more in memory, and the
// collector would otherwise let the heap grow to twice what is live; the
// limit makes it collect sooner instead, keeping resident memory near the
// budget (see the README's figures). main calls it; tests that run the
// relay in-process do not.
func SetMemoryLimit(getenv func(string) string) {
	if getenv("GOMEMLIMIT") != "" {
		return
	}
	cfg, err := loadConfig(getenv)
	if err != nil {
		return // Run reports the configuration error
	}
	debug.SetMemoryLimit(cfg.MemoryLimit)
}

// defaultGCPercent is the relay's GOGC when the operator set none. The
// memory limit (SetMemoryLimit) bounds the heap once the cache is full;
// below it, a cached request allocates ~23 KB against a live heap of a
// few MiB, and at Go's 100 the collector ran so often that it was a sixth
// of the request's CPU: BenchmarkObserveCachedWired takes 16.8 us at 100,
// 13.9 at 200, 13.3 at 400. 200 keeps most of the saving for a third of
// the extra heap 400 would let a lightly loaded relay hold (relaybench
// throughput peak RSS: 27 MiB at 100, 32 at 200, 45 at 400); the limit,
// not GOGC, decides the peak under a full cache (relaybench memory).
const defaultGCPercent = 200

// SetGCPercent sets defaultGCPercent when the operator set no GOGC. main
// calls it, as SetMemoryLimit; tests that run the relay in-process do not.
func SetGCPercent(getenv func(string) string) {
	if getenv("GOGC") != "" {
		return
	}
	debug.SetGCPercent(defaultGCPercent)
}

// UsageError is a command line a program of the relay does not
// understand; its exit status is 2 (ExitCode). Hint says where to read how
// to write it: the program writes it after the error.
type UsageError struct{ Msg, Hint string }

func (e UsageError) Error() string { return e.Msg }

// commandUsageError is a usage error of the command fs parses.
func commandUsageError(fs *flag.FlagSet, msg string) UsageError {
	return UsageError{msg, fmt.Sprintf("Run 'relay %s --help' for its flags.", fs.Name())}
}

// ExitCode is the process's exit status for an error a program returned: 2
// for a command line it does not understand (UsageError), 1 otherwise.
func ExitCode(err error) int {
	var ue UsageError
	if errors.As(err, &ue) {
		return 2
	}
	return 1
}

// command is one subcommand of the relay binary.
type command struct {
	name    string
	summary string
	run     func(ctx context.Context, args []string, env environment) error
}

// environment is what a subcommand may touch of the outside world.
type environment struct {
	getenv func(string) string
	// environ lists the whole environment, NAME=value, as os.Environ: the
	// settings are read through getenv, and the rest is looked through
	// for misspelt settings (strays).
	environ func() []string
	stdout  io.Writer
	stderr  io.Writer
}

// warnStrays writes a warning line to w for each variable of environ that
// looks like a misspelt setting, before the logger exists (check-config,
// or a configuration that does not load), and returns how many.
func warnStrays(w io.Writer, environ []string) int {
	found := strays(environ)
	for _, s := range found {
		fmt.Fprintln(w, "relay: warning:", s)
	}
	return len(found)
}

func commands() []command {
	return []command{
		{"serve", "serve the relay (the default when no subcommand is given)", serveCommand},
		{"check-config", "validate the environment as serve would and print the effective configuration", checkConfigCommand},
		{"version", "print the relay's version", versionCommand},
		{"token", "mint a configuration token (RS256) for testing a relay end to end", tokenCommand},
		{"jwks", "print the JWKS document of a key, to publish at https://HOST/.well-known/jwks", jwksCommand},
	}
}

// Run is the whole program: main only adds the process's signals,
// arguments, environment and standard streams, so tests run it in-process.
// An error is written to stderr, "relay: " first, then any hint on what to
// do; Run returns it for main's exit status (ExitCode).
func Run(ctx context.Context, args []string, getenv func(string) string, environ func() []string, stdout, stderr io.Writer) error {
	env := environment{getenv: getenv, environ: environ, stdout: stdout, stderr: stderr}
	err := dispatch(ctx, args, env)
	if err != nil {
		fmt.Fprintln(stderr, "relay:", err)
		var ue UsageError
		if errors.As(err, &ue) && ue.Hint != "" {
			fmt.Fprintln(stderr, ue.Hint)
		}
	}
	return err
}

func dispatch(ctx context.Context, args []string, env environment) error {
	if len(args) == 0 {
		return serveCommand(ctx, nil, env)
	}
	name, rest := args[0], args[1:]
	switch name {
	case "-h", "-help", "--help", "help":
		usage(env.stdout)
		return nil
	case "-version", "--version":
		return versionCommand(ctx, rest, env)
	}
	for _, c := range commands() {
		if c.name == name {
			return c.run(ctx, rest, env)
		}
	}
	msg := fmt.Sprintf("unknown command %q", name)
	switch near := nearestCommand(name); {
	case name == "demo":
		// The demo links fakes, which the relay's binary must not.
		msg += ": the demo is a program of its own, relaydemo (go run ./cmd/relaydemo)"
	case near != "":
		msg += fmt.Sprintf("; did you mean %s?", near)
	}
	return UsageError{msg, "Run 'relay --help' for the commands."}
}

// nearestCommand is the command name a mistyped one is a misspelling of,
// if any: at most 2 edits, and fewer than half its letters.
func nearestCommand(name string) string {
	for _, c := range commands() {
		if d := editDistance(name, c.name); d <= 2 && 2*d < len(c.name) {
			return c.name
		}
	}
	return ""
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "Usage: relay [command] [flags]")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Commands:")
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-13s %s\n", c.name, c.summary)
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Run 'relay <command> --help' for a command's flags, 'relay --version' for the")
	fmt.Fprintln(w, "version. Configuration comes from the environment; 'relay check-config' lists")
	fmt.Fprintln(w, "every variable.")
}

// newFlagSet gives a subcommand flags whose --help prints to stdout and
// whose errors are usage errors. The flag package prints nothing itself:
// run writes the error once, then a hint.
func newFlagSet(name, summary string, env environment) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: relay %s [flags]\n\n%s\n", name, summary)
		var hasFlags bool
		fs.VisitAll(func(*flag.Flag) { hasFlags = true })
		if hasFlags {
			fmt.Fprintln(fs.Output(), "\nFlags:")
			fs.PrintDefaults()
		}
	}
	return fs
}

// parseFlags parses args; --help prints usage to stdout and ends the
// command successfully.
func parseFlags(fs *flag.FlagSet, args []string, env environment) (done bool, err error) {
	for _, a := range args {
		if a == "-h" || a == "-help" || a == "--help" {
			fs.SetOutput(env.stdout)
			fs.Usage()
			return true, nil
		}
	}
	if err := fs.Parse(args); err != nil {
		return true, commandUsageError(fs, fs.Name()+": "+err.Error())
	}
	if fs.NArg() > 0 {
		return true, commandUsageError(fs, fmt.Sprintf("%s: unexpected argument %q", fs.Name(), fs.Arg(0)))
	}
	return false, nil
}

func versionCommand(_ context.Context, args []string, env environment) error {
	fs := newFlagSet("version", "Print the relay's version.", env)
	if done, err := parseFlags(fs, args, env); done {
		return err
	}
	fmt.Fprintln(env.stdout, version)
	return nil
}

func checkConfigCommand(_ context.Context, args []string, env environment) error {
	fs := newFlagSet("check-config", "Load and validate the environment exactly as serve would, and print the\neffective configuration. Exits non-zero on a bad value. Warns on stderr about\nvariables with a setting's prefix that are no setting (a misspelling?).", env)
	if done, err := parseFlags(fs, args, env); done {
		return err
	}
	cfg, values, err := resolve(env.getenv)
	if err != nil {
		warnStrays(env.stderr, env.environ())
		return err
	}
	printConfig(env.stdout, cfg, values)
	switch n := warnStrays(env.stderr, env.environ()); n {
	case 0:
		fmt.Fprintln(env.stdout, "configuration OK")
	case 1:
		fmt.Fprintln(env.stdout, "configuration OK, with 1 warning")
	default:
		fmt.Fprintf(env.stdout, "configuration OK, with %d warnings\n", n)
	}
	return nil
}
