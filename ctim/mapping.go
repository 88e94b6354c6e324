package ctim

import (
	"cmp"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
)

// ErrBroken means a Pulsedive document lacks a field the mapping needs (or
// holds one it cannot read): the contract's "key error".
var ErrBroken = errors.New("ctim: Pulsedive document lacks a field the mapping needs")

// Report is what Pulsedive knows of one indicator, as the mapping reads it:
// the fields of its info document. Times are Pulsedive's
// "YYYY-MM-DD HH:MM:SS" UTC text.
type Report struct {
	IID          string
	Risk         string
	Retired      bool
	StampSeen    string
	StampRetired string
	RiskFactors  []RiskFactor
	Threats      []Threat
	Feeds        []Feed
}

// RiskFactor is one of a report's risk factors.
type RiskFactor struct {
	Description string
}

// Threat is a threat a report is linked to.
type Threat struct {
	TID         string
	Name        string
	Category    string
	StampLinked string
}

// Feed is a feed a report is listed in.
type Feed struct {
	FID          string
	Name         string
	Category     string
	Organization string
	StampLinked  string
}

// DNSLink is one entry of a links document's "Active DNS" group.
type DNSLink struct {
	Type        string
	Indicator   string
	StampLinked string
}

// Entities is what one found observable contributes to an observe answer.
type Entities struct {
	Verdict       Verdict
	Judgement     Judgement
	Indicators    []Indicator
	Sightings     []Sighting
	Relationships []Relationship
}

// Mapper maps Pulsedive reports to CTIM. Now must be set.
type Mapper struct {
	// Now decides which Active DNS links are recent (90 days).
	Now func() time.Time
	// NewID returns a fresh UUID in text form for judgements, sightings
	// and relationships; nil means random (version 4) UUIDs. Tests set it
	// to get predictable ids.
	NewID func() string
}

// id returns a transient id: prefix and a fresh UUID.
func (m Mapper) id(prefix string) string {
	if m.NewID == nil {
		return prefixedRandomUUID(prefix)
	}
	return prefix + m.NewID()
}

// Timing constants of spec section 4.
const (
	// validity is how long a verdict holds when Pulsedive gives no
	// retirement: three months of 365/12 days.
	validity = 91*24*time.Hour + 6*time.Hour
	// activeDNSWindow bounds how old an Active DNS link may be.
	activeDNSWindow = 90 * 24 * time.Hour
)

const (
	pulsediveLayout = "2006-01-02 15:04:05"
	ctimLayout      = "2006-01-02T15:04:05Z"
)

// riskRow is a row of the risk table.
type riskRow struct {
	disposition     int
	dispositionName string
	severity        string
}

var riskTable = map[string]riskRow{
	"none":     {1, "Clean", "None"},
	"unknown":  {5, "Unknown", "Unknown"},
	"retired":  {5, "Unknown", "Unknown"},
	"low":      {3, "Suspicious", "Low"},
	"medium":   {3, "Suspicious", "Medium"},
	"high":     {2, "Malicious", "High"},
	"critical": {2, "Malicious", "High"},
}

// assessment is what every entity of one report shares.
type assessment struct {
	row       riskRow // with the retired rule: verdict, judgement, sightings
	threatRow riskRow // without it: threat indicators
	validTime ValidTime
	seen      string // stamp_seen in CTIM form
	pageURI   string // the indicator's page in Pulsedive's UI
}

func assess(r *Report) (assessment, error) {
	risk := strings.ToLower(r.Risk)
	threatRow, ok := riskTable[risk]
	if !ok || r.IID == "" {
		return assessment{}, fmt.Errorf("%w: risk %q, iid %q", ErrBroken, r.Risk, r.IID)
	}
	row := threatRow
	if r.Retired && risk == "none" {
		row = riskTable["retired"]
	}
	seen, err := parseStamp(r.StampSeen)
	if err != nil {
		return assessment{}, fmt.Errorf("stamp_seen: %w", err)
	}
	end := seen.Add(validity)
	if r.StampRetired != "" {
		if end, err = parseStamp(r.StampRetired); err != nil {
			return assessment{}, fmt.Errorf("stamp_retired: %w", err)
		}
	}
	seenText := seen.Format(ctimLayout)
	return assessment{
		row:       row,
		threatRow: threatRow,
		validTime: ValidTime{StartTime: seenText, EndTime: end.Format(ctimLayout)},
		seen:      seenText,
		pageURI:   UIBase + "/indicator/?iid=" + r.IID,
	}, nil
}

