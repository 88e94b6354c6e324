#!/usr/bin/env bash
# fuzz.sh runs every fuzz target of the repository for a short, fixed time
# each and fails when any of them finds a crasher (or when a crasher kept
# from an earlier run still fails).
#
# Usage: .ci/fuzz.sh [seconds]     seconds per target, 10 by default
#
# Targets are found with grep -r "func Fuzz" --include=*_test.go; each runs
# alone, as
#   go test -run='^$' -fuzz='^Name$' -fuzztime=<seconds>s ./pkg
# with the minimization of new inputs capped by FUZZ_MINIMIZE_TIME (2s by
# default: go's 60s would eat a short run). FUZZ_PARALLEL sets -parallel
# (GOMAXPROCS by default).
#
# A crasher is written by go test to pkg/testdata/fuzz/Name/<hash>. Keep it
# in the repository: every plain `go test ./pkg` replays it as a seed, so it
# stays a failing test until the bug is fixed. Replay one alone with
#   go test -run='^Name/<hash>$' ./pkg
#
# Longer runs (nightly, or before a release), one target:
#   go test -run='^$' -fuzz='^FuzzObservablesBody$' -fuzztime=30m -fuzzminimizetime=60s ./transport
# or every target for 30 minutes each:
#   FUZZ_MINIMIZE_TIME=60s .ci/fuzz.sh 1800
set -euo pipefail

cd "$(dirname "$0")/.."

secs="${1:-10}"
if ! [[ "$secs" =~ ^[0-9]+$ ]] || ((secs == 0)); then
	echo "usage: $0 [seconds per target, a positive integer]" >&2
	exit 2
fi
minimize="${FUZZ_MINIMIZE_TIME:-2s}"
parallel=()
if [[ -n "${FUZZ_PARALLEL:-}" ]]; then
	parallel=(-parallel "$FUZZ_PARALLEL")
fi

# "path/to/file_test.go:func FuzzName", one per target, in a stable order.
mapfile -t targets < <(
	grep -rEo --include='*_test.go' --exclude-dir=.git --exclude-dir=vendor --exclude-dir=testdata \
		'^func Fuzz[A-Za-z0-9_]*' . | sort
)
if ((${#targets[@]} == 0)); then
	echo "fuzz.sh: no fuzz targets found" >&2
	exit 1
fi

failed=()
for t in "${targets[@]}"; do
	file="${t%%:*}"
	name="${t##*func }"
	pkg="$(dirname "$file")"
	echo "=== $name ($pkg, ${secs}s)"
	if ! go test -run='^$' -fuzz="^${name}\$" -fuzztime="${secs}s" \
		-fuzzminimizetime="$minimize" "${parallel[@]}" "$pkg"; then
		failed+=("$name ($pkg)")
		if [[ -d "$pkg/testdata/fuzz/$name" ]]; then
			echo "--- crashers of $name, keep them as seeds:"
			ls -1 "$pkg/testdata/fuzz/$name"
		fi
	fi
done

if ((${#failed[@]} > 0)); then
	echo
	echo "FAIL: ${#failed[@]} of ${#targets[@]} fuzz targets failed:"
	printf '  %s\n' "${failed[@]}"
	exit 1
fi
echo
echo "ok: ${#targets[@]} fuzz targets, ${secs}s each, no crasher"
