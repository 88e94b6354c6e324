package transport

// The request body is walked in place rather than unmarshalled: an item
// with 100,000 extra fields decoded into a map cost ~10 MiB and ~100 ms per
// 1 MiB body, while walking it costs no allocation and a pass over the
// bytes. The walk only ever runs on bytes json.Valid accepted, so it needs
// no error handling of its own: on valid JSON every value ends where these
// functions say.

// skipSpace returns the index of the first byte at or after i that is not
// JSON white space.
func skipSpace(b []byte, i int) int {
	for i < len(b) {
		switch b[i] {
		case ' ', '\t', '\r', '\n':
			i++
		default:
			return i
		}
	}
	return i
}

// skipValue returns the index just past the value starting at b[i].
func skipValue(b []byte, i int) int {
	switch b[i] {
	case '"':
		return skipString(b, i)
	case '{', '[':
		depth := 0
		for i < len(b) {
			switch b[i] {
			case '"':
				i = skipString(b, i)
				continue
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return i + 1
				}
			}
			i++
		}
		return i
	default: // number, true, false, null
		for i < len(b) {
			switch b[i] {
			case ',', ']', '}', ' ', '\t', '\r', '\n':
				return i
			}
			i++
		}
		return i
	}
}

// skipString returns the index just past the string starting at b[i].
func skipString(b []byte, i int) int {
	for i++; i < len(b); i++ {
		switch b[i] {
		case '\\':
			i++ // the escaped byte; \uXXXX's hex digits are plain bytes
		case '"':
			return i + 1
		}
	}
	return i
}

// elements calls each with the bounds of every element of the array or
// every member of the object starting at b[i] (for an object, key holds the
// member's raw key string, quotes included), in order, until each returns
// false.
func elements(b []byte, i int, each func(key []byte, start, end int) bool) {
	object := b[i] == '{'
	i = skipSpace(b, i+1)
	if b[i] == ']' || b[i] == '}' {
		return
	}
	for {
		var key []byte
		if object {
			end := skipString(b, i)
			key = b[i:end]
			i = skipSpace(b, end)
			i = skipSpace(b, i+1) // past ':'
		}
		end := skipValue(b, i)
		if !each(key, i, end) {
			return
		}
		i = skipSpace(b, end)
		if b[i] != ',' {
			return
		}
		i = skipSpace(b, i+1)
	}
}
