// Package ctimcheck checks an observe or deliberate answer of the relay
// against Cisco's CTIM schemas (github.com/threatgrid/ctim,
// src/ctim/schemas/*.cljc), the way CTIA and Threat Response read them:
// closed and required keys, vocabularies, string limits, id and URI shapes,
// times and their order, references resolving within the answer, and
// counts matching docs. Each rule cites the schema it comes from.
//
// Only tests import it (TestImportRule holds that): the relay never checks
// its own answers at run time, the tests prove the mapping keeps to CTIM.
//
// Where a ctim vocabulary is open or long and the relay writes only a few
// of its values (observable types, observed-relation types), the checker
// accepts those few: stricter than CTIM, so a new value is a decision.
// Schema entries the relay never writes are accepted by name and their
// values checked loosely.
package ctimcheck

import (
	"bytes"
	"cmp"
	"encoding/json"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// The rules a Problem names.
const (
	RuleJSON         = "json"          // the answer is one JSON object
	RuleShape        = "shape"         // a value of the wrong JSON type
	RuleClosedKeys   = "closed-keys"   // a key the schema does not have
	RuleRequiredKeys = "required-keys" // a key the schema requires is missing
	RuleVocabulary   = "vocabulary"    // a value outside its vocabulary
	RuleStringLimit  = "string-limit"  // a string longer than its limit
	RuleIDShape      = "id-shape"      // an id or reference that is not one
	RuleURIShape     = "uri-shape"     // a URI that is not one
	RuleTime         = "time"          // a time that is not a CTIM time
	RuleTimeOrder    = "time-order"    // a time range ending before it starts
	RuleDisposition  = "disposition"   // disposition and its name disagree
	RuleCurrent      = "current"       // a verdict whose valid_time has ended
	RuleRefResolves  = "ref-resolves"  // a reference naming nothing in the answer
	RuleUniqueID     = "unique-id"     // two entities with one id
	RuleCount        = "count"         // a count that is not its docs' length
)

// Problem is one departure from CTIM: the rule, where, and what.
type Problem struct {
	Rule   string
	Path   string // e.g. data.indicators.docs[3].title
	Detail string
}

func (p Problem) String() string { return p.Path + ": " + p.Rule + ": " + p.Detail }

// Options tune a check.
type Options struct {
	// Now is the answer's clock: every verdict must still be current at it.
	// The zero time skips that rule.
	Now time.Time
}

// Check decodes an answer ({"data": ..., "errors": ...}) and checks it.
// It returns nil when the answer keeps to CTIM.
func Check(body []byte, o Options) []Problem {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return []Problem{{RuleJSON, "", err.Error()}}
	}
	if dec.More() {
		return []Problem{{RuleJSON, "", "more than one JSON value"}}
	}
	return CheckValue(v, o)
}

// CheckValue checks an answer already decoded by encoding/json (numbers as
// float64 or json.Number).
func CheckValue(answer any, o Options) []Problem {
	c := &checker{opts: o, ids: map[string]string{}, seen: map[string]map[string]any{}}
	c.answer(answer)
	return c.problems
}

type checker struct {
	opts     Options
	problems []Problem
	ids      map[string]string         // entity id → its path, for uniqueness and refs
	seen     map[string]map[string]any // every object checked, by path
	refs     []pendingRef
	verdicts []map[string]any
	vpaths   []string
}

// pendingRef is a reference checked once every entity's id is known.
type pendingRef struct {
	path, id string
}

func (c *checker) fail(rule, path, format string, args ...any) {
	c.problems = append(c.problems, Problem{rule, path, fmt.Sprintf(format, args...)})
}

// asString is v when it is a string; otherwise it reports the shape at
// path.
func (c *checker) asString(path string, v any) (string, bool) {
	s, ok := v.(string)
	if !ok {
		c.fail(RuleShape, path, "%s, not a string", jsonType(v))
	}
	return s, ok
}

