package ctim

import (
	"cmp"
	"errors"
	"fmt"
	"net/url"
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
	IID  string
	Risk string
	// Retired is Pulsedive's "retired" read as a flag; RetiredReason is its
	// text when Pulsedive sent one (a number leaves it empty).
	Retired       bool
	RetiredReason string
	StampSeen     string
	StampRetired  string
	RiskFactors   []RiskFactor
	Threats       []Threat
	Feeds         []Feed
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

// DNSLinks is a links document's "Active DNS" list as Relations reads it:
// entry by entry, so that a caller holding another shape converts only the
// entries read. DNSLinkList is one.
type DNSLinks interface {
	Len() int
	At(i int) DNSLink
}

// DNSLinkList is a DNSLinks already in the mapping's shape.
type DNSLinkList []DNSLink

func (l DNSLinkList) Len() int         { return len(l) }
func (l DNSLinkList) At(i int) DNSLink { return l[i] }

// Entities is what one found observable contributes to an observe answer.
// Verdict is nil when the verdict's valid_time has ended at the mapper's
// clock: a verdict is the observable's current disposition (CONTRACT.md section 4b); the
// judgement, which is history, stays.
type Entities struct {
	Verdict       *Verdict
	Judgement     Judgement
	Indicators    []Indicator
	Sightings     []Sighting
	Relationships []Relationship
}

// Mapper maps Pulsedive reports to CTIM. Now must be set.
type Mapper struct {
	// Now is the answer's clock: it decides which verdicts are still
	// current and which Active DNS links are recent (90 days).
	Now func() time.Time
	// NewID returns a fresh UUID in text form for judgements, sightings
	// and relationships; nil means random (version 4) UUIDs. Tests set it
	// to get predictable ids.
	NewID func() string
}

// Timing constants of CONTRACT.md section 4.
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

// CTIM's string limits, counted in Unicode code points (threatgrid/ctim,
// src/ctim/schemas/common.cljc: ShortString, LongString, URI). Longer text
// is cut at the limit (CONTRACT.md section 4b).
const (
	shortString = 1024 // title, indicator short_description, producer, tags, reason
	longString  = 5000 // description
	maxURI      = 2048 // source_uri, reason_uri, external reference url
)

// CTIM times lie between 1970 and 2525 (common.cljc, Time). A Pulsedive
// stamp outside [1970, 2500) is not Pulsedive's: the document is broken.
// 2500 leaves room for the 91-day validity added to stamp_seen.
var (
	earliestStamp = time.Date(1970, time.January, 1, 0, 0, 0, 0, time.UTC)
	latestStamp   = time.Date(2500, time.January, 1, 0, 0, 0, 0, time.UTC)
)

// assessment is what every entity of one report shares.
type assessment struct {
	row       riskRow // with the retired rule: verdict, judgement, sightings
	threatRow riskRow // without it: threat indicators
	validTime ValidTime
	end       time.Time // validTime's end, to tell whether the verdict is current
	seen      string    // stamp_seen in CTIM form
	pageURI   string    // the indicator's page in Pulsedive's UI
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
		// Retired before it was seen: CTIM refuses a valid_time that ends
		// before it starts, so it ends where it starts (and has expired).
		if end.Before(seen) {
			end = seen
		}
	}
	pageURI, err := page("/indicator/?iid=", r.IID)
	if err != nil {
		return assessment{}, err
	}
	seenText := seen.Format(ctimLayout)
	return assessment{
		row:       row,
		threatRow: threatRow,
		validTime: ValidTime{StartTime: seenText, EndTime: end.Format(ctimLayout)},
		end:       end,
		seen:      seenText,
		pageURI:   pageURI,
	}, nil
}

