package ec2

import (
	"bytes"
	"encoding/json"
	"sort"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/cloudupload/cloudupload"
	"github.com/cloudupload/cloudupload/internal/lazyre"
	"github.com/cloudupload/cloudupload/targets"
	"github.com/cloudupload/cloudupload/targets/awsauth"
)

// Limits of the target data.
const (
	maxDataBytes    = 64 << 10
	maxDescription  = 255 // AWS limit for an AMI description
	maxUserTags     = 40  // AWS allows 50 per resource; the uploader adds its own
	maxShares       = 100
	maxCopyRegions  = 30
	maxRootVolumeGB = 16384 // gp3 maximum
)

// Methods of getting the disk into a snapshot.
const (
	methodEBS    = "ebs"
	methodImport = "import"
)

// Tags the uploader sets on everything it creates. tagJob identifies the job
// (see jobToken) and makes a rerun of the same job idempotent.
const (
	tagJob   = "cloudupload:job"   // the job id, for people
	tagToken = "cloudupload:token" // jobToken: job and image identity
	tagImage = "cloudupload:image" // the image's file name
)

// data is the ec2 target data after validation.
type data struct {
	ARN         string
	ExternalID  string
	Region      string
	AMIName     string
	VPCSubnetID string // accepted for compatibility with OBS, unused

	Description    string
	BootMode       string // "", legacy-bios, uefi, uefi-preferred
	ENA            bool   // default true
	SRIOV          bool
	TPM            bool
	IMDSv2         bool
	Tags           map[string]string
	ShareAccounts  []string
	CopyRegions    []string
	RootVolumeSize int64 // GiB, 0 = derived from the image
	Method         string
	S3Bucket       string
}

// fields lists every key the target data may hold, for the unknown-field
// error.
var fields = []string{
	"arn", "external_id", "region", "ami_name", "vpc_subnet_id", "user_id",
	"description", "boot_mode", "ena", "sriov", "tpm", "imds_v2", "tags",
	"share_accounts", "copy_regions", "root_volume_size", "method", "s3_bucket",
}

var (
	subnetRE  = lazyre.New(`^subnet-[-\w]+$`)
	accountRE = lazyre.New(`^\d{12}$`)
	bucketRE  = lazyre.New(`^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$`)
)

func invalid(format string, args ...any) error {
	return cloudupload.Errorf(cloudupload.EINVALID, format, args...)
}

// parseData decodes and validates ec2 target data. Every error is a
// *cloudupload.Error with code EINVALID naming the field. It makes no network
// call.
func parseData(raw []byte) (*data, error) {
	if len(raw) > maxDataBytes {
		return nil, invalid("target data is larger than %d bytes", maxDataBytes)
	}
	var m map[string]json.RawMessage
	dec := json.NewDecoder(bytes.NewReader(raw))
	if err := dec.Decode(&m); err != nil || m == nil {
		return nil, invalid("target data is not a JSON object")
	}
	if dec.More() {
		return nil, invalid("target data holds more than one JSON value")
	}
	var unknown []string
	for k := range m {
		if !contains(fields, k) {
			unknown = append(unknown, strconv.Quote(k))
		}
	}
	if len(unknown) > 0 {
		sort.Strings(unknown)
		return nil, invalid("unknown field %s in ec2 target data (known: %s)", strings.Join(unknown, ", "), strings.Join(fields, ", "))
	}

	d := &data{ENA: true, Method: methodEBS}
	var err error
	str := func(key string, dst *string) {
		if err != nil {
			return
		}
		err = decodeString(m, key, dst)
	}
	flag := func(key string, dst *bool) {
		if err != nil {
			return
		}
		err = decodeBool(m, key, dst)
	}
	str("arn", &d.ARN)
	str("external_id", &d.ExternalID)
	str("region", &d.Region)
	str("ami_name", &d.AMIName)
	str("vpc_subnet_id", &d.VPCSubnetID)
	str("description", &d.Description)
	str("boot_mode", &d.BootMode)
	str("method", &d.Method)
	str("s3_bucket", &d.S3Bucket)
	flag("ena", &d.ENA)
	flag("sriov", &d.SRIOV)
	flag("tpm", &d.TPM)
	flag("imds_v2", &d.IMDSv2)
	if err != nil {
		return nil, err
	}
	if v, ok := m["user_id"]; ok && !isScalar(v) {
		return nil, invalid("user_id must be a number or a string")
	}
	if d.Tags, err = decodeTags(m); err != nil {
		return nil, err
	}
	if d.ShareAccounts, err = decodeList(m, "share_accounts"); err != nil {
		return nil, err
	}
	if d.CopyRegions, err = decodeList(m, "copy_regions"); err != nil {
		return nil, err
	}
	if d.RootVolumeSize, err = decodeSize(m, "root_volume_size"); err != nil {
		return nil, err
	}
	if err := d.check(); err != nil {
		return nil, err
	}
	return d, nil
}

