package ctim

import (
	"encoding/json"
	"strconv"
	"unicode/utf8"
)

// This file encodes the entities of an answer: byte for byte what
// encoding/json writes for a bundle's Data with HTML escaping off (held by
// TestEncoderMatchesEncodingJSON and FuzzAppendString). It exists for
// speed: reflection-based encoding was a third of the cached observe path.
// Bundle.StreamJSON (stream.go) puts the documents together.

func (o Observable) appendJSON(b []byte) []byte {
	b = append(b, `{"type":`...)
	b = appendString(b, o.Type)
	b = append(b, `,"value":`...)
	b = appendString(b, o.Value)
	return append(b, '}')
}

func (v ValidTime) appendJSON(b []byte) []byte {
	b = append(b, `{"start_time":`...)
	b = appendString(b, v.StartTime)
	if v.EndTime != "" {
		b = append(b, `,"end_time":`...)
		b = appendString(b, v.EndTime)
	}
	return append(b, '}')
}

func (v Verdict) appendJSON(b []byte) []byte {
	b = append(b, `{"type":`...)
	b = appendString(b, v.Type)
	b = append(b, `,"observable":`...)
	b = v.Observable.appendJSON(b)
	b = append(b, `,"disposition":`...)
	b = strconv.AppendInt(b, int64(v.Disposition), 10)
	b = append(b, `,"disposition_name":`...)
	b = appendString(b, v.DispositionName)
	b = append(b, `,"valid_time":`...)
	b = v.ValidTime.appendJSON(b)
	if v.JudgementID != "" {
		b = append(b, `,"judgement_id":`...)
		b = appendString(b, v.JudgementID)
	}
	return append(b, '}')
}

func (j Judgement) appendJSON(b []byte) []byte {
	b = append(b, `{"id":`...)
	b = appendString(b, j.ID)
	b = append(b, `,"type":`...)
	b = appendString(b, j.Type)
	b = append(b, `,"observable":`...)
	b = j.Observable.appendJSON(b)
	b = append(b, `,"disposition":`...)
	b = strconv.AppendInt(b, int64(j.Disposition), 10)
	b = append(b, `,"disposition_name":`...)
	b = appendString(b, j.DispositionName)
	b = append(b, `,"severity":`...)
	b = appendString(b, j.Severity)
	b = append(b, `,"valid_time":`...)
	b = j.ValidTime.appendJSON(b)
	b = append(b, `,"source_uri":`...)
	b = appendString(b, j.SourceURI)
	b = append(b, `,"reason":`...)
	b = appendString(b, j.Reason)
	b = append(b, `,"reason_uri":`...)
	b = appendString(b, j.ReasonURI)
	b = append(b, `,"source":`...)
	b = appendString(b, j.Source)
	b = append(b, `,"confidence":`...)
	b = appendString(b, j.Confidence)
	b = append(b, `,"priority":`...)
	b = strconv.AppendInt(b, int64(j.Priority), 10)
	b = append(b, `,"tlp":`...)
	b = appendString(b, j.TLP)
	b = append(b, `,"schema_version":`...)
	b = appendString(b, j.SchemaVersion)
	return append(b, '}')
}

func (ind Indicator) appendJSON(b []byte) []byte {
	b = append(b, `{"id":`...)
	b = appendString(b, ind.ID)
	b = append(b, `,"type":`...)
	b = appendString(b, ind.Type)
	b = append(b, `,"source":`...)
	b = appendString(b, ind.Source)
	b = append(b, `,"tlp":`...)
	b = appendString(b, ind.TLP)
	b = append(b, `,"schema_version":`...)
	b = appendString(b, ind.SchemaVersion)
	b = append(b, `,"title":`...)
	b = appendString(b, ind.Title)
	b = append(b, `,"short_description":`...)
	b = appendString(b, ind.ShortDescription)
	b = append(b, `,"producer":`...)
	b = appendString(b, ind.Producer)
	b = append(b, `,"valid_time":`...)
	b = ind.ValidTime.appendJSON(b)
	if len(ind.Tags) > 0 {
		b = append(b, `,"tags":`...)
		b = appendStrings(b, ind.Tags)
	}
	if ind.Severity != "" {
		b = append(b, `,"severity":`...)
		b = appendString(b, ind.Severity)
	}
	if ind.SourceURI != "" {
		b = append(b, `,"source_uri":`...)
		b = appendString(b, ind.SourceURI)
	}
	if len(ind.ExternalIDs) > 0 {
		b = append(b, `,"external_ids":`...)
		b = appendStrings(b, ind.ExternalIDs)
	}
	if len(ind.ExternalReferences) > 0 {
		b = append(b, `,"external_references":[`...)
		for i, r := range ind.ExternalReferences {
			if i > 0 {
				b = append(b, ',')
			}
			b = append(b, `{"source_name":`...)
			b = appendString(b, r.SourceName)
			b = append(b, `,"url":`...)
			b = appendString(b, r.URL)
			b = append(b, `,"external_id":`...)
			b = appendString(b, r.ExternalID)
			b = append(b, '}')
		}
		b = append(b, ']')
	}
	return append(b, '}')
}

