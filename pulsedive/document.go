package pulsedive

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
	"unicode/utf8"
)

// Indicator is Pulsedive's answer to info.php?indicator=V, reduced to the
// fields the relay reads (CONTRACT.md section 4). It and Links are the
// relay's one model of Pulsedive's documents: the cache keeps them and
// package ctim maps them as they are. Decoding is lenient: numbers and
// strings are interchangeable, null and absent are the empty value, and
// absent lists are empty. Fields the mapping needs but Pulsedive left out
// stay empty; the mapping, not the decoder, decides that is a "key error",
// so a refer pivot can still be built from a document that cannot be mapped.
// A decoded document may be shared through the cache: it must not be
// modified.
type Indicator struct {
	IID       string `json:"iid"`
	Indicator string `json:"indicator"`
	Type      string `json:"type"`
	Risk      string `json:"risk"`
	Retired   bool   `json:"retired"`
	// RetiredReason is the text of "retired" when Pulsedive sent a
	// non-empty string ("No recent activity"); it is empty when Pulsedive
	// sent a number, so the judgement can tell "retired: <why>" from a
	// bare "retired" (CONTRACT.md section 4b).
	RetiredReason string       `json:"retired_reason,omitempty"`
	StampSeen     string       `json:"stamp_seen"`
	StampRetired  string       `json:"stamp_retired"`
	RiskFactors   []RiskFactor `json:"riskfactors"`
	Threats       []Threat     `json:"threats"`
	Feeds         []Feed       `json:"feeds"`
}

// RiskFactor is one entry of an indicator's "riskfactors".
type RiskFactor struct {
	Description string `json:"description"`
	Risk        string `json:"risk"`
}

// Threat is one entry of an indicator's "threats".
type Threat struct {
	TID         string `json:"tid"`
	Name        string `json:"name"`
	Category    string `json:"category"`
	Risk        string `json:"risk"`
	StampLinked string `json:"stamp_linked"`
}

// Feed is one entry of an indicator's "feeds".
type Feed struct {
	FID          string `json:"fid"`
	Name         string `json:"name"`
	Category     string `json:"category"`
	Organization string `json:"organization"`
	StampLinked  string `json:"stamp_linked"`
}

// Links is Pulsedive's answer to info.php?indicator=V&get=links, reduced to
// its "Active DNS" group (a single object counts as a list of one).
type Links struct {
	ActiveDNS []Link `json:"active_dns"`
}

// Link is one linked indicator.
type Link struct {
	IID         string `json:"iid"`
	Indicator   string `json:"indicator"`
	Type        string `json:"type"`
	StampLinked string `json:"stamp_linked"`
}

// DecodeIndicator reads an info document. A body that is not JSON gives
// ErrInvalidJSON; JSON of the wrong shape gives ErrSchema; a body holding an
// "error" text and no "iid" gives ErrNotFound for "Indicator not found." and
// an *APIError otherwise.
func DecodeIndicator(body []byte) (*Indicator, error) {
	var raw struct {
		IID          flexString          `json:"iid"`
		Indicator    flexString          `json:"indicator"`
		Type         flexString          `json:"type"`
		Risk         flexString          `json:"risk"`
		Retired      flexRetired         `json:"retired"`
		StampSeen    flexString          `json:"stamp_seen"`
		StampRetired flexString          `json:"stamp_retired"`
		RiskFactors  flexList[rawRisk]   `json:"riskfactors"`
		Threats      flexList[rawThreat] `json:"threats"`
		Feeds        flexList[rawFeed]   `json:"feeds"`
		Error        flexString          `json:"error"`
	}
	if err := decodeObject(body, &raw); err != nil {
		return nil, err
	}
	if raw.IID == "" && raw.Error != "" {
		return nil, apiError(string(raw.Error))
	}
	ind := &Indicator{
		IID:           string(raw.IID),
		Indicator:     string(raw.Indicator),
		Type:          string(raw.Type),
		Risk:          string(raw.Risk),
		Retired:       raw.Retired.retired,
		RetiredReason: raw.Retired.reason,
		StampSeen:     string(raw.StampSeen),
		StampRetired:  string(raw.StampRetired),
	}
	for _, r := range raw.RiskFactors {
		ind.RiskFactors = append(ind.RiskFactors, RiskFactor{Description: string(r.Description), Risk: string(r.Risk)})
	}
	for _, t := range raw.Threats {
		ind.Threats = append(ind.Threats, Threat{
			TID: string(t.TID), Name: string(t.Name), Category: string(t.Category),
			Risk: string(t.Risk), StampLinked: string(t.StampLinked),
		})
	}
	for _, f := range raw.Feeds {
		ind.Feeds = append(ind.Feeds, Feed{
			FID: string(f.FID), Name: string(f.Name), Category: string(f.Category),
			Organization: string(f.Organization), StampLinked: string(f.StampLinked),
		})
	}
	return ind, nil
}

