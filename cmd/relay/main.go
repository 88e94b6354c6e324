// Command relay is the Pulsedive relay module for Cisco SecureX / XDR
// Threat Response: it serves the relay contract (CONTRACT.md sections 1 to 8) and
// is the only place where the relay's parts are wired together.
package main

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
// `relay version`; release builds set it with -ldflags "-X main.version=…".
var version = "1.0.0"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	// Once the first signal starts the drain, a second one kills at once.
	context.AfterFunc(ctx, stop)
	setMemoryLimit(os.Getenv)
	setGCPercent(os.Getenv)
	if err := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr); err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "relay:", err)
		}
		stop()
		os.Exit(exitCode(err))
	}
}

// setMemoryLimit gives the Go runtime a soft memory limit when the operator
// set no GOMEMLIMIT: RELAY_MEMORY_LIMIT, by default the cache budget plus
// room for the requests in flight (memoryLimit). Cached documents are
// charged at their encoded size and take a little more in memory, and the
// collector would otherwise let the heap grow to twice what is live; the
// limit makes it collect sooner instead, keeping resident memory near the
// budget (see the README's figures). It is set in main only, never in
// tests that run the relay in-process.
func setMemoryLimit(getenv func(string) string) {
	if getenv("GOMEMLIMIT") != "" {
		return
	}
	cfg, err := loadConfig(getenv)
	if err != nil {
		return // run reports the configuration error
	}
	debug.SetMemoryLimit(cfg.MemoryLimit)
}

// defaultGCPercent is the relay's GOGC when the operator set none. The
// memory limit (setMemoryLimit) bounds the heap once the cache is full;
// below it, a cached request allocates ~23 KB against a live heap of a
// few MiB, and at Go's 100 the collector ran so often that it was a sixth
// of the request's CPU: BenchmarkObserveCachedWired takes 16.8 us at 100,
// 13.9 at 200, 13.3 at 400. 200 keeps most of the saving for a third of
// the extra heap 400 would let a lightly loaded relay hold (relaybench
// throughput peak RSS: 27 MiB at 100, 32 at 200, 45 at 400); the limit,
// not GOGC, decides the peak under a full cache (relaybench memory).
const defaultGCPercent = 200

// setGCPercent sets defaultGCPercent when the operator set no GOGC; in
// main only, as setMemoryLimit.
func setGCPercent(getenv func(string) string) {
	if getenv("GOGC") != "" {
		return
	}
	debug.SetGCPercent(defaultGCPercent)
}

// usageError is a command line the relay does not understand.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func exitCode(err error) int {
	var ue usageError
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
	stdout io.Writer
	stderr io.Writer
}

func commands() []command {
	return []command{
		{"serve", "serve the relay (the default when no subcommand is given)", serveCommand},
		{"check-config", "validate the environment as serve would and print the effective configuration", checkConfigCommand},
		{"version", "print the relay's version", versionCommand},
		{"demo", "DEMO MODE: the relay with a fake Pulsedive and a throwaway key, on loopback", demoCommand},
		{"token", "mint a configuration token (RS256) for testing a relay end to end", tokenCommand},
		{"jwks", "print the JWKS document of a key, to publish at https://HOST/.well-known/jwks", jwksCommand},
	}
}

// run is the whole program: main only adds the process's signals,
// arguments, environment and standard streams, so tests run it in-process.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	env := environment{getenv: getenv, stdout: stdout, stderr: stderr}
	if len(args) == 0 {
		return serveCommand(ctx, nil, env)
	}
	name, rest := args[0], args[1:]
	switch name {
	case "-h", "-help", "--help", "help":
		usage(stdout)
		return nil
	}
	for _, c := range commands() {
		if c.name == name {
			return c.run(ctx, rest, env)
		}
	}
	usage(stderr)
	return usageError{fmt.Sprintf("unknown command %q", name)}
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "Usage: relay [command] [flags]")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Commands:")
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-13s %s\n", c.name, c.summary)
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Run 'relay <command> --help' for a command's flags. Configuration comes from")
	fmt.Fprintln(w, "the environment; 'relay check-config' lists every variable.")
}

// newFlagSet gives a subcommand flags whose --help prints to stdout and
// whose errors are usage errors.
func newFlagSet(name, summary string, env environment) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(env.stderr)
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
		return true, usageError{err.Error()}
	}
	if fs.NArg() > 0 {
		fs.Usage()
		return true, usageError{fmt.Sprintf("unexpected argument %q", fs.Arg(0))}
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
	fs := newFlagSet("check-config", "Load and validate the environment exactly as serve would, and print the\neffective configuration. Exits non-zero on a bad value.", env)
	if done, err := parseFlags(fs, args, env); done {
		return err
	}
	if _, err := loadConfig(env.getenv); err != nil {
		return err
	}
	printConfig(env.stdout, env.getenv)
	fmt.Fprintln(env.stdout, "configuration OK")
	return nil
}
