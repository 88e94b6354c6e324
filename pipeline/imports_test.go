package pipeline

import (
	"go/build"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

const module = "github.com/pulsedive-relay/relay"

// TestImportRule holds the rule of the package documentation: imports go
// one way, from cmd/relay through transport and pipeline to the leaves.
func TestImportRule(t *testing.T) {
	// allowed lists, per package, the project packages it may import
	// (test files excepted); a package missing here may import nothing of
	// the project but the fakes next to what it tests.
	// testOnly are packages only tests may import: no package of the
	// relay, commands included, imports them outside its tests.
	testOnly := []string{"ctim/ctimcheck"}
	allowed := map[string][]string{
		"ctim":                    nil,
		"ctim/ctimcheck":          nil, // tests only: see testOnly
		"cache":                   nil,
		"limiter":                 nil,
		"metrics":                 nil,
		"pulsedive":               nil,
		"pulsedive/pulsedivetest": {"pulsedive"},
		"pipeline":                {"ctim", "cache", "limiter", "metrics", "pulsedive"},
		"transport/auth":          {"pulsedive"},
		"transport/authtest":      nil,
		"transport":               {"ctim", "pipeline", "pulsedive", "transport/auth"},
		// cluster implements the consumers' interfaces over Redis
		// (pipeline.Store, pipeline.Collapser, pulsedive.Limiter) and falls
		// back to a limiter; only cmd/relay imports it.
		"cluster":           {"limiter", "pipeline"},
		"cluster/redistest": nil,
	}
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	seen := 0
	err = filepath.WalkDir(root, func(path string, d os.DirEntry, err error) error {
		if err != nil || !d.IsDir() {
			return err
		}
		name := d.Name()
		if path != root && (strings.HasPrefix(name, ".") || name == "testdata" || name == "deploy") {
			return filepath.SkipDir
		}
		pkg, err := build.ImportDir(path, 0)
		if err != nil {
			return nil // no Go files here
		}
		rel, _ := filepath.Rel(root, path)
		rel = filepath.ToSlash(rel)
		for _, only := range testOnly {
			if slices.Contains(pkg.Imports, module+"/"+only) {
				t.Errorf("%s imports %s, which only tests may import", rel, only)
			}
		}
		if strings.HasPrefix(rel, "cmd/") {
			return nil // commands may import everything
		}
		want, known := allowed[rel]
		if !known {
			t.Errorf("package %s is not in the import rule; add it to TestImportRule", rel)
			return nil
		}
		seen++
		for _, imp := range pkg.Imports {
			if !strings.HasPrefix(imp, module+"/") {
				continue
			}
			dep := strings.TrimPrefix(imp, module+"/")
			if !slices.Contains(want, dep) {
				t.Errorf("%s imports %s; the import rule allows only %v", rel, dep, want)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if seen < len(allowed) {
		t.Errorf("checked %d packages, want at least %d: is the walk finding them?", seen, len(allowed))
	}
}
