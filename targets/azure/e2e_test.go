package azure

import (
	"bytes"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/ulikunitz/xz"

	"github.com/cloudupload/cloudupload/internal/testutil"
)

var (
	stateRE   = regexp.MustCompile(`<state>([a-z]+)</state>`)
	detailsRE = regexp.MustCompile(`<details>([^<]*)</details>`)
	nameRE    = regexp.MustCompile(`<clouduploadjob name="(\d+)"`)
)

// proxy is an HTTPS reverse proxy to Azurite that lets the test see,
// delay or refuse requests: hook runs first and has answered when it
// returns true.
func proxy(t *testing.T, e *env, hook func(w http.ResponseWriter, r *http.Request) bool) string {
	target, _ := url.Parse(e.azurite.URL)
	rp := httputil.NewSingleHostReverseProxy(target)
	rp.Transport = e.ca.Client().Transport
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !hook(w, r) {
			// This server has answered the SDK's "Expect: 100-continue"
			// (sent after a throttled request); Azurite would not.
			r.Header.Del("Expect")
			rp.ServeHTTP(w, r)
		}
	})
	return e.ca.Serve(t, h)
}

func isPutPage(r *http.Request) bool {
	return r.Method == http.MethodPut && r.URL.Query().Get("comp") == "page"
}