// entityLists are the keys of an answer's data, each a {count, docs} list
// of one kind of entity (CONTRACT.md section 4: keys only when non-empty).
var entityLists = []struct {
	key    string
	schema *schema
}{
	{"verdicts", verdictSchema},
	{"judgements", judgementSchema},
	{"indicators", indicatorSchema},
	{"sightings", sightingSchema},
	{"relationships", relationshipSchema},
}

func (c *checker) answer(v any) {
	top, ok := v.(map[string]any)
	if !ok {
		c.fail(RuleShape, "", "the answer is %s, not an object", jsonType(v))
		return
	}
	// The relay contract (CONTRACT.md section 2): data beside errors.
	for k := range top {
		if k != "data" && k != "errors" {
			c.fail(RuleClosedKeys, k, "the answer has data and errors only")
		}
	}
	data, has := top["data"]
	if !has {
		return
	}
	obj, ok := data.(map[string]any)
	if !ok {
		c.fail(RuleShape, "data", "data is %s, not an object", jsonType(data))
		return
	}
	known := map[string]bool{}
	for _, l := range entityLists {
		known[l.key] = true
	}
	for k := range obj {
		if !known[k] {
			c.fail(RuleClosedKeys, "data."+k, "not a CTIM entity list of an observe answer")
		}
	}
	for _, l := range entityLists {
		if list, has := obj[l.key]; has {
			c.list("data."+l.key, list, l.schema)
		}
	}
	c.resolve()
}

// list checks a {count, docs} list: the count is the docs' length, and a
// list is only there when it holds something.
func (c *checker) list(path string, v any, s *schema) {
	obj, ok := v.(map[string]any)
	if !ok {
		c.fail(RuleShape, path, "%s, not a {count, docs} object", jsonType(v))
		return
	}
	for k := range obj {
		if k != "count" && k != "docs" {
			c.fail(RuleClosedKeys, path+"."+k, "a list has count and docs only")
		}
	}
	docs, ok := obj["docs"].([]any)
	if !ok {
		c.fail(RuleRequiredKeys, path+".docs", "missing or not a list")
		return
	}
	count, ok := integer(obj["count"])
	switch {
	case !ok:
		c.fail(RuleRequiredKeys, path+".count", "missing or not an integer")
	case count != int64(len(docs)):
		c.fail(RuleCount, path+".count", "count %d, %d docs", count, len(docs))
	}
	if len(docs) == 0 {
		c.fail(RuleCount, path+".docs", "an empty list is left out of the answer")
	}
	for i, d := range docs {
		p := fmt.Sprintf("%s.docs[%d]", path, i)
		doc := c.object(p, d, s)
		if doc == nil {
			continue
		}
		if id, ok := doc["id"].(string); ok {
			if prev, dup := c.ids[id]; dup {
				c.fail(RuleUniqueID, p+".id", "%s is also the id of %s", id, prev)
			} else {
				c.ids[id] = p
			}
		}
		if s == verdictSchema {
			c.verdicts = append(c.verdicts, doc)
			c.vpaths = append(c.vpaths, p)
		}
	}
}

// resolve checks the references once every id of the answer is known:
// relationships point at entities of the answer, and each verdict's
// judgement_id at the judgement of the same observable, whose disposition
// the verdict is (verdict.cljc, Verdict: "chosen from all of the
// Judgements on that Observable").
func (c *checker) resolve() {
	for _, r := range c.refs {
		if _, ok := c.ids[r.id]; !ok {
			c.fail(RuleRefResolves, r.path, "%q names no entity of the answer", r.id)
		}
	}
	for i, v := range c.verdicts {
		id, ok := v["judgement_id"].(string)
		if !ok {
			continue
		}
		at, ok := c.ids[id]
		if !ok || !strings.Contains(at, ".judgements.") {
			continue // reported with the refs
		}
		j := c.seen[at]
		if j == nil {
			continue
		}
		if !equalJSON(j["observable"], v["observable"]) {
			c.fail(RuleRefResolves, c.vpaths[i]+".judgement_id", "names the judgement of another observable")
		}
		if !equalJSON(j["disposition"], v["disposition"]) {
			c.fail(RuleDisposition, c.vpaths[i]+".disposition", "differs from its judgement's")
		}
	}
}

