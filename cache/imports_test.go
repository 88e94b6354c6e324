package cache

import (
	"go/parser"
	"go/token"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestImportsNoProjectPackage holds the project's import rule: cache is a
// leaf and imports no other package of this module.
func TestImportsNoProjectPackage(t *testing.T) {
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(token.NewFileSet(), name, nil, parser.ImportsOnly)
		if err != nil {
			t.Fatal(err)
		}
		for _, imp := range f.Imports {
			path, _ := strconv.Unquote(imp.Path.Value)
			if path == "github.com/pulsedive-relay/relay" || strings.HasPrefix(path, "github.com/pulsedive-relay/relay/") {
				t.Errorf("%s imports %s; cache may import no project package", name, path)
			}
		}
	}
}
