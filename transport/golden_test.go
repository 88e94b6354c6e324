package transport_test

import (
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/pulsedive-relay/relay/ctim/ctimcheck"
)

// fixtureObservables are the observables of the shared fixtures, in the
// order of their README, and cisco.com, which Pulsedive does not know.
var fixtureObservables = []observable{
	{"domain", "parkingcrew.net"},
	{"ip", "185.141.25.242"},
	{"url", "http://51jianli.cn/images"},
	{"ipv6", "2001:420:1101:1::185"},
	{"ip", "110.174.93.63"},
	{"ip", "23.23.23.23"},
	{"domain", "broken.example"},
	{"domain", "many-factors.example"},
	{"domain", "rate-limited.example"},
	{"domain", "processing.example"},
}

// expectedDir holds the expected answers, kept in the repository so a
// clean clone tests on its own; TestExpectedCopyCurrent checks them against
// the maintainers' master copy (../shared/fixtures/expected, beside the
// repository) when it is there.
const expectedDir = "testdata/expected"

var fileNameRun = regexp.MustCompile(`[^A-Za-z0-9.-]+`)

func expectedFile(t *testing.T, endpoint, value string) (map[string]any, bool) {
	t.Helper()
	name := filepath.Join(expectedDir, endpoint+"-"+fileNameRun.ReplaceAllString(value, "_")+".json")
	data, err := os.ReadFile(name)
	if os.IsNotExist(err) {
		return nil, false
	}
	if err != nil {
		t.Fatal(err)
	}
	var v map[string]any
	if err := json.Unmarshal(data, &v); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return v, true
}

