package mirror

import (
	"bytes"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cloudupload/cloudupload/targets"
	"github.com/cloudupload/cloudupload/targets/targettest"
)

func TestConformance(t *testing.T) {
	tree := t.TempDir()
	getenv := func(k string) string {
		if k == EnvMirrors {
			return "demo=" + tree
		}
		return ""
	}
	targettest.Run(t, targettest.Harness{
		New:    func(t *testing.T) targets.Target { return New() },
		Getenv: getenv,
		ValidData: func(t *testing.T) []byte {
			return []byte(`{"tree":"demo","series":"conformance/x86_64","links":["latest"],"build_info":{"license_type":"open"}}`)
		},
		Invalid: []targettest.InvalidCase{
			{Data: []byte(`{}`), Field: "tree"},
			{Data: []byte(`{"tree":"elsewhere"}`), Field: "tree"},
			{Data: []byte(`{"tree":"demo","series":"../up"}`), Field: "series"},
			{Data: []byte(`{"tree":"demo","build_id":"a/b"}`), Field: "build_id"},
			{Data: []byte(`{"tree":"demo","result":"ok"}`), Field: "result"},
			{Data: []byte(`{"tree":"demo","area":"x"}`), Field: "area"},
			{Data: []byte(`{"tree":"demo","links":[".hidden"]}`), Field: "links"},
			{Data: []byte(`{"tree":"demo","retention":"a/b"}`), Field: "retention"},
			{Data: []byte(`{"tree":"demo","build_info":"Format-Version: 0.5\nTheme: x\n"}`), Field: "line 2"},
			{Data: []byte(`{"tree":"demo","bogus":true}`), Field: "bogus"},
		},
		Verify: func(t *testing.T, result string, want []byte) {
			name, rel, ok := strings.Cut(result, ":")
			if !ok || name != "demo" || !strings.HasPrefix(rel, "conformance/x86_64/") {
				t.Fatalf("result %q: want demo:conformance/x86_64/…", result)
			}
			got, err := os.ReadFile(filepath.Join(tree, filepath.FromSlash(rel)))
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("published file differs from the image as received")
			}
			build := filepath.Dir(filepath.Join(tree, filepath.FromSlash(rel)))
			sha256sumCheck(t, build)
			if l, _ := os.Readlink(filepath.Join(tree, "conformance/x86_64/latest")); l == "" {
				t.Error("latest not set")
			}
		},
		Leftovers: func(t *testing.T) []string { return leftovers(t, tree) },
	})
}

// leftovers lists hidden staging, link and trash entries anywhere in tree.
func leftovers(t *testing.T, tree string) []string {
	var left []string
	filepath.WalkDir(tree, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		for _, pre := range []string{".staging-", ".link-", ".trash-"} {
			if strings.HasPrefix(d.Name(), pre) || strings.HasSuffix(d.Name(), ".dedup") {
				left = append(left, strings.TrimPrefix(p, tree))
			}
		}
		return nil
	})
	return left
}
