package relay

import (
	"os"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/pulsedive-relay/relay/cache"
	"github.com/pulsedive-relay/relay/cluster"
	"github.com/pulsedive-relay/relay/limiter"
	"github.com/pulsedive-relay/relay/pipeline"
	"github.com/pulsedive-relay/relay/pulsedive"
	"github.com/pulsedive-relay/relay/transport"
	"github.com/pulsedive-relay/relay/transport/auth"
)

func TestDefaultsLoad(t *testing.T) {
	cfg, err := loadConfig(func(string) string { return "" })
	if err != nil {
		t.Fatalf("defaults do not load: %v", err)
	}
	// Spot-check the spec's configuration table (section 7).
	checks := []struct {
		name      string
		got, want any
	}{
		{"RELAY_ADDR", cfg.Addr, ":9090"},
		{"PULSEDIVE_API_URL", cfg.PulsediveURL, "https://pulsedive.com/api/"},
		{"PULSEDIVE_RATE_LIMIT", cfg.RateLimit, 30.0},
		{"PULSEDIVE_BURST", cfg.Burst, 10}, // issue 15: ten verdicts at once
		{"RELAY_LINKS_MAX_WAIT", cfg.LinksMaxWait, 5 * time.Second},
		{"PULSEDIVE_TIMEOUT", cfg.PulsediveTimeout, 10 * time.Second},
		{"RELAY_REQUEST_TIMEOUT", cfg.RequestTimeout, 25 * time.Second},
		{"RELAY_WORKERS", cfg.Workers, 32},
		{"RELAY_MAX_INFLIGHT", cfg.MaxInflight, 256},
		{"RELAY_MAX_INFLIGHT_PER_KEY", cfg.MaxInflightKey, 64},
		{"RELAY_MAX_OBSERVABLES", cfg.MaxObservables, 1000},
		{"RELAY_MAX_BODY_BYTES", cfg.MaxBodyBytes, int64(1048576)},
		{"CACHE_MAX_BYTES", cfg.CacheMaxBytes, int64(67108864)},
		{"CACHE_TTL", cfg.CacheTTL, time.Hour},
		{"CACHE_NEGATIVE_TTL", cfg.NegativeTTL, 10 * time.Minute},
		{"CACHE_STALE_TTL", cfg.StaleTTL, 24 * time.Hour},
		{"RELAY_JWKS_HOSTS", cfg.JWKSHosts, []string{"visibility.amp.cisco.com", "visibility.eu.amp.cisco.com", "visibility.apjc.amp.cisco.com"}},
		{"RELAY_AUDIENCE", len(cfg.Audiences), 0},
		{"CTR_ENTITIES_LIMIT", cfg.EntitiesLimit, 100},
		{"RELAY_DRAIN_DELAY", cfg.DrainDelay, 5 * time.Second},
		// Issue 9: the drain covers a request accepted as the listener
		// closes (5s for its headers, 25s of work, 15s to write its answer);
		// the contract's 20s cut such requests off.
		{"RELAY_SHUTDOWN_TIMEOUT", cfg.ShutdownTimeout, 45 * time.Second},
		{"RELAY_MEMORY_LIMIT", cfg.MemoryLimit, int64(128 << 20)},
		{"LOG_FORMAT", cfg.LogFormat, "json"},
		{"REDIS_URL", cfg.RedisURL, ""},
		{"REDIS_TIMEOUT", cfg.RedisTimeout, 250 * time.Millisecond},
		{"RELAY_REPLICAS", cfg.Replicas, 1},
	}
	for _, c := range checks {
		if diff := cmp.Diff(c.want, c.got); diff != "" {
			t.Errorf("%s default (-want +got):\n%s", c.name, diff)
		}
	}
}

func TestLoadConfigReportsEveryBadValue(t *testing.T) {
	env := map[string]string{"RELAY_WORKERS": "many", "CACHE_TTL": "1 hour", "RELAY_AUDIENCE": "https://Relay.Example.com"}
	_, err := loadConfig(func(k string) string { return env[k] })
	if err == nil {
		t.Fatal("bad values were accepted")
	}
	for _, name := range []string{"RELAY_WORKERS", "CACHE_TTL"} {
		if !strings.Contains(err.Error(), name) {
			t.Errorf("error does not name %s: %v", name, err)
		}
	}
	delete(env, "RELAY_WORKERS")
	delete(env, "CACHE_TTL")
	cfg, err := loadConfig(func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"https://Relay.Example.com"}, cfg.Audiences); diff != "" {
		t.Errorf("audiences must keep their case (-want +got):\n%s", diff)
	}
}

