package xmlapi

import (
	"bytes"
	"encoding/hex"
	"strings"
	"testing"

	"github.com/cloudupload/cloudupload/internal/testutil"

	"github.com/beevik/etree"

	"github.com/cloudupload/cloudupload"
)

// obsJob is the job of OBS's documentation, with every public field set and
// the daemon's bookkeeping set too (which must not appear).
var obsJob = cloudupload.Job{
	ID: 6, State: cloudupload.StateUploading, Details: "uploading", Progress: "42",
	Created: 1513604055, User: "mlschroe", Target: "ec2", Project: "Base:System",
	Repository: "openSUSE_Factory", Package: "rpm", Arch: "x86_64",
	Filename: "rpm-4.14.0-504.2.x86_64.rpm", Size: 1690860, Pid: 18788,
	Origin: cloudupload.OriginFetch, PidStart: 99, Updated: 1513604099, Started: 1513604060,
}

// TestDocuments compares each document with its golden file. job.xml,
// job-created.xml, job-minimal.xml, list.xml, list-empty.xml,
// status-404.xml, status-escaped.xml, logentry.xml and pubkeyinfo.xml were
// checked byte for byte against OBS's own writer (XML::Structured 1.01 with
// the DTDs of OBS 2.9.4's BSXML.pm: clouduploadjob, clouduploadjoblist,
// opstatus, dir, pubkeyinfo); hello.xml and status-ok.xml are the literal
// strings of bs_clouduploadserver and BSStdServer.
func TestDocuments(t *testing.T) {
	created := cloudupload.Job{ID: 7, State: cloudupload.StateCreated, Details: "waiting to receive image",
		Created: 1513604055, User: "u", Target: "mirror", Project: "P", Repository: "R", Package: "K",
		Arch: "x86_64", Filename: "img.raw.xz"}
	escaped := created
	escaped.State, escaped.Details = cloudupload.StateFailed, `bad <thing> & "quoted" 'single' `+"\x01 tab\tend"
	for _, c := range []struct {
		name string
		doc  []byte
	}{
		{"job.xml", Job(obsJob)},
		{"job-created.xml", Job(created)},
		{"job-escaped.xml", Job(escaped)},
		{"job-minimal.xml", Job(cloudupload.Job{ID: 1})},
		{"list-empty.xml", JobList(nil)},
		{"list.xml", JobList([]cloudupload.Job{obsJob, created})},
		{"status-404.xml", Status(404, "no such job")},
		{"status-escaped.xml", Status(400, `size "x" <is> & bad`)},
		{"status-ok.xml", OK()},
		{"hello.xml", Hello()},
		{"logentry.xml", LogEntry(1234, 1513604055)},
		{"pubkeyinfo.xml", Pubkey(PubkeyInfo{KeyID: "89abcdef", Algo: "rsa", KeySize: 3072, Fingerprint: "0123 4567 89ab cdef",
			PEM: []byte("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n")})},
	} {
		t.Run(c.name, func(t *testing.T) { testutil.Golden(t, c.name, c.doc) })
	}
}

// TestExactForms pins the forms the contract spells out, independent of the
// golden files.
func TestExactForms(t *testing.T) {
	for got, want := range map[string]string{
		string(JobList(nil)):               "<clouduploadjoblist>\n</clouduploadjoblist>\n",
		string(OK()):                       "<status code=\"ok\" />\n",
		string(Hello()):                    "<hello name=\"Cloud Upload Server\" />\n",
		string(Status(404, "no such job")): "<status code=\"404\">\n  <summary>no such job</summary>\n  <details>404 no such job</details>\n</status>\n",
		string(LogEntry(5, 6)):             "<directory>\n  <entry name=\"_log\" size=\"5\" mtime=\"6\" />\n</directory>\n",
	} {
		if got != want {
			t.Errorf("got %q, want %q", got, want)
		}
	}
}

