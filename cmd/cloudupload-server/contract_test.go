package main

import (
	"encoding/hex"
	"io"
	"net/http"
	"testing"
)

// TestOBSContract runs the requests where a differential run against OBS
// 2.9.4's server found this one answering otherwise, through the whole
// daemon (real manager, real uploader process, real HTTP).
func TestOBSContract(t *testing.T) {
	e := start(t)
	skel := func() string {
		t.Helper()
		s := "<clouduploadjob><user>bob</user><target>test</target><project>P</project><repository>R</repository>" +
			"<package>K</package><arch>x86_64</arch><filename>img.raw</filename><size>5</size><details>" +
			hex.EncodeToString([]byte("instant")) + "</details></clouduploadjob>"
		code, status, body := e.do("POST", "/cloudupload", "text/xml", s)
		if code != 200 {
			t.Fatalf("skeleton: %s", status)
		}
		return jobField(t, body, "name")
	}

	// A Content-Length other than the skeleton's size: 400, the job fails.
	name := skel()
	if _, status, _ := e.do("PUT", "/cloudupload/"+name, "", "1234567"); status != "400 the request announces 7 bytes, expected 5" {
		t.Errorf("PUT of 7 bytes: %s", status)
	}
	if doc := e.wait(name); jobField(t, doc, "state") != "failed" {
		t.Errorf("after a PUT of the wrong size:\n%s", doc)
	}
	// No body at all: likewise.
	name = skel()
	if _, status, _ := e.do("PUT", "/cloudupload/"+name, "", ""); status != "400 the request announces 0 bytes, expected 5" {
		t.Errorf("PUT without body: %s", status)
	}
	if doc := e.wait(name); jobField(t, doc, "state") != "failed" {
		t.Errorf("after a PUT without body:\n%s", doc)
	}
	// Chunked: accepted, the skeleton's size is what must arrive.
	name = skel()
	if status := putChunked(t, e.url+"/cloudupload/"+name, "12", "345"); status != "200 OK" {
		t.Errorf("chunked PUT: %s", status)
	}
	if doc := e.wait(name); jobField(t, doc, "state") != "succeeded" || jobField(t, doc, "details") != "5" {
		t.Errorf("after a chunked PUT:\n%s", doc)
	}
	name = skel()
	if status := putChunked(t, e.url+"/cloudupload/"+name, "12345", "6"); status != "400 received 6 bytes, expected 5" {
		t.Errorf("long chunked PUT: %s", status)
	}
	if doc := e.wait(name); jobField(t, doc, "state") != "failed" {
		t.Errorf("after a long chunked PUT:\n%s", doc)
	}

	if _, status, _ := e.do("GET", "/cloudupload?name=abc", "", ""); status != "400 not a number: 'abc'" {
		t.Errorf("GET ?name=abc: %s", status)
	}
	// POST without a command answers the job's status.
	if code, status, doc := e.do("POST", "/cloudupload/"+name, "", ""); code != 200 || jobField(t, doc, "name") != name {
		t.Errorf("POST without cmd: %s\n%s", status, doc)
	}
}

// putChunked sends parts as a chunked PUT body and returns the status line.
func putChunked(t *testing.T, url string, parts ...string) string {
	t.Helper()
	pr, pw := io.Pipe()
	go func() {
		for _, p := range parts {
			pw.Write([]byte(p))
		}
		pw.Close()
	}()
	req, _ := http.NewRequest("PUT", url, pr) // a pipe: no length, sent chunked
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.Status
}
