package limiter

import "time"

// What the tests reach beyond the relay's own use of a Limiter (Wait,
// PauseUntil, Drain): a reservation at a given time, a sweep on demand and
// the number of buckets.

// Reserve takes one token for key at now unless the caller would have to
// wait longer than maxWait for it (maxWait < 0 means no bound), and returns
// the wait: zero when a token is free now. When the key is paused past
// now+maxWait, or its bucket cannot give a token within maxWait, nothing is
// taken and the error is a *WaitError whose Delay is the wait that would
// have been needed (for a paused key, at least until the pause ends).
// The wait is measured from now; a now earlier than a time the bucket has
// already seen also waits out the difference. A reservation cannot be
// cancelled; Wait can cancel its own.
func (l *Limiter) Reserve(key string, now time.Time, maxWait time.Duration) (time.Duration, error) {
	res, err := l.reserve(key, now, maxWait)
	if err != nil {
		return 0, err
	}
	return res.wait, nil
}

// Sweep evicts, at now, every bucket sweep would evict (reserve sweeps on
// its own, every so many reservations).
func (l *Limiter) Sweep(now time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.sweep(now)
}

// Len reports the number of live buckets.
func (l *Limiter) Len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.buckets)
}
