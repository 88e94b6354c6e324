package pulsedive

import (
	"context"
	"sync"
)

// slots bounds the calls in flight: at most perKey for one API key, at most
// total for the process. A call over its key's share waits without holding
// a process-wide slot another key could use. Of the process-wide slots, an
// eighth is kept for keys that hold none, and when the slots are all taken,
// a slot that frees goes to the waiting key that holds the fewest (the
// longest-waiting call of that key first), not to whoever queued first. One
// tenant filling the slots with slow calls, even under dozens of keys,
// leaves another key's first call a slot at once, or the next one to free.
type slots struct {
	total   int // 0: no process-wide bound
	perKey  int // 0: no per-key bound
	reserve int // of total, for keys holding no slot

	mu      sync.Mutex
	inUse   int                  // process-wide slots held
	seq     uint64               // arrival order of waiting calls
	keys    map[string]*keySlots // keys holding or waiting for a slot
	waiting map[*keySlots]struct{}
}

// keySlots is one key's share. users counts the calls holding or waiting
// for one of its slots; the entry goes when it drops to zero, so the map
// holds only keys with calls in flight or waiting.
type keySlots struct {
	key   string
	held  int
	users int
	queue []*slotWaiter // first come first
}

// slotWaiter is one call waiting for a slot; ready is closed once granted.
type slotWaiter struct {
	seq     uint64
	ready   chan struct{}
	granted bool
}

// newSlots returns the bounds, or nil when there are none.
func newSlots(total, perKey int) *slots {
	if total <= 0 && perKey <= 0 {
		return nil
	}
	return &slots{
		total:   max(total, 0),
		perKey:  max(perKey, 0),
		reserve: max(total, 0) / 8,
		keys:    map[string]*keySlots{},
		waiting: map[*keySlots]struct{}{},
	}
}

// acquire waits for a slot of key (a fingerprint), within ctx. release must
// be called once the call is over. A nil *slots never waits.
func (s *slots) acquire(ctx context.Context, key string) (release func(), _ error) {
	if s == nil {
		return func() {}, nil
	}
	s.mu.Lock()
	ks := s.keys[key]
	if ks == nil {
		ks = &keySlots{key: key}
		s.keys[key] = ks
	}
	ks.users++
	if s.free(ks) && len(s.waiting) == 0 {
		s.take(ks)
		s.mu.Unlock()
		return func() { s.release(ks) }, nil
	}
	s.seq++
	w := &slotWaiter{seq: s.seq, ready: make(chan struct{})}
	ks.queue = append(ks.queue, w)
	s.waiting[ks] = struct{}{}
	s.dispatch() // a slot may be free for this key, or for one that waits
	s.mu.Unlock()

	select {
	case <-w.ready:
		return func() { s.release(ks) }, nil
	case <-ctx.Done():
	}
	s.mu.Lock()
	if w.granted { // granted as ctx ended: hand the slot on
		s.mu.Unlock()
		s.release(ks)
		return nil, contextError(ctx.Err())
	}
	for i, q := range ks.queue {
		if q == w {
			ks.queue = append(ks.queue[:i], ks.queue[i+1:]...)
			break
		}
	}
	if len(ks.queue) == 0 {
		delete(s.waiting, ks)
	}
	s.leave(ks)
	s.mu.Unlock()
	return nil, contextError(ctx.Err())
}

// free reports whether ks may take a slot now: one under its share, and
// one of the process's, the reserve only when it holds none. s.mu is held.
func (s *slots) free(ks *keySlots) bool {
	if s.perKey > 0 && ks.held >= s.perKey {
		return false
	}
	if s.total == 0 {
		return true
	}
	return s.inUse < s.total-s.reserve || (ks.held == 0 && s.inUse < s.total)
}

// take gives ks a slot. s.mu is held.
func (s *slots) take(ks *keySlots) {
	ks.held++
	s.inUse++
}

// release gives a slot of ks back and hands slots to waiting calls.
func (s *slots) release(ks *keySlots) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ks.held--
	s.inUse--
	s.leave(ks)
	s.dispatch()
}

// dispatch grants free slots to waiting calls: each to the longest-waiting
// call of the waiting key that holds the fewest slots, among the keys that
// may take one (free). s.mu is held.
func (s *slots) dispatch() {
	for len(s.waiting) > 0 && (s.total == 0 || s.inUse < s.total) {
		var best *keySlots
		for ks := range s.waiting {
			if !s.free(ks) {
				continue
			}
			if best == nil || ks.held < best.held || (ks.held == best.held && ks.queue[0].seq < best.queue[0].seq) {
				best = ks
			}
		}
		if best == nil {
			return // every waiting key is at its share
		}
		w := best.queue[0]
		best.queue = best.queue[1:]
		if len(best.queue) == 0 {
			best.queue = nil
			delete(s.waiting, best)
		}
		s.take(best)
		w.granted = true
		close(w.ready)
	}
}

// leave ends one call's use of ks, forgetting the key when it has none.
// s.mu is held.
func (s *slots) leave(ks *keySlots) {
	if ks.users--; ks.users == 0 {
		delete(s.keys, ks.key)
	}
}
