package ctim

import (
	"cmp"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/pulsedive-relay/relay/pulsedive"
)

// This file is the mapping of CONTRACT.md section 4, read from the
// documents as pulsedive decodes them: assess reads what every entity of
// an indicator shares, then each source of the document (risk factors,
// threats, feeds, Active DNS links) has its helper below observation.

// ErrBroken means a Pulsedive document lacks a field the mapping needs (or
// holds one it cannot read): the contract's "key error".
var ErrBroken = errors.New("ctim: Pulsedive document lacks a field the mapping needs")

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

// Mapper maps Pulsedive's documents to CTIM. Now must be set.
//
// The clock and the id generator are fields, not calls to time.Now and a
// random source, so that a test fixes them: the valid times, the 90-day
// Active DNS window and the transient ids of an answer are then the same
// on every run, which the golden answers need.
type Mapper struct {
	// Now is the answer's clock: it decides which verdicts are still
	// current and which Active DNS links are recent (90 days).
	Now func() time.Time
	// NewID returns a fresh UUID in text form for judgements, sightings
	// and relationships; nil means random (version 4) UUIDs.
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

// The values of CONTRACT.md section 4 that every entity of their kind
// carries.
const (
	tlp        = "white"  // every entity
	confidence = "Medium" // judgements and sightings
	priority   = 85       // judgements

	// An Active DNS link is a relation of the Active DNS sighting.
	activeDNSDescription = "Active DNS"
	resolvedTo           = "Resolved_To"
	relationOrigin       = "Pulsedive Enrichment Module"

	// A sighting of a risk factor or a threat is a sighting of its
	// indicator; a sighting in a feed makes the observable a member of it.
	sightingOf = "sighting-of"
	memberOf   = "member-of"
)

// The types of the entities, as their "type" fields and transient ids
// name them.
const (
	typeVerdict      = "verdict"
	typeJudgement    = "judgement"
	typeIndicator    = "indicator"
	typeSighting     = "sighting"
	typeRelationship = "relationship"
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

// assessment is what every entity of one indicator shares.
type assessment struct {
	row       riskRow // with the retired rule: verdict, judgement, sightings
	threatRow riskRow // without it: threat indicators
	validTime ValidTime
	end       time.Time // validTime's end, to tell whether the verdict is current
	seen      string    // stamp_seen in CTIM form
	pageURI   string    // the indicator's page in Pulsedive's UI
}

func assess(ind *pulsedive.Indicator) (assessment, error) {
	risk := strings.ToLower(ind.Risk)
	threatRow, ok := riskTable[risk]
	if !ok || ind.IID == "" {
		return assessment{}, fmt.Errorf("%w: risk %q, iid %q", ErrBroken, ind.Risk, ind.IID)
	}
	row := threatRow
	if ind.Retired && risk == "none" {
		row = riskTable["retired"]
	}
	seen, err := parseStamp(ind.StampSeen)
	if err != nil {
		return assessment{}, fmt.Errorf("stamp_seen: %w", err)
	}
	end := seen.Add(validity)
	if ind.StampRetired != "" {
		if end, err = parseStamp(ind.StampRetired); err != nil {
			return assessment{}, fmt.Errorf("stamp_retired: %w", err)
		}
		// Retired before it was seen: CTIM refuses a valid_time that ends
		// before it starts, so it ends where it starts (and has expired).
		if end.Before(seen) {
			end = seen
		}
	}
	pageURI, err := page("/indicator/?iid=", ind.IID)
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
func reason(ind *pulsedive.Indicator) string {
	switch {
	case ind.RetiredReason != "":
		return cut("Pulsedive risk: "+ind.Risk+" (retired: "+ind.RetiredReason+")", shortString)
	case ind.Retired:
		return "Pulsedive risk: " + ind.Risk + " (retired)"
	}
	return "Pulsedive risk: " + ind.Risk
}

// current says whether a validity ending at end still holds at the
// answer's clock. end_time is the first instant the verdict no longer
// holds, so a verdict whose end_time equals the clock has ended: end <= now
// means expired.
func (m Mapper) current(end time.Time) bool {
	return m.Now().Before(end)
}

// Verdict maps an indicator document to the verdict on obs, all deliberate
// needs. current is false when the verdict's valid_time has ended at m.Now:
// the caller leaves such a verdict out (CONTRACT.md section 4b). The verdict
// carries no judgement_id. It fails with ErrBroken when the document cannot
// be mapped.
func (m Mapper) Verdict(obs Observable, ind *pulsedive.Indicator) (v Verdict, current bool, err error) {
	a, err := assess(ind)
	if err != nil {
		return Verdict{}, false, err
	}
	return a.verdict(obs), m.current(a.end), nil
}

func (a assessment) verdict(obs Observable) Verdict {
	return Verdict{
		Type:            typeVerdict,
		Observable:      obs,
		Disposition:     a.row.disposition,
		DispositionName: a.row.dispositionName,
		ValidTime:       a.validTime,
	}
}

func (a assessment) judgement(obs Observable, reason string) Judgement {
	return Judgement{
		Type:            typeJudgement,
		Observable:      obs,
		Disposition:     a.row.disposition,
		DispositionName: a.row.dispositionName,
		Severity:        a.row.severity,
		ValidTime:       a.validTime,
		SourceURI:       a.pageURI,
		Reason:          reason,
		ReasonURI:       a.pageURI,
		Source:          Source,
		Confidence:      confidence,
		Priority:        priority,
		TLP:             tlp,
		SchemaVersion:   SchemaVersion,
	}
}

// relations picks the Active DNS links of the last 90 days (by m.Now)
// whose type pairs with obs: addresses (ip, ipv6) of a domain, domains of
// an address. Each becomes a Resolved_To relation from the domain side to
// the address side. It keeps the first limit relations, in Pulsedive's
// order, and reads no further, so a list of thousands costs no more than
// the limit (a limit below 1 means no cap). No pairing link gives nil. A
// link it reads without a readable stamp_linked or indicator fails with
// ErrBroken. until is the first instant one of the relations kept leaves
// the 90-day window (zero when none is kept): until then, the same links
// give the same relations.
func (m Mapper) relations(obs Observable, links []pulsedive.Link, limit int) (relations []Relation, until time.Time, err error) {
	cutoff := m.Now().Add(-activeDNSWindow)
	for _, l := range links {
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
		rel := Relation{Origin: relationOrigin, Relation: resolvedTo, Source: obs, Related: other}
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

// observation maps an indicator document on obs, with the relations of its
// Active DNS links, to the observation's verdict (nil once expired),
// judgement, indicators, sightings and relationships, all but the transient
// ids. limit caps the indicators and, separately, the sightings (Active DNS
// included) of this observable, and the Active DNS relations;
// relationships follow the sightings kept. A limit below 1 means no cap.
// It fails with ErrBroken when the document cannot be mapped.
func (m Mapper) observation(obs Observable, ind *pulsedive.Indicator, relations []Relation, limit int) (*Observation, error) {
	a, err := assess(ind)
	if err != nil {
		return nil, err
	}
	threats, err := sortedByLink(ind.Threats, func(t pulsedive.Threat) string { return t.StampLinked })
	if err != nil {
		return nil, fmt.Errorf("threat stamp_linked: %w", err)
	}
	feeds, err := sortedByLink(ind.Feeds, func(f pulsedive.Feed) string { return f.StampLinked })
	if err != nil {
		return nil, fmt.Errorf("feed stamp_linked: %w", err)
	}
	if limit > 0 && len(relations) > limit {
		relations = relations[:limit]
	}
	total := len(ind.RiskFactors) + len(threats) + len(feeds)
	if len(relations) > 0 {
		total++
	}
	if limit < 1 {
		limit = total
	}
	b := builder{
		obs:   obs,
		a:     a,
		limit: limit,
		o: &Observation{
			judgement:     a.judgement(obs, reason(ind)),
			indicators:    make([]Indicator, 0, min(limit, total)),
			sightings:     make([]Sighting, 0, min(limit, total)),
			relationships: make([]Relationship, 0, min(limit, total)),
		},
	}
	if m.current(a.end) {
		v := a.verdict(obs)
		b.o.verdict = &v
		b.o.until = a.end
	}
	if err := b.riskFactors(ind.RiskFactors); err != nil {
		return nil, err
	}
	b.lists = newOneLists(min(limit-len(b.o.sightings), len(threats)+len(feeds)))
	if err := b.threats(threats); err != nil {
		return nil, err
	}
	if err := b.feeds(feeds); err != nil {
		return nil, err
	}
	b.activeDNS(relations)
	return b.o, nil
}

// builder fills one observation, source after source. Each risk factor,
// threat and feed gives an indicator and a sighting of it, in the same
// order, so both lists stop at the same place, the limit. Past it, entries
// are still checked (a broken one breaks the document) but no longer
// mapped.
type builder struct {
	obs   Observable
	a     assessment
	limit int
	o     *Observation
	lists oneLists
	// earlier are the names of the kinds mapped so far, for the
	// indicator-id rule.
	earlier struct {
		riskFactors names[pulsedive.RiskFactor]
		threats     names[pulsedive.Threat]
	}
}

func (b *builder) full() bool { return len(b.o.sightings) >= b.limit }

// add appends an indicator, a sighting of it and the relationship between
// them.
func (b *builder) add(ind Indicator, s Sighting, relationshipType string) {
	b.o.indicators = append(b.o.indicators, ind)
	b.o.sightings = append(b.o.sightings, s)
	b.o.relationships = append(b.o.relationships, Relationship{
		Type:             typeRelationship,
		RelationshipType: relationshipType,
		TargetRef:        ind.ID,
		TLP:              tlp,
		SchemaVersion:    SchemaVersion,
	})
}

// riskFactors maps each risk factor to an indicator named by its
// description, valid as the verdict is, and a sighting of it when the
// indicator was seen.
func (b *builder) riskFactors(riskFactors []pulsedive.RiskFactor) error {
	for _, rf := range riskFactors {
		if rf.Description == "" {
			return fmt.Errorf("%w: risk factor without description", ErrBroken)
		}
		if b.full() {
			continue
		}
		ind := newIndicator(indicatorID(rf.Description), rf.Description, Source)
		ind.ValidTime = b.a.validTime
		b.add(ind, b.a.sighting(b.obs, rf.Description, b.a.seen, b.a.row.severity, b.a.pageURI), sightingOf)
	}
	b.earlier.riskFactors = names[pulsedive.RiskFactor]{items: riskFactors, name: func(rf pulsedive.RiskFactor) string { return rf.Description }}
	return nil
}

// threats maps each threat, newest link first, to an indicator rated with
// the observable's risk (the retired rule aside), and a sighting of it
// when it was linked.
func (b *builder) threats(threats []pulsedive.Threat) error {
	for _, t := range threats {
		err := b.linked(&threatKind, linkedEntry{id: t.TID, name: t.Name, category: t.Category, producer: Source, stamp: t.StampLinked})
		if err != nil {
			return err
		}
	}
	b.earlier.threats = names[pulsedive.Threat]{items: threats, name: func(t pulsedive.Threat) string { return t.Name }}
	return nil
}

// feeds maps each feed, newest listing first, to an indicator produced by
// the feed's organization, and a sighting of the observable in it.
func (b *builder) feeds(feeds []pulsedive.Feed) error {
	for _, f := range feeds {
		err := b.linked(&feedKind, linkedEntry{id: f.FID, name: f.Name, category: f.Category, producer: cmp.Or(f.Organization, Source), stamp: f.StampLinked})
		if err != nil {
			return err
		}
	}
	return nil
}

// activeDNS maps the relations of the Active DNS links, when there are any
// and room is left, to one sighting that carries them all.
func (b *builder) activeDNS(relations []Relation) {
	if len(relations) == 0 || b.full() {
		return
	}
	s := b.a.sighting(b.obs, activeDNSDescription, b.a.seen, "", b.a.pageURI)
	s.Relations = relations
	b.o.sightings = append(b.o.sightings, s)
}

// linkKind is what tells threats and feeds apart in the mapping.
type linkKind struct {
	name         string // "threat", "feed"
	idName       string // the field of Pulsedive's id
	pagePath     string // the record's page in Pulsedive's UI, before its id
	idPrefix     string // of the external id, before Pulsedive's id
	relationship string // from the sighting to the indicator
	title        func(name string) string
	// rated kinds carry a severity: the indicator Pulsedive's risk
	// without the retired rule, the sighting with it.
	rated bool
}

var (
	threatKind = linkKind{name: "threat", idName: "tid", pagePath: "/threat/?tid=", idPrefix: "pulsedive-threat-",
		relationship: sightingOf, title: func(name string) string { return "Threat: " + name }, rated: true}
	feedKind = linkKind{name: "feed", idName: "fid", pagePath: "/feed/?fid=", idPrefix: "pulsedive-feed-",
		relationship: memberOf, title: feedTitle}
)

// linkedEntry is a threat or a feed as linked reads it.
type linkedEntry struct {
	id, name, category, producer string
	stamp                        string // stamp_linked, already checked by sortedByLink
}

// linked maps a threat or a feed to its indicator, valid from when it was
// linked and pointing at its record in Pulsedive, and a sighting of it
// then; past the limit, it only checks the entry.
func (b *builder) linked(kind *linkKind, l linkedEntry) error {
	if l.name == "" || l.id == "" {
		return fmt.Errorf("%w: %s without name or %s", ErrBroken, kind.name, kind.idName)
	}
	if b.full() {
		return nil
	}
	uri, err := page(kind.pagePath, l.id)
	if err != nil {
		return fmt.Errorf("%s: %w", kind.name, err)
	}
	title := kind.title(l.name)
	linked := mustCTIM(l.stamp)
	id := indicatorID(l.name)
	if b.earlier.riskFactors.has(l.name) || b.earlier.threats.has(l.name) {
		id = kindIndicatorID(kind.name, l.name)
	}
	ind := newIndicator(id, title, l.producer)
	ind.ValidTime = ValidTime{StartTime: linked}
	ind.Tags = b.lists.tags(l.category)
	ind.SourceURI = uri
	ind.ExternalIDs, ind.ExternalReferences = b.lists.external(kind.idPrefix, l.id, uri)
	s := b.a.sighting(b.obs, title, linked, "", uri)
	if kind.rated {
		ind.Severity = b.a.threatRow.severity
		s.Severity = b.a.row.severity
	}
	b.add(ind, s, kind.relationship)
	return nil
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
		Type:          typeSighting,
		Source:        Source,
		TLP:           tlp,
		Confidence:    confidence,
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
		Type:             typeIndicator,
		Source:           Source,
		TLP:              tlp,
		SchemaVersion:    SchemaVersion,
		Title:            title,
		ShortDescription: title,
		Producer:         cut(producer, shortString),
	}
}

// indicatorPrefix begins every indicator id.
const indicatorPrefix = "transient:" + typeIndicator + "-"

// indicatorID is the deterministic id of the indicator named name:
// "transient:indicator-" and the UUID version 5 of name in the X.500
// namespace, so the same risk factor, threat or feed has the same id in
// every answer.
func indicatorID(name string) string {
	return prefixedUUID5(indicatorPrefix, namespaceX500, "", name)
}

// kindIndicatorID is the id of a threat or feed whose name an earlier kind
// of the same observable also bears: the UUID version 5 of "<kind>:<name>",
// so each sighting points at its own indicator (CONTRACT.md section 4b).
func kindIndicatorID(kind, name string) string {
	return prefixedUUID5(indicatorPrefix, namespaceX500, kind, name)
}

// names tells whether a list of a report bears a name, for the
// indicator-id rule. Reports hold a handful of names, which it scans; when
// they hold many it hashes them once, so a document of thousands costs one
// pass.
type names[T any] struct {
	items []T
	name  func(T) string
	set   map[string]struct{}
}

// scanNames is how many names names scans before it hashes them.
const scanNames = 32

func (n *names[T]) has(name string) bool {
	if len(n.items) <= scanNames {
		for _, it := range n.items {
			if n.name(it) == name {
				return true
			}
		}
		return false
	}
	if n.set == nil {
		n.set = make(map[string]struct{}, len(n.items))
		for _, it := range n.items {
			n.set[n.name(it)] = struct{}{}
		}
	}
	_, ok := n.set[name]
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
// first, keeping the order of equal stamps; the document itself, which may
// be shared through the cache, is never reordered. Every stamp must parse.
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
