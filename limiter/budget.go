package limiter

import "math"

// Budget returns the bucket (refill per minute, burst) that never lets a key
// spend more than perMinute calls in any 60-second window, with bursts of
// up to burst calls.
//
// A token bucket refilling at R per minute with burst B grants up to B + R
// calls in a minute, so a bucket set to Pulsedive's own numbers runs ahead
// of Pulsedive's counter by its burst, and a little network jitter turns
// that into a 429 (Pulsedive then disables the key for a minute). The
// bucket returned refills at perMinute − burst, so that a full burst plus a
// minute of refill stays within perMinute whether Pulsedive counts per
// fixed minute or with a bucket of its own. The burst is capped at half the
// budget (at least 1) so that the refill never drops below half of it.
// perMinute 0 means no limit and is returned as is.
func Budget(perMinute float64, burst int) (refillPerMinute float64, effectiveBurst int) {
	if perMinute <= 0 {
		return 0, burst
	}
	b := min(burst, max(1, int(math.Floor(perMinute/2))))
	return max(perMinute-float64(b), perMinute/2), b
}
