package main

import (
	"cmp"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

// report is what one scenario measured: its settings, its figures (some
// with a target), tallies, and notes. Passed is false when a target that
// decides the exit status was missed: an invariant, or a timing target
// under -strict.
type report struct {
	Scenario string       `json:"scenario"`
	Title    string       `json:"title"`
	Settings []keyValue   `json:"settings,omitempty"`
	Figures  []*figure    `json:"figures"`
	Counts   []countTable `json:"counts,omitempty"`
	Notes    []string     `json:"notes,omitempty"`
	Passed   bool         `json:"passed"`
	// Failed lists the keys of the missed targets that decide the exit
	// status; Missed those of timing targets missed without -strict.
	Failed []string `json:"failed,omitempty"`
	Missed []string `json:"missed,omitempty"`
}

type keyValue struct {
	Key   string `json:"key"`
	Value string `json:"value"`
}

// figure is one measured number. Key is stable, for scripts and tests.
type figure struct {
	Key    string  `json:"key"`
	Label  string  `json:"label"`
	Value  float64 `json:"value"`
	Unit   string  `json:"unit"`
	Target *target `json:"target,omitempty"`
	// inSummary puts the figure in the summary table of several reports
	// even without a target; routine puts it there only when its target
	// was missed (the checks every scenario makes of the relay process).
	inSummary, routine bool
}

// target is what a figure should be. Timing targets depend on the machine
// (a loaded 2-core box misses them), so they decide the exit status only
// under -strict; invariants always do.
type target struct {
	Op     string  `json:"op"`
	Limit  float64 `json:"limit"`
	Timing bool    `json:"timing,omitempty"`
	Met    bool    `json:"met"`
}

// Comparisons of a target.
const (
	opEqual   = "=="
	opAtMost  = "<="
	opAtLeast = ">="
	opBelow   = "<"
)

// Units of a figure; they decide its formatting.
const (
	unitCount = "count"
	unitMs    = "ms"
	unitUs    = "µs"
	unitS     = "s"
	unitMiB   = "MiB"
	unitRatio = "ratio"
	unitRPS   = "req/s"
	unitCPS   = "calls/s"
	unitBytes = "bytes"
)

type countTable struct {
	Name    string       `json:"name"`
	Entries []countEntry `json:"entries"`
}

type countEntry struct {
	Key   string `json:"key"`
	Count int    `json:"count"`
}

func newReport(scenario, title string) *report {
	return &report{Scenario: scenario, Title: title}
}

func (r *report) setting(k, v string) { r.Settings = append(r.Settings, keyValue{k, v}) }

func (r *report) note(format string, args ...any) {
	r.Notes = append(r.Notes, fmt.Sprintf(format, args...))
}

// add appends a figure and returns it, to set a target on.
func (r *report) add(key, label string, v float64, unit string) *figure {
	f := &figure{Key: key, Label: label, Value: v, Unit: unit}
	r.Figures = append(r.Figures, f)
	return f
}

// addDuration appends a duration in milliseconds.
func (r *report) addDuration(key, label string, d time.Duration) *figure {
	return r.add(key, label, float64(d)/float64(time.Millisecond), unitMs)
}

// count appends a tally.
func (r *report) count(name string, entries []countEntry) {
	if entries == nil {
		entries = []countEntry{} // [] in JSON, not null
	}
	r.Counts = append(r.Counts, countTable{name, entries})
}

// countMap appends a tally from a map, in key order.
func countMap[K cmp.Ordered](r *report, name string, m map[K]int) {
	var entries []countEntry
	for _, k := range sortedKeys(m) {
		entries = append(entries, countEntry{fmt.Sprint(k), m[k]})
	}
	r.count(name, entries)
}

// want makes the figure an invariant: op limit must hold.
func (f *figure) want(op string, limit float64) *figure {
	f.Target = &target{Op: op, Limit: limit}
	return f
}

// aim makes the figure a timing target.
func (f *figure) aim(op string, limit float64) *figure {
	f.Target = &target{Op: op, Limit: limit, Timing: true}
	return f
}

func (f *figure) headline() *figure {
	f.inSummary = true
	return f
}

// everyScenario marks a check every scenario makes, left out of the summary
// table unless missed.
func (f *figure) everyScenario() *figure {
	f.routine = true
	return f
}

func (t *target) holds(v float64) bool {
	switch t.Op {
	case opEqual:
		return v == t.Limit
	case opAtMost:
		return v <= t.Limit
	case opAtLeast:
		return v >= t.Limit
	case opBelow:
		return v < t.Limit
	}
	return false
}

// finalize decides every target and the report's verdict.
func (r *report) finalize(strict bool) {
	r.Passed, r.Failed, r.Missed = true, nil, nil
	for _, f := range r.Figures {
		if f.Target == nil {
			continue
		}
		f.Target.Met = f.Target.holds(f.Value)
		switch {
		case f.Target.Met:
		case f.Target.Timing && !strict:
			r.Missed = append(r.Missed, f.Key)
		default:
			r.Failed = append(r.Failed, f.Key)
			r.Passed = false
		}
	}
}

// formats are the printf formats of the units but count and ms.
var formats = map[string]string{
	unitUs: "%.1f µs", unitS: "%.2f s", unitMiB: "%.1f MiB", unitRatio: "%.2f",
	unitRPS: "%.0f req/s", unitCPS: "%.2f calls/s", unitBytes: "%.0f bytes",
}

// formatValue writes v in its unit.
func formatValue(v float64, unit string) string {
	switch {
	case unit == unitCount:
		return strconv.FormatFloat(v, 'f', -1, 64)
	case unit == unitMs && v >= 10000:
		return fmt.Sprintf("%.2f s", v/1000)
	case unit == unitMs:
		return fmt.Sprintf("%.1f ms", v)
	case formats[unit] != "":
		return fmt.Sprintf(formats[unit], v)
	}
	return strconv.FormatFloat(v, 'g', 6, 64) + " " + unit
}

func (t *target) String(unit string) string {
	if t == nil {
		return ""
	}
	op := map[string]string{opEqual: "=", opAtMost: "≤", opAtLeast: "≥", opBelow: "<"}[t.Op]
	s := op + " " + formatValue(t.Limit, unit)
	if t.Timing {
		s += " (timing)"
	}
	return s
}

func (t *target) verdict() string {
	switch {
	case t == nil:
		return ""
	case t.Met:
		return "ok"
	case t.Timing:
		return "MISSED"
	}
	return "FAIL"
}

// printReports writes the reports as text, with a summary table when there
// are several, or as one JSON document under -json. Reports are finalized
// first.
func printReports(w io.Writer, reports []*report, o options) error {
	passed := true
	for _, r := range reports {
		r.finalize(o.Strict)
		passed = passed && r.Passed
	}
	if o.JSON {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(struct {
			Reports []*report `json:"reports"`
			Passed  bool      `json:"passed"`
		}{reports, passed})
	}
	for i, r := range reports {
		if i > 0 {
			fmt.Fprintln(w)
		}
		if err := printText(w, r); err != nil {
			return err
		}
	}
	if len(reports) > 1 {
		fmt.Fprintln(w)
		return printSummary(w, reports)
	}
	return nil
}

func printText(w io.Writer, r *report) error {
	fmt.Fprintf(w, "== relaybench %s: %s ==\n", r.Scenario, r.Title)
	for _, s := range r.Settings {
		fmt.Fprintf(w, "%s: %s\n", s.Key, s.Value)
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "figure\tvalue\ttarget\t")
	for _, f := range r.Figures {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", f.Label, formatValue(f.Value, f.Unit), f.Target.String(f.Unit), f.Target.verdict())
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, c := range r.Counts {
		var parts []string
		for _, e := range c.Entries {
			parts = append(parts, fmt.Sprintf("%s=%d", e.Key, e.Count))
		}
		if len(parts) == 0 {
			parts = []string{"none"}
		}
		fmt.Fprintf(w, "%s: %s\n", c.Name, strings.Join(parts, ", "))
	}
	for _, n := range r.Notes {
		fmt.Fprintf(w, "note: %s\n", n)
	}
	switch {
	case !r.Passed:
		fmt.Fprintf(w, "result: FAIL (%s)\n", strings.Join(r.Failed, ", "))
	case len(r.Missed) > 0:
		fmt.Fprintf(w, "result: PASS, timing targets missed: %s (decisive only under -strict)\n", strings.Join(r.Missed, ", "))
	default:
		fmt.Fprintln(w, "result: PASS")
	}
	return nil
}

// printSummary writes one Markdown table of every target and headline
// figure of the reports, for the README.
func printSummary(w io.Writer, reports []*report) error {
	fmt.Fprintln(w, "Targets and headline figures (the relay's exit code and recovered panics are")
	fmt.Fprintln(w, "checked in every scenario and listed only when missed):")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "| scenario | figure | value | target | result |")
	fmt.Fprintln(w, "|---|---|---|---|---|")
	for _, r := range reports {
		for _, f := range r.Figures {
			switch {
			case f.routine && (f.Target == nil || f.Target.Met):
				continue
			case f.Target == nil && !f.inSummary:
				continue
			}
			fmt.Fprintf(w, "| %s | %s | %s | %s | %s |\n", r.Scenario, f.Label, formatValue(f.Value, f.Unit), f.Target.String(f.Unit), f.Target.verdict())
		}
	}
	var verdicts []string
	for _, r := range reports {
		v := "PASS"
		if !r.Passed {
			v = "FAIL"
		}
		verdicts = append(verdicts, r.Scenario+" "+v)
	}
	_, err := fmt.Fprintf(w, "\nresult: %s\n", strings.Join(verdicts, ", "))
	return err
}

// topCounts returns the n largest entries of m, largest first, ties in key
// order.
func topCounts(m map[string]int, n int) []countEntry {
	out := make([]countEntry, 0, len(m))
	for k, v := range m {
		out = append(out, countEntry{k, v})
	}
	slices.SortFunc(out, func(a, b countEntry) int {
		return cmp.Or(cmp.Compare(b.Count, a.Count), cmp.Compare(a.Key, b.Key))
	})
	return out[:min(n, len(out))]
}
