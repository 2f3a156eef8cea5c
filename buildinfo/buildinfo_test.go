package buildinfo

import (
	"encoding/json"
	"errors"
	"os"
	"reflect"
	"strings"
	"testing"
)

type outcome struct {
	FileInfo      []map[string]string `json:"file_info"`
	Patterns      []string            `json:"patterns"`
	FormatVersion string              `json:"format_version"`
	Error         string              `json:"error"`
	Message       string              `json:"message"`
}

type vector struct {
	Name        string   `json:"name"`
	Filename    string   `json:"filename"`
	Content     string   `json:"content"`
	Observed    outcome  `json:"linaro_observed"`
	Recommended *outcome `json:"recommended"`
}

func loadVectors(t testing.TB) []vector {
	b, err := os.ReadFile("../testdata/buildinfo/vectors.json")
	if err != nil {
		t.Fatal(err)
	}
	var doc struct{ Cases []vector }
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	if len(doc.Cases) < 20 {
		t.Fatalf("only %d cases", len(doc.Cases))
	}
	return doc.Cases
}

// want is the outcome a case expects: the recommended one where it gives
// an error or file_info, else the reference parser's.
func (v vector) want() outcome {
	w := v.Observed
	if r := v.Recommended; r != nil {
		if r.Error != "" {
			return outcome{Error: r.Error}
		}
		if r.FileInfo != nil {
			w.FileInfo = r.FileInfo
		}
	}
	return w
}

func fileInfo(bi *BuildInfo, name string) []map[string]string {
	var out []map[string]string
	for _, b := range bi.Match(name) {
		m := map[string]string{}
		for _, f := range b.Fields {
			m[f.Name] = f.Value
		}
		out = append(out, m)
	}
	if out == nil {
		out = []map[string]string{{}} // the reference's shape for "no block"
	}
	return out
}

func TestVectors(t *testing.T) {
	for _, v := range loadVectors(t) {
		t.Run(v.Name, func(t *testing.T) {
			want := v.want()
			bi, err := Parse([]byte(v.Content))
			if want.Error != "" {
				var se *SyntaxError
				if !errors.As(err, &se) || se.Line < 1 {
					t.Fatalf("Parse = %v, %v; want a syntax error with a line (%s)", bi, err, want.Error)
				}
				t.Logf("error: %v", err)
				return
			}
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if bi.FormatVersion != want.FormatVersion {
				t.Errorf("format version %q, want %q", bi.FormatVersion, want.FormatVersion)
			}
			if got := bi.Patterns(); !reflect.DeepEqual(got, want.Patterns) {
				t.Errorf("patterns %q, want %q", got, want.Patterns)
			}
			if got := fileInfo(bi, v.Filename); !reflect.DeepEqual(got, want.FileInfo) {
				t.Errorf("file info for %q: %v, want %v", v.Filename, got, want.FileInfo)
			}
			// Recommendations given only as notes.
			switch v.Name {
			case "format_version_value_not_validated":
				if len(bi.Warnings()) == 0 {
					t.Error("unknown Format-Version accepted without a warning")
				}
			case "license_type_value_not_validated":
				if bi.Open(v.Filename) || len(bi.Warnings()) == 0 {
					t.Error("License-Type weird not treated as protected with a warning")
				}
			}
			roundTrip(t, []byte(v.Content))
		})
	}
}

