package s3

import (
	"strings"
	"testing"
	"time"

	"github.com/cloudupload/cloudupload"
	"github.com/cloudupload/cloudupload/targets"
)

const okData = `{"arn":"arn:aws:iam::123456789012:role/obs","external_id":"obs-42","region":"eu-central-1","bucket":"my-builds"}`

func withField(field string) string {
	return strings.TrimSuffix(okData, "}") + "," + field + "}"
}

func TestCheck(t *testing.T) {
	job := testJob("appliance.x86_64-1.2-Build3.4.raw.xz")
	cases := []struct {
		data string
		want string // substring of the error; "" = valid
	}{
		{okData, ""},
		{withField(`"prefix":"releases/","storage_class":"GLACIER_IR","tags":{"release":"16.0","team":"build ops"},"public":true,"latest":true,"decompress":true`), ""},
		{withField(`"prefix":null`), ""},
		{`[]`, "not a JSON object"},
		{`{`, "not a JSON object"},
		{`null`, "not a JSON object"},
		{withField(`"ami_name":"x","zz":1`), `unknown field "ami_name", "zz"`},
		{`{"region":"eu-central-1","bucket":"b12"}`, "arn is missing"},
		{withField(`"arn":"role/obs"`), "arn"},
		{strings.Replace(okData, `"obs-42"`, `"x"`, 1), "external_id"},
		{strings.Replace(okData, `"eu-central-1"`, `"moon"`, 1), "region"},
		{strings.Replace(okData, `"my-builds"`, `""`, 1), "bucket is missing"},
		{strings.Replace(okData, `"my-builds"`, `"My_Builds"`, 1), "bucket"},
		{strings.Replace(okData, `"my-builds"`, `"ab"`, 1), "bucket"},
		{strings.Replace(okData, `"my-builds"`, `"a..b"`, 1), "bucket"},
		{strings.Replace(okData, `"my-builds"`, `"192.168.1.1"`, 1), "IP address"},
		{strings.Replace(okData, `"my-builds"`, `"xn--builds"`, 1), "xn--"},
		{strings.Replace(okData, `"my-builds"`, `"builds-s3alias"`, 1), "-s3alias"},
		{strings.Replace(okData, `"my-builds"`, `"`+strings.Repeat("a", 64)+`"`, 1), "bucket"},
		{strings.Replace(okData, `"my-builds"`, `7`, 1), "bucket must be a string"},
		{withField(`"public":"yes"`), "public must be true or false"},
		{withField(`"latest":1`), "latest must be true or false"},
		{withField(`"decompress":"true"`), "decompress must be true or false"},
		{withField(`"storage_class":"CHEAP"`), "storage_class"},
		{withField(`"storage_class":"EXPRESS_ONEZONE"`), "storage_class"},
		{withField(`"tags":["a"]`), "tags must be an object"},
		{withField(`"tags":{"a":1}`), "tags must be an object"},
		{withField(`"tags":{"aws:x":"1"}`), "reserved"},
		{withField(`"tags":{"a*b":"1"}`), "tags: key"},
		{withField(`"tags":{"a":"` + strings.Repeat("v", 257) + `"}`), "tags: value"},
		{withField(`"tags":{"` + strings.Repeat("k", 129) + `":"v"}`), "tags: key"},
		{withField(`"tags":{"1":"","2":"","3":"","4":"","5":"","6":"","7":"","8":"","9":"","10":"","11":""}`), "at most 10"},
		{withField(`"tags":{"sha256":"x"}`), "reserved for the object's SHA-256"},
		{withField(`"tags":{"1":"","2":"","3":"","4":"","5":"","6":"","7":"","8":"","9":"","10":""},"decompress":true`), "with decompress at most 9"},
		{withField(`"tags":{"1":"","2":"","3":"","4":"","5":"","6":"","7":"","8":"","9":"","10":""}`), ""},
		{withField(`"prefix":"{project}/{nope}"`), "unknown placeholder {nope}"},
		{withField(`"prefix":"{project"`), "without '}'"},
		{withField(`"prefix":"a}b"`), "without '{'"},
		{withField(`"prefix":"/{filename}"`), "starting with '/'"},
		{withField(`"prefix":"a/../{filename}"`), `".." segment`},
		{withField(`"prefix":"a//{filename}"`), "empty segment"},
		{withField(`"prefix":"a/\u0001/{filename}"`), "control character"},
		{withField(`"prefix":"` + strings.Repeat("k", 1020) + `{filename}"`), "1024"},
		{withField(`"prefix":"a/latest","latest":true`), "latest: the pointer"},
	}
	for _, c := range cases {
		err := New().Check(job, []byte(c.data), func(string) string { return "" })
		switch {
		case c.want == "" && err != nil:
			t.Errorf("%s: %v", c.data, err)
		case c.want != "" && err == nil:
			t.Errorf("%s: accepted, want an error about %q", c.data, c.want)
		case c.want != "" && !strings.Contains(err.Error(), c.want):
			t.Errorf("%s: error %q does not mention %q", c.data, err, c.want)
		case err != nil && cloudupload.ErrorCode(err) != cloudupload.EINVALID:
			t.Errorf("%s: error code %q, want EINVALID", c.data, cloudupload.ErrorCode(err))
		}
	}
}

