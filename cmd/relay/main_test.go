package main

import (
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
)

// TestRelayLinksNoTestMachinery: the relay's binary links no package meant
// for tests: not testing (which a third-party module may drag in: an older
// go-abnf, under prometheus/common, did), not net/http/httptest, not the
// project's fakes. It asks the go command for every package the binary
// links, as the image builds it (the relay's module alone) and as a
// checkout builds it (go.work, with deploy/'s requirements).
// TestProductHoldsNoTestMachinery in pipeline explains a failure within
// the project.
func TestRelayLinksNoTestMachinery(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the go command")
	}
	for _, gowork := range []string{"off", ""} {
		t.Run("GOWORK="+gowork, func(t *testing.T) {
			cmd := exec.Command("go", "list", "-deps", "-f", "{{.ImportPath}}", ".")
			cmd.Env = append(os.Environ(), "GOWORK="+gowork)
			out, err := cmd.Output()
			if err != nil {
				t.Fatalf("go list: %v", err)
			}
			deps := strings.Fields(string(out))
			for _, want := range []string{"github.com/pulsedive-relay/relay/internal/relay", "net/http"} {
				if !slices.Contains(deps, want) {
					t.Fatalf("go list -deps does not list %s: is it listing the relay's packages?\n%s", want, out)
				}
			}
			for _, dep := range deps {
				if dep == "testing" || strings.HasPrefix(dep, "testing/") || dep == "net/http/httptest" ||
					strings.HasSuffix(dep, "pulsedivetest") || strings.HasSuffix(dep, "authtest") || strings.HasSuffix(dep, "redistest") {
					t.Errorf("the relay links %s", dep)
				}
			}
		})
	}
}