// DecodeLinks reads a links document, with the same errors as
// DecodeIndicator. Groups other than "Active DNS" are skipped unread. An
// empty list ([]), which is how PHP encodes an empty map, has no links.
func DecodeLinks(body []byte) (*Links, error) {
	if string(bytes.Join(bytes.Fields(body), nil)) == "[]" {
		return &Links{}, nil
	}
	var raw struct {
		ActiveDNS flexList[rawLink] `json:"Active DNS"`
		Error     flexString        `json:"error"`
	}
	if err := decodeObject(body, &raw); err != nil {
		return nil, err
	}
	if raw.Error != "" && len(raw.ActiveDNS) == 0 {
		return nil, apiError(string(raw.Error))
	}
	links := &Links{}
	for _, l := range raw.ActiveDNS {
		links.ActiveDNS = append(links.ActiveDNS, Link{
			IID: string(l.IID), Indicator: string(l.Indicator),
			Type: string(l.Type), StampLinked: string(l.StampLinked),
		})
	}
	return links, nil
}

// notFoundText is what Pulsedive says in a 200 (or 404) answer for an
// indicator it does not know.
const notFoundText = "Indicator not found."

func apiError(text string) error {
	if text == notFoundText {
		return ErrNotFound
	}
	return &APIError{Message: text}
}

type rawRisk struct {
	Description flexString `json:"description"`
	Risk        flexString `json:"risk"`
}

type rawThreat struct {
	TID         flexString `json:"tid"`
	Name        flexString `json:"name"`
	Category    flexString `json:"category"`
	Risk        flexString `json:"risk"`
	StampLinked flexString `json:"stamp_linked"`
}

type rawFeed struct {
	FID          flexString `json:"fid"`
	Name         flexString `json:"name"`
	Category     flexString `json:"category"`
	Organization flexString `json:"organization"`
	StampLinked  flexString `json:"stamp_linked"`
}

type rawLink struct {
	IID         flexString `json:"iid"`
	Indicator   flexString `json:"indicator"`
	Type        flexString `json:"type"`
	StampLinked flexString `json:"stamp_linked"`
}

// decodeObject tells a body that is not JSON (ErrInvalidJSON) from JSON
// that is not the object the relay expects (ErrSchema).
func decodeObject(body []byte, v any) error {
	if !json.Valid(body) {
		return ErrInvalidJSON
	}
	trimmed := bytes.TrimSpace(body)
	if len(trimmed) == 0 || trimmed[0] != '{' {
		return fmt.Errorf("%w: top level is not an object", ErrSchema)
	}
	if err := json.Unmarshal(body, v); err != nil {
		return fmt.Errorf("%w: %v", ErrSchema, err)
	}
	return nil
}

// flexString accepts a JSON string, number or boolean, and reads null as "".
type flexString string

func (s *flexString) UnmarshalJSON(b []byte) error {
	switch {
	case len(b) == 0:
		return nil
	case b[0] == '"':
		// Most strings hold no escape: take them as they are (the decoder
		// has already checked the JSON), and leave the rest to encoding/json.
		if len(b) >= 2 && b[len(b)-1] == '"' {
			if inner := b[1 : len(b)-1]; bytes.IndexByte(inner, '\\') < 0 && utf8.Valid(inner) {
				*s = flexString(inner)
				return nil
			}
		}
		var v string
		if err := json.Unmarshal(b, &v); err != nil {
			return err
		}
		*s = flexString(v)
	case b[0] == 'n':
		*s = ""
	case b[0] == 't' || b[0] == 'f':
		*s = flexString(b)
	case b[0] == '-' || (b[0] >= '0' && b[0] <= '9'):
		*s = flexString(b)
	default:
		return fmt.Errorf("want a string or a number, got %.20s", b)
	}
	return nil
}

// flexRetired reads Pulsedive's "retired": a non-empty string (kept as the
// reason) or a non-zero number is retired; "", 0, false and null are not.
type flexRetired struct {
	retired bool
	reason  string
}

func (v *flexRetired) UnmarshalJSON(b []byte) error {
	var s flexString
	if err := s.UnmarshalJSON(b); err != nil {
		return err
	}
	switch str := string(s); {
	case str == "" || (str == "false" && b[0] == 'f'):
		*v = flexRetired{}
	case b[0] != '"':
		f, err := strconv.ParseFloat(str, 64)
		*v = flexRetired{retired: err != nil || f != 0}
	default:
		*v = flexRetired{retired: true, reason: str}
	}
	return nil
}

// flexList reads a JSON array, one object as a list of one, and null, {} or
// [] as empty. PHP serialises an empty list as {} at times.
type flexList[T any] []T

func (l *flexList[T]) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	switch {
	case len(b) == 0 || b[0] == 'n':
		*l = nil
		return nil
	case b[0] == '[':
		var items []T
		if err := json.Unmarshal(b, &items); err != nil {
			return err
		}
		*l = items
		return nil
	case b[0] == '{':
		if isEmptyObject(b) {
			*l = nil
			return nil
		}
		var item T
		if err := json.Unmarshal(b, &item); err != nil {
			return err
		}
		*l = []T{item}
		return nil
	default:
		return fmt.Errorf("want a list, got %.20s", b)
	}
}

func isEmptyObject(b []byte) bool {
	inner := bytes.TrimSpace(b[1 : len(b)-1])
	return len(inner) == 0
}