// TestJobOrder checks the child order against OBS's and that no bookkeeping
// field leaks.
func TestJobOrder(t *testing.T) {
	doc := etree.NewDocument()
	if err := doc.ReadFromBytes(Job(obsJob)); err != nil {
		t.Fatal(err)
	}
	var tags []string
	for _, e := range doc.Root().ChildElements() {
		tags = append(tags, e.Tag)
	}
	want := "state details progress created user target project repository package arch filename size pid"
	if got := strings.Join(tags, " "); got != want {
		t.Errorf("children %q, want %q", got, want)
	}
	if strings.Contains(string(Job(obsJob)), "1513604099") || strings.Contains(string(Job(obsJob)), "fetch") {
		t.Error("job document shows bookkeeping fields")
	}
	// The document round-trips through a standard parser with the same text.
	if got := doc.Root().SelectElement("details").Text(); got != obsJob.Details {
		t.Errorf("details %q", got)
	}
}

func skeleton(fields map[string]string) []byte {
	var b strings.Builder
	b.WriteString("<clouduploadjob>\n")
	for _, f := range skeletonFields {
		if v, ok := fields[f]; ok {
			b.WriteString("  <" + f + ">" + v + "</" + f + ">\n")
		}
	}
	b.WriteString("</clouduploadjob>\n")
	return []byte(b.String())
}

func goodFields() map[string]string {
	return map[string]string{"user": "mls", "target": "ec2", "project": "Base:System", "repository": "images",
		"package": "jeos", "arch": "x86_64", "filename": "jeos.raw.xz", "size": "1690860",
		"details": hex.EncodeToString([]byte(`{"region":"us-east-1"}`))}
}

func TestParseSkeleton(t *testing.T) {
	job, data, err := ParseSkeleton(skeleton(goodFields()))
	if err != nil {
		t.Fatal(err)
	}
	want := cloudupload.Job{User: "mls", Target: "ec2", Project: "Base:System", Repository: "images",
		Package: "jeos", Arch: "x86_64", Filename: "jeos.raw.xz", Size: 1690860, Origin: cloudupload.OriginPut}
	if job != want {
		t.Errorf("job %+v, want %+v", job, want)
	}
	if string(data) != `{"region":"us-east-1"}` {
		t.Errorf("data %q", data)
	}

	// What OBS's own job document looks like as a skeleton (name attribute,
	// state) is accepted too; the extras are ignored.
	f := goodFields()
	f["details"] = ""
	b := bytes.Replace(skeleton(f), []byte("<clouduploadjob>"), []byte(`<clouduploadjob name="3"><state>created</state>`), 1)
	if _, data, err := ParseSkeleton(b); err != nil || len(data) != 0 {
		t.Errorf("empty details: %q, %v", data, err)
	}

	f = goodFields()
	delete(f, "details")
	if _, data, err := ParseSkeleton(skeleton(f)); err != nil || len(data) != 0 {
		t.Errorf("without details: %q, %v", data, err)
	}
	for _, field := range skeletonFields[:len(skeletonFields)-1] {
		f := goodFields()
		delete(f, field)
		_, _, err := ParseSkeleton(skeleton(f))
		if got, want := cloudupload.ErrorMessage(err), field+" is missing from job skeleton"; got != want {
			t.Errorf("without %s: %q, want %q", field, got, want)
		}
		{
			f[field] = ""
			_, _, err := ParseSkeleton(skeleton(f))
			if got, want := cloudupload.ErrorMessage(err), field+" is missing from job skeleton"; got != want {
				t.Errorf("empty %s: %q, want %q", field, got, want)
			}
		}
	}
	for in, want := range map[string]string{
		"":                    "job skeleton is empty",
		"<clouduploadjob>":    "job skeleton is not valid XML",
		"<status code='ok'/>": "job skeleton must be a <clouduploadjob> document, not <status>",
	} {
		_, _, err := ParseSkeleton([]byte(in))
		if got := cloudupload.ErrorMessage(err); got != want {
			t.Errorf("%q: %q, want %q", in, got, want)
		}
		if cloudupload.ErrorCode(err) != cloudupload.EINVALID {
			t.Errorf("%q: code %q", in, cloudupload.ErrorCode(err))
		}
	}
	for _, c := range []struct{ field, value, want string }{
		{"size", "-1", `size "-1" in job skeleton is not a non-negative integer`},
		{"size", "+1", `size "+1" in job skeleton is not a non-negative integer`},
		{"size", "1e3", `size "1e3" in job skeleton is not a non-negative integer`},
		{"size", "99999999999999999999", `size "99999999999999999999" in job skeleton is not a non-negative integer`},
		{"details", "abc", "details in job skeleton is not hex-encoded target data"},
		{"details", "zz", "details in job skeleton is not hex-encoded target data"},
	} {
		f := goodFields()
		f[c.field] = c.value
		_, _, err := ParseSkeleton(skeleton(f))
		if got := cloudupload.ErrorMessage(err); got != c.want {
			t.Errorf("%s=%q: %q, want %q", c.field, c.value, got, c.want)
		}
	}
	f = goodFields()
	b = bytes.Replace(skeleton(f), []byte("<user>mls</user>"), []byte("<user>mls</user><user>other</user>"), 1)
	if _, _, err := ParseSkeleton(b); cloudupload.ErrorMessage(err) != "user appears more than once in job skeleton" {
		t.Errorf("duplicate user: %v", err)
	}
}