// object checks v against s and returns it, or nil when it is no object.
func (c *checker) object(path string, v any, s *schema) map[string]any {
	obj, ok := v.(map[string]any)
	if !ok {
		c.fail(RuleShape, path, "%s, not a %s object", jsonType(v), s.name)
		return nil
	}
	c.seen[path] = obj
	keys := make([]string, 0, len(obj))
	for k := range obj {
		keys = append(keys, k)
	}
	slices.Sort(keys) // problems in a stable order
	for _, k := range keys {
		f, ok := s.fields[k]
		if !ok {
			c.fail(RuleClosedKeys, path+"."+k, "%s (%s) has no key %q", s.name, s.source, k)
			continue
		}
		f.check(c, path+"."+k, obj[k])
	}
	for _, k := range s.order {
		if _, has := obj[k]; !has && s.fields[k].required {
			c.fail(RuleRequiredKeys, path+"."+k, "%s (%s) requires %q", s.name, s.source, k)
		}
	}
	if s.whole != nil {
		s.whole(c, path, obj)
	}
	return obj
}

// A field is one entry of a schema: required or not, and how to check its
// value.
type field struct {
	required bool
	check    func(c *checker, path string, v any)
}

// A schema is a closed map type of ctim: its entries, and the checks that
// span several of them.
type schema struct {
	name, source string
	fields       map[string]field
	order        []string // fields in a stable order, for messages
	whole        func(c *checker, path string, obj map[string]any)
}

func newSchema(name, source string, groups ...[]entry) *schema {
	s := &schema{name: name, source: source, fields: map[string]field{}}
	for _, g := range groups {
		for _, e := range g {
			s.fields[e.key] = field{e.required, e.check}
			s.order = append(s.order, e.key)
		}
	}
	return s
}

// withWhole gives s a check spanning several of its entries.
func withWhole(s *schema, whole func(c *checker, path string, obj map[string]any)) *schema {
	s.whole = whole
	return s
}

type entry struct {
	key      string
	required bool
	check    func(c *checker, path string, v any)
}

func req(key string, check func(*checker, string, any)) entry { return entry{key, true, check} }
func opt(key string, check func(*checker, string, any)) entry { return entry{key, false, check} }

// String limits, in Unicode code points: common.cljc, ShortString (1024),
// MedString (2048), LongString and Markdown (5000); f/any-str has none.
const (
	shortString = 1024
	medString   = 2048
	longString  = 5000
	// ID, Reference and URI are at most 2048 long (common.cljc, ID,
	// Reference, URI: pred/max-len 2048).
	maxIDOrURI = 2048
)

func str(limit int) func(*checker, string, any) {
	return func(c *checker, path string, v any) {
		s, ok := c.asString(path, v)
		if !ok {
			return
		}
		if n := utf8.RuneCountInString(s); limit > 0 && n > limit {
			c.fail(RuleStringLimit, path, "%d characters, at most %d", n, limit)
		}
	}
}

var anyString = str(0)

func strList(limit int) func(*checker, string, any) {
	return listOf(str(limit))
}

func listOf(each func(*checker, string, any)) func(*checker, string, any) {
	return func(c *checker, path string, v any) {
		list, ok := v.([]any)
		if !ok {
			c.fail(RuleShape, path, "%s, not a list", jsonType(v))
			return
		}
		for i, item := range list {
			each(c, fmt.Sprintf("%s[%d]", path, i), item)
		}
	}
}

func objectOf(s *schema) func(*checker, string, any) {
	return func(c *checker, path string, v any) { c.object(path, v, s) }
}

// loose accepts any value of an entry the relay never writes.
func loose(*checker, string, any) {}

func boolean(c *checker, path string, v any) {
	if _, ok := v.(bool); !ok {
		c.fail(RuleShape, path, "%s, not a boolean", jsonType(v))
	}
}

func enum(vocabulary string, values ...string) func(*checker, string, any) {
	return func(c *checker, path string, v any) {
		s, ok := c.asString(path, v)
		if !ok {
			return
		}
		if !slices.Contains(values, s) {
			c.fail(RuleVocabulary, path, "%q is not in %s", s, vocabulary)
		}
	}
}