// TestPerKeyShare: RELAY_MAX_INFLIGHT_PER_KEY defaults to a quarter of
// RELAY_MAX_INFLIGHT and may not exceed it.
func TestPerKeyShare(t *testing.T) {
	tests := []struct {
		total, perKey string
		want          int
		wantErr       string
	}{
		{total: "", perKey: "", want: 64},
		{total: "10", perKey: "", want: 2},
		{total: "3", perKey: "", want: 1},
		{total: "1", perKey: "", want: 1},
		{total: "10", perKey: "10", want: 10},
		{total: "", perKey: "1", want: 1},
		{total: "10", perKey: "11", wantErr: "RELAY_MAX_INFLIGHT_PER_KEY=\"11\": must be at most RELAY_MAX_INFLIGHT (10)"},
	}
	for _, tt := range tests {
		t.Run(tt.total+"/"+tt.perKey, func(t *testing.T) {
			env := map[string]string{"RELAY_MAX_INFLIGHT": tt.total, "RELAY_MAX_INFLIGHT_PER_KEY": tt.perKey}
			cfg, err := loadConfig(func(k string) string { return env[k] })
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Errorf("error = %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if cfg.MaxInflightKey != tt.want {
				t.Errorf("per-key share = %d, want %d", cfg.MaxInflightKey, tt.want)
			}
		})
	}
}

// TestREADMEConfigTable keeps the README's configuration table equal to
// the settings the relay reads.
func TestREADMEConfigTable(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	text := string(readme)
	begin := strings.Index(text, "<!-- CONFIG-TABLE:BEGIN")
	end := strings.Index(text, "<!-- CONFIG-TABLE:END -->")
	if begin < 0 || end < begin {
		t.Fatal("README lacks the CONFIG-TABLE markers")
	}
	var got []string
	for _, line := range strings.Split(text[begin:end], "\n")[1:] {
		if strings.HasPrefix(line, "| ") && !strings.HasPrefix(line, "| variable") {
			got = append(got, line)
		}
	}
	var want []string
	for _, s := range settings {
		want = append(want, "| "+s.name+" | "+s.def+" | "+s.meaning+" |")
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("README configuration table differs from internal/relay/config.go (-want +got):\n%s", diff)
	}
}

func TestMemoryLimit(t *testing.T) {
	const mib = 1 << 20
	for _, tt := range []struct{ cache, want int64 }{
		{64 * mib, 128 * mib}, // the default budget: 64 MiB of room
		{0, 64 * mib},         // no cache
		{1024 * mib, 1536 * mib},
	} {
		if got := memoryLimit(tt.cache); got != tt.want {
			t.Errorf("memoryLimit(%d MiB) = %d MiB, want %d MiB", tt.cache/mib, got/mib, tt.want/mib)
		}
	}
}

// TestDefaultsAreThePackages: with nothing set, each setting whose
// default a package applies to a zero field takes that package's Default
// constant, written out and read back (durationText and the parsers agree),
// so the relay and the package cannot drift apart.
func TestDefaultsAreThePackages(t *testing.T) {
	cfg, err := loadConfig(func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]any{
		"PULSEDIVE_API_URL":      cfg.PulsediveURL,
		"PULSEDIVE_BURST":        cfg.Burst,
		"PULSEDIVE_TIMEOUT":      cfg.PulsediveTimeout,
		"RELAY_REQUEST_TIMEOUT":  cfg.RequestTimeout,
		"RELAY_LINKS_MAX_WAIT":   cfg.LinksMaxWait,
		"RELAY_WORKERS":          cfg.Workers,
		"BREAKER_OPEN_FOR":       cfg.BreakerOpenFor,
		"RELAY_MAX_OBSERVABLES":  cfg.MaxObservables,
		"RELAY_MAX_BODY_BYTES":   cfg.MaxBodyBytes,
		"CACHE_MAX_BYTES":        cfg.CacheMaxBytes,
		"CACHE_TTL":              cfg.CacheTTL,
		"CACHE_NEGATIVE_TTL":     cfg.NegativeTTL,
		"CACHE_STALE_TTL":        cfg.StaleTTL,
		"RELAY_JWKS_HOSTS":       cfg.JWKSHosts,
		"RELAY_JWKS_TTL":         cfg.JWKSTTL,
		"RELAY_JWKS_MAX_KEY_AGE": cfg.JWKSMaxKeyAge,
		"CTR_ENTITIES_LIMIT":     cfg.EntitiesLimit,
		"REDIS_TIMEOUT":          cfg.RedisTimeout,
	}
	want := map[string]any{
		"PULSEDIVE_API_URL":      pulsedive.DefaultBaseURL,
		"PULSEDIVE_BURST":        limiter.DefaultBurst,
		"PULSEDIVE_TIMEOUT":      pulsedive.DefaultTimeout,
		"RELAY_REQUEST_TIMEOUT":  pipeline.DefaultRequestTimeout,
		"RELAY_LINKS_MAX_WAIT":   pipeline.DefaultLinksMaxWait,
		"RELAY_WORKERS":          pipeline.DefaultWorkers,
		"BREAKER_OPEN_FOR":       pulsedive.DefaultBreakerOpenFor,
		"RELAY_MAX_OBSERVABLES":  transport.DefaultMaxObservables,
		"RELAY_MAX_BODY_BYTES":   int64(transport.DefaultMaxBodyBytes),
		"CACHE_MAX_BYTES":        int64(cache.DefaultMaxBytes),
		"CACHE_TTL":              pipeline.DefaultCacheTTL,
		"CACHE_NEGATIVE_TTL":     pipeline.DefaultNegativeTTL,
		"CACHE_STALE_TTL":        pipeline.DefaultStaleTTL,
		"RELAY_JWKS_HOSTS":       auth.DefaultJWKSHosts(),
		"RELAY_JWKS_TTL":         auth.DefaultJWKSTTL,
		"RELAY_JWKS_MAX_KEY_AGE": auth.DefaultMaxKeyAge,
		"CTR_ENTITIES_LIMIT":     auth.DefaultEntitiesLimit,
		"REDIS_TIMEOUT":          cluster.DefaultTimeout,
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("defaults against the packages' (-package +relay):\n%s", diff)
	}
}

