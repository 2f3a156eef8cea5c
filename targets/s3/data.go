package s3

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"path"
	"sort"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/cloudupload/cloudupload"
	"github.com/cloudupload/cloudupload/internal/lazyre"
	"github.com/cloudupload/cloudupload/targets"
	"github.com/cloudupload/cloudupload/targets/awsauth"
)

// DefaultPrefix is the key template used when the target data has none.
const DefaultPrefix = "{project}/{repository}/{arch}/{package}/{filename}"

// dateLayout is how {date} is written: the UTC time the upload started, the
// same form as the mirror target's build ids; it sorts as text.
const dateLayout = "20060102T150405Z"

// maxKey is S3's limit on an object key, in bytes of UTF-8.
const maxKey = 1024

// storageClasses are the classes a plain bucket accepts for a new object
// (directory-bucket, Outposts, Snow, FSx and backup classes are not).
var storageClasses = []string{
	"STANDARD", "REDUCED_REDUNDANCY", "STANDARD_IA", "ONEZONE_IA",
	"INTELLIGENT_TIERING", "GLACIER", "GLACIER_IR", "DEEP_ARCHIVE",
}

// config is the target data, validated.
type config struct {
	ARN          string            `json:"arn"`
	ExternalID   string            `json:"external_id"`
	Region       string            `json:"region"`
	Bucket       string            `json:"bucket"`
	Prefix       string            `json:"prefix"`
	StorageClass string            `json:"storage_class"`
	Tags         map[string]string `json:"tags"`
	Public       bool              `json:"public"`
	Latest       bool              `json:"latest"`
	Decompress   bool              `json:"decompress"`
}

// fields lists the target data's fields in the order errors check them.
var fields = []string{"arn", "external_id", "region", "bucket", "prefix", "storage_class", "tags", "public", "latest", "decompress"}

func invalid(format string, args ...any) error {
	return cloudupload.Errorf(cloudupload.EINVALID, format, args...)
}

// parseConfig decodes and validates target data. Every error names the field.
func parseConfig(data []byte) (*config, error) {
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(data, &raw); err != nil || raw == nil {
		return nil, invalid("target data is not a JSON object")
	}
	var unknown []string
	for k := range raw {
		if !contains(fields, k) {
			unknown = append(unknown, fmt.Sprintf("%q", k))
		}
	}
	if len(unknown) > 0 {
		sort.Strings(unknown)
		return nil, invalid("unknown field %s in target data (known: %s)", strings.Join(unknown, ", "), strings.Join(fields, ", "))
	}
	c := &config{}
	strs := map[string]*string{"arn": &c.ARN, "external_id": &c.ExternalID, "region": &c.Region, "bucket": &c.Bucket, "prefix": &c.Prefix, "storage_class": &c.StorageClass}
	bools := map[string]*bool{"public": &c.Public, "latest": &c.Latest, "decompress": &c.Decompress}
	for _, f := range fields {
		v, ok := raw[f]
		if !ok || bytes.Equal(bytes.TrimSpace(v), []byte("null")) {
			continue
		}
		switch {
		case strs[f] != nil:
			if json.Unmarshal(v, strs[f]) != nil {
				return nil, invalid("%s must be a string", f)
			}
		case bools[f] != nil:
			if json.Unmarshal(v, bools[f]) != nil {
				return nil, invalid("%s must be true or false", f)
			}
		case f == "tags":
			if json.Unmarshal(v, &c.Tags) != nil {
				return nil, invalid("tags must be an object of string values")
			}
		}
	}
	if err := c.check(); err != nil {
		return nil, err
	}
	return c, nil
}

func (c *config) check() error {
	if err := awsauth.CheckARN("arn", c.ARN); err != nil {
		return err
	}
	if err := awsauth.CheckExternalID("external_id", c.ExternalID); err != nil {
		return err
	}
	if err := awsauth.CheckRegion("region", c.Region); err != nil {
		return err
	}
	if err := checkBucket(c.Bucket); err != nil {
		return err
	}
	if c.Prefix == "" {
		c.Prefix = DefaultPrefix
	} else if strings.HasSuffix(c.Prefix, "/") {
		c.Prefix += "{filename}"
	}
	if _, err := parseTemplate(c.Prefix); err != nil {
		return err
	}
	if c.StorageClass != "" && !contains(storageClasses, c.StorageClass) {
		return invalid("storage_class %q is not one of %s", clip(c.StorageClass), strings.Join(storageClasses, ", "))
	}
	if err := checkTags(c.Tags); err != nil {
		return err
	}
	if _, ok := c.Tags[tagSHA256]; ok {
		return invalid("tags: key %q is reserved for the object's SHA-256", tagSHA256)
	}
	if c.Decompress && len(c.Tags) >= maxTags {
		return invalid("tags has %d entries; with decompress at most %d: the disk's SHA-256, learnt during the upload, is stored as the tag %s", len(c.Tags), maxTags-1, tagSHA256)
	}
	return nil
}