// page is the address of a page of Pulsedive's UI for the id Pulsedive
// gave. The id is query-escaped, so a non-numeric one cannot break the URI
// (CONTRACT.md section 4b); an id too long for CTIM's URI limit is not Pulsedive's, and
// fails with ErrBroken rather than linking to a page cut short.
func page(path, id string) (string, error) {
	uri := UIBase + path + url.QueryEscape(id)
	if len(uri) > maxURI { // escaped: ASCII, so bytes are code points
		return "", fmt.Errorf("%w: id of %d bytes does not fit a URI", ErrBroken, len(id))
	}
	return uri, nil
}

// reason says why the judgement is what it is: Pulsedive's risk as sent,
// and whether (and why) Pulsedive retired the indicator.
func reason(r *Report) string {
	switch {
	case r.RetiredReason != "":
		return cut("Pulsedive risk: "+r.Risk+" (retired: "+r.RetiredReason+")", shortString)
	case r.Retired:
		return "Pulsedive risk: " + r.Risk + " (retired)"
	}
	return "Pulsedive risk: " + r.Risk
}

// current says whether a validity ending at end still holds at the
// answer's clock. end_time is the first instant the verdict no longer
// holds, so a verdict whose end_time equals the clock has ended: end <= now
// means expired.
func (m Mapper) current(end time.Time) bool {
	return m.Now().Before(end)
}