// Verdict maps a report to the verdict on obs; it is all deliberate needs.
// It fails with ErrBroken when the report cannot be mapped.
func (m Mapper) Verdict(obs Observable, r *Report) (Verdict, error) {
	a, err := assess(r)
	if err != nil {
		return Verdict{}, err
	}
	return verdict(obs, a), nil
}

func verdict(obs Observable, a assessment) Verdict {
	return Verdict{
		Type:            "verdict",
		Observable:      obs,
		Disposition:     a.row.disposition,
		DispositionName: a.row.dispositionName,
		ValidTime:       a.validTime,
	}
}

// Relations picks the Active DNS links of the last 90 days (by m.Now) whose
// type pairs with obs: addresses (ip, ipv6) of a domain, domains of an
// address. Each becomes a Resolved_To relation from the domain side to the
// address side. No pairing link gives nil. A link without a readable
// stamp_linked or indicator fails with ErrBroken.
func (m Mapper) Relations(obs Observable, links []DNSLink) ([]Relation, error) {
	var relations []Relation
	cutoff := m.Now().Add(-activeDNSWindow)
	for _, l := range links {
		if !pairs(obs.Type, l.Type) {
			continue
		}
		linked, err := parseStamp(l.StampLinked)
		if err != nil {
			return nil, fmt.Errorf("active DNS stamp_linked: %w", err)
		}
		if l.Indicator == "" {
			return nil, fmt.Errorf("%w: active DNS link without indicator", ErrBroken)
		}
		if !linked.After(cutoff) {
			continue
		}
		other := Observable{Type: l.Type, Value: l.Indicator}
		rel := Relation{Origin: "Pulsedive Enrichment Module", Relation: "Resolved_To", Source: obs, Related: other}
		if obs.Type != "domain" {
			rel.Source, rel.Related = other, obs
		}
		relations = append(relations, rel)
	}
	return relations, nil
}

func pairs(observable, linked string) bool {
	switch observable {
	case "domain":
		return linked == "ip" || linked == "ipv6"
	case "ip", "ipv6":
		return linked == "domain"
	}
	return false
}

// Observe maps a report on obs to its verdict, judgement, indicators,
// sightings and relationships. relations, from Relations, become the
// Active DNS sighting (none when empty). limit caps the indicators and,
// separately, the sightings (Active DNS included) of this observable;
// relationships follow the sightings kept. A limit below 1 means no cap.
// It fails with ErrBroken when the report cannot be mapped.
func (m Mapper) Observe(obs Observable, r *Report, relations []Relation, limit int) (Entities, error) {
	a, err := assess(r)
	if err != nil {
		return Entities{}, err
	}
	threats, err := sortedByLink(r.Threats, func(t Threat) string { return t.StampLinked })
	if err != nil {
		return Entities{}, fmt.Errorf("threat stamp_linked: %w", err)
	}
	feeds, err := sortedByLink(r.Feeds, func(f Feed) string { return f.StampLinked })
	if err != nil {
		return Entities{}, fmt.Errorf("feed stamp_linked: %w", err)
	}

	total := len(r.RiskFactors) + len(threats) + len(feeds)
	if len(relations) > 0 {
		total++
	}
	if limit < 1 {
		limit = total
	}
	e := Entities{
		Verdict: verdict(obs, a),
		Judgement: Judgement{
			ID:              m.id("transient:judgement-"),
			Type:            "judgement",
			Observable:      obs,
			Disposition:     a.row.disposition,
			DispositionName: a.row.dispositionName,
			Severity:        a.row.severity,
			ValidTime:       a.validTime,
			SourceURI:       a.pageURI,
			Source:          Source,
			Confidence:      "Medium",
			Priority:        85,
			TLP:             "white",
			SchemaVersion:   SchemaVersion,
		},
		Indicators:    make([]Indicator, 0, min(limit, total)),
		Sightings:     make([]Sighting, 0, min(limit, total)),
		Relationships: make([]Relationship, 0, min(limit, total)),
	}
	// Each risk factor, threat and feed gives an indicator and a sighting
	// of it, in the same order, so both lists stop at the same place.
	add := func(ind Indicator, s Sighting, relType string) {
		if len(e.Sightings) >= limit {
			return
		}
		s.ID = m.id("transient:sighting-")
		e.Indicators = append(e.Indicators, ind)
		e.Sightings = append(e.Sightings, s)
		e.Relationships = append(e.Relationships, Relationship{
			ID:               m.id("transient:relationship-"),
			Type:             "relationship",
			RelationshipType: relType,
			SourceRef:        s.ID,
			TargetRef:        ind.ID,
			TLP:              "white",
			SchemaVersion:    SchemaVersion,
		})
	}

	for _, rf := range r.RiskFactors {
		if rf.Description == "" {
			return Entities{}, fmt.Errorf("%w: risk factor without description", ErrBroken)
		}
		ind := newIndicator(rf.Description, rf.Description, "Pulsedive")
		ind.ValidTime = a.validTime
		add(ind, a.sighting(obs, rf.Description, a.seen, a.row.severity, a.pageURI), "sighting-of")
	}
	for _, t := range threats {
		if t.Name == "" || t.TID == "" {
			return Entities{}, fmt.Errorf("%w: threat without name or tid", ErrBroken)
		}
		title := "Threat: " + t.Name
		uri := UIBase + "/threat/?tid=" + t.TID
		linked := mustCTIM(t.StampLinked)
		ind := newIndicator(t.Name, title, "Pulsedive")
		ind.ValidTime = ValidTime{StartTime: linked}
		ind.Tags = []string{t.Category}
		ind.Severity = a.threatRow.severity
		ind.SourceURI = uri
		add(ind, a.sighting(obs, title, linked, a.row.severity, uri), "sighting-of")
	}
	for _, f := range feeds {
		if f.Name == "" || f.FID == "" {
			return Entities{}, fmt.Errorf("%w: feed without name or fid", ErrBroken)
		}
		title := "Feed: " + strings.ReplaceAll(f.Name, "Feed", "")
		uri := UIBase + "/feed/?fid=" + f.FID
		linked := mustCTIM(f.StampLinked)
		ind := newIndicator(f.Name, title, f.Organization)
		ind.ValidTime = ValidTime{StartTime: linked}
		ind.Tags = []string{f.Category}
		ind.SourceURI = uri
		add(ind, a.sighting(obs, title, linked, "", uri), "member-of")
	}
	if len(relations) > 0 && len(e.Sightings) < limit {
		s := a.sighting(obs, "Active DNS", a.seen, "", a.pageURI)
		s.ID = m.id("transient:sighting-")
		s.Relations = relations
		e.Sightings = append(e.Sightings, s)
	}
	return e, nil
}

