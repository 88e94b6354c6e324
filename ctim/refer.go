package ctim

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"strings"
)

// SearchReference is the pivot to a Pulsedive search for obs, which stands
// for every supported observable whether Pulsedive knows it or not.
func SearchReference(obs Observable) Reference {
	label := typeLabels[obs.Type]
	return Reference{
		ID:          "ref-pulsedive-search-" + obs.Type + "-" + escapeID(obs.Value),
		Title:       "Search for this " + label,
		Description: "Lookup this " + label + " on Pulsedive",
		URL:         UIBase + "/browse/?q=" + base64.StdEncoding.EncodeToString(browseQuery(obs.Value)),
		Categories:  []string{"Search", "Pulsedive"},
	}
}

// BrowseReference is the pivot to the page of the indicator iid, for an
// observable Pulsedive knows. The iid is query-escaped (CONTRACT.md section
// 4b); one too long for a URI fails with ErrBroken, as in observe.
func BrowseReference(obs Observable, iid string) (Reference, error) {
	uri, err := page("/indicator/?iid=", iid)
	if err != nil {
		return Reference{}, err
	}
	label := typeLabels[obs.Type]
	return Reference{
		ID:          "ref-pulsedive-detail-" + obs.Type + "-" + escapeID(obs.Value),
		Title:       "Browse " + label,
		Description: "Browse this " + label + " on Pulsedive",
		URL:         uri,
		Categories:  []string{"Browse", "Pulsedive"},
	}, nil
}

// browseQuery is Pulsedive's browse query for value, byte for byte as the
// original relay wrote it (spacing included), with value JSON-escaped so a
// quote or backslash in it cannot change the query's structure.
func browseQuery(value string) []byte {
	v := jsonEscape(value)
	return []byte(`{"type":["artifact", "domain","ip","ipv6","url"],"risk":["unknown","none","low","medium","high","critical","retired"],"lastseen":["all"],"indicator":[{"raw":{"type":"indicator","value":"` +
		v + `"}, "htmlsafe":{"type":"indicator","value":"` +
		v + `"},"exact":true}],"attribute":[],"property":[],"threat":[], "feed":[]}`)
}

// jsonEscape returns s as the inside of a JSON string literal.
func jsonEscape(s string) string {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(s) // a string always encodes
	out := bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
	return string(out[1 : len(out)-1])
}

// escapeID percent-encodes every byte but ASCII letters, digits and
// "_.-~", as Python's quote(value, safe="") did for the original's ids.
func escapeID(s string) string {
	const hexDigits = "0123456789ABCDEF"
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_' || c == '.' || c == '-' || c == '~' {
			b.WriteByte(c)
			continue
		}
		b.WriteByte('%')
		b.WriteByte(hexDigits[c>>4])
		b.WriteByte(hexDigits[c&15])
	}
	return b.String()
}
