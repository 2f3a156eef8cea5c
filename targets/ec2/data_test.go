package ec2

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/cloudupload/cloudupload"
	"github.com/cloudupload/cloudupload/targets"
)

const obsData = `{"user_id":30,"external_id":"0123-abcd","arn":"arn:aws:iam::123456789012:role/obs","region":"us-east-1","ami_name":"my-image","vpc_subnet_id":"subnet-0abc"}`

func TestParseOBSData(t *testing.T) {
	d, err := parseData([]byte(obsData))
	if err != nil {
		t.Fatal(err)
	}
	if d.ARN != "arn:aws:iam::123456789012:role/obs" || d.ExternalID != "0123-abcd" || d.Region != "us-east-1" ||
		d.AMIName != "my-image" || d.VPCSubnetID != "subnet-0abc" {
		t.Errorf("parsed %+v", d)
	}
	if !d.ENA || d.Method != methodEBS || d.SRIOV || d.TPM || d.IMDSv2 || d.BootMode != "" {
		t.Errorf("defaults %+v", d)
	}
	// OBS sometimes sent an empty subnet and a string user id.
	if _, err := parseData([]byte(`{"user_id":"30","arn":"arn:aws:iam::123456789012:role/obs","region":"eu-central-1","ami_name":"abc","vpc_subnet_id":""}`)); err != nil {
		t.Error(err)
	}
}

func TestParseOptions(t *testing.T) {
	d, err := parseData([]byte(`{"arn":"arn:aws:iam::123456789012:role/obs","region":"us-east-1","ami_name":"abc",
		"description":"x","boot_mode":"uefi-preferred","ena":"false","sriov":true,"tpm":true,"imds_v2":true,
		"tags":{"a":"b"},"share_accounts":"111122223333, 210987654321,111122223333","copy_regions":["eu-west-1","eu-west-1"],
		"root_volume_size":"20","method":"import","s3_bucket":"my.bucket-1"}`))
	if err != nil {
		t.Fatal(err)
	}
	if d.ENA || !d.SRIOV || !d.TPM || !d.IMDSv2 || d.BootMode != "uefi-preferred" || d.Tags["a"] != "b" ||
		strings.Join(d.ShareAccounts, ",") != "111122223333,210987654321" || strings.Join(d.CopyRegions, ",") != "eu-west-1" ||
		d.RootVolumeSize != 20 || d.Method != methodImport || d.S3Bucket != "my.bucket-1" {
		t.Errorf("parsed %+v", d)
	}
}

