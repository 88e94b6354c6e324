package relay

import (
	"io"
	"log/slog"
	"math"
	"testing"
)

// TestWireErrorsNamedOnce: a part that refuses its configuration names
// itself in its error, and wire passes the error on as it is ("limiter:
// limiter: ..." was issue 13). loadConfig refuses these values first; wire
// is reached with them only through a bug, which the error must then
// show plainly.
func TestWireErrorsNamedOnce(t *testing.T) {
	tests := []struct {
		name   string
		change func(c *config)
		want   string
	}{
		{"limiter", func(c *config) { c.RateLimit = math.NaN() }, "limiter: PerMinute NaN is not a finite number of calls, zero or more"},
		{"auth", func(c *config) { c.JWKSHosts = []string{"https://jwks.example"} }, `auth config: JWKS host "https://jwks.example" is not a bare host[:port]`},
		{"pulsedive", func(c *config) { c.PulsediveURL = "ftp://pulsedive.example" }, `pulsedive: base URL "ftp://pulsedive.example" is not an http(s) URL`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := loadConfig(mapEnv(nil))
			if err != nil {
				t.Fatal(err)
			}
			tt.change(&cfg)
			app, err := wire(cfg, Deps{Stderr: io.Discard}, slog.New(slog.DiscardHandler), func() bool { return true })
			if err == nil {
				app.close()
				t.Fatalf("wire succeeded, want %q", tt.want)
			}
			if got := err.Error(); got != tt.want {
				t.Errorf("wire error %q, want %q", got, tt.want)
			}
		})
	}
}
