package pulsedivetest

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"strings"
	"time"
)

// Synthetic returns the made-up Pulsedive answers the fake gives, in synthetic
// mode, for a value absent from its fixtures. The answers depend only on the
// value: the same value gives the same bytes on every call and in every
// process. They look like Pulsedive's: a risk, one to three risk factors, up
// to two threats and feeds, stamps in January to early April 2020 (so a clock
// fixed at 2020-04-15 finds them recent), and a links document whose
// Active DNS entries pair with the value's type (addresses for a domain,
// domains for an address; none for a URL), most of them within 90 days of
// 2020-04-15 and now and then an older one.
func Synthetic(value string) Entry {
	sum := sha256.Sum256([]byte(value))
	r := rand.New(rand.NewPCG(binary.BigEndian.Uint64(sum[:8]), binary.BigEndian.Uint64(sum[8:16])))
	typ := typeOf(value)
	iid := 1_000_000 + r.IntN(90_000_000)

	seen := synthEpoch.Add(time.Duration(r.IntN(95*24*3600)) * time.Second)
	added := seen.Add(-time.Duration(1+r.IntN(700)) * 24 * time.Hour)
	risk := synthRisks[r.IntN(len(synthRisks))]
	retired := ""
	if risk == "none" && r.IntN(2) == 0 {
		retired = "No recent activity"
	}

	doc := map[string]any{
		"iid":              iid,
		"type":             typ,
		"indicator":        value,
		"risk":             risk,
		"risk_recommended": risk,
		"manualrisk":       0,
		"retired":          retired,
		"stamp_added":      stamp(added),
		"stamp_updated":    stamp(seen),
		"stamp_seen":       stamp(seen),
		"stamp_probed":     stamp(seen.Add(3 * time.Second)),
		"stamp_retired":    "",
		"recent":           r.IntN(2),
		"riskfactors":      pick(r, synthRiskFactors, 1+r.IntN(3)),
		"threats":          linked(r, pick(r, synthThreats, r.IntN(3)), added, seen),
		"feeds":            linked(r, pick(r, synthFeeds, r.IntN(3)), added, seen),
		"comments":         []any{},
		"attributes":       map[string]any{},
		"properties":       map[string]any{},
	}

	links := map[string]any{}
	if dns := activeDNS(r, typ); len(dns) > 0 {
		links["Active DNS"] = dns
	}
	return Entry{
		Info:  Answer{Status: 200, Body: mustJSON(doc)},
		Links: Answer{Status: 200, Body: mustJSON(links)},
	}
}

// synthEpoch is the earliest stamp of a synthetic document.
var synthEpoch = time.Date(2020, time.January, 1, 0, 0, 0, 0, time.UTC)

// recentFloor and recentSpan place synthetic Active DNS links inside the 90
// days before 2020-04-15.
var (
	recentFloor = time.Date(2020, time.January, 20, 0, 0, 0, 0, time.UTC)
	recentSpan  = 85 * 24 * time.Hour
)

var synthRisks = []string{"none", "unknown", "low", "medium", "high", "critical"}

var synthRiskFactors = []map[string]any{
	{"rfid": 60, "description": "found in threat feeds", "risk": "medium"},
	{"rfid": 32, "description": "registration recently updated", "risk": "medium"},
	{"rfid": 7, "description": "malware distribution", "risk": "high"},
	{"rfid": 12, "description": "self-signed ssl certificate", "risk": "low"},
	{"rfid": 90, "description": "phishing page", "risk": "critical"},
	{"rfid": 15, "description": "newly registered domain", "risk": "low"},
}

var synthThreats = []map[string]any{
	{"tid": 41, "name": "Emotet", "category": "malware", "risk": "critical"},
	{"tid": 7, "name": "Zeus", "category": "malware", "risk": "high"},
	{"tid": 108, "name": "JS Crypto Miner", "category": "abuse", "risk": "unknown"},
	{"tid": 9, "name": "Kraken Botnet", "category": "malware", "risk": "unknown"},
}

var synthFeeds = []map[string]any{
	{"fid": 13, "name": "BBcan177 DNSBL", "category": "general", "organization": "BBcan177", "pricing": "free"},
	{"fid": 60, "name": "ZeroDot1's Bad IPs Feed", "category": "abuse", "organization": "ZeroDot1", "pricing": "free"},
	{"fid": 2, "name": "Feodo Tracker", "category": "malware", "organization": "abuse.ch", "pricing": "free"},
	{"fid": 31, "name": "OpenPhish Feed", "category": "phishing", "organization": "OpenPhish", "pricing": "free"},
}

// typeOf guesses Pulsedive's indicator type of a value.
func typeOf(value string) string {
	if a, err := netip.ParseAddr(value); err == nil {
		if a.Is4() || a.Is4In6() {
			return "ip"
		}
		return "ipv6"
	}
	if strings.Contains(value, "://") {
		return "url"
	}
	return "domain"
}

// pick returns n distinct entries of pool, copied, in a random order.
func pick(r *rand.Rand, pool []map[string]any, n int) []map[string]any {
	out := make([]map[string]any, 0, n)
	for _, i := range r.Perm(len(pool))[:min(n, len(pool))] {
		m := make(map[string]any, len(pool[i])+1)
		for k, v := range pool[i] {
			m[k] = v
		}
		out = append(out, m)
	}
	return out
}

// linked stamps each entry with a stamp_linked between from and to.
func linked(r *rand.Rand, entries []map[string]any, from, to time.Time) []map[string]any {
	span := max(int64(to.Sub(from)/time.Second), 1)
	for _, e := range entries {
		e["stamp_linked"] = stamp(from.Add(time.Duration(r.Int64N(span)) * time.Second))
	}
	return entries
}

// activeDNS makes one to three links of the type that pairs with typ, the
// last one outside the 90-day window one time in four.
func activeDNS(r *rand.Rand, typ string) []map[string]any {
	if typ == "url" {
		return nil
	}
	n := 1 + r.IntN(3)
	out := make([]map[string]any, 0, n)
	for i := range n {
		linkedAt := recentFloor.Add(time.Duration(r.Int64N(int64(recentSpan/time.Second))) * time.Second)
		if i == n-1 && r.IntN(4) == 0 {
			linkedAt = time.Date(2019, time.June, 1+r.IntN(28), 10, 0, 0, 0, time.UTC)
		}
		var value, kind string
		switch {
		case typ != "domain":
			value, kind = fmt.Sprintf("host%d.synthetic-%04x.example", i+1, r.IntN(1<<16)), "domain"
		case r.IntN(5) == 0:
			value, kind = fmt.Sprintf("2001:db8:%x::%x", r.IntN(1<<16), 1+r.IntN(1<<16-1)), "ipv6"
		default:
			value, kind = fmt.Sprintf("198.%d.%d.%d", 18+r.IntN(2), r.IntN(256), 1+r.IntN(254)), "ip"
		}
		out = append(out, map[string]any{
			"iid":          1_000_000 + r.IntN(90_000_000),
			"indicator":    value,
			"type":         kind,
			"risk":         synthRisks[r.IntN(len(synthRisks))],
			"stamp_linked": stamp(linkedAt),
			"summary":      map[string]any{},
		})
	}
	return out
}

// stamp formats t as Pulsedive does: UTC, "YYYY-MM-DD HH:MM:SS".
func stamp(t time.Time) string { return t.UTC().Format(time.DateTime) }

// mustJSON encodes values built in this file from maps, strings and ints,
// which cannot fail to encode.
func mustJSON(v any) json.RawMessage {
	b, err := json.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("pulsedivetest: encoding a synthetic document: %v", err))
	}
	return b
}