func TestErrorLines(t *testing.T) {
	cases := []struct {
		content string
		line    int
		msg     string
	}{
		{"", 1, "empty file"},
		{"\n\n  \n", 1, "empty file"},
		{"Format-Version: 0.5\nBuild-Name: x\nFiles-Pattern: *\n", 2, "before the first Files-Pattern"},
		{"Format-Version: 0.5\nFiles-Pattern: *\nFoo: bar\n", 3, `"foo" is not allowed`},
		{"Format-Version: 0.5\nFiles-Pattern: *\nBuild-Name: x\n continued\n", 4, "may only continue a License-Text"},
		{"Format-Version: 0.5\nFiles-Pattern: *\nTheme: a\nTheme: b\n", 4, "repeated in the block starting on line 2"},
		{"Format-Version: 0.5\nFiles-Pattern: *\nFormat-Version: 0.5\n", 3, "only once"},
		{"Format-Version: 0.5\n\nFiles-Pattern: *\nno colon\n", 4, "not a field"},
		{"Format-Version: 0.5\nFiles-Pattern: \xff\n", 2, "UTF-8"},
		{"Files-Pattern: *\n", 1, "Format-Version field not found"},
		{strings.Repeat("x", MaxSize+1), 1, "larger"},
	}
	for _, c := range cases {
		_, err := Parse([]byte(c.content))
		var se *SyntaxError
		if !errors.As(err, &se) || se.Line != c.line || !strings.Contains(se.Msg, c.msg) {
			t.Errorf("Parse(%q) = %v, want line %d: …%s…", c.content, err, c.line, c.msg)
		}
	}
}

func TestMatchRules(t *testing.T) {
	bi, err := Parse([]byte(`Format-Version: 0.5

Files-Pattern: *.img, *.tar.bz2
License-Type: protected
Auth-Groups: team-a, team-b

Files-Pattern: README, *.txt,
License-Type: open

Files-Pattern: kernel.img
License-Type: open

Files-Pattern: mixed.bin
License-Type: open

Files-Pattern: mixed.bin
Theme: only-a-theme
`))
	if err != nil {
		t.Fatal(err)
	}
	for name, open := range map[string]bool{
		"a.img": false, "x.tar.bz2": false, "README": true, "notes.txt": true, "": true,
		"kernel.img": true,  // exact name beats the glob
		"mixed.bin":  false, // a block without License-Type counts as protected
		"other":      false, "BUILD-INFO.txt": false, "sub/README": false,
	} {
		if got := bi.Open(name); got != open {
			t.Errorf("Open(%q) = %v, want %v", name, got, open)
		}
	}
	if g := bi.Match("a.img")[0].Groups(); !reflect.DeepEqual(g, []string{"team-a", "team-b"}) {
		t.Errorf("groups %q", g)
	}
	if bi.Match("other") != nil || bi.Match("BUILD-INFO.txt") != nil {
		t.Error("unmatched name not denied")
	}
	if w := bi.Warnings(); len(w) != 0 {
		t.Errorf("warnings %q", w)
	}
	bi, _ = Parse([]byte("Format-Version: 9\nFiles-Pattern: *\nLicense-Type: weird\nCollect-User-Data: maybe\n"))
	if w := bi.Warnings(); len(w) != 3 {
		t.Errorf("warnings %q, want 3", w)
	}
	if bi.Open("x") {
		t.Error("License-Type weird served as open")
	}
}

func TestGlob(t *testing.T) {
	cases := []struct {
		pat, name string
		want      bool
	}{
		{"*", "", true}, {"*", "abc", true}, {"?", "", false}, {"?", "é", true},
		{"*.txt", "a.txt", true}, {"*.txt", "a.TXT", false}, {"a*b*c", "aXbYc", true},
		{"a*b*c", "aXbY", false}, {"*a*a*a", "aaaa", true}, {"b[0-9].txt", "b1.txt", true},
		{"b[0-9].txt", "bx.txt", false}, {"[!a]x", "bx", true}, {"[!a]x", "ax", false},
		{"[]]", "]", true}, {"[!]]", "a", true}, {"[a-]", "-", true}, {"[z-a]", "m", false},
		{"[abc", "[abc", true}, {"[abc", "a", false}, {`a\*`, `a\b`, true}, {"[^a]", "^", true},
		{"", "", true}, {"", "a", false}, {"sub/x.txt", "x.txt", false},
	}
	for _, c := range cases {
		if got := Glob(c.pat, c.name); got != c.want {
			t.Errorf("Glob(%q, %q) = %v, want %v", c.pat, c.name, got, c.want)
		}
	}
}

