package ctim

import (
	"crypto/rand"

	"github.com/pulsedive-relay/relay/pulsedive"
)

// What the tests call that the relay does not: the mapping in the two
// steps it had before observations were kept, a bundle encoded whole, and
// UUIDs by themselves.

// Relations is the relations of obs among the Active DNS links, as
// Observation picks them.
func (m Mapper) Relations(obs Observable, links []pulsedive.Link, limit int) ([]Relation, error) {
	relations, _, err := m.relations(obs, links, limit)
	return relations, err
}

// Observe maps ind on obs with the given relations, as Observation does,
// and gives the entities with fresh ids at once: without the copies
// Entities makes of an observation kept for others, so that
// BenchmarkObserve measures the mapping alone.
func (m Mapper) Observe(obs Observable, ind *pulsedive.Indicator, relations []Relation, limit int) (Entities, error) {
	o, err := m.observation(obs, ind, relations, limit)
	if err != nil {
		return Entities{}, err
	}
	e := Entities{Verdict: o.verdict, Judgement: o.judgement, Indicators: o.indicators, Sightings: o.sightings, Relationships: o.relationships}
	m.setIDs(&e)
	return e, nil
}

// UUID5 returns the name-based (SHA-1, version 5) UUID of name in the
// given name space, in its 36-character text form.
func UUID5(namespace [16]byte, name string) string {
	return prefixedUUID5("", namespace, "", name)
}

// RandomUUID returns a random (version 4) UUID in text form, from the
// operating system's generator: a NewID for tests that want ids like the
// relay's own.
func RandomUUID() string {
	var u [16]byte
	_, _ = rand.Read(u[:]) // crypto/rand.Read never fails (Go 1.24+)
	u[6] = u[6]&0x0f | 0x40
	u[8] = u[8]&0x3f | 0x80
	return format("", u)
}

// appendJSON appends the bundle encoded whole, never flushed.
func (b *Bundle) appendJSON(buf []byte) []byte {
	out, _ := b.StreamJSON(buf, 0, nil)
	return out
}