func TestCheckJobFields(t *testing.T) {
	// The daemon validates before the job has an id or a file name.
	if err := New().Check(targets.Job{Project: "p"}, []byte(withField(`"prefix":"{job}/{filename}"`)), nil); err != nil {
		t.Fatalf("Check without job id and file name: %v", err)
	}
	// Upload renders the key with the real values and refuses empty ones.
	job := testJob("x.raw")
	job.Project = ""
	_, err := makePlan(job, []byte(okData), time.Now())
	if err == nil || !strings.Contains(err.Error(), "{project} is empty") {
		t.Fatalf("got %v, want the empty {project} named", err)
	}
	job = testJob("x.raw")
	job.Package = "a/b"
	if err := New().Check(job, []byte(okData), nil); err == nil || !strings.Contains(err.Error(), "{package}") {
		t.Fatalf("got %v, want the slash in {package} named", err)
	}
	job = testJob("..")
	if err := New().Check(job, []byte(okData), nil); err == nil || !strings.Contains(err.Error(), `".." segment`) {
		t.Fatalf("got %v, want the .. segment refused", err)
	}
}

func TestKeys(t *testing.T) {
	job := testJob("appliance.x86_64-1.2-Build3.4.raw.xz")
	now := time.Date(2026, 11, 21, 7, 11, 24, 5, time.UTC)
	cases := []struct {
		prefix, filename, key, latest string
	}{
		{DefaultPrefix, job.Filename, "home:alice/images/x86_64/appliance/appliance.x86_64-1.2-Build3.4.raw.xz", "home:alice/images/x86_64/appliance/latest"},
		{"builds/{package}/{date}/{filename}", "a.raw", "builds/appliance/20261121T071124Z/a.raw", "builds/appliance/latest"},
		{"{project}/{job}-{arch}/{filename}", "a.raw", "home:alice/7-x86_64/a.raw", "home:alice/latest"},
		{"{filename}", "a.raw", "a.raw", "latest"},
		{"images/current.raw", "a.raw", "images/current.raw", "images/latest"},
		{"v-{date}.img", "a.raw", "v-20261121T071124Z.img", "latest"},
	}
	for _, c := range cases {
		key, latest, err := keys(c.prefix, vars{job: job, filename: c.filename, date: now})
		if err != nil {
			t.Errorf("%s: %v", c.prefix, err)
			continue
		}
		if key != c.key || latest != c.latest {
			t.Errorf("%s: key %q latest %q, want %q %q", c.prefix, key, latest, c.key, c.latest)
		}
	}
}

