package main

import (
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// obsUploader has OBS's clouduploader argv and nothing else: any other
// argv (validate, protocol) is a usage error, exit 1. The target data is
// checked when it runs: "good" publishes (the result is the image's size),
// anything else fails with the reason in the result file.
const obsUploader = `#!/bin/sh
if [ $# -ne 6 ]; then
	echo "usage: clouduploader <user> <target> <file> <targetdata> <filename> <resultfile>" >&2
	exit 1
fi
data=$(cat "$4")
echo "uploading $5 for $1 to $2"
if [ "$data" = good ]; then
	wc -c <"$3" | tr -d ' ' >"$6"; exit 0
fi
echo "invalid target data: $data" >"$6"
exit 1
`

// TestOBSUploader runs the real binary with an uploader that has OBS's argv
// only: the server says so at start, creates jobs without validating their
// target data (both routes), and the uploader's verdict ends them.
func TestOBSUploader(t *testing.T) {
	bin := buildServer(t)
	dir := t.TempDir()
	script := filepath.Join(dir, "obs-clouduploader")
	os.WriteFile(script, []byte(obsUploader), 0o755)
	build := filepath.Join(dir, "build")
	img := filepath.Join(build, "P", "R", "x86_64", "K", "img.raw")
	os.MkdirAll(filepath.Dir(img), 0o755)
	os.WriteFile(img, []byte("1234567"), 0o644)
	p := startProcessIn(t, bin, dir, "--uploader", script, "--build-root", build, "--log-level", "info")
	waitLog(t, p.log, "the uploader has OBS's argv only")

	create := func(data string) string {
		t.Helper()
		code := 0
		var name string
		resp, err := benchClient.Post(p.url+"/cloudupload?project=P&repository=R&arch=x86_64&package=K&filename=img.raw&user=u&target=ec2",
			"application/octet-stream", strings.NewReader(data))
		if err == nil {
			code = resp.StatusCode
			doc := readAll(resp.Body)
			if code == 200 {
				name = jobField(t, doc, "name")
			}
		}
		if code != 200 {
			t.Fatalf("create with %q: %d %v", data, code, err)
		}
		return name
	}
	good, bad := create("good"), create("bad")
	if state, _ := waitFinal(t, p.url, good); state != "succeeded" {
		t.Errorf("good job %s", state)
	}
	if doc := string(get(t, p.url+"/cloudupload/"+good)); jobField(t, doc, "details") != "7" {
		t.Errorf("good job:\n%s", doc)
	}
	if state, _ := waitFinal(t, p.url, bad); state != "failed" {
		t.Errorf("bad job %s", state)
	}
	if doc := string(get(t, p.url+"/cloudupload/"+bad)); jobField(t, doc, "details") != "invalid target data: bad" {
		t.Errorf("bad job:\n%s", doc)
	}
	// The internal route: skeleton (no validation either), then PUT.
	name, _ := submitPutMode(t, p.url, "u", 5, strings.NewReader("12345"), "good")
	if state, _ := waitFinal(t, p.url, name); state != "succeeded" {
		t.Errorf("skeleton job %s", state)
	}
}

// TestOwnUploaderProbed: with an uploader that speaks the protocol, the
// server says so and the target data is still checked at create.
func TestOwnUploaderProbed(t *testing.T) {
	bin := buildServer(t)
	p := startProcessIn(t, bin, t.TempDir(), "--log-level", "info")
	waitLog(t, p.log, "the uploader speaks this server's protocol")
	waitLog(t, p.log, "msg=listening")
	if n := strings.Count(p.log.String(), `msg="job store open`); n != 1 {
		t.Errorf("%d lines say the job store is open:\n%s", n, p.log.String())
	}
	resp, err := benchClient.Post(p.url+"/cloudupload", "text/xml", strings.NewReader(strings.Replace(skeletonFor("u", 5, "x"), "<target>test</target>", "<target>nope</target>", 1)))
	if err != nil {
		t.Fatal(err)
	}
	readAll(resp.Body)
	if resp.Status != `400 target "nope" is not known` {
		t.Errorf("create with an unknown target: %s", resp.Status)
	}
}

func readAll(r io.ReadCloser) string {
	defer r.Close()
	b, _ := io.ReadAll(r)
	return string(b)
}
