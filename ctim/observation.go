package ctim

import (
	"math/rand/v2"
	"strings"
	"time"
	"unsafe"

	"github.com/pulsedive-relay/relay/pulsedive"
)

// Observation is the observe answer of one observable mapped once, all
// but its transient ids: Entities gives it with fresh ones, as many times
// as asked, while it is Current. It saves a cached document the
// mapping on every request, which was a third of the cached path's CPU
// (time parsing and formatting, the indicator ids' SHA-1, URIs). An
// Observation is immutable and safe to share between goroutines.
type Observation struct {
	verdict   *Verdict  // nil once expired at the mapping's clock; JudgementID blank
	judgement Judgement // ID blank
	// indicators, sightings and relationships in the answer's order; the
	// first len(relationships) sightings pair with the relationships of the
	// same index, an Active DNS sighting may follow. Ids and source_refs
	// are blank.
	indicators    []Indicator
	sightings     []Sighting
	relationships []Relationship
	// until is the first instant at which mapping the same documents
	// again may give other entities; zero means never.
	until    time.Time
	linksErr error
}

// Observation maps an indicator document on obs and its links document
// (nil when there is none, or none could be had) at m.Now, keeping the
// result for Entities (mapping.go says how). limit caps the indicators
// and, separately, the sightings (Active DNS included) of this observable,
// and the Active DNS relations; a limit below 1 means no cap. It fails with ErrBroken when the indicator document
// cannot be mapped. A links document that cannot be (ErrBroken) does not
// fail it: the observation then has no Active DNS and LinksErr reports
// why.
func (m Mapper) Observation(obs Observable, ind *pulsedive.Indicator, links *pulsedive.Links, limit int) (*Observation, error) {
	var (
		relations []Relation
		relUntil  time.Time
		linksErr  error
	)
	if links != nil {
		relations, relUntil, linksErr = m.relations(obs, links.ActiveDNS, limit)
	}
	o, err := m.observation(obs, ind, relations, limit)
	if err != nil {
		return nil, err
	}
	o.linksErr = linksErr
	if !relUntil.IsZero() && (o.until.IsZero() || relUntil.Before(o.until)) {
		o.until = relUntil
	}
	return o, nil
}

// Current reports whether the observation still holds at now: whether
// mapping the same documents at now gives the same entities. It stops
// holding when the verdict expires (CONTRACT.md section 4b) or an Active
// DNS link leaves the 90-day window (section 4), whichever comes first.
func (o *Observation) Current(now time.Time) bool {
	return o.until.IsZero() || now.Before(o.until)
}

// LinksErr is why the Active DNS links were left out, nil when they were
// not.
func (o *Observation) LinksErr() error { return o.linksErr }

// Size estimates the bytes an observation holds, for a cache's budget:
// its entities and the strings they refer to, those shared with the
// documents included (an observation kept keeps them alive).
func (o *Observation) Size() int64 {
	const str = int(unsafe.Sizeof(""))
	n := int(unsafe.Sizeof(*o)) + int(unsafe.Sizeof(Judgement{})) +
		len(o.judgement.Reason) + len(o.judgement.SourceURI) + len(o.judgement.ValidTime.StartTime) + len(o.judgement.ValidTime.EndTime)
	if o.verdict != nil {
		n += int(unsafe.Sizeof(Verdict{}))
	}
	for _, ind := range o.indicators {
		n += int(unsafe.Sizeof(ind)) + len(ind.ID) + len(ind.Title) + len(ind.Producer) + len(ind.SourceURI) + len(ind.ValidTime.StartTime)
		for _, t := range ind.Tags {
			n += str + len(t)
		}
		for _, id := range ind.ExternalIDs {
			n += str + len(id)
		}
		for _, r := range ind.ExternalReferences {
			n += int(unsafe.Sizeof(r)) + len(r.ExternalID)
		}
	}
	for _, s := range o.sightings {
		n += int(unsafe.Sizeof(s)) + len(s.Description) + len(s.SourceURI) + len(s.ObservedTime.StartTime) +
			len(s.Observables)*int(unsafe.Sizeof(Observable{}))
		for _, r := range s.Relations {
			n += int(unsafe.Sizeof(r)) + len(r.Source.Value) + len(r.Related.Value)
		}
	}
	n += len(o.relationships) * int(unsafe.Sizeof(Relationship{}))
	return int64(n)
}