func TestParseInvalid(t *testing.T) {
	base := `"arn":"arn:aws:iam::123456789012:role/obs","region":"us-east-1"`
	for _, c := range []struct{ data, field string }{
		{`[]`, "JSON object"},
		{`{"region":"us-east-1","ami_name":"abc"}`, "arn"},
		{`{"arn":"arn:aws:iam::12:role/x","region":"us-east-1","ami_name":"abc"}`, "arn"},
		{`{"arn":"arn:aws:iam::123456789012:role/obs","ami_name":"abc"}`, "region"},
		{`{"arn":"arn:aws:iam::123456789012:role/obs","region":"Mars-1","ami_name":"abc"}`, "region"},
		{`{` + base + `}`, "ami_name"},
		{`{` + base + `,"ami_name":"ab"}`, "shorter than 3"},
		{`{` + base + `,"ami_name":"` + strings.Repeat("a", 101) + `"}`, "OBS limit"},
		{`{` + base + `,"ami_name":".abc"}`, "OBS rule"},
		{`{` + base + `,"ami_name":"_abc"}`, "OBS rule"},
		{`{` + base + `,"ami_name":"a+b:c"}`, "AWS does not allow"},
		{`{` + base + `,"ami_name":"a (b)"}`, "OBS does not allow"},
		{`{` + base + `,"ami_name":"a\u00e9b"}`, "ami_name"},
		{`{` + base + `,"ami_name":"abc","external_id":"x"}`, "external_id"},
		{`{` + base + `,"ami_name":"abc","vpc_subnet_id":"sub"}`, "vpc_subnet_id"},
		{`{` + base + `,"ami_name":"abc","boot_mode":"bios"}`, "boot_mode"},
		{`{` + base + `,"ami_name":"abc","tpm":true}`, "tpm"},
		{`{` + base + `,"ami_name":"abc","boot_mode":"legacy-bios","tpm":true}`, "tpm"},
		{`{` + base + `,"ami_name":"abc","ena":"maybe"}`, "ena"},
		{`{` + base + `,"ami_name":"abc","tags":["a"]}`, "tags"},
		{`{` + base + `,"ami_name":"abc","tags":{"aws:x":"y"}}`, "tags"},
		{`{` + base + `,"ami_name":"abc","tags":{"cloudupload:job":"y"}}`, "tags"},
		{`{` + base + `,"ami_name":"abc","share_accounts":["12345"]}`, "share_accounts"},
		{`{` + base + `,"ami_name":"abc","share_accounts":7}`, "share_accounts"},
		{`{` + base + `,"ami_name":"abc","copy_regions":["nowhere"]}`, "copy_regions"},
		{`{` + base + `,"ami_name":"abc","copy_regions":["us-east-1"]}`, "copy_regions"},
		{`{` + base + `,"ami_name":"abc","root_volume_size":0}`, "root_volume_size"},
		{`{` + base + `,"ami_name":"abc","root_volume_size":1.5}`, "root_volume_size"},
		{`{` + base + `,"ami_name":"abc","root_volume_size":99999}`, "root_volume_size"},
		{`{` + base + `,"ami_name":"abc","method":"dd"}`, "method"},
		{`{` + base + `,"ami_name":"abc","method":"import"}`, "s3_bucket"},
		{`{` + base + `,"ami_name":"abc","method":"import","s3_bucket":"Bad_Bucket"}`, "s3_bucket"},
		{`{` + base + `,"ami_name":"abc","s3_bucket":"bucket"}`, "s3_bucket"},
		{`{` + base + `,"ami_name":"abc","amiName":"x","regoin":"y"}`, `"amiName", "regoin"`},
		{`{` + base + `,"ami_name":"abc","description":"a\nb"}`, "description"},
		{`{` + base + `,"ami_name":"abc","user_id":{}}`, "user_id"},
		{`{` + base + `,"ami_name":"abc"} {}`, "more than one"},
	} {
		_, err := parseData([]byte(c.data))
		if err == nil {
			t.Errorf("%s accepted", c.data)
			continue
		}
		if cloudupload.ErrorCode(err) != cloudupload.EINVALID || !strings.Contains(cloudupload.ErrorMessage(err), c.field) {
			t.Errorf("%s: %v (code %s), want EINVALID naming %q", c.data, err, cloudupload.ErrorCode(err), c.field)
		}
	}
}

func TestArch(t *testing.T) {
	for _, c := range []struct{ arch, file, want string }{
		{"x86_64", "", "x86_64"},
		{"aarch64", "", "arm64"},
		{"arm64", "", "arm64"},
		{"", "sles.aarch64-1.0.raw.xz", "arm64"},
		{"", "sles.x86_64-1.0.raw.xz", "x86_64"},
		{"", "disk.raw", "x86_64"},
		{"ppc64le", "", ""},
	} {
		got, err := archOf(targets.Job{Arch: c.arch, Filename: c.file})
		if got != c.want || (c.want == "") != (err != nil) {
			t.Errorf("arch %q file %q: %q %v, want %q", c.arch, c.file, got, err, c.want)
		}
		if err != nil && !strings.Contains(cloudupload.ErrorMessage(err), c.arch) {
			t.Errorf("error %v does not name the arch", err)
		}
	}
	if err := New().Check(targets.Job{Arch: "s390x"}, []byte(obsData), nil); err == nil || !strings.Contains(err.Error(), "arch") {
		t.Errorf("Check with arch s390x: %v", err)
	}
	bios := strings.Replace(obsData, `"ami_name"`, `"boot_mode":"legacy-bios","ami_name"`, 1)
	if err := New().Check(targets.Job{Arch: "aarch64"}, []byte(bios), nil); err == nil || !strings.Contains(err.Error(), "boot_mode") {
		t.Errorf("Check with legacy-bios on aarch64: %v", err)
	}
	if err := New().Check(targets.Job{Arch: "x86_64"}, []byte(bios), nil); err != nil {
		t.Errorf("Check with legacy-bios on x86_64: %v", err)
	}
}

