package transport_test

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package when a test leaves a goroutine behind: the
// harness starts servers, caches and Pulsedive calls, and each must be
// stopped by its test's cleanup.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
