package cluster

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"time"

	"github.com/redis/go-redis/v9"
)

// Collapser makes one replica call Pulsedive for a document that several
// miss at once, while the others wait for its answer in the shared cache: a
// pipeline.Collapser. The replica that wins a short lock (SET NX PX) calls;
// the others poll the lock with backoff until it is released or expires,
// then read the document from the Store. The wait is bounded by the
// caller's context; on timeout, or when Redis fails, the caller calls
// Pulsedive itself.
type Collapser struct {
	c     *Cluster
	store *Store
	// minPoll and maxPoll bound the backoff between two looks at a lock.
	minPoll, maxPoll time.Duration
}

// NewCollapser returns the collapse over store, where the winner's answer
// is looked for.
func (c *Cluster) NewCollapser(store *Store) *Collapser {
	return &Collapser{c: c, store: store, minPoll: 5 * time.Millisecond, maxPoll: 100 * time.Millisecond}
}

// Lead tries to take the lock of the document named key for as long as
// ctx allows (its deadline, else a minute). lead is true when this replica
// should call Pulsedive: it won the lock, or Redis cannot tell. done
// releases the lock and must be called once the answer is stored.
func (l *Collapser) Lead(ctx context.Context, key string) (lead bool, done func()) {
	ttl := time.Minute
	if dl, ok := ctx.Deadline(); ok {
		ttl = max(time.Until(dl), 100*time.Millisecond)
	}
	var b [16]byte
	_, _ = rand.Read(b[:])
	token := hex.EncodeToString(b[:])
	var won bool
	err := l.c.do(ctx, classLock, func(ctx context.Context) (err error) {
		won, err = l.c.rdb.SetNX(ctx, lockKey(key), token, ttl).Result()
		return err
	})
	if err != nil {
		return true, func() {}
	}
	if !won {
		return false, func() {}
	}
	l.c.obs.CollapseWait(collapseWon)
	return true, func() {
		_ = l.c.do(context.Background(), classLock, func(ctx context.Context) error {
			return unlockScript.Run(ctx, l.c.rdb, []string{lockKey(key)}, token).Err()
		})
	}
}

// Await waits until the lock of key is released or expires, or ctx ends,
// and reports whether the winner's answer is in the Store: the caller then
// reads it there, and otherwise calls Pulsedive itself.
func (l *Collapser) Await(ctx context.Context, key string) bool {
	poll := l.minPoll
	for {
		var n int64
		err := l.c.do(ctx, classLock, func(ctx context.Context) (err error) {
			n, err = l.c.rdb.Exists(ctx, lockKey(key)).Result()
			return err
		})
		switch {
		case err != nil && !errors.Is(err, redis.Nil):
			l.c.obs.CollapseWait(collapseTimedOut)
			return false
		case n == 0:
			if l.store.has(ctx, key) {
				l.c.obs.CollapseWait(collapseWaited)
				return true
			}
			l.c.obs.CollapseWait(collapseAbandoned)
			return false
		}
		t := time.NewTimer(poll)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			l.c.obs.CollapseWait(collapseTimedOut)
			return false
		}
		poll = min(2*poll, l.maxPoll)
	}
}

func lockKey(key string) string { return keyPrefix + "lock:" + key }

// unlockScript deletes the lock only when it still holds our token: a lock
// that expired and was taken by another replica stays.
var unlockScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
`)
