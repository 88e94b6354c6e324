// Command relay is the Pulsedive relay module for Cisco SecureX / XDR
// Threat Response: it serves the relay contract (CONTRACT.md sections 1 to
// 8). The program is package internal/relay; main only starts it as the
// process.
package main

import (
	"os"

	"github.com/pulsedive-relay/relay/internal/relay"
)

func main() {
	relay.SetMemoryLimit(os.Getenv)
	relay.SetGCPercent(os.Getenv)
	relay.Main(relay.Run)
}
