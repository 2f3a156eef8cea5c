package mirror

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/cloudupload/cloudupload"
	"github.com/cloudupload/cloudupload/buildinfo"
	"github.com/cloudupload/cloudupload/targets"
)

// EnvMirrors names the environment variable holding the configured trees:
// NAME=DIR[,NAME=DIR…], DIR absolute.
const EnvMirrors = "CLOUDUPLOAD_MIRRORS"

// BuildIDFormat is the layout of a default build id (UTC): 20261121T101500Z.
const BuildIDFormat = "20060102T150405Z"

// Reserved names: files the target writes at the root of a build directory
// or beside the published file, and the pin an operator may add. A published
// file may not take one of these names.
const (
	ManifestName  = "MANIFEST"       // sha256sum -c format, every file but itself
	ResultName    = "RESULT"         // "success" or "fail"
	RetentionName = "RETENTION"      // the retention class, when one was given
	KeepName      = "KEEP"           // pin: prune never deletes a build holding it
	BuildInfoName = "BUILD-INFO.txt" // licence policy beside the published file
	lockName      = ".lock"          // the series lock (flock)
)

var reserved = []string{ManifestName, ResultName, RetentionName, KeepName, BuildInfoName}

// Tree is one configured download tree.
type Tree struct {
	Name string
	Dir  string // absolute
}

// ParseTrees parses the value of CLOUDUPLOAD_MIRRORS (or of repeated
// --mirror flags joined with commas): NAME=DIR[,NAME=DIR…]. Names follow
// cloudupload.CheckName; directories must be absolute (the uploader runs in
// a working directory of its own); a name may appear once.
func ParseTrees(s string) ([]Tree, error) {
	var trees []Tree
	if strings.TrimSpace(s) == "" {
		return nil, nil
	}
	for _, item := range strings.Split(s, ",") {
		name, dir, ok := strings.Cut(item, "=")
		name, dir = strings.TrimSpace(name), strings.TrimSpace(dir)
		if !ok {
			return nil, fmt.Errorf("mirror %q: want NAME=DIR", item)
		}
		if err := cloudupload.CheckName("mirror name", name); err != nil {
			return nil, err
		}
		if !filepath.IsAbs(dir) {
			return nil, fmt.Errorf("mirror %s: directory %q is not absolute", name, dir)
		}
		for _, t := range trees {
			if t.Name == name {
				return nil, fmt.Errorf("mirror %s is configured twice", name)
			}
		}
		trees = append(trees, Tree{Name: name, Dir: filepath.Clean(dir)})
	}
	return trees, nil
}

// LicensePolicy is the JSON form of a BUILD-INFO.txt to generate: one block
// covering FilesPattern (default ["*"], which also covers the directory
// listing itself).
type LicensePolicy struct {
	LicenseType     string   `json:"license_type"` // open | protected (required)
	AuthGroups      []string `json:"auth_groups,omitempty"`
	Theme           string   `json:"theme,omitempty"`
	LicenseText     string   `json:"license_text,omitempty"`
	CollectUserData bool     `json:"collect_user_data,omitempty"`
	BuildName       string   `json:"build_name,omitempty"`
	FilesPattern    []string `json:"files_pattern,omitempty"`
}

// Options is validated target data with its defaults applied.
type Options struct {
	Tree      Tree
	Series    string // slash-separated, validated
	BuildID   string
	DefaultID bool // BuildID was generated: a taken id gets a ".N" suffix instead of failing
	Result    string
	Area      string   // "", "outputs" or "inputs"
	Links     []string // link names in the series directory
	BuildInfo []byte   // BUILD-INFO.txt content, nil for none; parses with package buildinfo
	Retention string
	Unpack    bool // the image is a tar archive whose tree is the build (see unpack.go)
}

var knownFields = []string{"tree", "series", "build_id", "result", "area", "links", "build_info", "retention", "unpack"}

func invalid(format string, args ...any) error {
	return cloudupload.Errorf(cloudupload.EINVALID, format, args...)
}