func FuzzParseSkeleton(f *testing.F) {
	f.Add(skeleton(goodFields()))
	f.Add([]byte("<clouduploadjob><size>-0</size></clouduploadjob>"))
	f.Add([]byte("<x/>"))
	f.Fuzz(func(t *testing.T, body []byte) {
		job, data, err := ParseSkeleton(body)
		if err != nil {
			if cloudupload.ErrorCode(err) != cloudupload.EINVALID {
				t.Fatalf("error code %q for %v", cloudupload.ErrorCode(err), err)
			}
			return
		}
		if job.Size < 0 || job.User == "" || job.Filename == "" || job.Origin != cloudupload.OriginPut {
			t.Fatalf("accepted a bad job %+v", job)
		}
		// What was parsed, written back as a job document, parses again
		// to the same values.
		doc := etree.NewDocument()
		if err := doc.ReadFromBytes(Job(job)); err != nil {
			t.Fatalf("job document of %+v does not parse: %v", job, err)
		}
		_ = data
	})
}

// FuzzWrite checks that any text survives the writer as well-formed XML.
func FuzzWrite(f *testing.F) {
	f.Add(`a<b>&"c'`)
	f.Add("\x00\xff")
	f.Fuzz(func(t *testing.T, s string) {
		doc := etree.NewDocument()
		if err := doc.ReadFromBytes(Status(400, s)); err != nil {
			t.Fatalf("status of %q does not parse: %v", s, err)
		}
		if got := doc.Root().SelectElement("summary").Text(); got != clean(s) {
			t.Fatalf("summary %q, want %q", got, clean(s))
		}
	})
}

// TestParseSkeletonLimits: documents built to exhaust memory are refused
// by the limits, naming which.
func TestParseSkeletonLimits(t *testing.T) {
	good := string(skeleton(goodFields()))
	withInRoot := func(extra string) []byte {
		return []byte(strings.Replace(good, "<clouduploadjob>", "<clouduploadjob>"+extra, 1))
	}
	for name, c := range map[string]struct {
		in   []byte
		want string
	}{
		"siblings":   {withInRoot(strings.Repeat("<a/>", 100_000)), "job skeleton has more than 64 elements"},
		"nested":     {withInRoot(strings.Repeat("<a>", 10_000) + strings.Repeat("</a>", 10_000)), "job skeleton is nested deeper than 3 levels"},
		"attribute":  {[]byte(strings.Replace(good, "<clouduploadjob>", `<clouduploadjob x="`+strings.Repeat("y", 1<<20)+`">`, 1)), "job skeleton has an attribute longer than 1024 bytes"},
		"long field": {[]byte(strings.Replace(good, "<user>mls", "<user>"+strings.Repeat("m", 5000), 1)), "user in job skeleton is longer than 4096 bytes"},
		"mismatched": {[]byte(strings.Replace(good, "</user>", "</resu>", 1)), "job skeleton is not valid XML"},
		"two roots":  {[]byte(good + good), "job skeleton is not valid XML"},
	} {
		_, _, err := ParseSkeleton(c.in)
		if got := cloudupload.ErrorMessage(err); got != c.want || cloudupload.ErrorCode(err) != cloudupload.EINVALID {
			t.Errorf("%s: %q (%s), want %q", name, got, cloudupload.ErrorCode(err), c.want)
		}
	}
	// Up to the limits, extras are ignored.
	ok := withInRoot(strings.Repeat("<a x='1'><b/></a>", (MaxSkeletonElements-10)/2))
	if _, _, err := ParseSkeleton(ok); err != nil {
		t.Errorf("a skeleton within the limits: %v", err)
	}
}
