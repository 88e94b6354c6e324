package pulsedive_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"github.com/pulsedive-relay/relay/pulsedive"
	"github.com/pulsedive-relay/relay/pulsedive/pulsedivetest"
)

func TestAPIKeyRedacts(t *testing.T) {
	k := testKey
	outputs := map[string]string{
		"Sprint":  fmt.Sprint(k),
		"Sprintf": fmt.Sprintf("%v %+v %#v %s %q %x %X %d %10s", k, k, k, k, k, k, k, k, k),
		"struct":  fmt.Sprintf("%v %+v %#v", struct{ K pulsedive.APIKey }{k}, struct{ K pulsedive.APIKey }{k}, struct{ K pulsedive.APIKey }{k}),
		"pointer": fmt.Sprintf("%v", &k),
		"String":  k.String(),
	}
	js, err := json.Marshal(map[string]pulsedive.APIKey{"key": k})
	if err != nil {
		t.Fatal(err)
	}
	outputs["json"] = string(js)
	var logged bytes.Buffer
	slog.New(slog.NewJSONHandler(&logged, nil)).Info("x", "key", k, slog.Group("g", "key", k))
	slog.New(slog.NewTextHandler(&logged, nil)).Info("x", "key", k, "any", any(k))
	outputs["slog"] = logged.String()

	for name, out := range outputs {
		if strings.Contains(out, keyMarker) {
			t.Errorf("%s leaks the key: %s", name, out)
		}
		if !strings.Contains(out, "[redacted]") {
			t.Errorf("%s = %q, want [redacted] in it", name, out)
		}
	}
	if got := k.Reveal(); got != string(testKey) {
		t.Errorf("Reveal() = %q, want the key", got)
	}
}

func TestFingerprint(t *testing.T) {
	a, b := pulsedive.APIKey("alpha").Fingerprint(), pulsedive.APIKey("beta").Fingerprint()
	if a == b || len(a) != 32 || strings.Contains(a, "alpha") {
		t.Errorf("fingerprints %q and %q: want distinct 32-hex-digit hashes", a, b)
	}
	if again := pulsedive.APIKey("alpha").Fingerprint(); again != a {
		t.Errorf("fingerprint changed: %q then %q", a, again)
	}
	// The fake counts calls by the same fingerprint.
	if fake := pulsedivetest.KeyFingerprint(string(testKey)); fake != testKey.Fingerprint() {
		t.Errorf("pulsedivetest.KeyFingerprint = %q, want %q", fake, testKey.Fingerprint())
	}
}