func eq(want string) func(*checker, string, any) {
	return enum("the fixed value "+strconv.Quote(want), want)
}

// intIn checks an integer within [lo, hi].
func intIn(lo, hi int64) func(*checker, string, any) {
	return func(c *checker, path string, v any) {
		n, ok := integer(v)
		if !ok {
			c.fail(RuleShape, path, "%v is not an integer", v)
			return
		}
		if n < lo || n > hi {
			c.fail(RuleVocabulary, path, "%d is not within %d..%d", n, lo, hi)
		}
	}
}

// Vocabularies.
var (
	// common.cljc, TLP.
	tlp = enum("TLP", "red", "amber", "green", "white")
	// vocabularies.cljc, HighMedLow.
	highMedLow = enum("HighMedLow", "Info", "Low", "Medium", "High", "None", "Unknown")
	// vocabularies.cljc, Severity.
	severity = enum("Severity", "Info", "Low", "Medium", "High", "None", "Unknown", "Critical")
	// vocabularies.cljc, RelationshipType (open: these are the suggested values).
	relationshipType = enum("RelationshipType", "attributed-to", "based-on", "derived-from", "detects",
		"duplicate-of", "element-of", "exploits", "indicates", "member-of", "mitigates", "related-to",
		"sighting-of", "subtechnique-of", "targets", "technique-of", "uses", "variant-of", "phase-of", "task-of")
	// vocabularies.cljc, ObservableTypeIdentifier: of its sixty-odd types the
	// relay maps these four.
	observableType = enum("the ObservableTypeIdentifier values the relay maps", "ip", "ipv6", "domain", "url")
	// common.cljc, ObservableRelationType (open): the relay writes Active DNS
	// resolutions only.
	relationType = enum("the ObservableRelationType values the relay writes", "Resolved_To")
)

// dispositions is common.cljc's disposition-map: DispositionNumber and
// DispositionName are its keys and values, and a judgement's pair must
// agree (common.cljc, determine-disposition-id: "Mismatching :disposition
// and disposition_name").
var dispositions = map[int64]string{1: "Clean", 2: "Malicious", 3: "Suspicious", 4: "Common", 5: "Unknown"}

func dispositionNumber(c *checker, path string, v any) {
	n, ok := integer(v)
	if !ok {
		c.fail(RuleShape, path, "%v is not an integer", v)
		return
	}
	if _, ok := dispositions[n]; !ok {
		c.fail(RuleVocabulary, path, "%d is not a DispositionNumber (1..5)", n)
	}
}

var dispositionName = enum("DispositionName", "Clean", "Malicious", "Suspicious", "Common", "Unknown")

func dispositionsAgree(c *checker, path string, obj map[string]any) {
	n, ok := integer(obj["disposition"])
	name, named := obj["disposition_name"].(string)
	want, known := dispositions[n]
	// Values outside the vocabularies are reported as such, not twice.
	if ok && named && known && name != want && slices.Contains(slices.Collect(maps.Values(dispositions)), name) {
		c.fail(RuleDisposition, path+".disposition_name", "%q does not name disposition %d (%s)", name, n, want)
	}
}

// schemaVersion: common.cljc, SchemaVersion (spec ::ctim-schema-version,
// \w+.\w+\.\w+(-SNAPSHOT)?).
var schemaVersionRE = regexp.MustCompile(`^\w+.\w+\.\w+(-SNAPSHOT)?$`)

func schemaVersion(c *checker, path string, v any) {
	s, ok := c.asString(path, v)
	if !ok {
		return
	}
	if !schemaVersionRE.MatchString(s) {
		c.fail(RuleVocabulary, path, "%q is not a CTIM schema version", s)
	}
}

