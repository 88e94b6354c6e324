// Package cluster is the state the relay's replicas share over Redis (spec
// section 6 across replicas): the per-API-key Pulsedive budget with its
// pauses, the L2 cache under each replica's own, the cross-replica collapse
// of calls for one document, and the fallback when Redis is away: each
// replica then spends its share of the budget (PULSEDIVE_RATE_LIMIT /
// RELAY_REPLICAS) and serves from its own cache, and returns to shared mode
// by itself when Redis answers again.
//
// It is the only package that speaks to Redis (github.com/redis/go-redis).
// It implements interfaces its consumers declare (pulsedive.Limiter,
// pipeline.Store, pipeline.Collapser), and only internal/relay, the
// program behind cmd/relay, imports it.
//
// Redis keys hold API-key fingerprints, never keys. A Redis failure never
// fails a request: every command has a tight timeout, the first failure
// switches the replica to fallback mode (one log line), a background probe
// owned by the Cluster switches it back (one log line), and meanwhile no
// command is sent.
package cluster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"
)

// Defaults applied by New to zero Config fields.
const (
	DefaultTimeout    = 250 * time.Millisecond
	DefaultProbeEvery = time.Second
	DefaultPoolSize   = 128
)

// keyPrefix starts every key the relay writes, with a version so that a
// change of format never reads the old one.
const keyPrefix = "pulsedive-relay:v1:"

// Command classes, as counted in metrics.
const (
	classBudget   = "budget"
	classPause    = "pause"
	classCacheGet = "cache_get"
	classCacheSet = "cache_set"
	classLock     = "lock"
	classPing     = "ping"
)

// Results of a lookup in the shared cache (L2) and of a cross-replica
// collapse, as counted in metrics.
const (
	l2Hit   = "hit"
	l2Stale = "stale"
	l2Miss  = "miss"
	l2Error = "error"

	collapseWon       = "won"
	collapseWaited    = "waited"
	collapseTimedOut  = "timed_out"
	collapseAbandoned = "abandoned"
)

// CommandClasses lists the classes of Redis commands Observer.RedisCommand
// gets.
func CommandClasses() []string {
	return []string{classBudget, classPause, classCacheGet, classCacheSet, classLock, classPing}
}

// L2Results lists the results Observer.L2Lookup gets.
func L2Results() []string { return []string{l2Hit, l2Stale, l2Miss, l2Error} }

// CollapseResults lists the results Observer.CollapseWait gets.
func CollapseResults() []string {
	return []string{collapseWon, collapseWaited, collapseTimedOut, collapseAbandoned}
}

// go-redis logs its pool's dial failures with the standard logger, on
// stderr and outside the relay's JSON lines. The Cluster logs the one
// line an operator needs (entering and leaving fallback mode), so the
// library's own lines are dropped, for the whole process: SetLogger is
// go-redis's only hook.
func init() { redis.SetLogger(quietLogger{}) }

type quietLogger struct{}

func (quietLogger) Printf(context.Context, string, ...any) {}

// errFallback is returned by do in fallback mode: no command was sent.
var errFallback = errors.New("cluster: redis unavailable, fallback mode")

// Observer receives the cluster's measurements; metrics.Metrics is one.
type Observer interface {
	RedisCommand(class string, d time.Duration, failed bool)
	ClusterShared(shared bool)
	L2Lookup(result string)
	CollapseWait(result string)
}

// Config configures a Cluster.
type Config struct {
	// URL is Redis's address: redis://[user:password@]host:port/db, or
	// rediss:// for TLS. Required.
	URL string
	// Timeout bounds each Redis command, dial included (DefaultTimeout).
	Timeout time.Duration
	// ProbeEvery is how often a replica in fallback mode pings Redis
	// (DefaultProbeEvery).
	ProbeEvery time.Duration
	// PoolSize bounds the connections to Redis (DefaultPoolSize).
	PoolSize int
	Observer Observer
	Logger   *slog.Logger
	// Now is the clock of cache windows; time.Now by default.
	Now func() time.Time
}

// Cluster is one replica's connection to the shared state. Make it with
// New, take its parts with NewBudget, NewStore and Collapser, and Close it
// when the relay stops.
type Cluster struct {
	rdb     *redis.Client
	timeout time.Duration
	obs     Observer
	log     *slog.Logger
	now     func() time.Time
	addr    string // redacted URL, for logs

	shared atomic.Bool
	// recoveredAt is when the replica last returned to shared mode (Unix
	// nanoseconds; 0: never); probeEvery how long the others may take to.
	recoveredAt atomic.Int64
	probeEvery  time.Duration
	// mu orders the mode switches and their hooks.
	mu         sync.Mutex
	onFallback []func()
	// back is closed when the replica returns to shared mode; a new one is
	// made at each fallback.
	back chan struct{}

	stop chan struct{}
	done chan struct{}
}

