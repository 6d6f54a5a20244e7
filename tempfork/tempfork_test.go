// Package tempfork holds patched copies of dependencies, each to be deleted once upstream has
// the fix (see README.md). Its test proves each copy is upstream plus exactly the stated
// change, as Tailscale's tempfork does.
package tempfork

import (
	"bytes"
	"encoding/json"
	"go/ast"
	"go/parser"
	"go/printer"
	"go/token"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"icehub/internal/testenv"
)

// upstreamDir fetches module@version into the module cache and returns its directory.
func upstreamDir(t *testing.T, module string) string {
	t.Helper()
	cmd := exec.Command("go", "mod", "download", "-json", module)
	cmd.Env = append(os.Environ(), "GOFLAGS=-mod=mod")
	out, err := cmd.Output()
	var info struct{ Dir string }
	if err != nil || json.Unmarshal(out, &info) != nil || info.Dir == "" {
		testenv.Skip(t, "needs the Go module proxy to fetch %s: %v", module, err)
	}
	return info.Dir
}

// goFiles lists the non-test .go files under dir that a build uses (no commands, examples,
// end-to-end tests or test utilities), relative to dir.
func goFiles(t *testing.T, dir string) []string {
	t.Helper()
	var files []string
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		if d.IsDir() {
			switch rel {
			case "cmd", "e2e", "examples", "stuntest", filepath.Join("internal", "testutil"):
				return filepath.SkipDir
			}
			return nil
		}
		if strings.HasSuffix(rel, ".go") && !strings.HasSuffix(rel, "_test.go") {
			files = append(files, rel)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(files)
	return files
}

// TestPionStunIsUpstreamPlusOneChange: tempfork/pion-stun has exactly upstream v4.0.1's
// build files, identical but for attributes.go, where the attribute-name map is a package
// variable built once instead of a map literal rebuilt by every attrNames call.
func TestPionStunIsUpstreamPlusOneChange(t *testing.T) {
	up := upstreamDir(t, "github.com/pion/stun/v4@v4.0.1")
	fork := "pion-stun"
	upFiles, forkFiles := goFiles(t, up), goFiles(t, fork)
	if !slices.Equal(upFiles, forkFiles) {
		t.Fatalf("files differ:\nupstream %v\nfork     %v", upFiles, forkFiles)
	}
	for _, f := range upFiles {
		a, err1 := os.ReadFile(filepath.Join(up, f))
		b, err2 := os.ReadFile(filepath.Join(fork, f))
		if err1 != nil || err2 != nil {
			t.Fatal(err1, err2)
		}
		if f == "attributes.go" {
			checkAttributesChange(t, a, b)
			continue
		}
		if !bytes.Equal(a, b) {
			t.Errorf("%s differs from upstream", f)
		}
	}
}

// checkAttributesChange compares the two attributes.go files declaration by declaration:
// equal, but for upstream's attrNames (returning a map literal) against the fork's
// attrNameTable (the same literal) and its attrNames returning it.
func checkAttributesChange(t *testing.T, upSrc, forkSrc []byte) {
	t.Helper()
	fset := token.NewFileSet()
	upFile, err := parser.ParseFile(fset, "up.go", upSrc, 0)
	if err != nil {
		t.Fatal(err)
	}
	forkFile, err := parser.ParseFile(fset, "fork.go", forkSrc, 0)
	if err != nil {
		t.Fatal(err)
	}
	print := func(n ast.Node) string {
		var b bytes.Buffer
		_ = printer.Fprint(&b, fset, n)
		return b.String()
	}
	var upDecls, forkDecls []string
	var upTable, forkTable string
	for _, d := range upFile.Decls {
		if fd, ok := d.(*ast.FuncDecl); ok && fd.Name.Name == "attrNames" {
			ret := fd.Body.List[0].(*ast.ReturnStmt)
			upTable = print(ret.Results[0])
			continue
		}
		upDecls = append(upDecls, print(d))
	}
	for _, d := range forkFile.Decls {
		if fd, ok := d.(*ast.FuncDecl); ok && fd.Name.Name == "attrNames" {
			if got := print(fd.Body); got != "{ return attrNameTable }" && !strings.Contains(got, "return attrNameTable") {
				t.Errorf("fork's attrNames is %s, want it to return attrNameTable", got)
			}
			continue
		}
		if gd, ok := d.(*ast.GenDecl); ok && gd.Tok == token.VAR && len(gd.Specs) == 1 {
			if vs := gd.Specs[0].(*ast.ValueSpec); vs.Names[0].Name == "attrNameTable" {
				forkTable = print(vs.Values[0])
				continue
			}
		}
		forkDecls = append(forkDecls, print(d))
	}
	if upTable == "" || upTable != forkTable {
		t.Errorf("the attribute-name table differs from upstream's:\n%s\n---\n%s", upTable, forkTable)
	}
	if !slices.Equal(upDecls, forkDecls) {
		t.Errorf("attributes.go changes more than the attribute-name table")
	}
}