func TestExpectedCopyCurrent(t *testing.T) {
	shared := filepath.Join("..", "..", "shared", "fixtures", "expected")
	entries, err := os.ReadDir(shared)
	if err != nil {
		t.Skipf("no shared fixtures beside the repository (%v); the copy in %s stands", err, expectedDir)
	}
	for _, e := range entries {
		want, err := os.ReadFile(filepath.Join(shared, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(filepath.Join(expectedDir, e.Name()))
		if err != nil || string(got) != string(want) {
			t.Errorf("%s differs from the shared fixture; copy it again", e.Name())
		}
	}
}

func TestGoldenObserve(t *testing.T) {
	h := newHarness(t, options{})
	for _, o := range fixtureObservables {
		want, ok := expectedFile(t, "observe", o.Value)
		if !ok {
			t.Fatalf("no expected observe answer for %s", o.Value)
		}
		t.Run(o.Value, func(t *testing.T) {
			_, got := h.post("/observe/observables", bearer(h.freshToken()), []observable{o})
			compareGolden(t, want, got)
		})
	}
}

// TestGoldenDeliberate: a deliberate answer is the observe answer's
// verdicts without judgement_id (there are no judgements to name), expired
// ones left out as in observe, with the same errors.
func TestGoldenDeliberate(t *testing.T) {
	h := newHarness(t, options{})
	for _, o := range fixtureObservables {
		observe, ok := expectedFile(t, "observe", o.Value)
		if !ok {
			t.Fatalf("no expected observe answer for %s", o.Value)
		}
		t.Run(o.Value, func(t *testing.T) {
			_, got := h.post("/deliberate/observables", bearer(h.freshToken()), []observable{o})
			compareGolden(t, deliberateFrom(observe), got)
		})
	}
}

// deliberateFrom derives the deliberate answer from an expected observe
// answer. Its errors stay: in the fixtures every error comes from the
// indicator document, which deliberate reads too (none from links, which
// it does not).
func deliberateFrom(observe map[string]any) map[string]any {
	out := map[string]any{}
	if errs, ok := observe["errors"]; ok {
		out["errors"] = errs
	}
	data, hasData := observe["data"].(map[string]any)
	if !hasData {
		return out
	}
	var verdicts []any
	for _, v := range docsOf(data, "verdicts") {
		v = maps.Clone(v)
		delete(v, "judgement_id")
		verdicts = append(verdicts, v)
	}
	switch {
	case len(verdicts) > 0:
		out["data"] = map[string]any{"verdicts": map[string]any{"count": float64(len(verdicts)), "docs": verdicts}}
	case out["errors"] == nil:
		out["data"] = map[string]any{}
	}
	return out
}

func TestGoldenRefer(t *testing.T) {
	h := newHarness(t, options{})
	for _, o := range append(fixtureObservables, observable{"domain", "cisco.com"}) {
		want, ok := expectedFile(t, "refer", o.Value)
		if !ok {
			t.Fatalf("no expected refer answer for %s", o.Value)
		}
		t.Run(o.Value, func(t *testing.T) {
			_, got := h.post("/refer/observables", bearer(h.freshToken()), []observable{o})
			compareGolden(t, want, got)
		})
	}
}

// TestGoldenBatch asks for every fixture at once: the answer equals the
// single answers concatenated in request order, indicator ids kept once,
// errors kept once.
func TestGoldenBatch(t *testing.T) {
	h := newHarness(t, options{})
	for _, endpoint := range []string{"observe", "deliberate", "refer"} {
		t.Run(endpoint, func(t *testing.T) {
			var singles []map[string]any
			for _, o := range fixtureObservables {
				if endpoint == "deliberate" {
					observe, _ := expectedFile(t, "observe", o.Value)
					singles = append(singles, deliberateFrom(observe))
					continue
				}
				want, _ := expectedFile(t, endpoint, o.Value)
				singles = append(singles, want)
			}
			want := concatenate(t, endpoint, singles)
			_, got := h.post("/"+endpoint+"/observables", bearer(h.freshToken()), fixtureObservables)
			compareGolden(t, want, got)
		})
	}
}

// TestGoldenWrongAPIURL: with a wrong PULSEDIVE_API_URL, the whole
// fixture batch answers the one error that names it, and /health fails
// the same way (CONTRACT.md section 4).
func TestGoldenWrongAPIURL(t *testing.T) {
	want := map[string]any{"errors": []any{map[string]any{
		"type": "fatal", "code": "unknown",
		"message": "Pulsedive answered unexpectedly (HTTP 404); check PULSEDIVE_API_URL",
	}}}
	for name, base := range wrongAPIURLs(t) {
		t.Run(name, func(t *testing.T) {
			h := newHarness(t, options{baseURL: base, client: &http.Client{}})
			_, got := h.post("/observe/observables", bearer(h.freshToken()), fixtureObservables)
			compareGolden(t, want, got)
			_, got = h.post("/health", bearer(h.freshToken()), "")
			compareGolden(t, want, got)
		})
	}
}

// compareGolden compares an answer with an expected file. The expected
// files were computed with the clock at 2020-04-15T00:00:00Z and
// CTR_ENTITIES_LIMIT 100, and are compared under these rules: random ids
// (transient:judgement-*, transient:sighting-*, transient:relationship-*)
// are checked (prefix, UUID, unique in the answer) and written as in the
// files; relationship source_ref/target_ref and a verdict's judgement_id are
// written as positions (sightings[i], indicators[j], judgements[k]) and
// resolved against the answer's own lists; indicator ids are deterministic
// and compared in full; everything else compares exactly, in order. Before that, an observe or deliberate answer must
// keep to CTIM (ctimcheck), at the fixtures' clock.
func compareGolden(t *testing.T, want, got map[string]any) {
	t.Helper()
	if _, refer := got["data"].([]any); !refer {
		for _, p := range ctimcheck.CheckValue(got, ctimcheck.Options{Now: fixedNow}) {
			t.Errorf("not CTIM: %s", p)
		}
	}
	canonical := normalizeAnswer(t, got)
	if diff := cmp.Diff(want, canonical); diff != "" {
		t.Errorf("answer differs from the expected file (-want +got):\n%s", diff)
	}
}

var uuidText = `[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}`

func normalizeAnswer(t *testing.T, answer map[string]any) map[string]any {
	t.Helper()
	data, ok := answer["data"].(map[string]any)
	if !ok {
		return answer // refer answers and bare errors compare as they are
	}
	seen := map[string]bool{}
	positions := map[string]string{}
	for _, kind := range []string{"judgements", "indicators", "sightings"} {
		for i, doc := range docsOf(data, kind) {
			positions[doc["id"].(string)] = fmt.Sprintf("%s[%d]", kind, i)
		}
	}
	for _, doc := range docsOf(data, "verdicts") {
		id, has := doc["judgement_id"].(string)
		if !has {
			continue
		}
		pos, ok := positions[id]
		if !ok || !strings.HasPrefix(pos, "judgements[") {
			t.Errorf("verdict judgement_id %q names no judgement of the answer", id)
		}
		doc["judgement_id"] = pos
	}
	for _, kind := range []string{"judgement", "sighting", "relationship"} {
		pattern := regexp.MustCompile(`^transient:` + kind + `-` + uuidText + `$`)
		for _, doc := range docsOf(data, kind+"s") {
			id, _ := doc["id"].(string)
			if !pattern.MatchString(id) {
				t.Errorf("%s id %q is not transient:%s-<uuid>", kind, id, kind)
			}
			if seen[id] {
				t.Errorf("id %s appears twice in the answer", id)
			}
			seen[id] = true
			doc["id"] = "transient:" + kind + "-*"
		}
	}
	for _, doc := range docsOf(data, "relationships") {
		for _, ref := range []string{"source_ref", "target_ref"} {
			id, _ := doc[ref].(string)
			pos, ok := positions[id]
			if !ok {
				t.Errorf("relationship %s %q names no entity of the answer", ref, id)
			}
			doc[ref] = pos
		}
	}
	indicatorIDs := map[string]bool{}
	for _, doc := range docsOf(data, "indicators") {
		id := doc["id"].(string)
		if indicatorIDs[id] {
			t.Errorf("indicator %s appears twice", id)
		}
		indicatorIDs[id] = true
	}
	return answer
}

func docsOf(data map[string]any, kind string) []map[string]any {
	group, _ := data[kind].(map[string]any)
	list, _ := group["docs"].([]any)
	out := make([]map[string]any, 0, len(list))
	for _, d := range list {
		out = append(out, d.(map[string]any))
	}
	return out
}

// concatenate builds the expected answer of a batch from single answers:
// lists joined in order, indicators kept once (relationship positions
// renumbered accordingly), errors kept once.
func concatenate(t *testing.T, endpoint string, singles []map[string]any) map[string]any {
	t.Helper()
	var errs []any
	seenErr := map[string]bool{}
	addErrors := func(a map[string]any) {
		list, _ := a["errors"].([]any)
		for _, e := range list {
			b, _ := json.Marshal(e)
			if !seenErr[string(b)] {
				seenErr[string(b)] = true
				errs = append(errs, e)
			}
		}
	}
	out := map[string]any{}
	if endpoint == "refer" {
		var refs []any
		for _, s := range singles {
			list, _ := s["data"].([]any)
			refs = append(refs, list...)
			addErrors(s)
		}
		out["data"] = refs
	} else {
		lists := map[string][]any{}
		indicatorPos := map[string]int{}
		for _, s := range singles {
			addErrors(s)
			data, _ := s["data"].(map[string]any)
			sightingBase := len(lists["sightings"])
			judgementBase := len(lists["judgements"])
			localIndicator := map[int]int{}
			for j, ind := range docsOf(data, "indicators") {
				id := ind["id"].(string)
				pos, ok := indicatorPos[id]
				if !ok {
					pos = len(lists["indicators"])
					indicatorPos[id] = pos
					lists["indicators"] = append(lists["indicators"], ind)
				}
				localIndicator[j] = pos
			}
			for _, kind := range []string{"verdicts", "judgements", "sightings"} {
				for _, d := range docsOf(data, kind) {
					if ref, ok := d["judgement_id"].(string); ok {
						var k int
						fmt.Sscanf(ref, "judgements[%d]", &k)
						d = maps.Clone(d)
						d["judgement_id"] = fmt.Sprintf("judgements[%d]", k+judgementBase)
					}
					lists[kind] = append(lists[kind], d)
				}
			}
			for _, rel := range docsOf(data, "relationships") {
				var si, ij int
				fmt.Sscanf(rel["source_ref"].(string), "sightings[%d]", &si)
				fmt.Sscanf(rel["target_ref"].(string), "indicators[%d]", &ij)
				rel["source_ref"] = fmt.Sprintf("sightings[%d]", si+sightingBase)
				rel["target_ref"] = fmt.Sprintf("indicators[%d]", localIndicator[ij])
				lists["relationships"] = append(lists["relationships"], rel)
			}
		}
		data := map[string]any{}
		for kind, l := range lists {
			data[kind] = map[string]any{"count": float64(len(l)), "docs": l}
		}
		if len(data) > 0 || len(errs) == 0 {
			out["data"] = data
		}
	}
	if len(errs) > 0 {
		out["errors"] = errs
	}
	return out
}

// TestExpectedFilesPresent guards the copy of the expected answers against
// a file going missing, which would silently shrink the golden tests.
func TestExpectedFilesPresent(t *testing.T) {
	entries, err := os.ReadDir(expectedDir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) < 21 {
		t.Errorf("found %d expected files, want the 21 of the shared fixtures", len(entries))
	}
	for _, e := range entries {
		if !strings.HasSuffix(e.Name(), ".json") {
			t.Errorf("unexpected file %s", e.Name())
		}
	}
}
