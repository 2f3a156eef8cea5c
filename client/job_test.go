package client

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"testing/iotest"
)

func TestParseJob(t *testing.T) {
	doc := `<clouduploadjob name="6">
  <state>uploading</state>
  <details>uploading</details>
  <progress>42</progress>
  <created>1513604055</created>
  <user>mlschroe</user>
  <target>ec2</target>
  <project>Base:System</project>
  <repository>openSUSE_Factory</repository>
  <package>rpm</package>
  <arch>x86_64</arch>
  <filename>rpm.raw.xz</filename>
  <size>1690860</size>
  <pid>18788</pid>
  <bytesdone>710161</bytesdone>
  <bytestotal>1690860</bytestotal>
  <bytespersecond>1048576</bytespersecond>
  <etaseconds>12</etaseconds>
  <client>ci</client>
</clouduploadjob>
`
	j, err := parseJob([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	if j.ID != 6 || j.State != "uploading" || *j.Progress != 42 || j.Created != 1513604055 || j.User != "mlschroe" ||
		j.Project != "Base:System" || j.Size != 1690860 || j.Pid != 18788 || j.Filename != "rpm.raw.xz" {
		t.Errorf("job: %+v", j)
	}
	if tr := j.Transfer; tr == nil || tr.Done != 710161 || tr.Total != 1690860 || tr.Rate != 1048576 || tr.ETA != 12 {
		t.Errorf("transfer: %+v", j.Transfer)
	}
	if j.Extra["client"] != "ci" || len(j.Extra) != 1 {
		t.Errorf("extra: %v", j.Extra)
	}

	// OBS's own document: no progress, no transfer.
	j, err = parseJob([]byte(`<clouduploadjob name="7"><state>created</state></clouduploadjob>`))
	if err != nil || j.Progress != nil || j.Transfer != nil || j.Extra != nil {
		t.Errorf("plain job: %+v, %v", j, err)
	}
	for _, bad := range []string{
		`<clouduploadjob><state>created</state></clouduploadjob>`,
		`<clouduploadjob name="8"><state>lost</state></clouduploadjob>`,
		`<clouduploadjob name="8"><state>created</state><size>big</size></clouduploadjob>`,
		`<status code="404"/>`,
		`not xml`,
	} {
		if _, err := parseJob([]byte(bad)); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
	jobs, err := parseJobList([]byte("<clouduploadjoblist>\n</clouduploadjoblist>\n"))
	if err != nil || len(jobs) != 0 {
		t.Errorf("empty list: %v %v", jobs, err)
	}
}

func TestSummary(t *testing.T) {
	resp := &http.Response{StatusCode: 404, Status: "404 no such job"}
	body := []byte("<status code=\"404\">\n  <summary>no such job</summary>\n  <details>404 no such job</details>\n</status>\n")
	if got := summaryOf(resp, body); got != "no such job" {
		t.Errorf("summary: %q", got)
	}
	if got := summaryOf(&http.Response{StatusCode: 502, Status: "502 Bad Gateway"}, []byte("<html>proxy</html>")); got != "Bad Gateway" {
		t.Errorf("no status document: %q", got)
	}
	if got := summaryOf(&http.Response{StatusCode: 500, Status: "500"}, nil); got != "Internal Server Error" {
		t.Errorf("nothing: %q", got)
	}
	if got := summaryOf(resp, []byte("<status><summary>a\tb\nc</summary></status>")); got != "a b c" {
		t.Errorf("summary on several lines: %q", got)
	}
}

func TestExactReader(t *testing.T) {
	for _, tc := range []struct {
		data string
		size int64
		ok   bool
	}{
		{"abcdef", 6, true},
		{"", 0, true},
		{"abcdef", 5, false},
		{"abcdef", 7, false},
	} {
		got, err := io.ReadAll(ExactReader(iotest.OneByteReader(strings.NewReader(tc.data)), tc.size, "img"))
		if tc.ok && (err != nil || string(got) != tc.data) {
			t.Errorf("%q size %d: %q, %v", tc.data, tc.size, got, err)
		}
		if !tc.ok && (!errors.Is(err, ErrChanged) || !strings.Contains(err.Error(), "img")) {
			t.Errorf("%q size %d: err %v, want ErrChanged naming the file", tc.data, tc.size, err)
		}
	}
	// Never more than the announced size is passed on.
	got, _ := io.ReadAll(ExactReader(bytes.NewReader(make([]byte, 100)), 10, "img"))
	if len(got) != 10 {
		t.Errorf("read %d bytes past a size of 10", len(got))
	}
}

func TestNew(t *testing.T) {
	for _, bad := range []string{"", "127.0.0.1:5452", "ftp://x", "http://user:pw@host"} {
		if _, err := New(bad, ""); err == nil {
			t.Errorf("%q accepted", bad)
		} else if strings.Contains(err.Error(), "pw") {
			t.Errorf("the error shows the password: %v", err)
		}
	}
	c, err := New("https://uploads.example.org/", "t")
	if err != nil || c.URL() != "https://uploads.example.org" {
		t.Errorf("New: %v %v", c, err)
	}
}
