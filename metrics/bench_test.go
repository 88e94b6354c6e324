package metrics_test

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/pulsedive-relay/relay/metrics"
)

// BenchmarkCachedRequest is what one cached observe of one observable
// records: the request, its observable, and two cache hits.
func BenchmarkCachedRequest(b *testing.B) {
	m, err := metrics.New(prometheus.NewRegistry(), testConfig("bench"))
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		m.Observable("ip")
		m.CacheLookup("info", "hit")
		m.CacheLookup("links", "hit")
		m.HTTPRequest("/observe/observables", 200, 3*time.Millisecond)
	}
}

// BenchmarkPulsediveCall is what one Pulsedive call records.
func BenchmarkPulsediveCall(b *testing.B) {
	m, err := metrics.New(prometheus.NewRegistry(), testConfig("bench"))
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		m.PulsediveInFlight(1)
		m.PulsediveCall("info", "ok", 80*time.Millisecond)
		m.PulsediveInFlight(-1)
	}
}
