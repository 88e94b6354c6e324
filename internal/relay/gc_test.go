package relay

import (
	"runtime/debug"
	"testing"
)

// TestSetGCPercent: the relay's GOGC applies only when the operator set
// none.
func TestSetGCPercent(t *testing.T) {
	old := debug.SetGCPercent(100)
	t.Cleanup(func() { debug.SetGCPercent(old) })
	tests := []struct {
		gogc string
		want int
	}{
		{"", defaultGCPercent},
		{"50", 100}, // the runtime read the operator's GOGC; left as it is
		{"off", 100},
	}
	for _, tt := range tests {
		debug.SetGCPercent(100)
		SetGCPercent(func(k string) string {
			if k == "GOGC" {
				return tt.gogc
			}
			return ""
		})
		if got := debug.SetGCPercent(100); got != tt.want {
			t.Errorf("GOGC=%q: GC percent %d, want %d", tt.gogc, got, tt.want)
		}
	}
}
