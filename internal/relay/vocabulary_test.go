package relay

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/pulsedive-relay/relay/metrics"
	"github.com/pulsedive-relay/relay/pulsedive"
)

// TestPulsediveVocabularyIsCounted: every outcome and breaker state the
// pulsedive package reports lands in its own series, never in "other": a
// new outcome or state needs its label in package metrics.
func TestPulsediveVocabularyIsCounted(t *testing.T) {
	reg := prometheus.NewRegistry()
	m, err := metrics.New(reg, "test")
	if err != nil {
		t.Fatal(err)
	}
	for _, outcome := range pulsedive.Outcomes() {
		m.PulsediveCall(pulsedive.KindInfo, outcome, time.Millisecond)
		m.PulsediveRefused(pulsedive.KindLinks, outcome)
	}
	for i, state := range pulsedive.BreakerStates() {
		m.BreakerKeys(state.String(), i+1)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{} // family/label=value,... → value
	for _, mf := range mfs {
		for _, metric := range mf.GetMetric() {
			key := mf.GetName()
			for _, lp := range metric.GetLabel() {
				key += "/" + lp.GetName() + "=" + lp.GetValue()
			}
			got[key] = metric.GetCounter().GetValue() + metric.GetGauge().GetValue()
		}
	}
	for _, outcome := range pulsedive.Outcomes() {
		for _, kind := range []string{pulsedive.KindInfo, pulsedive.KindLinks} {
			key := "pulsedive_relay_pulsedive_requests_total/kind=" + kind + "/outcome=" + outcome
			if got[key] != 1 {
				t.Errorf("%s = %v, want 1", key, got[key])
			}
		}
	}
	for i, state := range pulsedive.BreakerStates() {
		key := "pulsedive_relay_breakers/state=" + state.String()
		if got[key] != float64(i+1) {
			t.Errorf("%s = %v, want %d", key, got[key], i+1)
		}
	}
	for _, key := range []string{
		"pulsedive_relay_pulsedive_requests_total/kind=info/outcome=other",
		"pulsedive_relay_pulsedive_requests_total/kind=links/outcome=other",
		"pulsedive_relay_breakers/state=other",
	} {
		if got[key] != 0 {
			t.Errorf("%s = %v: a pulsedive value fell into other", key, got[key])
		}
	}
}