// Ids. common.cljc, ID and Reference: at most 2048 long, either a long id
// (:ctim.domain.id/long-id: a CTIA URL ending in a short id) or a transient
// id (:ctim.domain.id/transient-id, which CTIA replaces when it stores the
// entity). ctim.domain.id's short-id-pattern is "<type>-<uuid>"; the relay
// writes its transient ids as "transient:" and a short id, and the checker
// holds them to that shape, which also tells the type an id names.
var (
	uuidPart    = `[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}`
	transientRE = regexp.MustCompile(`^transient:([a-z][-a-z]+)-` + uuidPart + `$`)
	// ctim.domain.id, url-pattern followed by short-id-pattern.
	longIDRE = regexp.MustCompile(`^https?://[-\da-zA-Z][-\da-zA-Z.]*(:\d+)?(/[-\w.]+)*/ctia/([a-z]+)/([a-z][-a-z]+)-` + uuidPart + `$`)
)

// idType returns the type an id names, or "" when it is no CTIM id.
func idType(id string) string {
	if len(id) > maxIDOrURI {
		return ""
	}
	if m := transientRE.FindStringSubmatch(id); m != nil {
		return m[1]
	}
	if m := longIDRE.FindStringSubmatch(id); m != nil {
		return m[4]
	}
	return ""
}

// entityID checks the id of an entity of type typ: an ID of that type.
func entityID(typ string) func(*checker, string, any) {
	return func(c *checker, path string, v any) {
		s, ok := c.asString(path, v)
		if !ok {
			return
		}
		if got := idType(s); got != typ {
			c.fail(RuleIDShape, path, "%q is not the id of a %s (transient:%s-<uuid>)", s, typ, typ)
		}
	}
}

// reference checks a Reference (of typ when set: relationship.cljc,
// JudgementReference for a verdict's judgement_id) and records it, to be
// resolved against the answer's ids.
func reference(typ string) func(*checker, string, any) {
	return func(c *checker, path string, v any) {
		s, ok := c.asString(path, v)
		if !ok {
			return
		}
		if got := idType(s); got == "" || typ != "" && got != typ {
			c.fail(RuleIDShape, path, "%q is not a reference to a %s", s, cmp.Or(typ, "CTIM entity"))
			return
		}
		c.refs = append(c.refs, pendingRef{path, s})
	}
}

// uri checks common.cljc's URI: at most 2048 long, and something
// java.net.URI/create accepts. This checks RFC 3986's characters (ASCII
// only, stricter than Java, which lets other characters through) and an
// absolute URI's scheme.
func uri(c *checker, path string, v any) {
	s, ok := c.asString(path, v)
	if !ok {
		return
	}
	if problem := uriProblem(s); problem != "" {
		c.fail(RuleURIShape, path, "%q: %s", s, problem)
	}
}

func uriProblem(s string) string {
	if len(s) > maxIDOrURI {
		return fmt.Sprintf("%d long, at most %d", len(s), maxIDOrURI)
	}
	colon := strings.IndexByte(s, ':')
	if colon < 1 || !isScheme(s[:colon]) {
		return "no scheme"
	}
	for i := 0; i < len(s); i++ {
		ch := s[i]
		switch {
		case ch == '%':
			if i+2 >= len(s) || !isHex(s[i+1]) || !isHex(s[i+2]) {
				return "a % that escapes nothing"
			}
		case ch >= 0x80, ch <= ' ', !strings.ContainsRune(uriChars, rune(ch)) && !isAlnum(ch):
			return fmt.Sprintf("character %q outside a URI", ch)
		}
	}
	return ""
}

// uriChars are RFC 3986's unreserved and reserved characters but letters
// and digits.
const uriChars = "-._~:/?#[]@!$&'()*+,;="

// isScheme: a letter, then letters, digits, "+", "." or "-".
func isScheme(s string) bool {
	for i := 0; i < len(s); i++ {
		ch := s[i]
		letter := 'a' <= ch && ch <= 'z' || 'A' <= ch && ch <= 'Z'
		if i == 0 && !letter || i > 0 && !isAlnum(ch) && !strings.ContainsRune("+.-", rune(ch)) {
			return false
		}
	}
	return true
}

func isAlnum(ch byte) bool {
	return 'a' <= ch && ch <= 'z' || 'A' <= ch && ch <= 'Z' || '0' <= ch && ch <= '9'
}

func isHex(ch byte) bool {
	return '0' <= ch && ch <= '9' || 'a' <= ch && ch <= 'f' || 'A' <= ch && ch <= 'F'
}