// TestJWKSHostsAgreeWithAuth: every allow-list the configuration accepts,
// the authenticator accepts too, so a bad entry is reported naming
// RELAY_JWKS_HOSTS at start-up rather than failing later without it.
func TestJWKSHostsAgreeWithAuth(t *testing.T) {
	for _, v := range []string{"a.example:99999", "a.example:0", "user@a.example", "a.example/x", "[::1", "-a.example"} {
		_, err := loadConfig(func(k string) string {
			if k == "RELAY_JWKS_HOSTS" {
				return v
			}
			return ""
		})
		if err == nil || !strings.Contains(err.Error(), "RELAY_JWKS_HOSTS") {
			t.Errorf("RELAY_JWKS_HOSTS=%q: error %v, want one naming the variable", v, err)
		}
	}
}

// TestDerivedSettings: one number, the memory limit, sets every admission
// bound, and the request timeout sets the shutdown timeout; a value the
// operator gives wins over its derivation.
func TestDerivedSettings(t *testing.T) {
	const mib = 1 << 20
	type derived struct {
		MemoryLimit           int64
		Connections, Requests int
		BodyBudget            int64
		ObservablesInFlight   int
		ShutdownTimeout       time.Duration
	}
	tests := []struct {
		name string
		env  map[string]string
		want derived
	}{
		{"defaults: the cache budget's soft limit", nil,
			derived{128 * mib, 256, 256, 6 * mib, 2000, 45 * time.Second}},
		{"GOMEMLIMIT of the deployment", map[string]string{"GOMEMLIMIT": "200MiB"},
			derived{200 * mib, 469, 352, 22 * mib, 2112, 45 * time.Second}},
		{"RELAY_MEMORY_LIMIT wins over GOMEMLIMIT", map[string]string{"GOMEMLIMIT": "200MiB", "RELAY_MEMORY_LIMIT": "1GiB"},
			derived{1024 * mib, 4864, 3648, 228 * mib, 21888, 45 * time.Second}},
		{"GOMEMLIMIT off", map[string]string{"GOMEMLIMIT": "off"},
			derived{128 * mib, 256, 256, 6 * mib, 2000, 45 * time.Second}},
		{"bounds given", map[string]string{"RELAY_MAX_CONNECTIONS": "10", "RELAY_MAX_REQUESTS": "5", "RELAY_BODY_BUDGET": "2097152", "RELAY_OBSERVABLES_IN_FLIGHT": "1000"},
			derived{128 * mib, 10, 5, 2 * mib, 1000, 45 * time.Second}},
		{"bigger requests raise the floors", map[string]string{"RELAY_MAX_BODY_BYTES": "16777216", "RELAY_MAX_OBSERVABLES": "5000"},
			derived{128 * mib, 256, 256, 64 * mib, 10000, 45 * time.Second}},
		{"shutdown follows the request timeout", map[string]string{"RELAY_REQUEST_TIMEOUT": "3s"},
			derived{128 * mib, 256, 256, 6 * mib, 2000, 23 * time.Second}},
		{"shutdown given", map[string]string{"RELAY_REQUEST_TIMEOUT": "3s", "RELAY_SHUTDOWN_TIMEOUT": "3s"},
			derived{128 * mib, 256, 256, 6 * mib, 2000, 3 * time.Second}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := loadConfig(func(k string) string { return tt.env[k] })
			if err != nil {
				t.Fatal(err)
			}
			got := derived{cfg.MemoryLimit, cfg.MaxConnections, cfg.MaxRequests, cfg.BodyBudget, cfg.ObservablesInFlight, cfg.ShutdownTimeout}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

func TestParseByteSize(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want int64
		ok   bool
	}{
		{"134217728", 134217728, true},
		{"200MiB", 200 << 20, true},
		{"1GiB", 1 << 30, true},
		{"64KiB", 64 << 10, true},
		{"512B", 512, true},
		{"2TiB", 2 << 40, true},
		{"200MB", 0, false},
		{"200 MiB", 0, false},
		{"-1", 0, false},
		{"", 0, false},
		{"99999999999TiB", 0, false},
	} {
		got, ok := parseByteSize(tt.in)
		if got != tt.want || ok != tt.ok {
			t.Errorf("parseByteSize(%q) = %d, %v; want %d, %v", tt.in, got, ok, tt.want, tt.ok)
		}
	}
}
