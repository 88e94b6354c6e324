package limiter

import (
	"fmt"
	"testing"
	"time"
)

func TestBudget(t *testing.T) {
	tests := []struct {
		perMinute  float64
		burst      int
		wantRefill float64
		wantBurst  int
	}{
		{30, 5, 25, 5},
		{120, 5, 115, 5},
		{6, 5, 3, 3},
		{1, 5, 0.5, 1},
		{0, 5, 0, 5},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprint(tt.perMinute, "/", tt.burst), func(t *testing.T) {
			refill, burst := Budget(tt.perMinute, tt.burst)
			if refill != tt.wantRefill || burst != tt.wantBurst {
				t.Errorf("Budget(%v, %d) = %v, %d; want %v, %d", tt.perMinute, tt.burst, refill, burst, tt.wantRefill, tt.wantBurst)
			}
		})
	}
}

// TestBudgetNeverExceedsAMinute greedily takes every token a Budget bucket
// gives for an hour and checks every 60-second window.
func TestBudgetNeverExceedsAMinute(t *testing.T) {
	for _, c := range []struct {
		perMinute float64
		burst     int
	}{{30, 5}, {120, 5}, {120, 60}, {10, 3}, {2, 5}} {
		t.Run(fmt.Sprint(c.perMinute, "/", c.burst), func(t *testing.T) {
			refill, burst := Budget(c.perMinute, c.burst)
			l, err := New(Config{PerMinute: refill, Burst: burst})
			if err != nil {
				t.Fatal(err)
			}
			start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
			var grants []time.Time
			for now := start; now.Before(start.Add(time.Hour)); now = now.Add(10 * time.Millisecond) {
				for {
					if _, err := l.Reserve("k", now, 0); err != nil {
						break
					}
					grants = append(grants, now)
				}
			}
			for i := range grants {
				n := 0
				for j := i; j < len(grants) && grants[j].Sub(grants[i]) < time.Minute; j++ {
					n++
				}
				if float64(n) > c.perMinute {
					t.Fatalf("%d calls in the minute from %s, budget %v", n, grants[i].Sub(start), c.perMinute)
				}
			}
			if got, min := float64(len(grants))/60, 0.5*c.perMinute; got < min {
				t.Errorf("only %.1f calls a minute over the hour, want at least %.1f", got, min)
			}
		})
	}
}
