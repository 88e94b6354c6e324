package relay

import (
	"fmt"
	"regexp"
	"slices"
	"strings"
)

// A misspelt variable (RELAY_ADRR) is ignored by the settings, which then
// take their defaults without a word. check-config and start-up look
// through the whole environment for variables that carry one of the
// relay's prefixes but are no setting, and name the nearest setting.

// settingPrefixes are the prefixes of the relay's settings.
var settingPrefixes = []string{"RELAY_", "PULSEDIVE_", "CACHE_", "BREAKER_", "REDIS_", "METRICS_", "LOG_", "CTR_"}

// notSettings explain variables an operator may set believing the relay
// reads them. (`relay token -pulsedive-key-env` reads the variable it is
// given, never one by default.)
var notSettings = map[string]string{
	"PULSEDIVE_API_KEY": "Pulsedive keys arrive in each request's configuration token",
}

// serviceLink matches the variables Kubernetes sets for every Service of
// the namespace (and Docker for linked containers): a Service named
// pulsedive-relay or redis gives PULSEDIVE_RELAY_SERVICE_HOST,
// REDIS_PORT_6379_TCP_ADDR and the like, which are nobody's typo.
var serviceLink = regexp.MustCompile(`^[A-Z0-9_]+_(SERVICE_HOST|SERVICE_PORT(_[A-Z0-9_]+)?|PORT_[0-9]+_(TCP|UDP|SCTP)(_PROTO|_PORT|_ADDR)?)$`)

// stray is a variable with a setting's prefix that is no setting.
type stray struct {
	name       string
	suggestion string // the nearest setting's name, if one is near
	note       string // why the relay does not read it, when known
}

func (s stray) String() string {
	switch {
	case s.note != "":
		return fmt.Sprintf("%s is not a setting of the relay: %s", s.name, s.note)
	case s.suggestion != "":
		return fmt.Sprintf("%s is not a setting of the relay; did you mean %s?", s.name, s.suggestion)
	}
	return fmt.Sprintf("%s is not a setting of the relay ('relay check-config' lists the settings)", s.name)
}

// strays lists, by name, the variables of environ (NAME=value entries, as
// os.Environ gives them) that carry a setting's prefix, in any case, but
// are no setting. Values are never looked at but for Kubernetes'
// NAME_PORT=tcp://…, and never shown.
func strays(environ []string) []stray {
	known := make(map[string]bool, len(settings))
	for _, s := range settings {
		known[s.name] = true
	}
	seen := map[string]bool{}
	var out []stray
	for _, kv := range environ {
		name, value, _ := strings.Cut(kv, "=")
		upper := strings.ToUpper(name)
		if known[name] || seen[name] || !hasSettingPrefix(upper) || isServiceLink(upper, value) {
			continue
		}
		seen[name] = true
		out = append(out, stray{name: name, suggestion: nearestSetting(upper), note: notSettings[name]})
	}
	slices.SortFunc(out, func(a, b stray) int { return strings.Compare(a.name, b.name) })
	return out
}

func hasSettingPrefix(name string) bool {
	for _, p := range settingPrefixes {
		if strings.HasPrefix(name, p) {
			return true
		}
	}
	return false
}

func isServiceLink(name, value string) bool {
	if serviceLink.MatchString(name) {
		return true
	}
	// NAME_PORT=tcp://10.0.0.1:6379, but METRICS_PORT=9091 is a guess at a
	// setting.
	if strings.HasSuffix(name, "_PORT") {
		for _, scheme := range []string{"tcp://", "udp://", "sctp://"} {
			if strings.HasPrefix(value, scheme) {
				return true
			}
		}
	}
	return false
}

// nearestSetting is the setting whose name is nearest to name, if it is
// near enough to be a misspelling of it: at most 3 edits, and at most one
// edit per 4 characters.
func nearestSetting(name string) string {
	best, bestDist := "", -1
	for _, s := range settings {
		d := editDistance(name, s.name)
		if bestDist < 0 || d < bestDist {
			best, bestDist = s.name, d
		}
	}
	if bestDist > 3 || 4*bestDist > len(name) {
		return ""
	}
	return best
}

// editDistance is the optimal string alignment distance between a and b:
// insertions, deletions, substitutions and transpositions of neighbours
// (ADRR and ADDR are one apart; LIMT and LIMIT too).
func editDistance(a, b string) int {
	// d[i][j] is the distance between a[:i] and b[:j].
	d := make([][]int, len(a)+1)
	for i := range d {
		d[i] = make([]int, len(b)+1)
		d[i][0] = i
	}
	for j := range d[0] {
		d[0][j] = j
	}
	for i := 1; i <= len(a); i++ {
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			d[i][j] = min(d[i-1][j]+1, d[i][j-1]+1, d[i-1][j-1]+cost)
			if i > 1 && j > 1 && a[i-1] == b[j-2] && a[i-2] == b[j-1] {
				d[i][j] = min(d[i][j], d[i-2][j-2]+1)
			}
		}
	}
	return d[len(a)][len(b)]
}