func (a assessment) sighting(obs Observable, description, at, severity, uri string) Sighting {
	return Sighting{
		Type:          "sighting",
		Source:        Source,
		Confidence:    "Medium",
		Count:         1,
		SchemaVersion: SchemaVersion,
		Observables:   []Observable{obs},
		ObservedTime:  ObservedTime{StartTime: at, EndTime: at},
		Description:   description,
		Severity:      severity,
		SourceURI:     uri,
	}
}

// newIndicator builds the fields every indicator shares; name decides its
// id, so the same risk factor, threat or feed has the same id everywhere.
func newIndicator(name, title, producer string) Indicator {
	return Indicator{
		ID:               IndicatorID(name),
		Type:             "indicator",
		Source:           Source,
		TLP:              "white",
		SchemaVersion:    SchemaVersion,
		Title:            title,
		ShortDescription: title,
		Producer:         producer,
	}
}

// IndicatorID is the deterministic id of the indicator named name:
// "transient:indicator-" and the UUID version 5 of name in the X.500
// namespace.
func IndicatorID(name string) string {
	return prefixedUUID5("transient:indicator-", namespaceX500, name)
}

// sortedByLink returns a copy of items sorted by their stamp_linked, newest
// first, keeping the order of equal stamps; the report itself, which may be
// shared through the cache, is never reordered. Every stamp must parse.
func sortedByLink[T any](items []T, stamp func(T) string) ([]T, error) {
	for _, it := range items {
		if _, err := parseStamp(stamp(it)); err != nil {
			return nil, err
		}
	}
	out := slices.Clone(items)
	// The layout is fixed-width, so text order is time order.
	slices.SortStableFunc(out, func(x, y T) int { return cmp.Compare(stamp(y), stamp(x)) })
	return out, nil
}

// parseStamp reads a Pulsedive time; a missing or unreadable one is
// ErrBroken.
func parseStamp(s string) (time.Time, error) {
	t, err := time.Parse(pulsediveLayout, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("%w: time %q is not YYYY-MM-DD HH:MM:SS", ErrBroken, s)
	}
	return t, nil
}

// mustCTIM rewrites a stamp already checked by parseStamp in CTIM form.
func mustCTIM(s string) string {
	t, _ := time.Parse(pulsediveLayout, s)
	return t.Format(ctimLayout)
}
