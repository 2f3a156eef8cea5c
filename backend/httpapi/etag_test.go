package httpapi

import (
	"io"
	"net/http"
	"reflect"
	"testing"

	"github.com/cloudupload/cloudupload"
)

// get sends a GET with If-None-Match (when inm is set) and returns the
// status, the ETag and the body.
func getTagged(t *testing.T, url, inm string) (int, string, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	if inm != "" {
		req.Header.Set("If-None-Match", inm)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header.Get("ETag"), string(b)
}

func TestETag(t *testing.T) {
	ts, m := start(t, Config{})
	for _, path := range []string{"/cloudupload/2", "/cloudupload", "/cloudupload?name=2&name=3"} {
		code, tag, body := getTagged(t, ts.URL+path, "")
		if code != 200 || len(tag) < 34 || tag[0] != '"' || tag[len(tag)-1] != '"' || body == "" {
			t.Fatalf("%s: %d, ETag %q", path, code, tag)
		}
		// Unchanged: 304 without a body, for the tag alone, among others, weak or "*".
		for _, inm := range []string{tag, `"other", ` + tag, "W/" + tag, "*"} {
			code, tag2, body := getTagged(t, ts.URL+path, inm)
			if code != http.StatusNotModified || tag2 != tag || body != "" {
				t.Errorf("%s If-None-Match %s: %d %q %q", path, inm, code, tag2, body)
			}
		}
		if code, _, _ := getTagged(t, ts.URL+path, `"other"`); code != 200 {
			t.Errorf("%s with another tag: %d", path, code)
		}
		// Any change of the document changes the tag: progress included.
		m.mu.Lock()
		m.jobs[2].Progress, m.jobs[2].BytesDone = "42", 42
		m.mu.Unlock()
		code, tag3, _ := getTagged(t, ts.URL+path, tag)
		if code != 200 || tag3 == tag {
			t.Errorf("%s after a change: %d, tag %q (was %q)", path, code, tag3, tag)
		}
		m.mu.Lock()
		m.jobs[2].Progress, m.jobs[2].BytesDone = "", 0
		m.mu.Unlock()
	}
	// Errors carry no tag.
	if code, tag, _ := getTagged(t, ts.URL+"/cloudupload/99", ""); code != 404 || tag != "" {
		t.Errorf("unknown job: %d, ETag %q", code, tag)
	}
}

// The list's tag covers every field of a job: a field added to Job and
// forgotten in appendJob fails here.
func TestListTagCoversEveryField(t *testing.T) {
	base := []cloudupload.Job{{ID: 1}, {ID: 2}}
	tag := listTag(base)
	typ := reflect.TypeOf(cloudupload.Job{})
	for i := range typ.NumField() {
		jobs := []cloudupload.Job{{ID: 1}, {ID: 2}}
		f := reflect.ValueOf(&jobs[1]).Elem().Field(i)
		switch f.Kind() {
		case reflect.String:
			f.SetString("x")
		case reflect.Int, reflect.Int64:
			f.SetInt(f.Int() + 7)
		case reflect.Uint64:
			f.SetUint(7)
		case reflect.Float64:
			f.SetFloat(7)
		default:
			t.Fatalf("field %s of kind %s: teach this test and appendJob", typ.Field(i).Name, f.Kind())
		}
		if listTag(jobs) == tag {
			t.Errorf("changing %s leaves the list's tag alone", typ.Field(i).Name)
		}
	}
	// Moving a string's end into the next one changes the tag too.
	a := []cloudupload.Job{{User: "ab", Target: "c"}}
	b := []cloudupload.Job{{User: "a", Target: "bc"}}
	if listTag(a) == listTag(b) {
		t.Error("field boundaries are not encoded")
	}
}
