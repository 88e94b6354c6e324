// Command relaydemo runs the relay in demo mode, NEVER FOR PRODUCTION:
// against a fake Pulsedive, with a throwaway signing key, on loopback, and
// prints ready-to-paste curl commands (see demoSummary). It is a program of
// its own so that the fakes it links stay out of the relay's binary; the
// relay's wiring is shared through internal/relay.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"

	"github.com/pulsedive-relay/relay/internal/relay"
)

// main runs the demo until Ctrl-C (relay.Main); a second one kills it at
// once. A command line the demo does not understand exits with status 2.
func main() { relay.Main(run) }

// environment is what the demo may touch of the outside world.
type environment struct {
	getenv  func(string) string
	environ func() []string
	stdout  io.Writer
	stderr  io.Writer
}

// run is the whole program, so that tests run it in-process. An error is
// written to stderr, "relaydemo: " first, with a hint after a usage error;
// run returns it for main's exit status (relay.ExitCode).
func run(ctx context.Context, args []string, getenv func(string) string, environ func() []string, stdout, stderr io.Writer) error {
	err := demo(ctx, args, environment{getenv: getenv, environ: environ, stdout: stdout, stderr: stderr})
	if err != nil {
		fmt.Fprintln(stderr, "relaydemo:", err)
		var ue relay.UsageError
		if errors.As(err, &ue) {
			fmt.Fprintln(stderr, ue.Hint)
		}
	}
	return err
}

// usageError is the demo's relay.UsageError: main exits with status 2.
func usageError(msg string) error {
	return relay.UsageError{Msg: msg, Hint: "Run 'relaydemo --help' for its flags."}
}

// newFlagSet makes the demo's flags; help prints its usage to stdout. The
// flag package prints nothing itself: run writes an error once, then a
// hint.
func newFlagSet(stdout io.Writer) (fs *flag.FlagSet, help func()) {
	fs = flag.NewFlagSet("relaydemo", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	return fs, func() {
		fmt.Fprintf(stdout, "Usage: relaydemo [flags]\n\n%s\n\nFlags:\n", demoSummary)
		fs.SetOutput(stdout)
		fs.PrintDefaults()
	}
}

// parseFlags parses args; -h, -help or --help prints the usage to stdout
// and ends the demo successfully.
func parseFlags(fs *flag.FlagSet, help func(), args []string) (done bool, err error) {
	if err := fs.Parse(args); errors.Is(err, flag.ErrHelp) {
		help()
		return true, nil
	} else if err != nil {
		return true, usageError(err.Error())
	}
	if fs.NArg() > 0 {
		return true, usageError(fmt.Sprintf("unexpected argument %q", fs.Arg(0)))
	}
	return false, nil
}