// ParseOptions validates target data for job. now supplies the default
// build id. It touches no file.
func ParseOptions(job targets.Job, data []byte, getenv func(string) string, now time.Time) (*Options, error) {
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(data, &raw); err != nil || raw == nil {
		return nil, invalid("target data must be a JSON object")
	}
	var unknown []string
	for k := range raw {
		if !contains(knownFields, k) {
			unknown = append(unknown, k)
		}
	}
	if len(unknown) > 0 {
		sort.Strings(unknown)
		return nil, invalid("unknown field(s) %s in mirror target data (known: %s)", strings.Join(unknown, ", "), strings.Join(knownFields, ", "))
	}
	str := func(field string) (string, bool, error) {
		v, ok := raw[field]
		if !ok || string(v) == "null" {
			return "", false, nil
		}
		var s string
		if err := json.Unmarshal(v, &s); err != nil {
			return "", false, invalid("%s must be a string", field)
		}
		return s, true, nil
	}
	o := &Options{}

	// tree
	name, ok, err := str("tree")
	if err != nil {
		return nil, err
	}
	getenvOr := getenv
	if getenvOr == nil {
		getenvOr = func(string) string { return "" }
	}
	trees, err := ParseTrees(getenvOr(EnvMirrors))
	if err != nil {
		// The server's configuration is wrong, not the request: say so without paths.
		return nil, cloudupload.Errorf(cloudupload.EINTERNAL, "mirror trees are misconfigured on the server: %v", err)
	}
	var names []string
	for _, t := range trees {
		names = append(names, t.Name)
		if t.Name == name {
			o.Tree = t
		}
	}
	switch {
	case !ok || name == "":
		return nil, invalid("tree is missing (known trees: %s)", listOrNone(names))
	case o.Tree.Name == "":
		return nil, invalid("tree %q is not a configured mirror tree (known trees: %s)", name, listOrNone(names))
	}

	// series
	series, ok, err := str("series")
	if err != nil {
		return nil, err
	}
	if ok {
		if err := checkSeries(series); err != nil {
			return nil, err
		}
		o.Series = series
	} else {
		parts := []struct{ field, v string }{{"project", job.Project}, {"repository", job.Repository}, {"arch", job.Arch}, {"package", job.Package}}
		var segs []string
		for _, p := range parts {
			if p.v == "" {
				return nil, invalid("series is missing and the job has no %s to derive it from", p.field)
			}
			if err := cloudupload.CheckName("series (from the job's "+p.field+")", p.v); err != nil {
				return nil, err
			}
			segs = append(segs, p.v)
		}
		o.Series = strings.Join(segs, "/")
	}

	// build_id
	id, ok, err := str("build_id")
	if err != nil {
		return nil, err
	}
	if ok {
		if err := cloudupload.CheckName("build_id", id); err != nil {
			return nil, err
		}
		o.BuildID = id
	} else {
		o.BuildID, o.DefaultID = now.UTC().Format(BuildIDFormat), true
	}

	// result
	o.Result, ok, err = str("result")
	if err != nil {
		return nil, err
	}
	if !ok {
		o.Result = "success"
	} else if o.Result != "success" && o.Result != "fail" {
		return nil, invalid("result must be \"success\" or \"fail\", not %q", o.Result)
	}

	// area
	o.Area, _, err = str("area")
	if err != nil {
		return nil, err
	}
	if o.Area != "" && o.Area != "outputs" && o.Area != "inputs" {
		return nil, invalid("area must be \"outputs\" or \"inputs\" (or absent for a flat build), not %q", o.Area)
	}

	// links
	if v, ok := raw["links"]; ok && string(v) != "null" {
		if err := json.Unmarshal(v, &o.Links); err != nil {
			return nil, invalid("links must be a list of link names")
		}
		seen := map[string]bool{}
		for _, l := range o.Links {
			if err := cloudupload.CheckName("links", l); err != nil {
				return nil, err
			}
			if seen[l] {
				return nil, invalid("links names %q twice", l)
			}
			if l == o.BuildID {
				return nil, invalid("links: %q is also the build_id", l)
			}
			seen[l] = true
		}
	}

	// retention
	o.Retention, _, err = str("retention")
	if err != nil {
		return nil, err
	}
	if o.Retention != "" {
		if err := CheckClass(o.Retention); err != nil {
			return nil, invalid("retention: %v", err)
		}
	}

	// build_info
	if v, ok := raw["build_info"]; ok && string(v) != "null" {
		o.BuildInfo, err = buildInfo(v)
		if err != nil {
			return nil, err
		}
	}

	// unpack
	if v, ok := raw["unpack"]; ok && string(v) != "null" {
		if err := json.Unmarshal(v, &o.Unpack); err != nil {
			return nil, invalid("unpack must be true or false")
		}
	}

	// The published file's name; `clouduploader validate` may not know it
	// (the daemon passes no filename), Upload always does.
	if job.Filename == "" {
		return o, nil
	}
	if err := cloudupload.CheckName("filename", job.Filename); err != nil {
		return nil, err
	}
	if o.Unpack {
		if !IsTarName(job.Filename) {
			return nil, invalid("unpack needs a tar archive, and %q is not named like one (%s)", job.Filename, strings.Join(tarSuffixes, ", "))
		}
		return o, nil // the archive's name is not published
	}
	if contains(reserved, job.Filename) {
		return nil, invalid("filename %q is reserved in a mirror build (reserved: %s)", job.Filename, strings.Join(reserved, ", "))
	}
	return o, nil
}