var (
	bucketRE  = lazyre.New(`^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$`)
	tagRE     = lazyre.New(`^[\p{L}\p{Z}\p{N}_.:/=+\-@]*$`)
	badPrefix = []string{"xn--", "sthree-", "amzn-s3-demo-"}
	badSuffix = []string{"-s3alias", "--ol-s3", ".mrap", "--x-s3", "--table-s3"}
)

// checkBucket applies S3's naming rules for general purpose buckets.
func checkBucket(b string) error {
	if b == "" {
		return invalid("bucket is missing")
	}
	const rules = "3 to 63 lowercase letters, digits, dots and hyphens, starting and ending with a letter or digit"
	if !bucketRE.MatchString(b) {
		return invalid("bucket %q is not a valid S3 bucket name (%s)", clip(b), rules)
	}
	if strings.Contains(b, "..") || strings.Contains(b, ".-") || strings.Contains(b, "-.") {
		return invalid("bucket %q is not a valid S3 bucket name (no two adjacent dots, no dot next to a hyphen)", b)
	}
	if net.ParseIP(b) != nil {
		return invalid("bucket %q is not a valid S3 bucket name (it must not look like an IP address)", b)
	}
	for _, p := range badPrefix {
		if strings.HasPrefix(b, p) {
			return invalid("bucket %q is not a valid S3 bucket name (it must not start with %q)", b, p)
		}
	}
	for _, s := range badSuffix {
		if strings.HasSuffix(b, s) {
			return invalid("bucket %q is not a valid S3 bucket name (it must not end with %q)", b, s)
		}
	}
	return nil
}

// checkTags applies S3's object tag limits.
func checkTags(tags map[string]string) error {
	if len(tags) > 10 {
		return invalid("tags has %d entries; S3 allows at most 10 per object", len(tags))
	}
	for k, v := range tags {
		switch {
		case k == "":
			return invalid("tags: a tag key is empty")
		case !utf8.ValidString(k) || utf8.RuneCountInString(k) > 128:
			return invalid("tags: key %q is longer than 128 characters", clip(k))
		case strings.HasPrefix(strings.ToLower(k), "aws:"):
			return invalid("tags: key %q uses the reserved aws: prefix", clip(k))
		case !tagRE.MatchString(k):
			return invalid("tags: key %q has characters S3 does not allow (letters, digits, spaces and _ . : / = + - @)", clip(k))
		case !utf8.ValidString(v) || utf8.RuneCountInString(v) > 256:
			return invalid("tags: value of %q is longer than 256 characters", clip(k))
		case !tagRE.MatchString(v):
			return invalid("tags: value of %q has characters S3 does not allow (letters, digits, spaces and _ . : / = + - @)", clip(k))
		}
	}
	return nil
}

// placeholders are the names a key template may use.
var placeholders = []string{"project", "repository", "arch", "package", "filename", "job", "date"}

// varying are the placeholders that differ from one build to the next: the
// latest pointer lives above the first template segment using one.
var varying = []string{"filename", "job", "date"}

// piece is a literal (name == "") or a placeholder of a template.
type piece struct{ lit, name string }

// parseTemplate splits a key template into literals and placeholders.
func parseTemplate(t string) ([]piece, error) {
	if !utf8.ValidString(t) {
		return nil, invalid("prefix is not valid UTF-8")
	}
	if len(t) > maxKey {
		return nil, invalid("prefix is longer than %d bytes", maxKey)
	}
	var out []piece
	for t != "" {
		open := strings.IndexAny(t, "{}")
		if open < 0 {
			out = append(out, piece{lit: t})
			break
		}
		if t[open] == '}' {
			return nil, invalid("prefix has a '}' without '{'")
		}
		if open > 0 {
			out = append(out, piece{lit: t[:open]})
		}
		end := strings.IndexByte(t[open:], '}')
		if end < 0 {
			return nil, invalid("prefix has a '{' without '}'")
		}
		name := t[open+1 : open+end]
		if !contains(placeholders, name) {
			return nil, invalid("prefix uses unknown placeholder {%s} (known: {%s})", clip(name), strings.Join(placeholders, "} {"))
		}
		out = append(out, piece{name: name})
		t = t[open+end+1:]
	}
	for _, p := range out {
		for _, r := range p.lit {
			if r < 0x20 || r == 0x7f {
				return nil, invalid("prefix contains a control character")
			}
		}
	}
	return out, nil
}

// vars are the values the placeholders stand for.
type vars struct {
	job      targets.Job
	filename string
	date     time.Time
}

