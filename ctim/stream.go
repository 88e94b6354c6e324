package ctim

import "strconv"

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

// StreamJSON appends the bundle to buf as the observe answer's data
// object, the bytes encoding/json writes for its Data (with HTML escaping
// off), but hands the bytes to flush whenever at least chunk of them are
// pending, between two documents, and goes on in buf[:0]: an answer of any
// size then needs a buffer of about chunk plus its largest document. It
// returns what is left unflushed (all of it when flush was never called)
// and the first error flush returned, after which it stops encoding. A
// chunk of 0 or a nil flush never flushes: the whole answer is returned.
func (b *Bundle) StreamJSON(buf []byte, chunk int, flush func([]byte) error) ([]byte, error) {
	s := stream{b: buf, chunk: chunk, flush: flush}
	s.b = append(s.b, '{')
	first := true
	if len(b.Verdicts) > 0 {
		streamList(&s, &first, "verdicts", b.Verdicts, Verdict.appendJSON)
	}
	if len(b.Judgements) > 0 {
		streamList(&s, &first, "judgements", b.Judgements, Judgement.appendJSON)
	}
	if len(b.Indicators) > 0 {
		streamList(&s, &first, "indicators", b.Indicators, Indicator.appendJSON)
	}
	if len(b.Sightings) > 0 {
		streamList(&s, &first, "sightings", b.Sightings, Sighting.appendJSON)
	}
	if len(b.Relationships) > 0 {
		streamList(&s, &first, "relationships", b.Relationships, Relationship.appendJSON)
	}
	s.b = append(s.b, '}')
	return s.b, s.err
}

// streamList writes one member of the data object, "name":{"count":n,
// "docs":[...]} for n documents, offering a flush after each document.
func streamList[T any](s *stream, first *bool, name string, docs []T, each func(T, []byte) []byte) {
	if s.err != nil {
		return
	}
	if !*first {
		s.b = append(s.b, ',')
	}
	*first = false
	s.b = append(s.b, '"')
	s.b = append(s.b, name...)
	s.b = append(s.b, `":{"count":`...)
	s.b = strconv.AppendInt(s.b, int64(len(docs)), 10)
	s.b = append(s.b, `,"docs":[`...)
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
