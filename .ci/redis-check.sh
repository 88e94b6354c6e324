#!/bin/sh
# Redis checks for CI, run after Debian's redis-server package is
# installed: the tests that need a real Redis must run here, not skip.
#
# The tests that only use Redis take an empty database of the suite's
# server, the one .ci/run starts and names in RELAY_TEST_REDIS; those that
# kill Redis (the scale-out test under three running relays, the cluster
# tests of the fallback) start and stop their own on a free loopback port
# (cluster/redistest), since go test runs packages at once and the suite's
# must stay up for the others. This script checks that they ran and
# passed, and that the suite's server was the one used.
set -eu
cd "$(dirname "$0")/.."

command -v redis-server >/dev/null 2>&1 || {
	echo "redis-check: redis-server is not on PATH (apt-get install redis-server)" >&2
	exit 1
}
redis-server --version

run() {
	pkg=$1
	shift
	pattern=$(echo "$@" | tr ' ' '|')
	out=$(go test -count=1 -v -run "^($pattern)\$" "$pkg" 2>&1) || {
		echo "$out"
		exit 1
	}
	echo "$out" | grep -E -- '^(--- |ok|PASS)'
	for t in "$@"; do
		echo "$out" | grep -q -- "--- PASS: $t " || {
			echo "redis-check: $t did not run in $pkg (skipped?)" >&2
			exit 1
		}
	done
}

run ./cluster TestBudgetSharedAcrossReplicas TestBudgetReservesInOrder TestPauseStopsEveryReplica \
	TestPauseNoticedWhileWaiting TestFallbackAndReturn TestStartsInFallback TestStoreSharesDocuments TestCollapse TestSlotLostWithRedisState
run ./internal/relay TestScaleOut

if [ -n "${RELAY_TEST_REDIS:-}" ]; then
	used=$(redis-cli -u "$RELAY_TEST_REDIS" info keyspace | grep -c '^db' || true)
	[ "$used" -gt 0 ] || {
		echo "redis-check: no test wrote to the suite's Redis ($RELAY_TEST_REDIS)" >&2
		exit 1
	}
	echo "the suite's Redis ($RELAY_TEST_REDIS): $used databases used"
fi