// Verdict maps a report to the verdict on obs, all deliberate needs. current
// is false when the verdict's valid_time has ended at m.Now: the caller
// leaves such a verdict out (CONTRACT.md section 4b). The verdict carries no judgement_id.
// It fails with ErrBroken when the report cannot be mapped.
func (m Mapper) Verdict(obs Observable, r *Report) (v Verdict, current bool, err error) {
	a, err := assess(r)
	if err != nil {
		return Verdict{}, false, err
	}
	return verdict(obs, a), m.current(a.end), nil
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
// address side. It keeps the first limit relations, in Pulsedive's order,
// and reads no further, so a list of thousands costs no more than the limit
// (a limit below 1 means no cap). No pairing link gives nil. A link it reads
// without a readable stamp_linked or indicator fails with ErrBroken.
func (m Mapper) Relations(obs Observable, links DNSLinks, limit int) ([]Relation, error) {
	relations, _, err := m.relations(obs, links, limit)
	return relations, err
}

// relations is Relations, and the first instant one of the relations kept
// leaves the 90-day window (zero when none is kept): until then, the same
// links give the same relations.
func (m Mapper) relations(obs Observable, links DNSLinks, limit int) ([]Relation, time.Time, error) {
	var (
		relations []Relation
		until     time.Time
	)
	cutoff := m.Now().Add(-activeDNSWindow)
	for i := range links.Len() {
		l := links.At(i)
		if !pairs(obs.Type, l.Type) {
			continue
		}
		linked, err := parseStamp(l.StampLinked)
		if err != nil {
			return nil, time.Time{}, fmt.Errorf("active DNS stamp_linked: %w", err)
		}
		if l.Indicator == "" {
			return nil, time.Time{}, fmt.Errorf("%w: active DNS link without indicator", ErrBroken)
		}
		if !linked.After(cutoff) {
			continue
		}
		if leaves := linked.Add(activeDNSWindow); until.IsZero() || leaves.Before(until) {
			until = leaves
		}
		other := Observable{Type: l.Type, Value: l.Indicator}
		rel := Relation{Origin: "Pulsedive Enrichment Module", Relation: "Resolved_To", Source: obs, Related: other}
		if obs.Type != "domain" {
			rel.Source, rel.Related = other, obs
		}
		relations = append(relations, rel)
		if len(relations) == limit {
			break
		}
	}
	return relations, until, nil
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

// Observe maps a report on obs to its verdict (nil once expired),
// judgement, indicators, sightings and relationships. relations, from
// Relations, become the Active DNS sighting (none when empty). limit caps
// the indicators and, separately, the sightings (Active DNS included) of
// this observable, and the Active DNS relations; relationships follow the
// sightings kept. A limit below 1 means no cap. It fails with ErrBroken
// when the report cannot be mapped.
func (m Mapper) Observe(obs Observable, r *Report, relations []Relation, limit int) (Entities, error) {
	o, err := m.observation(obs, r, relations, limit)
	if err != nil {
		return Entities{}, err
	}
	return m.entities(o, false), nil
}

// observation maps what Observe maps, but for the transient ids.
func (m Mapper) observation(obs Observable, r *Report, relations []Relation, limit int) (*Observation, error) {
	a, err := assess(r)
	if err != nil {
		return nil, err
	}
	threats, err := sortedByLink(r.Threats, func(t Threat) string { return t.StampLinked })
	if err != nil {
		return nil, fmt.Errorf("threat stamp_linked: %w", err)
	}
	feeds, err := sortedByLink(r.Feeds, func(f Feed) string { return f.StampLinked })
	if err != nil {
		return nil, fmt.Errorf("feed stamp_linked: %w", err)
	}

	if limit > 0 && len(relations) > limit {
		relations = relations[:limit]
	}
	total := len(r.RiskFactors) + len(threats) + len(feeds)
	if len(relations) > 0 {
		total++
	}
	if limit < 1 {
		limit = total
	}
	o := &Observation{
		judgement: Judgement{
			Type:            "judgement",
			Observable:      obs,
			Disposition:     a.row.disposition,
			DispositionName: a.row.dispositionName,
			Severity:        a.row.severity,
			ValidTime:       a.validTime,
			SourceURI:       a.pageURI,
			Reason:          reason(r),
			ReasonURI:       a.pageURI,
			Source:          Source,
			Confidence:      "Medium",
			Priority:        85,
			TLP:             "white",
			SchemaVersion:   SchemaVersion,
		},
		indicators:    make([]Indicator, 0, min(limit, total)),
		sightings:     make([]Sighting, 0, min(limit, total)),
		relationships: make([]Relationship, 0, min(limit, total)),
	}
	if m.current(a.end) {
		v := verdict(obs, a)
		o.verdict = &v
		o.until = a.end
	}
	// Each risk factor, threat and feed gives an indicator and a sighting
	// of it, in the same order, so both lists stop at the same place. Past
	// it, entries are still checked (a broken one breaks the document) but
	// no longer mapped.
	full := func() bool { return len(o.sightings) >= limit }
	add := func(ind Indicator, s Sighting, relType string) {
		o.indicators = append(o.indicators, ind)
		o.sightings = append(o.sightings, s)
		o.relationships = append(o.relationships, Relationship{
			Type:             "relationship",
			RelationshipType: relType,
			TargetRef:        ind.ID,
			TLP:              "white",
			SchemaVersion:    SchemaVersion,
		})
	}

	for _, rf := range r.RiskFactors {
		if rf.Description == "" {
			return nil, fmt.Errorf("%w: risk factor without description", ErrBroken)
		}
		if full() {
			continue
		}
		ind := newIndicator(IndicatorID(rf.Description), rf.Description, "Pulsedive")
		ind.ValidTime = a.validTime
		add(ind, a.sighting(obs, rf.Description, a.seen, a.row.severity, a.pageURI), "sighting-of")
	}

	names := kindNames{riskFactors: r.RiskFactors, threats: threats}
	lists := newOneLists(min(limit-len(o.sightings), len(threats)+len(feeds)))
	for _, t := range threats {
		if t.Name == "" || t.TID == "" {
			return nil, fmt.Errorf("%w: threat without name or tid", ErrBroken)
		}
		if full() {
			continue
		}
		uri, err := page("/threat/?tid=", t.TID)
		if err != nil {
			return nil, fmt.Errorf("threat: %w", err)
		}
		title := "Threat: " + t.Name
		linked := mustCTIM(t.StampLinked)
		id := IndicatorID(t.Name)
		if names.riskFactor(t.Name) {
			id = kindIndicatorID("threat", t.Name)
		}
		ind := newIndicator(id, title, "Pulsedive")
		ind.ValidTime = ValidTime{StartTime: linked}
		ind.Tags = lists.tags(t.Category)
		ind.Severity = a.threatRow.severity
		ind.SourceURI = uri
		ind.ExternalIDs, ind.ExternalReferences = lists.external("pulsedive-threat-", t.TID, uri)
		add(ind, a.sighting(obs, title, linked, a.row.severity, uri), "sighting-of")
	}
	for _, f := range feeds {
		if f.Name == "" || f.FID == "" {
			return nil, fmt.Errorf("%w: feed without name or fid", ErrBroken)
		}
		if full() {
			continue
		}
		uri, err := page("/feed/?fid=", f.FID)
		if err != nil {
			return nil, fmt.Errorf("feed: %w", err)
		}
		title := feedTitle(f.Name)
		linked := mustCTIM(f.StampLinked)
		id := IndicatorID(f.Name)
		if names.riskFactor(f.Name) || names.threat(f.Name) {
			id = kindIndicatorID("feed", f.Name)
		}
		producer := f.Organization
		if producer == "" {
			producer = "Pulsedive"
		}
		ind := newIndicator(id, title, producer)
		ind.ValidTime = ValidTime{StartTime: linked}
		ind.Tags = lists.tags(f.Category)
		ind.SourceURI = uri
		ind.ExternalIDs, ind.ExternalReferences = lists.external("pulsedive-feed-", f.FID, uri)
		add(ind, a.sighting(obs, title, linked, "", uri), "member-of")
	}
	if len(relations) > 0 && !full() {
		s := a.sighting(obs, "Active DNS", a.seen, "", a.pageURI)
		s.Relations = relations
		o.sightings = append(o.sightings, s)
	}
	return o, nil
}

// feedTitle is "Feed: " and the feed's name with every "Feed" removed
// (ZeroDot1's Bad IPs Feed → "Feed: ZeroDot1's Bad IPs ", the trailing space
// kept, as the original relay wrote it); a name that is nothing but "Feed"
// and blanks keeps its name, so no feed is titled "Feed: " alone.
func feedTitle(name string) string {
	stripped := strings.ReplaceAll(name, "Feed", "")
	if strings.TrimSpace(stripped) == "" {
		stripped = name
	}
	return "Feed: " + stripped
}

func (a assessment) sighting(obs Observable, description, at, severity, uri string) Sighting {
	return Sighting{
		Type:          "sighting",
		Source:        Source,
		TLP:           "white",
		Confidence:    "Medium",
		Count:         1,
		SchemaVersion: SchemaVersion,
		Observables:   []Observable{obs},
		ObservedTime:  ObservedTime{StartTime: at, EndTime: at},
		Description:   cut(description, longString),
		Severity:      severity,
		SourceURI:     uri,
	}
}

// newIndicator builds the fields every indicator shares: title doubles as
// short_description, both within CTIM's limit for titles.
func newIndicator(id, title, producer string) Indicator {
	title = cut(title, shortString)
	return Indicator{
		ID:               id,
		Type:             "indicator",
		Source:           Source,
		TLP:              "white",
		SchemaVersion:    SchemaVersion,
		Title:            title,
		ShortDescription: title,
		Producer:         cut(producer, shortString),
	}
}

// IndicatorID is the deterministic id of the indicator named name:
// "transient:indicator-" and the UUID version 5 of name in the X.500
// namespace, so the same risk factor, threat or feed has the same id in
// every answer.
func IndicatorID(name string) string {
	return prefixedUUID5("transient:indicator-", namespaceX500, "", name)
}

// kindIndicatorID is the id of a threat or feed whose name an earlier kind
// of the same observable also bears: the UUID version 5 of "<kind>:<name>",
// so each sighting points at its own indicator (CONTRACT.md section 4b).
func kindIndicatorID(kind, name string) string {
	return prefixedUUID5("transient:indicator-", namespaceX500, kind, name)
}

// kindNames tells whether an earlier kind of the same report bears a name,
// for the indicator-id rule. Reports hold a handful of names, which it
// scans; when they hold many it hashes each kind once, so a document of
// thousands costs one pass.
type kindNames struct {
	riskFactors []RiskFactor
	threats     []Threat

	riskFactorSet, threatSet map[string]struct{}
}

// scanNames is how many names kindNames scans before it hashes them.
const scanNames = 32

func (k *kindNames) riskFactor(name string) bool {
	if len(k.riskFactors) <= scanNames {
		for _, rf := range k.riskFactors {
			if rf.Description == name {
				return true
			}
		}
		return false
	}
	if k.riskFactorSet == nil {
		k.riskFactorSet = make(map[string]struct{}, len(k.riskFactors))
		for _, rf := range k.riskFactors {
			k.riskFactorSet[rf.Description] = struct{}{}
		}
	}
	_, ok := k.riskFactorSet[name]
	return ok
}

func (k *kindNames) threat(name string) bool {
	if len(k.threats) <= scanNames {
		for _, t := range k.threats {
			if t.Name == name {
				return true
			}
		}
		return false
	}
	if k.threatSet == nil {
		k.threatSet = make(map[string]struct{}, len(k.threats))
		for _, t := range k.threats {
			k.threatSet[t.Name] = struct{}{}
		}
	}
	_, ok := k.threatSet[name]
	return ok
}

// oneLists hands out the one-entry lists of threat and feed indicators
// (tags, external_ids, external_references) from backing arrays sized once
// per observable: three allocations for the lot instead of three per
// indicator. Each list is capped at its one entry, so appending to it
// cannot touch its neighbour's.
type oneLists struct {
	strings []string
	refs    []ExternalReference
}

func newOneLists(n int) oneLists {
	if n <= 0 {
		return oneLists{}
	}
	return oneLists{strings: make([]string, 0, 2*n), refs: make([]ExternalReference, 0, n)}
}

func (l *oneLists) one(s string) []string {
	l.strings = append(l.strings, s)
	n := len(l.strings)
	return l.strings[n-1 : n : n]
}

// tags is [category] within CTIM's limit, or nil for an empty category: an
// empty Pulsedive string makes no empty CTIM string (CONTRACT.md section 4b).
func (l *oneLists) tags(category string) []string {
	if category == "" {
		return nil
	}
	return l.one(cut(category, shortString))
}

// external is the pivot on Pulsedive's record of a threat or feed:
// ["pulsedive-<kind>-<id>"] and a reference to its page, the raw id beside
// the page's escaped one.
func (l *oneLists) external(prefix, id, uri string) ([]string, []ExternalReference) {
	ids := l.one(prefix + id)
	l.refs = append(l.refs, ExternalReference{SourceName: Source, URL: uri, ExternalID: id})
	n := len(l.refs)
	return ids, l.refs[n-1 : n : n]
}

// cut returns s cut to at most n Unicode code points.
func cut(s string, n int) string {
	if len(s) <= n { // never more code points than bytes
		return s
	}
	i := 0
	for at := range s {
		if i == n {
			return s[:at]
		}
		i++
	}
	return s
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

// parseStamp reads a Pulsedive time; a missing or unreadable one, or one
// outside the years CTIM can carry, is ErrBroken.
func parseStamp(s string) (time.Time, error) {
	t, err := time.Parse(pulsediveLayout, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("%w: time %q is not YYYY-MM-DD HH:MM:SS", ErrBroken, s)
	}
	if t.Before(earliestStamp) || !t.Before(latestStamp) {
		return time.Time{}, fmt.Errorf("%w: time %q is out of CTIM's range", ErrBroken, s)
	}
	return t, nil
}

// mustCTIM rewrites a stamp already checked by parseStamp in CTIM form.
func mustCTIM(s string) string {
	t, _ := time.Parse(pulsediveLayout, s)
	return t.Format(ctimLayout)
}