// appendStrings appends a non-nil list of strings.
func appendStrings(b []byte, list []string) []byte {
	b = append(b, '[')
	for i, s := range list {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendString(b, s)
	}
	return append(b, ']')
}

func (s Sighting) appendJSON(b []byte) []byte {
	b = append(b, `{"id":`...)
	b = appendString(b, s.ID)
	b = append(b, `,"type":`...)
	b = appendString(b, s.Type)
	b = append(b, `,"source":`...)
	b = appendString(b, s.Source)
	b = append(b, `,"tlp":`...)
	b = appendString(b, s.TLP)
	b = append(b, `,"confidence":`...)
	b = appendString(b, s.Confidence)
	b = append(b, `,"count":`...)
	b = strconv.AppendInt(b, int64(s.Count), 10)
	b = append(b, `,"schema_version":`...)
	b = appendString(b, s.SchemaVersion)
	b = append(b, `,"observables":`...)
	if s.Observables == nil {
		b = append(b, "null"...)
	} else {
		b = append(b, '[')
		for i, o := range s.Observables {
			if i > 0 {
				b = append(b, ',')
			}
			b = o.appendJSON(b)
		}
		b = append(b, ']')
	}
	b = append(b, `,"observed_time":{"start_time":`...)
	b = appendString(b, s.ObservedTime.StartTime)
	b = append(b, `,"end_time":`...)
	b = appendString(b, s.ObservedTime.EndTime)
	b = append(b, `},"description":`...)
	b = appendString(b, s.Description)
	if s.Severity != "" {
		b = append(b, `,"severity":`...)
		b = appendString(b, s.Severity)
	}
	b = append(b, `,"source_uri":`...)
	b = appendString(b, s.SourceURI)
	if len(s.Relations) > 0 {
		b = append(b, `,"relations":[`...)
		for i, r := range s.Relations {
			if i > 0 {
				b = append(b, ',')
			}
			b = append(b, `{"origin":`...)
			b = appendString(b, r.Origin)
			b = append(b, `,"relation":`...)
			b = appendString(b, r.Relation)
			b = append(b, `,"source":`...)
			b = r.Source.appendJSON(b)
			b = append(b, `,"related":`...)
			b = r.Related.appendJSON(b)
			b = append(b, '}')
		}
		b = append(b, ']')
	}
	return append(b, '}')
}

func (r Relationship) appendJSON(b []byte) []byte {
	b = append(b, `{"id":`...)
	b = appendString(b, r.ID)
	b = append(b, `,"type":`...)
	b = appendString(b, r.Type)
	b = append(b, `,"relationship_type":`...)
	b = appendString(b, r.RelationshipType)
	b = append(b, `,"source_ref":`...)
	b = appendString(b, r.SourceRef)
	b = append(b, `,"target_ref":`...)
	b = appendString(b, r.TargetRef)
	b = append(b, `,"tlp":`...)
	b = appendString(b, r.TLP)
	b = append(b, `,"schema_version":`...)
	b = appendString(b, r.SchemaVersion)
	return append(b, '}')
}

const lowerHex = "0123456789abcdef"

// plain8 reports whether none of the eight bytes of s needs attention in
// a JSON string: no control character, quote, backslash or byte of a
// multi-byte sequence. It tests them at once (SWAR): with x's bytes all
// below 0x80, (x - k·ones) &^ x has a high bit set exactly when some byte
// of x is below k; a byte equal to c is a zero byte of x ^ c·ones.
func plain8(s string) bool {
	const ones, highs = 0x0101010101010101, 0x8080808080808080
	w := uint64(s[0]) | uint64(s[1])<<8 | uint64(s[2])<<16 | uint64(s[3])<<24 |
		uint64(s[4])<<32 | uint64(s[5])<<40 | uint64(s[6])<<48 | uint64(s[7])<<56
	quote, backslash := w^(ones*'"'), w^(ones*'\\')
	return ((w-ones*0x20)&^w|(quote-ones)&^quote|(backslash-ones)&^backslash|w)&highs == 0
}

// invalidUTF8 is what encoding/json writes for a byte that is not UTF-8:
// the escape \ufffd in the original encoder, the replacement character
// itself in the one built on JSON v2 (the default since Go 1.27). Asked
// once, so the encoder stays byte-identical whichever the toolchain builds.
var invalidUTF8 = func() string {
	b, err := json.Marshal("\xff")
	if err != nil || len(b) < 2 {
		return `\ufffd`
	}
	return string(b[1 : len(b)-1])
}()

// appendString appends s as a JSON string the way encoding/json does with
// HTML escaping off: quote and backslash escaped, control characters as
// \b \f \n \r \t or \u00XX, invalid UTF-8 as encoding/json writes it
// (invalidUTF8), and U+2028 and U+2029 escaped (JavaScript reads them as
// line ends).
func appendString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		// Most text needs no escape: pass it eight bytes at a time.
		for i+8 <= len(s) && plain8(s[i:i+8]) {
			i += 8
		}
		if i == len(s) {
			break
		}
		if c := s[i]; c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\b':
				b = append(b, '\\', 'b')
			case '\f':
				b = append(b, '\\', 'f')
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', lowerHex[c>>4], lowerHex[c&0xF])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, invalidUTF8...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', lowerHex[r&0xF])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}
