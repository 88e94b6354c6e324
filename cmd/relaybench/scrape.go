package main

import (
	"context"
	"fmt"
	"net/http"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// metricSet is one scrape of the relay's /metrics.
type metricSet map[string]*dto.MetricFamily

// scrape reads the relay's /metrics.
func (st *stack) scrape(ctx context.Context) (metricSet, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, st.url+"/metrics", nil)
	if err != nil {
		return nil, err
	}
	resp, err := st.scraper.Do(req)
	if err != nil {
		return nil, fmt.Errorf("scrape /metrics: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("scrape /metrics: status %d", resp.StatusCode)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("scrape /metrics: %w", err)
	}
	return fams, nil
}

// value returns the sum of a gauge's or counter's samples, and whether the
// family is there.
func (m metricSet) value(name string) (float64, bool) {
	f, ok := m[name]
	if !ok {
		return 0, false
	}
	sum := 0.0
	for _, s := range f.GetMetric() {
		sum += sampleValue(s)
	}
	return sum, true
}

// byLabel sums a family's samples by the value of one label, rounded to
// counts; values that sum to zero are left out.
func (m metricSet) byLabel(name, label string) map[string]int {
	out := map[string]int{}
	for _, s := range m[name].GetMetric() {
		v := ""
		for _, lp := range s.GetLabel() {
			if lp.GetName() == label {
				v = lp.GetValue()
			}
		}
		out[v] += int(sampleValue(s))
	}
	for k, n := range out {
		if n == 0 {
			delete(out, k)
		}
	}
	return out
}

func sampleValue(s *dto.Metric) float64 {
	switch {
	case s.Gauge != nil:
		return s.GetGauge().GetValue()
	case s.Counter != nil:
		return s.GetCounter().GetValue()
	case s.Untyped != nil:
		return s.GetUntyped().GetValue()
	}
	return 0
}
