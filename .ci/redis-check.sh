#!/bin/sh
# Redis checks for CI, run after Debian's redis-server package is
# installed: the tests that need a real Redis must run here, not skip.
#
# Each of those tests starts and stops its own redis-server on a free
# loopback port (cluster/redistest) rather than sharing one for the suite:
# the scale-out test kills Redis under three running relays and restarts
# it, the cluster tests kill it to see the fallback, and go test runs
# packages at once, so a shared server would be pulled from under the
# others. This script checks that they ran and passed.
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
