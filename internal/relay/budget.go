package relay

import (
	"strconv"
	"strings"
	"time"
)

// The relay's memory plan: how the bounds on what clients can make it hold
// follow from one number, RELAY_MEMORY_LIMIT (by default GOMEMLIMIT), so
// that the worst case of every bound at once fits under it.
//
// The limit pays first for the cache (its budget counts encoded bytes; the
// decoded documents take about a quarter more) and for the base (the
// runtime, the binary, metrics, JWKS and token caches). What remains is
// shared between the bounds, each at its worst case per unit, as measured
// with `relaybench attack` (see the README).
const (
	planBase = 32 << 20
	// planMinInFlight is what the bounds share at least, whatever the
	// limit: a relay too small for its cache still serves.
	planMinInFlight = 24 << 20

	// Worst cost of one unit of each bound, from `relaybench attack` with
	// each bound raised (RSS per unit, under GOMEMLIMIT 200MiB): ~29 KiB
	// per idle connection, ~50 KiB per connection holding unfinished
	// headers, ~11 KiB per observable of 1000-observable answers.
	connCost       = 48 << 10 // a connection: buffers, goroutine, and headers up to maxHeaderBytes
	requestCost    = 32 << 10 // a request being served, outside its body and observables: goroutine, state
	observableCost = 16 << 10 // an observable being answered: worker, documents, entities, answer

	// Shares of what remains, in eighths.
	connShare, requestShare, bodyShare, observableShare = 2, 1, 2, 3
)

// derivations give the defaults of the derived settings, as text read
// like an operator's value, from the settings read before them.
var derivations = map[string]func(c *config, getenv func(string) string) string{
	"RELAY_MEMORY_LIMIT":          deriveMemoryLimit,
	"RELAY_MAX_CONNECTIONS":       func(c *config, _ func(string) string) string { return strconv.Itoa(planFor(*c).connections) },
	"RELAY_MAX_REQUESTS":          func(c *config, _ func(string) string) string { return strconv.Itoa(planFor(*c).requests) },
	"RELAY_BODY_BUDGET":           func(c *config, _ func(string) string) string { return strconv.FormatInt(planFor(*c).bodyBytes, 10) },
	"RELAY_OBSERVABLES_IN_FLIGHT": func(c *config, _ func(string) string) string { return strconv.Itoa(planFor(*c).observables) },
	"RELAY_SHUTDOWN_TIMEOUT":      func(c *config, _ func(string) string) string { return drainTime(c.RequestTimeout).String() },
}

// plan is the bounds one memory limit gives.
type plan struct {
	connections, requests, observables int
	bodyBytes                          int64
}

// planFor derives the bounds from c's memory limit, cache budget and
// per-request limits. No bound goes below what one largest request needs
// (twice over for the bounds a key may hold half of), nor below a floor
// that keeps a small relay usable.
func planFor(c config) plan {
	inFlight := max(c.MemoryLimit-c.CacheMaxBytes*5/4-planBase, planMinInFlight)
	eighth := inFlight / 8
	return plan{
		connections: max(int(connShare*eighth/connCost), 256),
		requests:    max(int(requestShare*eighth/requestCost), 256),
		bodyBytes:   max(bodyShare*eighth, 4*c.MaxBodyBytes),
		observables: max(int(observableShare*eighth/observableCost), 2*c.MaxObservables),
	}
}

// deriveMemoryLimit is RELAY_MEMORY_LIMIT's default: GOMEMLIMIT when set
// (and not "off"), else the soft limit the relay gives itself for its
// cache budget.
func deriveMemoryLimit(c *config, getenv func(string) string) string {
	if v := strings.TrimSpace(getenv("GOMEMLIMIT")); v != "" && v != "off" {
		if _, ok := parseByteSize(v); ok {
			return v
		}
	}
	return strconv.FormatInt(memoryLimit(c.CacheMaxBytes), 10)
}

// memoryLimit is the soft memory limit for a cache budget when nothing
// sets one: the budget and room for the requests in flight.
func memoryLimit(cacheBytes int64) int64 {
	return cacheBytes + max(64<<20, cacheBytes/2)
}

// Timeouts of a client connection. Headers must arrive within
// readHeaderTimeout; the whole request, body included, within
// readTimeout; the answer must be written within the request timeout plus
// answerSlack (each chunk of a long one within the transport's
// DefaultChunkWriteTimeout).
const (
	readHeaderTimeout = 5 * time.Second
	readTimeout       = readHeaderTimeout + 10*time.Second
	answerSlack       = 15 * time.Second
	idleTimeout       = 30 * time.Second
	// maxHeaderBytes fits a configuration token of auth's 16 KiB maximum
	// with room for the other headers; net/http adds 4 KiB of slack.
	maxHeaderBytes = 32 << 10
)

// writeTimeout bounds a whole answer, from the end of the request's
// headers.
func writeTimeout(requestTimeout time.Duration) time.Duration {
	return requestTimeout + answerSlack
}

// drainTime is RELAY_SHUTDOWN_TIMEOUT's default: what a request accepted
// just before the listener closes may take, from its first byte to the
// last byte of its answer.
func drainTime(requestTimeout time.Duration) time.Duration {
	return readHeaderTimeout + writeTimeout(requestTimeout)
}
