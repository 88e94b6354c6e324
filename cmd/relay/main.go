// Command relay is the Pulsedive relay module for Cisco SecureX / XDR
// Threat Response: it serves the relay contract (CONTRACT.md sections 1 to
// 8). The program is package internal/relay; main adds the process's
// signals, arguments, environment and standard streams.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/pulsedive-relay/relay/internal/relay"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	// Once the first signal starts the drain, a second one kills at once.
	context.AfterFunc(ctx, stop)
	relay.SetMemoryLimit(os.Getenv)
	if err := relay.Run(ctx, os.Args[1:], os.Getenv, os.Environ, os.Stdout, os.Stderr); err != nil {
		stop()
		os.Exit(relay.ExitCode(err))
	}
}
