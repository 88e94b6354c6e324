// Package ctim holds the CTIM entities the relay answers with and the pure
// mapping from Pulsedive's documents to them (CONTRACT.md sections 4, 4b and
// 5). It does no I/O: the clock and the id generator are passed in.
//
// The mapping reads the documents as package pulsedive decodes them
// (pulsedive.Indicator, pulsedive.Links), the one model of Pulsedive's
// answers; pulsedive is the only package of the relay this one imports
// (TestImportRule, in package pipeline, holds the rule).
package ctim

// Constants of the mapping.
const (
	SchemaVersion = "1.0.22"
	Source        = "Pulsedive"
	UIBase        = "https://pulsedive.com"
)

// Observable is what Threat Response asks about: a type (lower case) and a
// value, as sent.
type Observable struct {
	Type  string `json:"type"`
	Value string `json:"value"`
}

// ValidTime is a CTIM valid_time; EndTime is omitted when empty.
type ValidTime struct {
	StartTime string `json:"start_time"`
	EndTime   string `json:"end_time,omitempty"`
}

// ObservedTime is a CTIM observed_time.
type ObservedTime struct {
	StartTime string `json:"start_time"`
	EndTime   string `json:"end_time"`
}

// Verdict is Pulsedive's current verdict on one observable. JudgementID
// names the judgement of the same observable in the same observe answer;
// deliberate answers have no judgements, so their verdicts carry none.
type Verdict struct {
	Type            string     `json:"type"`
	Observable      Observable `json:"observable"`
	Disposition     int        `json:"disposition"`
	DispositionName string     `json:"disposition_name"`
	ValidTime       ValidTime  `json:"valid_time"`
	JudgementID     string     `json:"judgement_id,omitempty"`
}

// Judgement is Pulsedive's judgement of one observable.
type Judgement struct {
	ID              string     `json:"id"`
	Type            string     `json:"type"`
	Observable      Observable `json:"observable"`
	Disposition     int        `json:"disposition"`
	DispositionName string     `json:"disposition_name"`
	Severity        string     `json:"severity"`
	ValidTime       ValidTime  `json:"valid_time"`
	SourceURI       string     `json:"source_uri"`
	Reason          string     `json:"reason"`
	ReasonURI       string     `json:"reason_uri"`
	Source          string     `json:"source"`
	Confidence      string     `json:"confidence"`
	Priority        int        `json:"priority"`
	TLP             string     `json:"tlp"`
	SchemaVersion   string     `json:"schema_version"`
}

// Indicator is a risk factor, threat or feed; its ID is deterministic.
// Threats and feeds carry Pulsedive's id in ExternalIDs and
// ExternalReferences, for analysts and playbooks to pivot on.
type Indicator struct {
	ID                 string              `json:"id"`
	Type               string              `json:"type"`
	Source             string              `json:"source"`
	TLP                string              `json:"tlp"`
	SchemaVersion      string              `json:"schema_version"`
	Title              string              `json:"title"`
	ShortDescription   string              `json:"short_description"`
	Producer           string              `json:"producer"`
	ValidTime          ValidTime           `json:"valid_time"`
	Tags               []string            `json:"tags,omitempty"`
	Severity           string              `json:"severity,omitempty"`
	SourceURI          string              `json:"source_uri,omitempty"`
	ExternalIDs        []string            `json:"external_ids,omitempty"`
	ExternalReferences []ExternalReference `json:"external_references,omitempty"`
}

// ExternalReference points at the record of an indicator in Pulsedive.
type ExternalReference struct {
	SourceName string `json:"source_name"`
	URL        string `json:"url"`
	ExternalID string `json:"external_id"`
}

// Sighting records that Pulsedive saw the observable with a risk factor,
// threat or feed, or resolving to other addresses (Active DNS).
type Sighting struct {
	ID            string       `json:"id"`
	Type          string       `json:"type"`
	Source        string       `json:"source"`
	TLP           string       `json:"tlp"`
	Confidence    string       `json:"confidence"`
	Count         int          `json:"count"`
	SchemaVersion string       `json:"schema_version"`
	Observables   []Observable `json:"observables"`
	ObservedTime  ObservedTime `json:"observed_time"`
	Description   string       `json:"description"`
	Severity      string       `json:"severity,omitempty"`
	SourceURI     string       `json:"source_uri"`
	Relations     []Relation   `json:"relations,omitempty"`
}

// Relation is one Active DNS resolution: the domain side is Source, the
// address side Related.
type Relation struct {
	Origin   string     `json:"origin"`
	Relation string     `json:"relation"`
	Source   Observable `json:"source"`
	Related  Observable `json:"related"`
}

// Relationship ties a sighting to its indicator.
type Relationship struct {
	ID               string `json:"id"`
	Type             string `json:"type"`
	RelationshipType string `json:"relationship_type"`
	SourceRef        string `json:"source_ref"`
	TargetRef        string `json:"target_ref"`
	TLP              string `json:"tlp"`
	SchemaVersion    string `json:"schema_version"`
}

// Reference is a refer pivot back to Pulsedive's UI.
type Reference struct {
	ID          string   `json:"id"`
	Title       string   `json:"title"`
	Description string   `json:"description"`
	URL         string   `json:"url"`
	Categories  []string `json:"categories"`
}

// Supported reports whether the relay handles observables of this
// (lower-case) type.
func Supported(typ string) bool {
	for _, t := range types {
		if t == typ {
			return true
		}
	}
	return false
}

// Types lists the supported observable types, lower case. The slice is
// the package's own, handed out without a copy for the body parser's sake:
// callers read it and never change it.
func Types() []string { return types[:] }

// types are the supported observable types; typeLabels names each.
var types = [...]string{"ip", "ipv6", "domain", "url"}

// typeLabels name each supported type in titles and descriptions.
var typeLabels = map[string]string{
	"ip":     "IP",
	"ipv6":   "IPv6",
	"domain": "domain",
	"url":    "URL",
}