func (d *data) check() error {
	if err := awsauth.CheckARN("arn", d.ARN); err != nil {
		return err
	}
	if err := awsauth.CheckExternalID("external_id", d.ExternalID); err != nil {
		return err
	}
	if err := awsauth.CheckRegion("region", d.Region); err != nil {
		return err
	}
	if err := checkAMIName("ami_name", d.AMIName); err != nil {
		return err
	}
	if d.VPCSubnetID != "" && !subnetRE.MatchString(d.VPCSubnetID) {
		return invalid("vpc_subnet_id %q is not a subnet id (subnet-…)", d.VPCSubnetID)
	}
	if len(d.Description) > maxDescription || !utf8.ValidString(d.Description) {
		return invalid("description must be valid UTF-8 of at most %d bytes", maxDescription)
	}
	for _, r := range d.Description {
		if r < 0x20 || r == 0x7f {
			return invalid("description contains a control character")
		}
	}
	switch d.BootMode {
	case "", "legacy-bios", "uefi", "uefi-preferred":
	default:
		return invalid("boot_mode %q is not one of legacy-bios, uefi, uefi-preferred", d.BootMode)
	}
	if d.TPM && d.BootMode != "uefi" && d.BootMode != "uefi-preferred" {
		return invalid("tpm needs boot_mode uefi or uefi-preferred (NitroTPM works only with UEFI)")
	}
	if len(d.Tags) > maxUserTags {
		return invalid("tags has %d entries, at most %d are allowed", len(d.Tags), maxUserTags)
	}
	for k, v := range d.Tags {
		switch {
		case k == "" || len(k) > 128 || !utf8.ValidString(k):
			return invalid("tags: key %q must be 1 to 128 characters", k)
		case strings.HasPrefix(strings.ToLower(k), "aws:"):
			return invalid("tags: key %q must not start with aws: (reserved by AWS)", k)
		case strings.HasPrefix(k, "cloudupload:"):
			return invalid("tags: key %q must not start with cloudupload: (set by the uploader)", k)
		case len(v) > 256 || !utf8.ValidString(v):
			return invalid("tags: value of %q must be at most 256 characters", k)
		}
	}
	if len(d.ShareAccounts) > maxShares {
		return invalid("share_accounts has %d entries, at most %d are allowed", len(d.ShareAccounts), maxShares)
	}
	for _, a := range d.ShareAccounts {
		if !accountRE.MatchString(a) {
			return invalid("share_accounts: %q is not a 12-digit AWS account id", a)
		}
	}
	d.ShareAccounts = dedupe(d.ShareAccounts)
	if len(d.CopyRegions) > maxCopyRegions {
		return invalid("copy_regions has %d entries, at most %d are allowed", len(d.CopyRegions), maxCopyRegions)
	}
	for _, r := range d.CopyRegions {
		if err := awsauth.CheckRegion("copy_regions", r); err != nil {
			return err
		}
		if r == d.Region {
			return invalid("copy_regions: %q is the home region (region) itself", r)
		}
	}
	d.CopyRegions = dedupe(d.CopyRegions)
	if d.RootVolumeSize < 0 || d.RootVolumeSize > maxRootVolumeGB {
		return invalid("root_volume_size must be between 1 and %d GiB", maxRootVolumeGB)
	}
	switch d.Method {
	case methodEBS:
		if d.S3Bucket != "" {
			return invalid("s3_bucket is only used with method import")
		}
	case methodImport:
		if d.S3Bucket == "" {
			return invalid("s3_bucket is missing (method import needs a bucket in region %s)", d.Region)
		}
		if !bucketRE.MatchString(d.S3Bucket) || strings.Contains(d.S3Bucket, "..") {
			return invalid("s3_bucket %q is not a valid bucket name (3 to 63 of a-z 0-9 . -)", d.S3Bucket)
		}
	default:
		return invalid("method %q is not one of ebs, import", d.Method)
	}
	return nil
}

// checkAMIName accepts what both OBS (1–100 of [-+\w.:], no leading : . _)
// and AWS (3–128 of letters, digits and ( ) [ ] space . / - ' @ _) allow:
// 3 to 100 of letters, digits, '.', '_', '-', not starting with '.' or '_'.
// The error says which rule failed.
func checkAMIName(field, s string) error {
	if s == "" {
		return invalid("%s is missing", field)
	}
	if len(s) > 100 {
		return invalid("%s is longer than 100 characters (the OBS limit)", field)
	}
	for _, r := range s {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '_', r == '.':
		case r == '+' || r == ':':
			return invalid("%s %q contains %q, which AWS does not allow in AMI names (allowed: letters, digits, '.', '_', '-')", field, s, r)
		case r == '(' || r == ')' || r == '[' || r == ']' || r == ' ' || r == '/' || r == '\'' || r == '@':
			return invalid("%s %q contains %q, which OBS does not allow in AMI names (allowed: letters, digits, '.', '_', '-')", field, s, r)
		default:
			return invalid("%s %q contains %q (allowed: letters, digits, '.', '_', '-')", field, s, r)
		}
	}
	if s[0] == '.' || s[0] == '_' {
		return invalid("%s %q must not start with %q (OBS rule)", field, s, s[0])
	}
	if len(s) < 3 {
		return invalid("%s %q is shorter than 3 characters (the AWS minimum)", field, s)
	}
	return nil
}