func TestDiskName(t *testing.T) {
	for in, want := range map[string]string{
		"a.x86_64.raw.xz":       "a.x86_64.raw",
		"a.raw.gz":              "a.raw",
		"a.RAW.ZST":             "a.RAW",
		"a.img.zstd":            "a.img",
		"a.raw":                 "a.raw",
		"a.vhdfixed.xz":         "a.raw",
		"a.qcow2":               "a.raw",
		"a.vhd":                 "a.raw",
		"disk.xz":               "disk.raw",
		"appliance-Build3.4":    "appliance-Build3.4.raw",
		"appliance-1.2.raw.zst": "appliance-1.2.raw",
	} {
		if got, ok := diskName(in); got != want || !ok {
			t.Errorf("diskName(%q) = %q, %v; want %q", in, got, ok, want)
		}
	}
	for _, in := range []string{"a.iso", "a.tar.xz", "a.qcow2.xz"} {
		if _, ok := diskName(in); ok {
			t.Errorf("diskName(%q) says it is a disk image", in)
		}
	}
	if err := New().Check(testJob("a.iso"), []byte(withField(`"decompress":true`)), nil); err == nil || !strings.Contains(err.Error(), "decompress") {
		t.Errorf("decompress of a.iso: %v, want refused naming decompress", err)
	}
	// Check names the stored file accordingly.
	p, err := makePlan(testJob("a.qcow2"), []byte(withField(`"decompress":true`)), time.Now())
	if err != nil || !strings.HasSuffix(p.key, "/a.raw") {
		t.Fatalf("decompress of a.qcow2: key %v, %v; want …/a.raw", p, err)
	}
}

func TestPartSize(t *testing.T) {
	for size, want := range map[int64]int64{
		0:                      16 << 20,
		1 << 30:                16 << 20,
		160000 << 20:           16 << 20,
		160000<<20 + 1:         17 << 20,
		1 << 40:                105 << 20,
		5 << 40:                (5<<40/maxParts + 1<<20) &^ (1<<20 - 1),
		maxParts*16<<20 + 4096: 17 << 20,
	} {
		got := partSize(size)
		if got != want {
			t.Errorf("partSize(%d) = %d MiB, want %d MiB", size, got>>20, want>>20)
		}
		if (size+got-1)/got > maxParts || got > maxPartSize || got < 5<<20 {
			t.Errorf("partSize(%d) = %d breaks S3's limits", size, got)
		}
	}
}

func TestTagging(t *testing.T) {
	got := tagging(map[string]string{"release": "16.0", "team": "build ops", "a+b": "c=d&e"})
	if got != "a%2Bb=c%3Dd%26e&release=16.0&team=build%20ops" {
		t.Fatalf("tagging = %q", got)
	}
}

// FuzzCheck feeds arbitrary target data and job names to Check: it must
// never panic, and what it accepts renders a valid key.
func FuzzCheck(f *testing.F) {
	f.Add(okData, "a.raw.xz", "home:alice")
	f.Add(withField(`"prefix":"{project}/{date}/{job}/{filename}","latest":true,"decompress":true`), "x.qcow2", "p")
	f.Add(withField(`"prefix":"{{}}/..//x"`), "..", "")
	f.Add(withField(`"tags":{"a":"b"},"storage_class":"STANDARD"`), "a", "b/c")
	f.Fuzz(func(t *testing.T, data, filename, project string) {
		job := targets.Job{ID: "1", Project: project, Repository: "r", Arch: "x86_64", Package: "p", Filename: filename}
		p, err := makePlan(job, []byte(data), time.Unix(0, 0))
		if err != nil {
			if cloudupload.ErrorCode(err) != cloudupload.EINVALID {
				t.Fatalf("error %v has code %q", err, cloudupload.ErrorCode(err))
			}
			return
		}
		if checkKey(p.key) != nil || checkKey(p.latest) != nil {
			t.Fatalf("accepted invalid keys %q, %q", p.key, p.latest)
		}
		if p.cfg.Latest && p.key == p.latest {
			t.Fatalf("pointer is the object: %q", p.key)
		}
	})
}
