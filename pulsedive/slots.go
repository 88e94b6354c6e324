package pulsedive

import (
	"context"
	"sync"
)

// slots bounds the calls in flight: at most perKey for one API key, at most
// total for the process. A call takes its key's slot first and a
// process-wide one second, so a key at its share waits without holding a
// process-wide slot that another key could use: one tenant rotating slow
// values cannot starve the others.
type slots struct {
	total  chan struct{} // a semaphore; nil when the process has no bound
	perKey int           // 0: no per-key bound

	mu   sync.Mutex
	keys map[string]*keySlots // keys holding or waiting for a slot
}

// keySlots is one key's share. users counts the calls holding or waiting
// for one of its slots; the entry goes when it drops to zero, so the map
// holds only keys with calls in flight or waiting.
type keySlots struct {
	sem   chan struct{}
	users int
}

// newSlots returns the bounds, or nil when there are none.
func newSlots(total, perKey int) *slots {
	if total <= 0 && perKey <= 0 {
		return nil
	}
	s := &slots{perKey: max(perKey, 0), keys: map[string]*keySlots{}}
	if total > 0 {
		s.total = make(chan struct{}, total)
	}
	return s
}

// acquire waits for a slot of key (a fingerprint) and a process-wide one,
// within ctx. release must be called once the call is over. A nil *slots
// never waits.
func (s *slots) acquire(ctx context.Context, key string) (release func(), _ error) {
	if s == nil {
		return func() {}, nil
	}
	var ks *keySlots
	if s.perKey > 0 {
		ks = s.join(key)
		select {
		case ks.sem <- struct{}{}:
		case <-ctx.Done():
			s.leave(key, ks)
			return nil, contextError(ctx.Err())
		}
	}
	if s.total != nil {
		select {
		case s.total <- struct{}{}:
		case <-ctx.Done():
			if ks != nil {
				<-ks.sem
				s.leave(key, ks)
			}
			return nil, contextError(ctx.Err())
		}
	}
	return func() {
		if s.total != nil {
			<-s.total
		}
		if ks != nil {
			<-ks.sem
			s.leave(key, ks)
		}
	}, nil
}

func (s *slots) join(key string) *keySlots {
	s.mu.Lock()
	defer s.mu.Unlock()
	ks := s.keys[key]
	if ks == nil {
		ks = &keySlots{sem: make(chan struct{}, s.perKey)}
		s.keys[key] = ks
	}
	ks.users++
	return ks
}

func (s *slots) leave(key string, ks *keySlots) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if ks.users--; ks.users == 0 {
		delete(s.keys, key)
	}
}
