package buildinfo

import (
	"bytes"
	"fmt"
	"strings"
	"unicode/utf8"
)

// MaxSize bounds the size of a BUILD-INFO.txt that Parse accepts.
const MaxSize = 1 << 20

// FileName is the name of the file in a published directory.
const FileName = "BUILD-INFO.txt"

// Field names, lower case as the parser stores them.
const (
	FormatVersion   = "format-version"
	FilesPattern    = "files-pattern"
	BuildName       = "build-name"
	Theme           = "theme"
	LicenseType     = "license-type"
	AuthGroups      = "auth-groups"
	CollectUserData = "collect-user-data"
	LicenseText     = "license-text"

	// openIDTeams is the deprecated name of auth-groups.
	openIDTeams = "openid-launchpad-teams"
)

// canonical spells each block field as the writer writes it.
var canonical = map[string]string{
	BuildName:       "Build-Name",
	Theme:           "Theme",
	LicenseType:     "License-Type",
	AuthGroups:      "Auth-Groups",
	CollectUserData: "Collect-User-Data",
	LicenseText:     "License-Text",
}

// BuildInfo is a parsed BUILD-INFO.txt.
type BuildInfo struct {
	FormatVersion string
	Blocks        []Block // in file order
}

// Block is what one Files-Pattern line starts.
type Block struct {
	Line     int      // line of its Files-Pattern (0 when not parsed)
	Patterns []string // trimmed; "" matches the directory itself
	Fields   []Field  // in file order, names in lower case, each at most once
}

// Field is one "Name: value" of a block. Value is trimmed; only a
// License-Text holds line breaks ("\n" between non-empty trimmed lines).
type Field struct {
	Name  string
	Value string
}

// Get returns the value of field name (lower case) and whether the block has it.
func (b *Block) Get(name string) (string, bool) {
	for _, f := range b.Fields {
		if f.Name == name {
			return f.Value, true
		}
	}
	return "", false
}

// IsOpen reports whether the block's License-Type is "open".
func (b *Block) IsOpen() bool {
	v, _ := b.Get(LicenseType)
	return v == "open"
}

// Groups returns the block's Auth-Groups, split on commas and trimmed.
func (b *Block) Groups() []string {
	v, _ := b.Get(AuthGroups)
	var groups []string
	for _, g := range strings.Split(v, ",") {
		if g = strings.TrimSpace(g); g != "" {
			groups = append(groups, g)
		}
	}
	return groups
}

// SyntaxError is a parse error at a line (1-based).
type SyntaxError struct {
	Line int
	Msg  string
}

func (e *SyntaxError) Error() string { return fmt.Sprintf("line %d: %s", e.Line, e.Msg) }

func errorf(line int, format string, args ...any) error {
	return &SyntaxError{Line: line, Msg: fmt.Sprintf(format, args...)}
}

