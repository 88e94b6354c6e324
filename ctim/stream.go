package ctim

import "strconv"

// StreamJSON encodes d exactly as AppendJSON does, appending to b, but hands
// the bytes to flush whenever at least chunk of them are pending, between
// two documents, and goes on in b[:0]: an answer of any size then needs a
// buffer of about chunk plus its largest document. It returns what is left
// unflushed (all of it when flush was never called) and the first error
// flush returned, after which it stops encoding. A chunk of 0 or a nil flush
// never flushes.
func (d Data) StreamJSON(b []byte, chunk int, flush func([]byte) error) ([]byte, error) {
	s := stream{b: b, chunk: chunk, flush: flush}
	d.encode(&s)
	return s.b, s.err
}

// stream is the encoder's output: a buffer and where it is flushed.
type stream struct {
	b     []byte
	chunk int
	flush func([]byte) error
	err   error
}

func (s *stream) maybeFlush() {
	if s.flush == nil || s.chunk <= 0 || len(s.b) < s.chunk || s.err != nil {
		return
	}
	s.err = s.flush(s.b)
	s.b = s.b[:0]
}

// StreamJSON encodes the bundle as Data().StreamJSON would, without
// building Data.
func (b *Bundle) StreamJSON(buf []byte, chunk int, flush func([]byte) error) ([]byte, error) {
	s := stream{b: buf, chunk: chunk, flush: flush}
	b.encode(&s)
	return s.b, s.err
}

// encode writes the bundle as its Data: a key per non-empty list.
func (b *Bundle) encode(s *stream) {
	s.b = append(s.b, '{')
	first := true
	if len(b.Verdicts) > 0 {
		streamList(s, &first, "verdicts", len(b.Verdicts), b.Verdicts, Verdict.appendJSON)
	}
	if len(b.Judgements) > 0 {
		streamList(s, &first, "judgements", len(b.Judgements), b.Judgements, Judgement.appendJSON)
	}
	if len(b.Indicators) > 0 {
		streamList(s, &first, "indicators", len(b.Indicators), b.Indicators, Indicator.appendJSON)
	}
	if len(b.Sightings) > 0 {
		streamList(s, &first, "sightings", len(b.Sightings), b.Sightings, Sighting.appendJSON)
	}
	if len(b.Relationships) > 0 {
		streamList(s, &first, "relationships", len(b.Relationships), b.Relationships, Relationship.appendJSON)
	}
	s.b = append(s.b, '}')
}

// encode writes the data object: a key per non-nil list.
func (d Data) encode(s *stream) {
	s.b = append(s.b, '{')
	first := true
	if d.Verdicts != nil {
		streamList(s, &first, "verdicts", d.Verdicts.Count, d.Verdicts.Docs, Verdict.appendJSON)
	}
	if d.Judgements != nil {
		streamList(s, &first, "judgements", d.Judgements.Count, d.Judgements.Docs, Judgement.appendJSON)
	}
	if d.Indicators != nil {
		streamList(s, &first, "indicators", d.Indicators.Count, d.Indicators.Docs, Indicator.appendJSON)
	}
	if d.Sightings != nil {
		streamList(s, &first, "sightings", d.Sightings.Count, d.Sightings.Docs, Sighting.appendJSON)
	}
	if d.Relationships != nil {
		streamList(s, &first, "relationships", d.Relationships.Count, d.Relationships.Docs, Relationship.appendJSON)
	}
	s.b = append(s.b, '}')
}

// streamList writes one member of the data object, "name":{"count":count,
// "docs":[...]}, offering a flush after each document.
func streamList[T any](s *stream, first *bool, name string, count int, docs []T, each func(T, []byte) []byte) {
	if !*first {
		s.b = append(s.b, ',')
	}
	*first = false
	s.b = append(s.b, '"')
	s.b = append(s.b, name...)
	s.b = append(s.b, `":{"count":`...)
	streamDocs(s, count, docs, each)
}

// streamDocs writes the rest of {"count":n,"docs":[...]} after its count
// key, offering a flush after each document.
func streamDocs[T any](s *stream, count int, docs []T, each func(T, []byte) []byte) {
	if s.err != nil {
		return
	}
	s.b = strconv.AppendInt(s.b, int64(count), 10)
	s.b = append(s.b, `,"docs":`...)
	if docs == nil {
		s.b = append(s.b, "null}"...)
		return
	}
	s.b = append(s.b, '[')
	for i, doc := range docs {
		if i > 0 {
			s.b = append(s.b, ',')
		}
		s.b = each(doc, s.b)
		if s.maybeFlush(); s.err != nil {
			return
		}
	}
	s.b = append(s.b, "]}"...)
}