func (v vars) value(name string) string {
	switch name {
	case "project":
		return v.job.Project
	case "repository":
		return v.job.Repository
	case "arch":
		return v.job.Arch
	case "package":
		return v.job.Package
	case "filename":
		return v.filename
	case "job":
		return v.job.ID
	case "date":
		return v.date.UTC().Format(dateLayout)
	}
	return ""
}

// keys renders a template: the object's key and the key of its latest
// pointer (the segments before the first one using {filename}, {job} or
// {date}, then "latest").
func keys(tmpl string, v vars) (key, latest string, err error) {
	pieces, err := parseTemplate(tmpl)
	if err != nil {
		return "", "", err
	}
	var b strings.Builder
	stable := -1 // length of the key before the segment that first varies
	for _, p := range pieces {
		if p.name == "" {
			b.WriteString(p.lit)
			continue
		}
		val := v.value(p.name)
		switch {
		case val == "":
			return "", "", invalid("prefix: {%s} is empty for this job", p.name)
		case strings.Contains(val, "/"):
			return "", "", invalid("prefix: {%s} %q contains a slash", p.name, clip(val))
		case !utf8.ValidString(val) || strings.IndexFunc(val, func(r rune) bool { return r < 0x20 || r == 0x7f }) >= 0:
			return "", "", invalid("prefix: {%s} contains a control character or invalid UTF-8", p.name)
		}
		if stable < 0 && contains(varying, p.name) {
			stable = strings.LastIndexByte(b.String(), '/') + 1
		}
		b.WriteString(val)
	}
	key = b.String()
	if err := checkKey(key); err != nil {
		return "", "", err
	}
	dir := path.Dir(key)
	if stable >= 0 {
		dir = strings.TrimSuffix(key[:stable], "/")
	}
	if dir == "." || dir == "" {
		latest = "latest"
	} else {
		latest = dir + "/latest"
	}
	return key, latest, nil
}

// checkKey validates a rendered object key.
func checkKey(key string) error {
	switch {
	case key == "":
		return invalid("prefix gives an empty object key")
	case len(key) > maxKey:
		return invalid("prefix gives an object key of %d bytes; S3 allows %d", len(key), maxKey)
	case strings.HasPrefix(key, "/"):
		return invalid("prefix gives a key starting with '/': %q", clip(key))
	}
	for _, seg := range strings.Split(key, "/") {
		switch seg {
		case "":
			return invalid("prefix gives a key with an empty segment ('//' or a trailing '/'): %q", clip(key))
		case ".", "..":
			return invalid("prefix gives a key with a %q segment: %q", seg, clip(key))
		}
	}
	return nil
}

// diskName is the name a decompressed image is stored under: the file name
// without its compression suffix, and with ".raw" instead of a container
// suffix that is not raw ("x.raw.xz" → "x.raw", "x.img.gz" → "x.img",
// "x.vhdfixed.xz" and "x.qcow2" → "x.raw"). A name without extension gets
// ".raw" appended (the image package then tells the format by content); ok
// is false for a name whose extension says it is no disk image ("x.iso").
func diskName(filename string) (string, bool) {
	lower, base := strings.ToLower(filename), filename
	compressed := false
	for _, c := range []string{".xz", ".gz", ".zst", ".zstd"} {
		if strings.HasSuffix(lower, c) && len(lower) > len(c) {
			lower, base, compressed = lower[:len(lower)-len(c)], base[:len(base)-len(c)], true
			break
		}
	}
	if compressed && strings.HasSuffix(lower, ".qcow2") {
		return "", false // a compressed qcow2 cannot be read as a stream
	}
	for _, c := range []string{".raw", ".img"} {
		if strings.HasSuffix(lower, c) && len(lower) > len(c) {
			return base, true
		}
	}
	for _, c := range []string{".vhdfixed", ".vhd", ".qcow2"} {
		if strings.HasSuffix(lower, c) && len(lower) > len(c) {
			return base[:len(base)-len(c)] + ".raw", true
		}
	}
	return base + ".raw", !hasExtension(base)
}

// hasExtension tells whether name ends in an extension that says what the
// file is (".iso", ".tar"; not the ".4" of "Build3.4"), as the image package
// decides whether to look at the content.
func hasExtension(name string) bool {
	i := strings.LastIndexByte(name, '.')
	if i < 0 || i == len(name)-1 || len(name)-i-1 > 10 {
		return false
	}
	return strings.IndexFunc(name[i+1:], func(r rune) bool { return r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' }) >= 0
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// clip shortens user input quoted in messages.
func clip(s string) string {
	if len(s) > 80 {
		s = s[:77] + "..."
	}
	return strings.ToValidUTF8(s, "?")
}