func TestMarshalRefuses(t *testing.T) {
	bad := []*BuildInfo{
		{FormatVersion: "0.5\nx"},
		{FormatVersion: "0.5", Blocks: []Block{{}}},
		{FormatVersion: "0.5", Blocks: []Block{{Patterns: []string{"a,b"}}}},
		{FormatVersion: "0.5", Blocks: []Block{{Patterns: []string{" a"}}}},
		{FormatVersion: "0.5", Blocks: []Block{{Patterns: []string{"*"}, Fields: []Field{{"foo", "x"}}}}},
		{FormatVersion: "0.5", Blocks: []Block{{Patterns: []string{"*"}, Fields: []Field{{"theme", "a"}, {"theme", "b"}}}}},
		{FormatVersion: "0.5", Blocks: []Block{{Patterns: []string{"*"}, Fields: []Field{{"theme", "a\nb"}}}}},
		{FormatVersion: "0.5", Blocks: []Block{{Patterns: []string{"*"}, Fields: []Field{{"license-text", "a\n\nb"}}}}},
	}
	for _, bi := range bad {
		if b, err := bi.MarshalText(); err == nil {
			t.Errorf("MarshalText(%+v) = %q, want an error", bi, b)
		}
	}
}

func TestWriteReadsBack(t *testing.T) {
	bi := &BuildInfo{FormatVersion: "0.5", Blocks: []Block{
		{Patterns: []string{"*.img", ""}, Fields: []Field{{LicenseType, "protected"}, {AuthGroups, "a, b"}, {LicenseText, NormalizeText("<p>one</p>\n\n   <p>two: x</p>  \n")}}},
		{Patterns: []string{""}, Fields: []Field{{LicenseType, "open"}, {BuildName, ""}}},
	}}
	text, err := bi.MarshalText()
	if err != nil {
		t.Fatal(err)
	}
	want := "Format-Version: 0.5\n\nFiles-Pattern: *.img,\nLicense-Type: protected\nAuth-Groups: a, b\nLicense-Text: <p>one</p>\n <p>two: x</p>\n\nFiles-Pattern:\nLicense-Type: open\nBuild-Name:\n"
	if string(text) != want {
		t.Fatalf("wrote\n%s\nwant\n%s", text, want)
	}
	back, err := Parse(text)
	if err != nil {
		t.Fatal(err)
	}
	if !equal(bi, back) {
		t.Fatalf("read back %+v, want %+v", back, bi)
	}
}

func equal(a, b *BuildInfo) bool {
	strip := func(bi *BuildInfo) BuildInfo {
		c := BuildInfo{FormatVersion: bi.FormatVersion}
		for _, blk := range bi.Blocks {
			blk.Line = 0
			if len(blk.Fields) == 0 {
				blk.Fields = nil
			}
			c.Blocks = append(c.Blocks, blk)
		}
		return c
	}
	return reflect.DeepEqual(strip(a), strip(b))
}

// roundTrip checks parse → write → parse gives the same document and that
// writing is stable.
func roundTrip(t *testing.T, data []byte) {
	bi, err := Parse(data)
	if err != nil {
		return
	}
	text, err := bi.MarshalText()
	if err != nil {
		t.Fatalf("MarshalText of parsed %q: %v", data, err)
	}
	back, err := Parse(text)
	if err != nil {
		t.Fatalf("written text does not parse: %v\n%s", err, text)
	}
	if !equal(bi, back) {
		t.Fatalf("round trip changed the document:\n%+v\n%+v\ntext:\n%s", bi, back, text)
	}
	again, _ := back.MarshalText()
	if string(again) != string(text) {
		t.Fatalf("writing is not stable:\n%s\n%s", text, again)
	}
	for _, name := range []string{"", "a.txt", "x.img", "README"} {
		if !reflect.DeepEqual(fileInfo(bi, name), fileInfo(back, name)) {
			t.Fatalf("match for %q changed by a round trip", name)
		}
	}
}

func FuzzRoundTrip(f *testing.F) {
	for _, v := range loadVectors(f) {
		f.Add([]byte(v.Content))
	}
	f.Add([]byte("Format-Version: 0.5\nFiles-Pattern: a, ,b,\nLicense-Text:\n x\n\ty\nAuth-Groups: g\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		roundTrip(t, data)
	})
}
