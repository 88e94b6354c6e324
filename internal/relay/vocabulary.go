package relay

import (
	"github.com/pulsedive-relay/relay/cluster"
	"github.com/pulsedive-relay/relay/ctim"
	"github.com/pulsedive-relay/relay/metrics"
	"github.com/pulsedive-relay/relay/pipeline"
	"github.com/pulsedive-relay/relay/pulsedive"
	"github.com/pulsedive-relay/relay/transport"
	"github.com/pulsedive-relay/relay/transport/auth"
)

// metricLabels are the values of every label the metrics count, each list
// taken from the package that reports the values: a value added there has
// its series from the start, and never falls into "other"
// (TestEveryValueHasItsSeries, TestOwnersListEveryValue).
func metricLabels() metrics.Labels {
	var states []string
	for _, s := range pulsedive.BreakerStates() {
		states = append(states, s.String())
	}
	return metrics.Labels{
		Routes:      transport.Routes(),
		PanicRoutes: []string{pipeline.PanicRoute},
		ErrorCodes:  transport.ErrorCodes(),
		Kinds:       pulsedive.Kinds(),
		// The pipeline caches and collapses indicator and links documents;
		// a health check always calls Pulsedive.
		CachedKinds:     []string{pulsedive.KindInfo, pulsedive.KindLinks},
		Outcomes:        pulsedive.Outcomes(),
		BreakerStates:   states,
		CacheResults:    pipeline.CacheResults(),
		ObservableTypes: ctim.Types(),
		Bounds:          transport.Bounds(),
		JWKSOutcomes:    auth.FetchOutcomes(),
		AuthFailures:    auth.FailureKinds(),
		RedisCommands:   cluster.CommandClasses(),
		L2Results:       cluster.L2Results(),
		CollapseResults: cluster.CollapseResults(),
	}
}