// CTIM times (common.cljc, Time): ISO 8601, within ::relevant-time, from
// 1970 to 2525.
var (
	earliest = time.Date(1970, time.January, 1, 0, 0, 0, 0, time.UTC)
	latest   = time.Date(2525, time.January, 1, 0, 0, 0, 0, time.UTC)
)

func ctimTime(c *checker, path string, v any) {
	s, ok := c.asString(path, v)
	if !ok {
		return
	}
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		c.fail(RuleTime, path, "%q is not an ISO 8601 time", s)
		return
	}
	if t.Before(earliest) || !t.Before(latest) {
		c.fail(RuleTime, path, "%q is outside 1970..2525", s)
	}
}

// timeOrder checks a range's start_time <= end_time: common.cljc,
// ValidTime and ObservedTime (:spec (<= start_time end_time)).
func timeOrder(c *checker, path string, obj map[string]any) {
	start, hasStart := obj["start_time"].(string)
	end, hasEnd := obj["end_time"].(string)
	if !hasStart || !hasEnd {
		return
	}
	s, err1 := time.Parse(time.RFC3339, start)
	e, err2 := time.Parse(time.RFC3339, end)
	if err1 == nil && err2 == nil && e.Before(s) {
		c.fail(RuleTimeOrder, path, "ends at %s, before it starts at %s", end, start)
	}
}

// The schemas.
var (
	// common.cljc, Observable.
	observableSchema = newSchema("Observable", "common.cljc", []entry{
		req("value", anyString),
		req("type", observableType),
	})
	// common.cljc, ValidTime: both ends optional.
	validTimeSchema = withWhole(newSchema("ValidTime", "common.cljc", []entry{
		opt("start_time", ctimTime),
		opt("end_time", ctimTime),
	}), timeOrder)
	// common.cljc, ObservedTime: start_time required.
	observedTimeSchema = withWhole(newSchema("ObservedTime", "common.cljc", []entry{
		req("start_time", ctimTime),
		opt("end_time", ctimTime),
	}), timeOrder)
	// common.cljc, ExternalReference.
	externalReferenceSchema = newSchema("ExternalReference", "common.cljc", []entry{
		req("source_name", str(medString)),
		opt("description", str(longString)),
		opt("url", uri),
		opt("hashes", strList(0)),
		opt("external_id", anyString),
	})
	// common.cljc, ObservedRelation.
	observedRelationSchema = newSchema("ObservedRelation", "common.cljc", []entry{
		req("origin", anyString),
		opt("origin_uri", uri),
		req("relation", relationType),
		opt("relation_info", loose),
		req("source", objectOf(observableSchema)),
		req("related", objectOf(observableSchema)),
	})
)

// baseEntity is common.cljc's base-entity-entries for an entity of typ.
func baseEntity(typ string) []entry {
	return []entry{
		req("id", entityID(typ)),
		req("type", eq(typ)),
		req("schema_version", schemaVersion),
		opt("revision", intIn(0, 1<<53)),
		opt("external_ids", strList(0)),
		opt("external_references", listOf(objectOf(externalReferenceSchema))),
		opt("timestamp", ctimTime),
		opt("language", str(shortString)),
		opt("tlp", tlp),
	}
}

// describable is common.cljc's describable-entity-entries.
var describable = []entry{
	opt("title", str(shortString)),
	opt("description", str(longString)),
	opt("short_description", str(medString)),
}

// sourced is common.cljc's sourced-object-entries; sourcable the same,
// both optional.
var (
	sourced   = []entry{req("source", str(medString)), opt("source_uri", uri)}
	sourcable = []entry{opt("source", str(medString)), opt("source_uri", uri)}
)

