package mirror

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cloudupload/cloudupload"
	"github.com/cloudupload/cloudupload/buildinfo"
	"github.com/cloudupload/cloudupload/targets"
)

func TestBuildInfoBesideTheFile(t *testing.T) {
	e := newEnv(t, []byte("x"))
	text := "Format-Version: 0.5\n\nFiles-Pattern: *.xz\nLicense-Type: protected\nAuth-Groups: team\n"
	res := e.mustUpload(`{"tree":"demo","series":"s","build_id":"1","area":"outputs","build_info":` + quote(text) + `}`)
	if res != "demo:s/1/outputs/image.raw.xz" {
		t.Fatalf("result %q", res)
	}
	b, err := os.ReadFile(filepath.Join(e.tree, "s/1/outputs/BUILD-INFO.txt"))
	if err != nil || string(b) != text {
		t.Fatalf("BUILD-INFO.txt = %q, %v", b, err)
	}
	sha256sumCheck(t, filepath.Join(e.tree, "s/1"))

	// A generated one.
	e.mustUpload(`{"tree":"demo","series":"s","build_id":"2","build_info":{"license_type":"protected","auth_groups":["a","b"],"license_text":"<p>EULA</p>\n\n<p>more</p>","theme":"linaro"}}`)
	b, _ = os.ReadFile(filepath.Join(e.tree, "s/2/BUILD-INFO.txt"))
	bi, err := buildinfo.Parse(b)
	if err != nil {
		t.Fatalf("generated BUILD-INFO.txt does not parse: %v\n%s", err, b)
	}
	blocks := bi.Match("image.raw.xz")
	if len(blocks) != 1 || blocks[0].IsOpen() || strings.Join(blocks[0].Groups(), ",") != "a,b" {
		t.Fatalf("generated policy: %+v\n%s", blocks, b)
	}
	if txt, _ := blocks[0].Get(buildinfo.LicenseText); txt != "<p>EULA</p>\n<p>more</p>" {
		t.Fatalf("license text %q", txt)
	}
}

func TestUploadRefusesBadBuildInfo(t *testing.T) {
	e := newEnv(t, []byte("x"))
	_, err := e.upload(context.Background(), `{"tree":"demo","series":"s","build_id":"1","build_info":"Format-Version: 0.5\nFiles-Pattern: *\nLicence-Type: open\n"}`)
	if cloudupload.ErrorCode(err) != cloudupload.EINVALID || !strings.Contains(cloudupload.ErrorMessage(err), "line 3") {
		t.Fatalf("err = %v, want EINVALID naming line 3", err)
	}
	if _, err := os.Stat(filepath.Join(e.tree, "s")); err == nil {
		t.Fatal("a refused publication created its series")
	}
}

func quote(s string) string {
	r := strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`)
	return `"` + r.Replace(s) + `"`
}

func FuzzParseOptions(f *testing.F) {
	for _, s := range []string{
		`{"tree":"demo"}`,
		`{"tree":"demo","series":"master/centos","build_id":"20261121T101500Z","result":"fail","area":"outputs","links":["latest"],"retention":"master"}`,
		`{"tree":"demo","build_info":"Format-Version: 0.5\nFiles-Pattern: *\nLicense-Type: open\n"}`,
		`{"tree":"demo","build_info":{"license_type":"protected","auth_groups":["a"]}}`,
		`{"tree":"demo","series":"a/../b"}`,
		`{"tree":"demo","links":null,"x":1}`,
	} {
		f.Add([]byte(s))
	}
	getenv := func(string) string { return "demo=/srv/demo" }
	job := targets.Job{Project: "home:a", Repository: "r", Arch: "x86_64", Package: "p", Filename: "f.raw"}
	f.Fuzz(func(t *testing.T, data []byte) {
		o, err := ParseOptions(job, data, getenv, time.Unix(0, 0))
		if err != nil {
			if cloudupload.ErrorCode(err) != cloudupload.EINVALID || strings.Contains(cloudupload.ErrorMessage(err), "\n") {
				t.Fatalf("error %v: want one EINVALID line", err)
			}
			return
		}
		if err := checkSeries(o.Series); err != nil {
			t.Fatalf("accepted series %q: %v", o.Series, err)
		}
		for _, name := range append([]string{o.BuildID}, o.Links...) {
			if err := cloudupload.CheckName("name", name); err != nil {
				t.Fatalf("accepted %q: %v", name, err)
			}
		}
		p := filepath.Join("/srv/demo", o.Series, o.BuildID)
		if !strings.HasPrefix(filepath.Clean(p), "/srv/demo/") {
			t.Fatalf("path %q leaves the tree", p)
		}
		if o.BuildInfo != nil {
			if _, err := buildinfo.Parse(o.BuildInfo); err != nil {
				t.Fatalf("accepted build_info that does not parse: %v", err)
			}
		}
	})
}

func FuzzParsePolicies(f *testing.F) {
	f.Add("master=14d,keep=2\n# c\nrelease=forever\n")
	f.Add("x=36h\nbad\n")
	f.Fuzz(func(t *testing.T, s string) {
		ps, err := ParsePolicies(strings.NewReader(s))
		if err != nil {
			return
		}
		for _, p := range ps {
			back, err := ParsePolicy(p.String())
			if err != nil || back != p {
				t.Fatalf("policy %+v does not round-trip through %q: %+v %v", p, p.String(), back, err)
			}
		}
	})
}

func TestSeriesInsideABuildRefused(t *testing.T) {
	e := newEnv(t, []byte("x"))
	e.mustUpload(`{"tree":"demo","series":"master","build_id":"1","links":["latest"]}`)
	for _, series := range []string{"master/1", "master/latest", "master/1/deeper"} {
		_, err := e.upload(context.Background(), `{"tree":"demo","series":"`+series+`","build_id":"2"}`)
		if cloudupload.ErrorCode(err) != cloudupload.EINVALID || !strings.Contains(err.Error(), "inside the build") {
			t.Errorf("series %s: err = %v, want a refusal", series, err)
		}
	}
	sha256sumCheck(t, filepath.Join(e.tree, "master/1"))
	if ents, _ := os.ReadDir(filepath.Join(e.tree, "master/1")); len(ents) != 3 {
		t.Errorf("build 1 changed: %d entries", len(ents))
	}
	// A nested series beside builds is fine.
	e.mustUpload(`{"tree":"demo","series":"master/centos","build_id":"2"}`)
}
