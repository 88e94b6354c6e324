package relay

import (
	"go/ast"
	"go/parser"
	"go/token"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/pulsedive-relay/relay/metrics"
	"github.com/pulsedive-relay/relay/pulsedive"
)

// TestEveryValueHasItsSeries: every value the packages report to the
// metrics (outcomes, kinds, breaker states, routes, envelope codes,
// observable types, bounds, JWKS outcomes, refusal kinds, cache, Redis and
// collapse results) is counted in a series of its own, created at zero,
// never in "other".
func TestEveryValueHasItsSeries(t *testing.T) {
	labels := metricLabels()
	reg := prometheus.NewRegistry()
	m, err := metrics.New(reg, metrics.Config{Version: "test", Labels: labels})
	if err != nil {
		t.Fatal(err)
	}
	before := gatherAll(t, reg)
	// family → label → the values of labels the relay passes.
	want := map[string]map[string][]string{}
	counted := func(family, label string, values []string) {
		if want[family] == nil {
			want[family] = map[string][]string{}
		}
		want[family][label] = values
	}
	for _, kind := range labels.Kinds {
		for _, outcome := range labels.Outcomes {
			m.PulsediveCall(kind, outcome, time.Millisecond)
		}
	}
	counted("pulsedive_relay_pulsedive_requests_total", "kind", labels.Kinds)
	counted("pulsedive_relay_pulsedive_requests_total", "outcome", labels.Outcomes)
	for i, state := range labels.BreakerStates {
		m.BreakerKeys(state, i+1)
	}
	counted("pulsedive_relay_breakers", "state", labels.BreakerStates)
	for _, kind := range labels.CachedKinds {
		m.SharedCall(kind)
		for _, result := range labels.CacheResults {
			m.CacheLookup(kind, result)
		}
	}
	counted("pulsedive_relay_cache_requests_total", "result", labels.CacheResults)
	counted("pulsedive_relay_shared_calls_total", "kind", labels.CachedKinds)
	for _, route := range labels.Routes {
		m.HTTPRequest(route, 200, time.Millisecond)
		for _, code := range labels.ErrorCodes[route] {
			m.EnvelopeError(route, code)
		}
	}
	counted("pulsedive_relay_http_requests_total", "route", labels.Routes)
	panicRoutes := append(slices.Clone(labels.Routes), labels.PanicRoutes...)
	for _, route := range panicRoutes {
		m.PanicRecovered(route)
	}
	counted("pulsedive_relay_panics_total", "route", panicRoutes)
	var codes []string
	for _, cs := range labels.ErrorCodes {
		codes = append(codes, cs...)
	}
	counted("pulsedive_relay_errors_total", "code", codes)
	for _, typ := range labels.ObservableTypes {
		m.Observable(typ)
	}
	counted("pulsedive_relay_observables_total", "type", labels.ObservableTypes)
	for _, bound := range labels.Bounds {
		m.AdmissionRefused(bound)
	}
	counted("pulsedive_relay_admission_refusals_total", "bound", labels.Bounds)
	for _, outcome := range labels.JWKSOutcomes {
		m.JWKSFetch(outcome)
	}
	counted("pulsedive_relay_jwks_fetches_total", "outcome", labels.JWKSOutcomes)
	for _, kind := range labels.AuthFailures {
		m.AuthFailure(kind)
	}
	counted("pulsedive_relay_auth_failures_total", "reason", labels.AuthFailures)
	for _, class := range labels.RedisCommands {
		m.RedisCommand(class, time.Millisecond, true)
	}
	counted("pulsedive_relay_redis_errors_total", "command", labels.RedisCommands)
	for _, result := range labels.L2Results {
		m.L2Lookup(result)
	}
	counted("pulsedive_relay_l2_cache_requests_total", "result", labels.L2Results)
	for _, result := range labels.CollapseResults {
		m.CollapseWait(result)
	}
	counted("pulsedive_relay_collapse_waits_total", "result", labels.CollapseResults)

	after := gatherAll(t, reg)
	for family, byLabel := range want {
		for label, values := range byLabel {
			t.Run(family+"/"+label, func(t *testing.T) {
				if len(values) == 0 {
					t.Fatal("the relay passes no values")
				}
				got := after.valuesOf(family, label)
				if diff := cmp.Diff(sortedSet(values), got); diff != "" {
					t.Errorf("values counted (-want +got):\n%s", diff)
				}
				if family != "pulsedive_relay_http_requests_total" { // created as codes come
					// Created at zero: no series appeared that New had not made.
					if diff := cmp.Diff(before.valuesOf(family, label), got); diff != "" {
						t.Errorf("series created by the measurements, not by New (-before +after):\n%s", diff)
					}
				}
			})
		}
	}
}