var (
	// verdict.cljc, Verdict. It has no id: CTIA derives it.
	verdictSchema = withWhole(newSchema("Verdict", "verdict.cljc", []entry{
		req("type", eq("verdict")),
		req("disposition", dispositionNumber),
		req("observable", objectOf(observableSchema)),
		opt("judgement_id", reference("judgement")),
		opt("disposition_name", dispositionName),
		req("valid_time", objectOf(validTimeSchema)),
	}), func(c *checker, path string, obj map[string]any) {
		dispositionsAgree(c, path, obj)
		c.current(path, obj)
	})
	// judgement.cljc, Judgement.
	judgementSchema = withWhole(newSchema("Judgement", "judgement.cljc", baseEntity("judgement"), sourced, []entry{
		req("observable", objectOf(observableSchema)),
		req("disposition", dispositionNumber),
		req("disposition_name", dispositionName),
		req("priority", intIn(0, 100)), // Priority: "A value 0-100"
		req("confidence", highMedLow),
		req("severity", severity),
		req("valid_time", objectOf(validTimeSchema)),
		opt("reason", str(shortString)),
		opt("reason_uri", uri),
	}), dispositionsAgree)
	// indicator.cljc, Indicator.
	indicatorSchema = newSchema("Indicator", "indicator.cljc", baseEntity("indicator"), describable, sourcable, []entry{
		req("valid_time", objectOf(validTimeSchema)),
		req("producer", str(shortString)),
		opt("severity", highMedLow),
		opt("negate", boolean),
		opt("indicator_type", loose),
		opt("tags", strList(shortString)),
		opt("composite_indicator_expression", loose),
		opt("likely_impact", str(longString)),
		opt("confidence", highMedLow),
		opt("kill_chain_phases", loose),
		opt("test_mechanisms", strList(medString)),
		opt("specification", loose),
	})
	// sighting.cljc, Sighting.
	sightingSchema = newSchema("Sighting", "sighting.cljc", baseEntity("sighting"), sourcable, describable, []entry{
		req("observed_time", objectOf(observedTimeSchema)),
		req("confidence", highMedLow),
		req("count", intIn(0, 1<<53)), // PosInt: zero or more
		opt("internal", boolean),
		opt("severity", severity),
		opt("resolution", anyString), // Resolution: an open vocabulary
		opt("data", loose),
		opt("sensor", anyString), // Sensor: an open vocabulary
		opt("sensor_coordinates", loose),
		opt("targets", loose),
		opt("observables", listOf(objectOf(observableSchema))),
		opt("relations", listOf(objectOf(observedRelationSchema))),
		opt("context", loose),
	})
	// relationship.cljc, Relationship.
	relationshipSchema = newSchema("Relationship", "relationship.cljc", baseEntity("relationship"), describable, sourcable, []entry{
		req("relationship_type", relationshipType),
		req("source_ref", reference("")),
		req("target_ref", reference("")),
	})
)

// current checks that a verdict has not expired at the answer's clock:
// verdict.cljc, Verdict, "chosen from all of the Judgements on that
// Observable which have not yet expired". end_time is the first instant it
// no longer holds.
func (c *checker) current(path string, verdict map[string]any) {
	if c.opts.Now.IsZero() {
		return
	}
	vt, _ := verdict["valid_time"].(map[string]any)
	end, ok := vt["end_time"].(string)
	if !ok {
		return
	}
	t, err := time.Parse(time.RFC3339, end)
	if err == nil && !c.opts.Now.Before(t) {
		c.fail(RuleCurrent, path+".valid_time.end_time", "ended at %s, at or before the answer's clock %s", end, c.opts.Now.Format(time.RFC3339))
	}
}

// integer reads a JSON number that is a whole number.
func integer(v any) (int64, bool) {
	switch n := v.(type) {
	case json.Number:
		i, err := n.Int64()
		return i, err == nil
	case float64:
		if n != float64(int64(n)) {
			return 0, false
		}
		return int64(n), true
	}
	return 0, false
}

func jsonType(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case string:
		return "a string"
	case bool:
		return "a boolean"
	case json.Number, float64:
		return "a number"
	case []any:
		return "a list"
	case map[string]any:
		return "an object"
	}
	return fmt.Sprintf("%T", v)
}

func equalJSON(a, b any) bool {
	x, err1 := json.Marshal(a)
	y, err2 := json.Marshal(b)
	return err1 == nil && err2 == nil && bytes.Equal(x, y)
}