// Entities is the observation with fresh transient ids. Its Indicators,
// and the Observables and Relations of its sightings, are the
// observation's own: read them, never write their elements (appending to
// Indicators is safe, it is full to its capacity).
func (m Mapper) Entities(o *Observation) Entities {
	e := Entities{
		Judgement:     o.judgement,
		Indicators:    o.indicators[:len(o.indicators):len(o.indicators)],
		Sightings:     append(o.sightings[:0:0], o.sightings...),
		Relationships: append(o.relationships[:0:0], o.relationships...),
	}
	if o.verdict != nil {
		v := *o.verdict
		e.Verdict = &v
	}
	m.setIDs(&e)
	return e
}

// setIDs gives e's judgement, sightings and relationships fresh transient
// ids, in the order the relay has always drawn them: the judgement, then
// each sighting and its relationship, then the Active DNS sighting. The
// verdict names the judgement.
func (m Mapper) setIDs(e *Entities) {
	ids := m.newIDs(len(e.Sightings), len(e.Relationships))
	e.Judgement.ID = ids.next(judgementPrefix)
	for i := range e.Sightings {
		e.Sightings[i].ID = ids.next(sightingPrefix)
		if i < len(e.Relationships) {
			e.Relationships[i].ID = ids.next(relationshipPrefix)
			e.Relationships[i].SourceRef = e.Sightings[i].ID
		}
	}
	if e.Verdict != nil {
		e.Verdict.JudgementID = e.Judgement.ID
	}
}

// The prefixes of transient ids.
const (
	judgementPrefix    = "transient:" + typeJudgement + "-"
	sightingPrefix     = "transient:" + typeSighting + "-"
	relationshipPrefix = "transient:" + typeRelationship + "-"
)

// idBatch hands out the transient ids of one observable's entities:
// m.NewID's when set, else random version 4 UUIDs cut from one string.
type idBatch struct {
	newID func() string
	buf   string
}

// newIDs prepares the ids of a judgement, sightings sightings and
// relationships relationships.
func (m Mapper) newIDs(sightings, relationships int) idBatch {
	b := idBatch{newID: m.NewID}
	if b.newID != nil {
		return b
	}
	size := len(judgementPrefix) + 36 + sightings*(len(sightingPrefix)+36) + relationships*(len(relationshipPrefix)+36)
	var sb strings.Builder
	sb.Grow(size)
	add := func(prefix string) {
		sb.WriteString(prefix)
		var text [36]byte
		sb.Write(appendUUID(text[:0], fastRandomUUID()))
	}
	add(judgementPrefix)
	for i := range sightings {
		add(sightingPrefix)
		if i < relationships {
			add(relationshipPrefix)
		}
	}
	b.buf = sb.String()
	return b
}

// next returns the next id, which must start with prefix: ids are asked
// in the order newIDs wrote them.
func (b *idBatch) next(prefix string) string {
	if b.newID != nil {
		return prefix + b.newID()
	}
	n := len(prefix) + 36
	id := b.buf[:n]
	b.buf = b.buf[n:]
	return id
}

// fastRandomUUID is a random (version 4) UUID from the runtime's
// generator (ChaCha8, seeded by the operating system, per thread): the
// transient ids only need to be unique, and it costs no system call.
func fastRandomUUID() [16]byte {
	var u [16]byte
	hi, lo := rand.Uint64(), rand.Uint64()
	for i := range 8 {
		u[i] = byte(hi >> (56 - 8*i))
		u[8+i] = byte(lo >> (56 - 8*i))
	}
	u[6] = u[6]&0x0f | 0x40
	u[8] = u[8]&0x3f | 0x80
	return u
}