// TestOwnersListEveryValue: the lists the relay hands the metrics name
// every constant of their set, so that a value added to a package (a new
// Pulsedive outcome, bound, code or cache result) cannot be reported
// without its series.
func TestOwnersListEveryValue(t *testing.T) {
	tests := []struct {
		dir, prefix, list string
	}{
		{"pulsedive", "Outcome", "Outcomes"},
		{"pulsedive", "Kind", "Kinds"},
		{"pulsedive", "Breaker", "BreakerStates"},
		{"transport", "Bound", "Bounds"},
		{"transport", "code", "ErrorCodes"},
		{"transport/auth", "kind", "FailureKinds"},
		{"transport/auth", "fetchOutcome", "FetchOutcomes"},
		{"cluster", "class", "CommandClasses"},
		{"cluster", "l2", "L2Results"},
		{"cluster", "collapse", "CollapseResults"},
		{"pipeline", "result", "CacheResults"},
	}
	for _, tt := range tests {
		t.Run(tt.dir+"."+tt.list, func(t *testing.T) {
			files := parsePackage(t, tt.dir)
			var consts, listed []string
			for _, f := range files {
				for _, decl := range f.Decls {
					switch d := decl.(type) {
					case *ast.GenDecl:
						if d.Tok != token.CONST {
							continue
						}
						for _, spec := range d.Specs {
							for _, name := range spec.(*ast.ValueSpec).Names {
								if strings.HasPrefix(name.Name, tt.prefix) {
									consts = append(consts, name.Name)
								}
							}
						}
					case *ast.FuncDecl:
						if d.Name.Name != tt.list || d.Recv != nil {
							continue
						}
						// The names the list's composite literals hold.
						ast.Inspect(d.Body, func(n ast.Node) bool {
							if lit, ok := n.(*ast.CompositeLit); ok {
								for _, elt := range lit.Elts {
									if id, ok := elt.(*ast.Ident); ok {
										listed = append(listed, id.Name)
									}
								}
							}
							return true
						})
					}
				}
			}
			if len(consts) == 0 {
				t.Fatalf("no constant %s* in %s", tt.prefix, tt.dir)
			}
			if diff := cmp.Diff(sortedSet(consts), sortedSet(listed)); diff != "" {
				t.Errorf("constants %s* against the names in %s (-constants +listed):\n%s", tt.prefix, tt.list, diff)
			}
		})
	}

	t.Run("breaker states by name", func(t *testing.T) {
		for _, s := range pulsedive.BreakerStates() {
			if strings.HasPrefix(s.String(), "BreakerState(") {
				t.Errorf("breaker state %d has no name", int(s))
			}
		}
	})
}

// parsePackage parses the non-test Go files of the project directory dir.
func parsePackage(t *testing.T, dir string) []*ast.File {
	t.Helper()
	paths, err := filepath.Glob(filepath.Join("..", "..", dir, "*.go"))
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	var out []*ast.File
	for _, p := range paths {
		if strings.HasSuffix(p, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, p, nil, parser.SkipObjectResolution)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, f)
	}
	if len(out) == 0 {
		t.Fatalf("no Go file in %s", dir)
	}
	return out
}

// gathered is one gathering of a registry: family → label → value →
// the sum of its series.
type gathered map[string]map[string]map[string]float64

func gatherAll(t *testing.T, reg *prometheus.Registry) gathered {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := gathered{}
	for _, mf := range mfs {
		byLabel := map[string]map[string]float64{}
		for _, metric := range mf.GetMetric() {
			v := metric.GetCounter().GetValue() + metric.GetGauge().GetValue()
			for _, lp := range metric.GetLabel() {
				if byLabel[lp.GetName()] == nil {
					byLabel[lp.GetName()] = map[string]float64{}
				}
				byLabel[lp.GetName()][lp.GetValue()] += v
			}
		}
		out[mf.GetName()] = byLabel
	}
	return out
}

// valuesOf lists the values of label in family's series, sorted; "other"
// is listed only when something was counted under it.
func (g gathered) valuesOf(family, label string) []string {
	var out []string
	for v, sum := range g[family][label] {
		if v != "other" || sum != 0 {
			out = append(out, v)
		}
	}
	slices.Sort(out)
	return out
}

func sortedSet(values []string) []string {
	out := slices.Clone(values)
	slices.Sort(out)
	return slices.Compact(out)
}
