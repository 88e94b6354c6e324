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

// encode writes the data object: a key per non-empty list.
func (d Data) encode(s *stream) {
	s.b = append(s.b, '{')
	first := true
	field := func(name string) {
		if !first {
			s.b = append(s.b, ',')
		}
		first = false
		s.b = append(s.b, '"')
		s.b = append(s.b, name...)
		s.b = append(s.b, `":{"count":`...)
	}
	if d.Verdicts != nil {
		field("verdicts")
		streamDocs(s, d.Verdicts, Verdict.appendJSON)
	}
	if d.Judgements != nil {
		field("judgements")
		streamDocs(s, d.Judgements, Judgement.appendJSON)
	}
	if d.Indicators != nil {
		field("indicators")
		streamDocs(s, d.Indicators, Indicator.appendJSON)
	}
	if d.Sightings != nil {
		field("sightings")
		streamDocs(s, d.Sightings, Sighting.appendJSON)
	}
	if d.Relationships != nil {
		field("relationships")
		streamDocs(s, d.Relationships, Relationship.appendJSON)
	}
	s.b = append(s.b, '}')
}

// streamDocs writes the rest of {"count":n,"docs":[...]} after its count
// key, offering a flush after each document.
func streamDocs[T any](s *stream, d *Docs[T], each func(T, []byte) []byte) {
	if s.err != nil {
		return
	}
	s.b = strconv.AppendInt(s.b, int64(d.Count), 10)
	s.b = append(s.b, `,"docs":`...)
	if d.Docs == nil {
		s.b = append(s.b, "null}"...)
		return
	}
	s.b = append(s.b, '[')
	for i, doc := range d.Docs {
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
