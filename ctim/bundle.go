package ctim

import (
	"encoding/json"
	"slices"
)

// Bundle gathers the entities of one observe or deliberate answer in the
// order they are added (the request's order), keeping each indicator id
// once. The zero value is an empty bundle ready to use; it is not safe for
// concurrent use (the pipeline adds from one goroutine, in request order).
type Bundle struct {
	Verdicts      []Verdict
	Judgements    []Judgement
	Indicators    []Indicator
	Sightings     []Sighting
	Relationships []Relationship

	indicatorIDs map[string]struct{}
}

// Add appends one observable's entities: its verdict when it is current,
// and the rest. An indicator whose id is already in the bundle is left out;
// relationships still point at it by id. The bundle may keep e's slices: e
// must not be used after.
func (b *Bundle) Add(e Entities) {
	if e.Verdict != nil {
		b.Verdicts = append(b.Verdicts, *e.Verdict)
	}
	b.Judgements = append(b.Judgements, e.Judgement)
	b.addIndicators(e.Indicators)
	b.Sightings = appendOrTake(b.Sightings, e.Sightings)
	b.Relationships = appendOrTake(b.Relationships, e.Relationships)
}

// scanIndicators is how many indicators a bundle checks for duplicates by
// comparing each with the others rather than through a set: one
// observable's handful of indicators then costs no map.
const scanIndicators = 16

// addIndicators appends the indicators whose ids the bundle lacks.
func (b *Bundle) addIndicators(more []Indicator) {
	if b.indicatorIDs == nil && len(b.Indicators)+len(more) <= scanIndicators {
		if len(b.Indicators) == 0 && !hasDuplicateID(more) {
			b.Indicators = more
			return
		}
		for _, ind := range more {
			if !slices.ContainsFunc(b.Indicators, func(have Indicator) bool { return have.ID == ind.ID }) {
				b.Indicators = append(b.Indicators, ind)
			}
		}
		return
	}
	if b.indicatorIDs == nil {
		b.indicatorIDs = make(map[string]struct{}, len(b.Indicators)+len(more))
		for _, ind := range b.Indicators {
			b.indicatorIDs[ind.ID] = struct{}{}
		}
	}
	for _, ind := range more {
		if _, dup := b.indicatorIDs[ind.ID]; dup {
			continue
		}
		b.indicatorIDs[ind.ID] = struct{}{}
		b.Indicators = append(b.Indicators, ind)
	}
}

// hasDuplicateID reports whether two of a few indicators share an id.
func hasDuplicateID(inds []Indicator) bool {
	for i := range inds {
		for j := range i {
			if inds[j].ID == inds[i].ID {
				return true
			}
		}
	}
	return false
}

// appendOrTake appends more to list, or takes more itself when list is
// empty, sparing the copy of the first observable's entities.
func appendOrTake[T any](list, more []T) []T {
	if len(list) == 0 {
		return more
	}
	return append(list, more...)
}

// AddVerdict appends a verdict alone, as deliberate answers.
func (b *Bundle) AddVerdict(v Verdict) {
	b.Verdicts = append(b.Verdicts, v)
}

// Empty reports whether the bundle holds nothing.
func (b *Bundle) Empty() bool {
	return len(b.Verdicts)+len(b.Judgements)+len(b.Indicators)+len(b.Sightings)+len(b.Relationships) == 0
}

// Docs is the {count, docs} wrapper of each entity list.
type Docs[T any] struct {
	Count int `json:"count"`
	Docs  []T `json:"docs"`
}

func wrap[T any](items []T) *Docs[T] {
	if len(items) == 0 {
		return nil
	}
	return &Docs[T]{Count: len(items), Docs: items}
}

// Data is the bundle as the observe answer's data object, in the shape
// encoding/json reads: a key per non-empty list; {} when the bundle is
// empty. It is the reference of the encoder: StreamJSON writes the bytes
// encoding/json writes for it, faster.
type Data struct {
	Verdicts      *Docs[Verdict]      `json:"verdicts,omitempty"`
	Judgements    *Docs[Judgement]    `json:"judgements,omitempty"`
	Indicators    *Docs[Indicator]    `json:"indicators,omitempty"`
	Sightings     *Docs[Sighting]     `json:"sightings,omitempty"`
	Relationships *Docs[Relationship] `json:"relationships,omitempty"`
}

// Data returns the bundle's wire form.
func (b *Bundle) Data() Data {
	return Data{wrap(b.Verdicts), wrap(b.Judgements), wrap(b.Indicators), wrap(b.Sightings), wrap(b.Relationships)}
}

// MarshalJSON writes the bundle as its Data.
func (b *Bundle) MarshalJSON() ([]byte, error) {
	return json.Marshal(b.Data())
}