func TestVolumeSize(t *testing.T) {
	d := &data{}
	for _, c := range []struct{ size, want int64 }{{1, 1}, {1 << 30, 1}, {1<<30 + 512, 2}, {10 << 30, 10}} {
		if got, _ := d.volumeGiB(c.size); got != c.want {
			t.Errorf("volume for %d bytes: %d, want %d", c.size, got, c.want)
		}
	}
	d.RootVolumeSize = 2
	if _, err := d.volumeGiB(3 << 30); err == nil || !strings.Contains(err.Error(), "root_volume_size") {
		t.Errorf("root_volume_size smaller than the disk: %v", err)
	}
	if got, _ := d.volumeGiB(1 << 30); got != 2 {
		t.Errorf("root_volume_size 2: %d", got)
	}
}

func FuzzParseData(f *testing.F) {
	f.Add([]byte(obsData))
	f.Add([]byte(`{"arn":"arn:aws:iam::123456789012:role/obs","region":"us-east-1","ami_name":"abc","tags":{"a":"b"},"share_accounts":["111122223333"],"root_volume_size":"8"}`))
	f.Add([]byte(`{"ami_name":"` + strings.Repeat("x", 200) + `"}`))
	f.Add([]byte(`null`))
	f.Fuzz(func(t *testing.T, b []byte) {
		d, err := parseData(b)
		if err != nil {
			if cloudupload.ErrorCode(err) != cloudupload.EINVALID {
				t.Fatalf("error %v with code %s", err, cloudupload.ErrorCode(err))
			}
			if strings.Contains(cloudupload.ErrorMessage(err), "\n") {
				t.Fatalf("error message spans lines: %q", cloudupload.ErrorMessage(err))
			}
			return
		}
		if checkAMIName("ami_name", d.AMIName) != nil || len(d.AMIName) < 3 || len(d.AMIName) > 100 {
			t.Fatalf("accepted ami_name %q", d.AMIName)
		}
		if d.Method == methodImport && d.S3Bucket == "" {
			t.Fatal("import without bucket accepted")
		}
	})
}

func TestTidy(t *testing.T) {
	in := fmt.Errorf("register image x: %w", errors.New("operation error EC2: RegisterImage, https response error StatusCode: 400, RequestID: 7f3a, api error InvalidAMIName.Malformed: bad name"))
	want := "register image x: EC2 RegisterImage: HTTP 400, request 7f3a: InvalidAMIName.Malformed: bad name"
	if got := tidy(in).Error(); got != want {
		t.Errorf("tidy:\n%s\nwant\n%s", got, want)
	}
	in = fmt.Errorf("put block 3: %w", errors.New("operation error EBS: PutSnapshotBlock, exceeded maximum number of attempts, 6, https response error StatusCode: 503, RequestID: , ServiceUnavailableException: try later"))
	want = "put block 3: EBS PutSnapshotBlock: HTTP 503, after 6 attempts: ServiceUnavailableException: try later"
	if got := tidy(in).Error(); got != want {
		t.Errorf("tidy:\n%s\nwant\n%s", got, want)
	}
	wrapped := fmt.Errorf("x: %w", context.Canceled)
	if !errors.Is(tidy(wrapped), context.Canceled) || tidy(nil) != nil {
		t.Error("tidy breaks the chain")
	}
}