// Parse reads a BUILD-INFO.txt. Errors are *SyntaxError.
func Parse(data []byte) (*BuildInfo, error) {
	if len(data) > MaxSize {
		return nil, errorf(1, "file is larger than %d bytes", MaxSize)
	}
	data = bytes.TrimPrefix(data, []byte("\xef\xbb\xbf"))
	bi := &BuildInfo{}
	haveVersion := false
	var cur *Block
	inText := false   // the last field was a License-Text: indented lines continue it
	var text []string // its lines so far
	flush := func() {
		f := &cur.Fields[len(cur.Fields)-1]
		f.Value = strings.Join(text, "\n")
		text = nil
	}
	lines := strings.Split(string(data), "\n")
	for i, line := range lines {
		n := i + 1
		line = strings.TrimSuffix(line, "\r")
		if !utf8.ValidString(line) {
			return nil, errorf(n, "not valid UTF-8")
		}
		if strings.TrimSpace(line) == "" {
			continue
		}
		if line[0] == ' ' || line[0] == '\t' {
			if !inText {
				return nil, errorf(n, "%q: an indented line may only continue a License-Text", shorten(line))
			}
			text = append(text, strings.TrimSpace(line))
			continue
		}
		if inText {
			flush()
		}
		inText = false
		name, value, ok := strings.Cut(line, ":")
		if !ok {
			return nil, errorf(n, "%q is not a field (want Name: value)", shorten(line))
		}
		name, value = strings.ToLower(strings.TrimSpace(name)), strings.TrimSpace(value)
		if name == openIDTeams {
			name = AuthGroups
		}
		if !haveVersion {
			if name != FormatVersion {
				return nil, errorf(n, "Format-Version field not found: it must be the first line")
			}
			bi.FormatVersion, haveVersion = value, true
			continue
		}
		switch name {
		case FormatVersion:
			return nil, errorf(n, "Format-Version may appear only once, on the first line")
		case FilesPattern:
			bi.Blocks = append(bi.Blocks, Block{Line: n, Patterns: splitPatterns(value)})
			cur = &bi.Blocks[len(bi.Blocks)-1]
			continue
		}
		if _, known := canonical[name]; !known {
			return nil, errorf(n, "field %q is not allowed", shorten(name))
		}
		if cur == nil {
			return nil, errorf(n, "field %s comes before the first Files-Pattern", canonical[name])
		}
		if _, dup := cur.Get(name); dup {
			return nil, errorf(n, "field %s repeated in the block starting on line %d", canonical[name], cur.Line)
		}
		cur.Fields = append(cur.Fields, Field{Name: name, Value: value})
		inText = name == LicenseText
		if inText && value != "" {
			text = append(text, value)
		}
	}
	if inText {
		flush()
	}
	if !haveVersion {
		return nil, errorf(1, "empty file: Format-Version field not found")
	}
	return bi, nil
}

func splitPatterns(v string) []string {
	parts := strings.Split(v, ",")
	for i := range parts {
		parts[i] = strings.TrimSpace(parts[i])
	}
	return parts
}

func shorten(s string) string {
	if len(s) > 60 {
		return s[:57] + "..."
	}
	return s
}

// Warnings lists values that parse but are unusual: a Format-Version other
// than 0.1 to 0.5, a License-Type other than open or protected (treated as
// protected), a Collect-User-Data other than yes or no.
func (bi *BuildInfo) Warnings() []string {
	var w []string
	switch bi.FormatVersion {
	case "0.1", "0.2", "0.3", "0.4", "0.5":
	default:
		w = append(w, fmt.Sprintf("unknown Format-Version %q (known: 0.1 to 0.5)", bi.FormatVersion))
	}
	for _, b := range bi.Blocks {
		if v, ok := b.Get(LicenseType); ok && v != "open" && v != "protected" {
			w = append(w, fmt.Sprintf("line %d: License-Type %q is neither open nor protected: treated as protected", b.Line, v))
		}
		if v, ok := b.Get(CollectUserData); ok && v != "yes" && v != "no" {
			w = append(w, fmt.Sprintf("line %d: Collect-User-Data %q is neither yes nor no", b.Line, v))
		}
	}
	return w
}

// Patterns returns the distinct patterns in order of first appearance.
func (bi *BuildInfo) Patterns() []string {
	seen := map[string]bool{}
	out := []string{}
	for _, b := range bi.Blocks {
		for _, p := range b.Patterns {
			if !seen[p] {
				seen[p] = true
				out = append(out, p)
			}
		}
	}
	return out
}

