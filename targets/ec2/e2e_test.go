package ec2

import (
	"bytes"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/cloudupload/cloudupload/internal/testutil"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/ulikunitz/xz"

	"github.com/cloudupload/cloudupload/targets/awstest"
)

var (
	stateRE   = regexp.MustCompile(`<state>([a-z]+)</state>`)
	detailsRE = regexp.MustCompile(`<details>([^<]*)</details>`)
	nameRE    = regexp.MustCompile(`<clouduploadjob name="(\d+)"`)
)

// TestEndToEnd submits jobs with target ec2 through the real daemon and
// uploader against moto: one succeeds and leaves the AMI, snapshot, tags
// and launch permissions asked for; one is refused at once for a bad
// ami_name; one is killed mid-upload and leaves nothing behind.
func TestEndToEnd(t *testing.T) {
	m := awstest.Start(t)
	c := clientsFor(m.URL)
	bin := testutil.BuildBinaries(t)

	root := t.TempDir()
	dir := filepath.Join(root, "home:tester", "images", "x86_64", "appliance")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	disk := testDisk(8, func(i int) bool { return i != 3 })
	filename := "appliance.x86_64-1.0.0-Build1.1.raw.xz"
	var xzBuf bytes.Buffer
	zw, _ := xz.NewWriter(&xzBuf)
	zw.Write(disk)
	zw.Close()
	if err := os.WriteFile(filepath.Join(dir, filename), xzBuf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	// The kill test's image is big and slow to upload: a proxy delays blocks.
	bigName := "appliance.x86_64-2.0.0-Build2.1.raw"
	if err := os.WriteFile(filepath.Join(dir, bigName), testDisk(64, func(int) bool { return true }), 0o644); err != nil {
		t.Fatal(err)
	}
	p := startProxy(t, m, func(w http.ResponseWriter, r *http.Request, body []byte) bool {
		if isPutBlock(r) {
			time.Sleep(300 * time.Millisecond)
		}
		return false
	})

	env := []string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir(), "TMPDIR=" + os.TempDir()}
	for _, kv := range m.Environ() {
		if strings.HasPrefix(kv, "AWS_ENDPOINT_URL=") {
			kv = "AWS_ENDPOINT_URL=" + p.URL
		}
		env = append(env, kv)
	}
	daemon := testutil.StartDaemon(t, bin, root, env)

	submit := func(file, data string) (int, string) {
		q := url.Values{"project": {"home:tester"}, "repository": {"images"}, "arch": {"x86_64"},
			"package": {"appliance"}, "filename": {file}, "user": {"tester"}, "target": {"ec2"}}
		return daemon.Do(t, http.MethodPost, "/cloudupload?"+q.Encode(), []byte(data))
	}
	wait := func(id string, until func(state string) bool) (string, string) {
		deadline := time.Now().Add(2 * time.Minute)
		for time.Now().Before(deadline) {
			_, doc := daemon.Do(t, http.MethodGet, "/cloudupload/"+id, nil)
			if s := stateRE.FindStringSubmatch(doc); s != nil && until(s[1]) {
				d := detailsRE.FindStringSubmatch(doc)
				details := ""
				if d != nil {
					details = d[1]
				}
				return s[1], details
			}
			time.Sleep(100 * time.Millisecond)
		}
		_, log := daemon.Do(t, http.MethodGet, "/cloudupload/"+id+"/_log?nostream=1", nil)
		t.Fatalf("job %s did not get there in time; log:\n%s", id, log)
		return "", ""
	}
	final := func(s string) bool { return s == "succeeded" || s == "failed" }

	t.Run("Refused", func(t *testing.T) {
		code, doc := submit(filename, fmt.Sprintf(`{"arn":%q,"region":"us-east-1","ami_name":"bad:name"}`, testARN))
		if code != http.StatusBadRequest || !strings.Contains(doc, "ami_name") {
			t.Errorf("bad ami_name: %d %s", code, doc)
		}
	})

	t.Run("Succeeds", func(t *testing.T) {
		data := fmt.Sprintf(`{"user_id":30,"arn":%q,"external_id":%q,"region":"us-east-1","ami_name":"appliance-1.0.0-e2e","vpc_subnet_id":"",
			"boot_mode":"uefi-preferred","tags":{"team":"os"},"share_accounts":["210987654321"]}`, testARN, testExtID)
		code, doc := submit(filename, data)
		id := nameRE.FindStringSubmatch(doc)
		if code != http.StatusOK || id == nil {
			t.Fatalf("submit: %d %s", code, doc)
		}
		state, details := wait(id[1], final)
		_, log := daemon.Do(t, http.MethodGet, "/cloudupload/"+id[1]+"/_log?nostream=1", nil)
		t.Logf("job log:\n%s", log)
		if state != "succeeded" {
			t.Fatalf("job %s %s: %s", id[1], state, details)
		}
		img := imageByName(t, c.ec2, "appliance-1.0.0-e2e")
		if details != aws.ToString(img.ImageId) {
			t.Errorf("details %q, AMI %s", details, aws.ToString(img.ImageId))
		}
		wantTags(t, "image", img.Tags, map[string]string{"team": "os", tagJob: id[1], tagImage: filename})
		if got := launchUsers(t, c.ec2, details); fmt.Sprint(got) != "[210987654321]" {
			t.Errorf("launch permissions %v", got)
		}
		snap := snapshotByToken(t, c.ec2, tagValue(img.Tags, tagToken))
		if got := volumeUsers(t, c.ec2, aws.ToString(snap.SnapshotId)); fmt.Sprint(got) != "[210987654321]" {
			t.Errorf("create volume permissions %v", got)
		}
		got, _ := snapshotDisk(t, c, aws.ToString(snap.SnapshotId), len(disk))
		if !bytes.Equal(got, disk) {
			t.Errorf("snapshot content differs from the disk")
		}
		for _, want := range []string{"7 blocks sent", "1 zero blocks skipped", "register AMI", "done in"} {
			if !strings.Contains(log, want) {
				t.Errorf("job log lacks %q", want)
			}
		}
		for _, secret := range []string{awstest.SecretKey} {
			if strings.Contains(log, secret) || strings.Contains(doc, secret) {
				t.Errorf("a secret appears in the job log or document")
			}
		}
	})

	t.Run("ByHand", func(t *testing.T) {
		// As OBS's worker started it: only the argv and the AWS environment.
		work := t.TempDir()
		img := filepath.Join(work, "img")
		if err := os.WriteFile(img, xzBuf.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
		dataFile, result := filepath.Join(work, "data"), filepath.Join(work, "result")
		if err := os.WriteFile(dataFile, []byte(fmt.Sprintf(`{"arn":%q,"region":"us-east-1","ami_name":"by-hand"}`, testARN)), 0o600); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(filepath.Join(bin, "clouduploader"), "tester", "ec2", img, dataFile, "appliance.aarch64-1.0.raw.xz", result)
		cmd.Env = env
		out, err := cmd.CombinedOutput()
		t.Logf("output:\n%s", out)
		if err != nil {
			t.Fatalf("clouduploader: %v", err)
		}
		res, _ := os.ReadFile(result)
		img2 := imageByName(t, c.ec2, "by-hand")
		if strings.TrimSpace(string(res)) != aws.ToString(img2.ImageId) {
			t.Errorf("result %q, AMI %s", res, aws.ToString(img2.ImageId))
		}
		if !strings.Contains(string(out), "arch arm64") || !strings.Contains(string(out), "session cloudupload-manual-") {
			t.Errorf("the arch was not taken from the file name, or the session does not name the run")
		}
	})

	t.Run("Killed", func(t *testing.T) {
		before := len(ourSnapshots(t, c.ec2))
		code, doc := submit(bigName, fmt.Sprintf(`{"arn":%q,"region":"us-east-1","ami_name":"appliance-killed"}`, testARN))
		id := nameRE.FindStringSubmatch(doc)
		if code != http.StatusOK || id == nil {
			t.Fatalf("submit: %d %s", code, doc)
		}
		// Wait until blocks are being written, then kill.
		deadline := time.Now().Add(time.Minute)
		for {
			_, log := daemon.Do(t, http.MethodGet, "/cloudupload/"+id[1]+"/_log?nostream=1", nil)
			if strings.Contains(log, "writing ") {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("upload did not start; log:\n%s", log)
			}
			time.Sleep(50 * time.Millisecond)
		}
		time.Sleep(300 * time.Millisecond)
		killed := time.Now()
		if code, doc := daemon.Do(t, http.MethodPost, "/cloudupload/"+id[1]+"?cmd=kill", nil); code != http.StatusOK {
			t.Fatalf("kill: %d %s", code, doc)
		}
		state, details := wait(id[1], final)
		_, log := daemon.Do(t, http.MethodGet, "/cloudupload/"+id[1]+"/_log?nostream=1", nil)
		t.Logf("job log:\n%s", log)
		if state != "failed" || details != "killed" {
			t.Errorf("killed job: %s %q", state, details)
		}
		if d := time.Since(killed); d > 15*time.Second {
			t.Errorf("the kill took %s (the uploader should stop within seconds of SIGTERM)", d)
		}
		if !strings.Contains(log, "removed snapshot") {
			t.Errorf("the uploader did not say it removed the snapshot")
		}
		if n := len(ourSnapshots(t, c.ec2)); n != before {
			t.Errorf("%d snapshots after the kill, %d before", n, before)
		}
		if left := leftovers(t, c, []string{"us-east-1"}, ""); len(left) > 0 {
			t.Errorf("left over: %v", left)
		}
	})
}
