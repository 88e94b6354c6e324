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

// anyPackage, as a package's allowance, lets it import every package of
// the project.
var anyPackage = []string{"*"}

// TestImportRule holds the rule of the package documentation: imports go
// one way, from the commands through internal/relay, transport and
// pipeline to the leaves; and test machinery stays out of the product.
func TestImportRule(t *testing.T) {
	// allowed lists, per package, the project packages it may import
	// (test files excepted: a test may import any fake). Every package of
	// the tree must be listed, commands included.
	allowed := map[string][]string{
		// ctim maps the documents as pulsedive decodes them: one model of
		// Pulsedive's answers. pulsedive stays at the bottom.
		"ctim":      {"pulsedive"},
		"cache":     nil,
		"limiter":   nil,
		"metrics":   nil,
		"pulsedive": nil,
		"pipeline":  {"ctim", "cache", "limiter", "metrics", "pulsedive"},
		// cluster implements the consumers' interfaces over Redis
		// (pipeline.Store, pipeline.Collapser, pulsedive.Limiter) and falls
		// back to a limiter.
		"cluster":              {"limiter", "pipeline"},
		"transport/auth":       {"pulsedive"},
		"transport/auth/issue": nil,
		"transport":            {"ctim", "pipeline", "pulsedive", "transport/auth"},
		// internal/relay is the program: configuration, wiring, serve and
		// drain, the command line. Only the commands import it.
		"internal/relay": {"cache", "cluster", "ctim", "limiter", "metrics", "pipeline", "pulsedive", "transport", "transport/auth", "transport/auth/issue"},
		"cmd/relay":      {"internal/relay"},
		// The demo runs the relay's wiring against the fakes, which is why
		// it is a program of its own.
		"cmd/relaydemo": {"internal/relay", "pulsedive/pulsedivetest", "transport/authtest"},
		// relaybench runs the relay binary beside fakes and load: a tool,
		// never linked into the relay.
		"cmd/relaybench": anyPackage,

		// Test machinery (see testMachinery).
		"ctim/ctimcheck":          nil,
		"pulsedive/pulsedivetest": {"pulsedive"},
		"transport/authtest":      {"transport/auth/issue"},
		"cluster/redistest":       nil,
	}
	// testsOnly are imported by tests alone: no package, commands
	// included, imports them outside its tests.
	testsOnly := []string{"ctim/ctimcheck"}
	pkgs := projectPackages(t)
	for rel, pkg := range pkgs {
		for _, dep := range projectImports(pkg) {
			if slices.Contains(testsOnly, dep) {
				t.Errorf("%s imports %s, which only tests may import", rel, dep)
			}
		}
		want, known := allowed[rel]
		if !known {
			t.Errorf("package %s is not in the import rule; add it to TestImportRule", rel)
			continue
		}
		for _, dep := range projectImports(pkg) {
			if !slices.Equal(want, anyPackage) && !slices.Contains(want, dep) {
				t.Errorf("%s imports %s; the import rule allows only %v", rel, dep, want)
			}
		}
	}
	for rel := range allowed {
		if pkgs[rel] == nil {
			t.Errorf("TestImportRule lists %s, which the walk did not find", rel)
		}
	}
}

// TestProductHoldsNoTestMachinery: no package linked into the relay's
// binary (cmd/relay and every project package it imports, directly or
// not) imports testing, net/http/httptest or a test machinery package of
// the project. TestRelayLinksNoTestMachinery in cmd/relay checks the
// whole build, third-party modules included.
func TestProductHoldsNoTestMachinery(t *testing.T) {
	pkgs := projectPackages(t)
	product := map[string]bool{}
	var visit func(rel string)
	visit = func(rel string) {
		if product[rel] {
			return
		}
		product[rel] = true
		pkg := pkgs[rel]
		if pkg == nil {
			t.Fatalf("%s is imported but not found in the tree", rel)
		}
		for _, imp := range pkg.Imports {
			if isTestMachinery(imp) {
				t.Errorf("%s, linked into the relay, imports %s", rel, imp)
			}
		}
		for _, dep := range projectImports(pkg) {
			visit(dep)
		}
	}
	visit("cmd/relay")
	for _, want := range []string{"internal/relay", "transport", "pipeline", "pulsedive", "transport/auth/issue"} {
		if !product[want] {
			t.Errorf("the walk from cmd/relay missed %s: is it following imports?", want)
		}
	}
	for rel := range pkgs {
		if isTestMachinery(module+"/"+rel) && product[rel] {
			t.Errorf("%s is test machinery linked into the relay", rel)
		}
	}
}

// testMachinery are the project's packages for tests, the demo and
// relaybench only, besides those named *test: ctimcheck checks CTIM
// documents against the schema in tests.
var testMachinery = []string{"ctim/ctimcheck"}

// isTestMachinery reports whether the import path imp is for tests: the
// testing packages of the standard library, httptest, and the project's
// *test packages and testMachinery.
func isTestMachinery(imp string) bool {
	if imp == "testing" || strings.HasPrefix(imp, "testing/") || imp == "net/http/httptest" {
		return true
	}
	rel, ok := strings.CutPrefix(imp, module+"/")
	return ok && (strings.HasSuffix(rel, "test") || slices.Contains(testMachinery, rel))
}

// TestIsTestMachinery pins what counts as test machinery.
func TestIsTestMachinery(t *testing.T) {
	for imp, want := range map[string]bool{
		"testing":                           true,
		"testing/synctest":                  true,
		"net/http/httptest":                 true,
		module + "/pulsedive/pulsedivetest": true,
		module + "/transport/authtest":      true,
		module + "/cluster/redistest":       true,
		module + "/ctim/ctimcheck":          true,
		"net/http":                          false,
		"internal/testlog":                  false, // os imports it
		module + "/transport/auth/issue":    false,
		module + "/pulsedive":               false,
		"github.com/example/latest":         false,
	} {
		if got := isTestMachinery(imp); got != want {
			t.Errorf("isTestMachinery(%q) = %v, want %v", imp, got, want)
		}
	}
}

// projectPackages finds every package of the module's tree (deploy/, a
// module of its own, and testdata excepted), by path relative to the
// module's root, with its non-test imports.
func projectPackages(t *testing.T) map[string]*build.Package {
	t.Helper()
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	pkgs := map[string]*build.Package{}
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
		pkgs[filepath.ToSlash(rel)] = pkg
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return pkgs
}

// projectImports lists the project packages pkg imports outside its
// tests, relative to the module's root.
func projectImports(pkg *build.Package) []string {
	var deps []string
	for _, imp := range pkg.Imports {
		if rel, ok := strings.CutPrefix(imp, module+"/"); ok {
			deps = append(deps, rel)
		}
	}
	return deps
}