// Match returns the blocks that apply to the file called name in the
// directory of this BUILD-INFO.txt ("" for the directory listing itself),
// by the precedence rules of the package comment; nil means denied. A name
// holding '/' (a file in another directory) and BUILD-INFO.txt itself never
// match.
func (bi *BuildInfo) Match(name string) []*Block {
	if strings.Contains(name, "/") || name == FileName {
		return nil
	}
	var win string
	found := false
	pats := bi.Patterns()
	for _, p := range pats {
		if p == name {
			win, found = p, true
			break
		}
	}
	if !found {
		for _, p := range pats {
			if Glob(p, name) {
				win, found = p, true
				break
			}
		}
	}
	if !found {
		return nil
	}
	var blocks []*Block
	open, closed := 0, 0
	for i := range bi.Blocks {
		b := &bi.Blocks[i]
		for _, p := range b.Patterns {
			if p == win {
				blocks = append(blocks, b)
				if b.IsOpen() {
					open++
				} else {
					closed++
				}
				break
			}
		}
	}
	if open > 0 && closed > 0 {
		kept := blocks[:0]
		for _, b := range blocks {
			if !b.IsOpen() {
				kept = append(kept, b)
			}
		}
		blocks = kept
	}
	return blocks
}

// Open reports whether name may be served without any check: some block
// matches and every matching block is open.
func (bi *BuildInfo) Open(name string) bool {
	blocks := bi.Match(name)
	for _, b := range blocks {
		if !b.IsOpen() {
			return false
		}
	}
	return len(blocks) > 0
}

// NormalizeText turns free text into a License-Text value that survives a
// round trip: lines trimmed, blank lines dropped.
func NormalizeText(s string) string {
	var lines []string
	for _, l := range strings.Split(strings.ReplaceAll(s, "\r\n", "\n"), "\n") {
		if l = strings.TrimSpace(l); l != "" {
			lines = append(lines, l)
		}
	}
	return strings.Join(lines, "\n")
}

// MarshalText writes bi so that Parse reads it back identically (apart from
// Block.Line). It refuses what cannot round-trip: an unknown or repeated
// field, a block without patterns, a pattern holding a comma, a line break
// or surrounding spaces, a value with surrounding spaces or a line break
// (outside License-Text, whose lines must be non-empty and trimmed).
func (bi *BuildInfo) MarshalText() ([]byte, error) {
	var b strings.Builder
	if err := checkValue("Format-Version", bi.FormatVersion, false); err != nil {
		return nil, err
	}
	line := func(name, value string) {
		b.WriteString(name + ":")
		if value != "" {
			b.WriteString(" " + value)
		}
		b.WriteString("\n")
	}
	line("Format-Version", bi.FormatVersion)
	for i, blk := range bi.Blocks {
		if len(blk.Patterns) == 0 {
			return nil, fmt.Errorf("block %d has no pattern", i+1)
		}
		for _, p := range blk.Patterns {
			if p != strings.TrimSpace(p) || strings.ContainsAny(p, ",\n") {
				return nil, fmt.Errorf("block %d: pattern %q holds a comma, a line break or surrounding spaces", i+1, p)
			}
		}
		b.WriteString("\n")
		line("Files-Pattern", strings.TrimSpace(strings.Join(blk.Patterns, ", ")))
		seen := map[string]bool{}
		for _, f := range blk.Fields {
			name, ok := canonical[f.Name]
			if !ok {
				return nil, fmt.Errorf("block %d: field %q is not allowed", i+1, f.Name)
			}
			if seen[f.Name] {
				return nil, fmt.Errorf("block %d: field %s repeated", i+1, name)
			}
			seen[f.Name] = true
			if err := checkValue(name, f.Value, f.Name == LicenseText); err != nil {
				return nil, fmt.Errorf("block %d: %w", i+1, err)
			}
			line(name, strings.ReplaceAll(f.Value, "\n", "\n "))
		}
	}
	return []byte(b.String()), nil
}

func checkValue(name, v string, multiline bool) error {
	if !utf8.ValidString(v) {
		return fmt.Errorf("%s is not valid UTF-8", name)
	}
	if !multiline {
		if v != strings.TrimSpace(v) || strings.Contains(v, "\n") {
			return fmt.Errorf("%s value %q holds a line break or surrounding spaces", name, shorten(v))
		}
		return nil
	}
	if v == "" {
		return nil
	}
	for _, l := range strings.Split(v, "\n") {
		if l == "" || l != strings.TrimSpace(l) {
			return fmt.Errorf("%s holds an empty line or a line with surrounding spaces", name)
		}
	}
	return nil
}