// archOf maps the job's architecture to EC2's. An empty arch (uploader run
// by hand) is taken from the file name, defaulting to x86_64.
func archOf(job targets.Job) (string, error) {
	arch := job.Arch
	if arch == "" {
		switch {
		case strings.Contains(job.Filename, "aarch64") || strings.Contains(job.Filename, "arm64"):
			arch = "aarch64"
		default:
			arch = "x86_64"
		}
	}
	switch arch {
	case "x86_64":
		return "x86_64", nil
	case "aarch64", "arm64":
		return "arm64", nil
	}
	return "", invalid("arch %q cannot run on EC2 (x86_64 or aarch64)", arch)
}

func decodeString(m map[string]json.RawMessage, key string, dst *string) error {
	v, ok := m[key]
	if !ok || string(v) == "null" {
		return nil
	}
	if err := json.Unmarshal(v, dst); err != nil {
		return invalid("%s must be a string", key)
	}
	return nil
}

func decodeBool(m map[string]json.RawMessage, key string, dst *bool) error {
	v, ok := m[key]
	if !ok || string(v) == "null" {
		return nil
	}
	if err := json.Unmarshal(v, dst); err != nil {
		// Frontends built around form fields send "true"/"false".
		var s string
		if json.Unmarshal(v, &s) == nil {
			if b, err := strconv.ParseBool(s); err == nil {
				*dst = b
				return nil
			}
		}
		return invalid("%s must be true or false", key)
	}
	return nil
}

func decodeList(m map[string]json.RawMessage, key string) ([]string, error) {
	v, ok := m[key]
	if !ok || string(v) == "null" {
		return nil, nil
	}
	var l []string
	if err := json.Unmarshal(v, &l); err != nil {
		// A single string, possibly comma separated, is accepted too.
		var s string
		if json.Unmarshal(v, &s) != nil {
			return nil, invalid("%s must be a list of strings", key)
		}
		l = strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == ' ' })
	}
	return l, nil
}

func decodeTags(m map[string]json.RawMessage) (map[string]string, error) {
	v, ok := m["tags"]
	if !ok || string(v) == "null" {
		return nil, nil
	}
	var t map[string]string
	if err := json.Unmarshal(v, &t); err != nil {
		return nil, invalid("tags must be an object of string values, such as {\"team\": \"os\"}")
	}
	return t, nil
}

func decodeSize(m map[string]json.RawMessage, key string) (int64, error) {
	v, ok := m[key]
	if !ok || string(v) == "null" {
		return 0, nil
	}
	var n json.Number
	if err := json.Unmarshal(v, &n); err != nil {
		var s string
		if json.Unmarshal(v, &s) != nil || s == "" {
			return 0, invalid("%s must be a whole number of GiB", key)
		}
		n = json.Number(s)
	}
	i, err := strconv.ParseInt(string(n), 10, 64)
	if err != nil || i <= 0 || i > maxRootVolumeGB {
		return 0, invalid("%s must be a whole number of GiB between 1 and %d", key, maxRootVolumeGB)
	}
	return i, nil
}

func isScalar(v json.RawMessage) bool {
	var x any
	if json.Unmarshal(v, &x) != nil {
		return false
	}
	switch x.(type) {
	case string, float64, nil:
		return true
	}
	return false
}

func contains(l []string, s string) bool {
	for _, x := range l {
		if x == s {
			return true
		}
	}
	return false
}

func dedupe(l []string) []string {
	var out []string
	for _, s := range l {
		if !contains(out, s) {
			out = append(out, s)
		}
	}
	return out
}

// volumeGiB is the snapshot's volume size: the disk size rounded up to GiB,
// or root_volume_size when given, which must hold the disk.
func (d *data) volumeGiB(diskSize int64) (int64, error) {
	need := (diskSize + 1<<30 - 1) >> 30
	if need == 0 {
		need = 1
	}
	if d.RootVolumeSize == 0 {
		return need, nil
	}
	if d.RootVolumeSize < need {
		return 0, invalid("root_volume_size %d GiB is smaller than the image's disk (%d bytes, %d GiB)", d.RootVolumeSize, diskSize, need)
	}
	return d.RootVolumeSize, nil
}