// checkSeries validates a series path such as master/centos.
func checkSeries(s string) error {
	switch {
	case s == "":
		return invalid("series is empty")
	case strings.HasPrefix(s, "/"):
		return invalid("series %q must be a relative path", s)
	}
	segs := strings.Split(s, "/")
	if len(segs) > 16 {
		return invalid("series %q has more than 16 segments", s)
	}
	for _, seg := range segs {
		if seg == "" {
			return invalid("series %q has an empty segment", s)
		}
		if err := cloudupload.CheckName("series segment", seg); err != nil {
			return err
		}
	}
	return nil
}

// CheckClass validates a retention class name: letters, digits, '-', '_'.
func CheckClass(s string) error {
	if s == "" || len(s) > 64 {
		return fmt.Errorf("class %q must be 1 to 64 characters", s)
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
			return fmt.Errorf("class %q may hold only letters, digits, '-' and '_'", s)
		}
	}
	return nil
}

// buildInfo turns the build_info field (a string holding BUILD-INFO.txt, or
// a LicensePolicy object) into checked file content.
func buildInfo(v json.RawMessage) ([]byte, error) {
	v = bytes.TrimSpace(v)
	if len(v) > 0 && v[0] == '"' {
		var s string
		if err := json.Unmarshal(v, &s); err != nil {
			return nil, invalid("build_info must be a string or an object")
		}
		if _, err := buildinfo.Parse([]byte(s)); err != nil {
			return nil, invalid("build_info does not parse: %v", err)
		}
		return []byte(s), nil
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(v, &raw); err != nil || raw == nil {
		return nil, invalid("build_info must be a string (BUILD-INFO.txt) or an object (licence policy)")
	}
	known := []string{"license_type", "auth_groups", "theme", "license_text", "collect_user_data", "build_name", "files_pattern"}
	var unknown []string
	for k := range raw {
		if !contains(known, k) {
			unknown = append(unknown, "build_info."+k)
		}
	}
	if len(unknown) > 0 {
		sort.Strings(unknown)
		return nil, invalid("unknown field(s) %s (known: %s)", strings.Join(unknown, ", "), strings.Join(known, ", "))
	}
	var p LicensePolicy
	if err := json.Unmarshal(v, &p); err != nil {
		return nil, invalid("build_info: %v", jsonFieldError(err))
	}
	text, err := p.BuildInfo()
	if err != nil {
		return nil, invalid("%v", err)
	}
	return text, nil
}

func jsonFieldError(err error) string {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) && te.Field != "" {
		return fmt.Sprintf("build_info.%s must be a %s", te.Field, te.Type.Kind())
	}
	return "malformed object"
}

// BuildInfo renders the policy as BUILD-INFO.txt content.
func (p LicensePolicy) BuildInfo() ([]byte, error) {
	b := buildinfo.Block{Patterns: p.FilesPattern}
	if len(b.Patterns) == 0 {
		b.Patterns = []string{"*"}
	}
	for _, pat := range b.Patterns {
		if pat != strings.TrimSpace(pat) || strings.ContainsAny(pat, ",\n\r") {
			return nil, fmt.Errorf("build_info.files_pattern %q must not hold commas, line breaks or surrounding spaces", pat)
		}
	}
	add := func(name, value string) { b.Fields = append(b.Fields, buildinfo.Field{Name: name, Value: value}) }
	switch p.LicenseType {
	case "open", "protected":
		add("license-type", p.LicenseType)
	case "":
		return nil, fmt.Errorf("build_info.license_type is missing (open or protected)")
	default:
		return nil, fmt.Errorf("build_info.license_type must be \"open\" or \"protected\", not %q", p.LicenseType)
	}
	if p.BuildName != "" {
		add("build-name", p.BuildName)
	}
	if p.Theme != "" {
		add("theme", p.Theme)
	}
	if len(p.AuthGroups) > 0 {
		for _, g := range p.AuthGroups {
			if g == "" || g != strings.TrimSpace(g) || strings.ContainsAny(g, ",\n\r") {
				return nil, fmt.Errorf("build_info.auth_groups: %q is not a group name", g)
			}
		}
		add("auth-groups", strings.Join(p.AuthGroups, ", "))
	}
	if p.CollectUserData {
		add("collect-user-data", "yes")
	}
	if t := buildinfo.NormalizeText(p.LicenseText); t != "" {
		add("license-text", t)
	}
	if p.LicenseType == "protected" && len(p.AuthGroups) == 0 && p.LicenseText == "" {
		return nil, fmt.Errorf("build_info: a protected policy needs auth_groups or license_text")
	}
	bi := &buildinfo.BuildInfo{FormatVersion: "0.5", Blocks: []buildinfo.Block{b}}
	text, err := bi.MarshalText()
	if err != nil {
		return nil, fmt.Errorf("build_info: %v", err)
	}
	return text, nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func listOrNone(names []string) string {
	if len(names) == 0 {
		return "none configured"
	}
	return strings.Join(names, ", ")
}