// TestEndToEnd submits azure jobs through the real daemon and uploader,
// with credentials encrypted as OBS's frontend does with the server's
// _pubkey: one is refused at create because a credential does not
// decrypt; one publishes a managed image; one is killed mid-upload and
// leaves nothing. No credential appears in the uploader's argv, the job
// log, the API's answers or the state directory.
func TestEndToEnd(t *testing.T) {
	e := newEnv(t)
	bin := testutil.BuildBinaries(t)
	root := t.TempDir()
	dir := filepath.Join(root, "home:tester", "images", "x86_64", "appliance")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	const mib = 1 << 20
	disk := sparseDisk(6*mib, true, [2]int{0, mib}, [2]int{4 * mib, 4*mib + 4096})
	filename := "appliance.x86_64-1.0.0-Build1.1.raw.xz"
	var xzBuf bytes.Buffer
	zw, _ := xz.NewWriter(&xzBuf)
	zw.Write(disk)
	zw.Close()
	if err := os.WriteFile(filepath.Join(dir, filename), xzBuf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	bigName := "appliance.x86_64-2.0.0-Build2.1.raw"
	if err := os.WriteFile(filepath.Join(dir, bigName), sparseDisk(32*mib, false, [2]int{0, 32 * mib}), 0o644); err != nil {
		t.Fatal(err)
	}

	env := []string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir(), "TMPDIR=" + os.TempDir(),
		"SSL_CERT_FILE=" + e.ca.File, // the uploader trusts the test CA as Go does on Linux
		"AZURE_AUTHORITY_HOST=" + e.fake.URL,
		"CLOUDUPLOAD_AZURE_ARM_ENDPOINT=" + e.fake.URL,
		// Slow page writes, so a job can be killed in the middle.
		"CLOUDUPLOAD_AZURE_BLOB_ENDPOINT=" + proxy(t, e, func(w http.ResponseWriter, r *http.Request) bool {
			if isPutPage(r) {
				time.Sleep(250 * time.Millisecond)
			}
			return false
		}) + "/{account}",
		"CLOUDUPLOAD_AZURE_WORKERS=1",
	}
	d := testutil.StartDaemon(t, bin, root, env)

	_, pubPEM := d.Do(t, http.MethodGet, "/cloudupload/_pubkey", nil)
	block, _ := pem.Decode([]byte(pubPEM))
	if block == nil {
		t.Fatalf("_pubkey: %q", pubPEM)
	}
	k, err := x509.ParsePKIXPublicKey(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	pub := k.(*rsa.PublicKey)
	data := func(name string, extra map[string]any) []byte {
		m := map[string]any{
			"application_id":  encryptOBS(t, pub, testClientID),
			"application_key": encryptOBS(t, pub, testSecret),
		}
		for k, v := range extra {
			m[k] = v
		}
		return e.data(t, name, m)
	}
	submit := func(file string, body []byte) (int, string) {
		q := url.Values{"project": {"home:tester"}, "repository": {"images"}, "arch": {"x86_64"},
			"package": {"appliance"}, "filename": {file}, "user": {"tester"}, "target": {"azure"}}
		return d.Do(t, http.MethodPost, "/cloudupload?"+q.Encode(), body)
	}
	wait := func(id string, until func(string) bool) (string, string) {
		deadline := time.Now().Add(2 * time.Minute)
		for time.Now().Before(deadline) {
			_, doc := d.Do(t, http.MethodGet, "/cloudupload/"+id, nil)
			if s := stateRE.FindStringSubmatch(doc); s != nil && until(s[1]) {
				details := ""
				if m := detailsRE.FindStringSubmatch(doc); m != nil {
					details = m[1]
				}
				return s[1], details
			}
			time.Sleep(100 * time.Millisecond)
		}
		_, log := d.Do(t, http.MethodGet, "/cloudupload/"+id+"/_log?nostream=1", nil)
		t.Fatalf("job %s did not get there in time; log:\n%s", id, log)
		return "", ""
	}
	final := func(s string) bool { return s == "succeeded" || s == "failed" }
	var answers []string

	t.Run("Refused", func(t *testing.T) {
		// Encrypted with another key: does not decrypt.
		code, doc := submit(filename, data("refused", map[string]any{"application_key": encryptOBS(t, &testKey().PublicKey, testSecret)}))
		if code != http.StatusBadRequest || !strings.Contains(doc, "application_key") {
			t.Errorf("undecryptable application_key: %d %s", code, doc)
		}
		code, doc = submit(filename, data("-bad", nil))
		if code != http.StatusBadRequest || !strings.Contains(doc, "image_name") {
			t.Errorf("bad image_name: %d %s", code, doc)
		}
		answers = append(answers, doc)
	})

	t.Run("Succeeds", func(t *testing.T) {
		code, doc := submit(filename, data("appliance-e2e", map[string]any{"tags": map[string]string{"team": "os"}}))
		id := nameRE.FindStringSubmatch(doc)
		if code != http.StatusOK || id == nil {
			t.Fatalf("submit: %d %s", code, doc)
		}
		state, details := wait(id[1], final)
		_, log := d.Do(t, http.MethodGet, "/cloudupload/"+id[1]+"/_log?nostream=1", nil)
		_, all := d.Do(t, http.MethodGet, "/cloudupload", nil)
		answers = append(answers, doc, log, all)
		t.Logf("job log:\n%s", log)
		if state != "succeeded" || details != imageID("appliance-e2e") {
			t.Fatalf("job %s %s: %q", id[1], state, details)
		}
		e.checkVHD(t, "appliance-e2e.vhd", disk)
		for _, want := range []string{"belongs to tenant " + testTenant, "with the service principal's token", "skipped", "create managed image appliance-e2e", "done in"} {
			if !strings.Contains(log, want) {
				t.Errorf("job log lacks %q", want)
			}
		}
	})

	t.Run("Killed", func(t *testing.T) {
		code, doc := submit(bigName, data("appliance-killed", nil))
		id := nameRE.FindStringSubmatch(doc)
		if code != http.StatusOK || id == nil {
			t.Fatalf("submit: %d %s", code, doc)
		}
		deadline := time.Now().Add(time.Minute)
		for {
			_, log := d.Do(t, http.MethodGet, "/cloudupload/"+id[1]+"/_log?nostream=1", nil)
			if strings.Contains(log, "into page blob") {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("upload did not start; log:\n%s", log)
			}
			time.Sleep(50 * time.Millisecond)
		}
		checkArgv(t)
		time.Sleep(300 * time.Millisecond)
		if st := e.blobs(t)["appliance-killed.vhd"]; st != "uploading" {
			t.Errorf("blob state %q while uploading", st)
		}
		if code, doc := d.Do(t, http.MethodPost, "/cloudupload/"+id[1]+"?cmd=kill", nil); code != http.StatusOK {
			t.Fatalf("kill: %d %s", code, doc)
		}
		state, details := wait(id[1], final)
		_, log := d.Do(t, http.MethodGet, "/cloudupload/"+id[1]+"/_log?nostream=1", nil)
		answers = append(answers, log)
		if state != "failed" || details != "killed" {
			t.Errorf("killed job: %s %q\n%s", state, details, log)
		}
		if !strings.Contains(log, "removed blob images/appliance-killed.vhd") || !strings.Contains(log, "removing what this job created: done") {
			t.Errorf("the uploader did not say it cleaned up:\n%s", log)
		}
		if _, ok := e.blobs(t)["appliance-killed.vhd"]; ok {
			t.Errorf("the killed job's blob is still there")
		}
		if left := e.leftovers(t); len(left) > 0 {
			t.Errorf("left over: %v", left)
		}
	})

	for _, s := range []string{testSecret, testClientID} {
		for _, a := range answers {
			if strings.Contains(a, s) {
				t.Errorf("a credential appears in an API answer")
			}
		}
		filepath.Walk(d.StateDir, func(path string, fi os.FileInfo, err error) error {
			if err == nil && fi.Mode().IsRegular() {
				if b, _ := os.ReadFile(path); bytes.Contains(b, []byte(s)) {
					t.Errorf("a credential appears in %s", path)
				}
			}
			return nil
		})
		if strings.Contains(d.Log(), s) {
			t.Errorf("a credential appears in the daemon's log")
		}
	}
}

// checkArgv looks at every process's command line for the credentials.
func checkArgv(t *testing.T) {
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	seen := 0
	for _, p := range procs {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		if bytes.Contains(b, []byte("clouduploader")) {
			seen++
		}
		for _, s := range []string{testSecret, testClientID} {
			if bytes.Contains(b, []byte(s)) {
				t.Errorf("a credential appears in the command line of %s", p)
			}
		}
	}
	if seen == 0 {
		t.Errorf("no clouduploader process found while it uploads")
	}
}
