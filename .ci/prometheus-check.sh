#!/bin/sh
# Prometheus checks for CI, run after Debian's prometheus package (2.42) is
# installed: promtool validates deploy/prometheus (configuration, rules and
# the rules' unit tests), then a real Prometheus scrapes the relay
# (internal/relay TestPrometheusScrapesTheRelay), which must run here, not skip.
set -eu
cd "$(dirname "$0")/.."

for tool in prometheus promtool; do
	command -v "$tool" >/dev/null 2>&1 || {
		echo "prometheus-check: $tool is not on PATH (apt-get install prometheus)" >&2
		exit 1
	}
done

promtool check config deploy/prometheus/prometheus.yml
promtool check rules deploy/prometheus/rules.yml
(cd deploy/prometheus && promtool test rules rules_test.yml)
# deploy/prometheus/kubernetes.yml uses Kubernetes discovery, which
# Debian's build of Prometheus leaves out: TestKubernetesScrapeConfig in
# deploy/ checks it instead, down to its relabelling. The PrometheusRule is
# rules.yml's groups (TestPrometheusRuleEqualsRulesFile).

out=$(go test -count=1 -v -run '^TestPrometheusScrapesTheRelay$' ./internal/relay 2>&1) || {
	echo "$out"
	exit 1
}
echo "$out"
echo "$out" | grep -q -- '--- PASS: TestPrometheusScrapesTheRelay' || {
	echo "prometheus-check: TestPrometheusScrapesTheRelay did not run" >&2
	exit 1
}