// New parses cfg.URL, pings Redis once and starts the probe goroutine that
// Close stops. Redis out of reach at start is not an error: the replica
// starts in fallback mode and the probe brings it to shared mode later.
func New(cfg Config) (*Cluster, error) {
	opts, err := ParseURL(cfg.URL)
	if err != nil {
		return nil, err
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.ProbeEvery <= 0 {
		cfg.ProbeEvery = DefaultProbeEvery
	}
	if cfg.PoolSize <= 0 {
		cfg.PoolSize = DefaultPoolSize
	}
	// No retries inside the client: a failed command falls back at once,
	// and the probe decides when Redis is back.
	opts.MaxRetries = -1
	opts.DialerRetries = 1
	opts.DialTimeout = cfg.Timeout
	opts.ReadTimeout = cfg.Timeout
	opts.WriteTimeout = cfg.Timeout
	opts.PoolTimeout = cfg.Timeout
	opts.ContextTimeoutEnabled = true
	opts.PoolSize = cfg.PoolSize
	opts.DisableIdentity = true
	opts.MaintNotificationsConfig = &maintnotifications.Config{Mode: maintnotifications.ModeDisabled}
	opts.ClientName = "pulsedive-relay"

	c := &Cluster{
		rdb:        redis.NewClient(opts),
		timeout:    cfg.Timeout,
		obs:        cfg.Observer,
		log:        cfg.Logger,
		now:        cfg.Now,
		addr:       RedactURL(cfg.URL),
		probeEvery: cfg.ProbeEvery,
		back:       make(chan struct{}),
		stop:       make(chan struct{}),
		done:       make(chan struct{}),
	}
	if c.obs == nil {
		c.obs = nopObserver{}
	}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	if c.now == nil {
		c.now = time.Now
	}
	if err := c.ping(); err != nil {
		c.log.Warn("redis unreachable at start: each replica spends its own share of the Pulsedive budget and uses its own cache until it answers",
			"redis", c.addr, "error", err.Error())
		c.obs.ClusterShared(false)
		// Other replicas may be spending their own shares too: when Redis
		// answers, this one returns as from a fallback.
	} else {
		c.shared.Store(true)
		c.log.Info("redis reachable: Pulsedive budget, cache and calls shared across replicas", "redis", c.addr)
		c.obs.ClusterShared(true)
	}
	go c.probe(cfg.ProbeEvery)
	return c, nil
}

// ParseURL checks a REDIS_URL: redis:// or rediss://, a host, an optional
// database number, and user and password when given.
func ParseURL(s string) (*redis.Options, error) {
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "redis" && u.Scheme != "rediss") || u.Hostname() == "" {
		return nil, errors.New("not a redis:// or rediss:// URL with a host")
	}
	opts, err := redis.ParseURL(s)
	if err != nil {
		// go-redis's message may quote the URL, password included.
		return nil, errors.New("not a valid Redis URL (redis://[user:password@]host[:port][/db])")
	}
	return opts, nil
}

// RedactURL returns s with its password replaced by "xxxxx", for logs and
// check-config; a string that is not a URL is replaced whole.
func RedactURL(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return "(invalid URL)"
	}
	return u.Redacted()
}

// Shared reports whether the replica shares state over Redis now.
func (c *Cluster) Shared() bool { return c.shared.Load() }

// Close stops the probe and closes the connections. The parts taken from
// the Cluster then behave as in fallback mode.
func (c *Cluster) Close() {
	select {
	case <-c.stop:
		return
	default:
	}
	close(c.stop)
	<-c.done
	c.shared.Store(false)
	_ = c.rdb.Close()
}

// untilShared returns a context that ends with ctx or when the replica
// returns to shared mode, whichever comes first, so that a call waiting on
// its replica's own share goes back to the shared budget at once. Call
// cancel when done with it.
func (c *Cluster) untilShared(ctx context.Context) (context.Context, context.CancelFunc) {
	c.mu.Lock()
	back := c.back
	c.mu.Unlock()
	sctx, cancel := context.WithCancel(ctx)
	go func() { // owned by the caller's cancel
		select {
		case <-back:
			cancel()
		case <-sctx.Done():
		}
	}()
	return sctx, cancel
}

// whenFallback registers f to run each time the replica enters fallback
// mode, before any caller sees that mode.
func (c *Cluster) whenFallback(f func()) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.onFallback = append(c.onFallback, f)
}

// fail switches to fallback mode after a failed command, once.
func (c *Cluster) fail(class string, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.shared.Load() {
		return
	}
	for _, f := range c.onFallback {
		f()
	}
	c.back = make(chan struct{})
	c.shared.Store(false)
	c.log.Warn("redis unreachable: falling back to this replica's share of the Pulsedive budget and its own cache",
		"redis", c.addr, "command", class, "error", err.Error())
	c.obs.ClusterShared(false)
}

// recover switches back to shared mode after a successful probe.
func (c *Cluster) recover() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.shared.Load() {
		return
	}
	c.recoveredAt.Store(time.Now().UnixNano())
	c.shared.Store(true)
	close(c.back)
	c.log.Info("redis reachable again: Pulsedive budget, cache and calls shared across replicas", "redis", c.addr)
	c.obs.ClusterShared(true)
}

// probe pings Redis every interval while in fallback mode, until Close.
func (c *Cluster) probe(every time.Duration) {
	defer close(c.done)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-c.stop:
			return
		case <-t.C:
		}
		if c.shared.Load() {
			continue
		}
		if c.ping() == nil {
			c.recover()
		}
	}
}

func (c *Cluster) ping() error {
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()
	start := time.Now()
	err := c.rdb.Ping(ctx).Err()
	c.obs.RedisCommand(classPing, time.Since(start), err != nil)
	return err
}

// do runs one command of class under the timeout, unless in fallback mode
// (errFallback, nothing sent). A failure other than redis.Nil (no such
// key) or the caller's own context ending switches to fallback mode.
func (c *Cluster) do(ctx context.Context, class string, cmd func(ctx context.Context) error) error {
	if !c.shared.Load() {
		return errFallback
	}
	cctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	start := time.Now()
	err := cmd(cctx)
	failed := err != nil && !errors.Is(err, redis.Nil)
	c.obs.RedisCommand(class, time.Since(start), failed)
	if failed {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		c.fail(class, err)
		return fmt.Errorf("cluster: %s: %w", class, err)
	}
	return err
}

type nopObserver struct{}

func (nopObserver) RedisCommand(string, time.Duration, bool) {}
func (nopObserver) ClusterShared(bool)                       {}
func (nopObserver) L2Lookup(string)                          {}
func (nopObserver) CollapseWait(string)                      {}
