package ec2

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"

	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/cloudupload/cloudupload/targets/awstest"
)

// proxy sits in front of moto: handle may answer a request itself (return
// true) or let it through. The request body is readable again after handle
// looked at it.
type proxy struct {
	*httptest.Server
	handle func(w http.ResponseWriter, r *http.Request, body []byte) bool
}

func startProxy(t *testing.T, m *awstest.Moto, handle func(w http.ResponseWriter, r *http.Request, body []byte) bool) *proxy {
	t.Helper()
	target, err := url.Parse(m.URL)
	if err != nil {
		t.Fatal(err)
	}
	rp := httputil.NewSingleHostReverseProxy(target)
	rp.ErrorLog = log.New(io.Discard, "", 0) // cancelled requests of killed uploads are expected
	p := &proxy{handle: handle}
	p.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		if p.handle(w, r, body) {
			return
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(p.Close)
	// Every client of the target goes through the proxy.
	t.Setenv("AWS_ENDPOINT_URL", p.URL)
	return p
}

// action is the Query-protocol action of an EC2 or STS request.
func action(r *http.Request, body []byte) string {
	if r.Method != http.MethodPost || !strings.HasPrefix(r.Header.Get("Content-Type"), "application/x-www-form-urlencoded") {
		return ""
	}
	v, err := url.ParseQuery(string(body))
	if err != nil {
		return ""
	}
	return v.Get("Action")
}

func isPutBlock(r *http.Request) bool {
	return r.Method == http.MethodPut && strings.HasPrefix(r.URL.Path, "/snapshots/") && strings.Contains(r.URL.Path, "/blocks/")
}

// TestMotoThrottling injects throttling and 5xx answers for a third of
// the PutSnapshotBlock requests; the upload must still succeed with every
// block in place.
func TestMotoThrottling(t *testing.T) {
	m := awstest.Start(t)
	m.Setenv(t)
	c := clientsFor(m.URL)
	var mu sync.Mutex
	puts, injected := 0, 0
	startProxy(t, m, func(w http.ResponseWriter, r *http.Request, body []byte) bool {
		if !isPutBlock(r) {
			return false
		}
		mu.Lock()
		puts++
		n := puts
		mu.Unlock()
		switch n % 6 {
		case 1:
			mu.Lock()
			injected++
			mu.Unlock()
			w.Header().Set("X-Amzn-Errortype", "ThrottlingException")
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusBadRequest)
			io.WriteString(w, `{"message":"Rate exceeded","Reason":"ACCOUNT_THROTTLED"}`)
			return true
		case 4:
			mu.Lock()
			injected++
			mu.Unlock()
			w.WriteHeader(http.StatusServiceUnavailable)
			io.WriteString(w, `{"message":"try again"}`)
			return true
		}
		return false
	})
	disk := testDisk(12, func(i int) bool { return i != 5 })
	name := "appliance.x86_64.raw"
	im := writeImage(t, name, disk)
	t.Setenv("CLOUDUPLOAD_EC2_WORKERS", "many")
	if _, _, err := upload(t, context.Background(), testTarget(), testJob("10", name), jsonData(t, map[string]any{"ami_name": "throttled"}), im); err == nil || !strings.Contains(err.Error(), "CLOUDUPLOAD_EC2_WORKERS") {
		t.Errorf("bad CLOUDUPLOAD_EC2_WORKERS: %v", err)
	}
	t.Setenv("CLOUDUPLOAD_EC2_WORKERS", "3")
	res, log, err := upload(t, context.Background(), testTarget(), testJob("10", name), jsonData(t, map[string]any{"ami_name": "throttled"}), im)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(log, "with 3 parallel requests") {
		t.Errorf("CLOUDUPLOAD_EC2_WORKERS=3 not used")
	}
	if injected < 3 {
		t.Errorf("only %d failures injected", injected)
	}
	img := imageByName(t, c.ec2, "throttled")
	if aws.ToString(img.ImageId) != res {
		t.Errorf("result %q, image %s", res, aws.ToString(img.ImageId))
	}
	snap := snapshotByToken(t, c.ec2, tagValue(img.Tags, tagToken))
	got, blocks := snapshotDisk(t, c, aws.ToString(snap.SnapshotId), len(disk))
	if !bytes.Equal(got, disk) || blocks != 11 {
		t.Errorf("snapshot differs from the disk after retries (%d blocks)", blocks)
	}
	if !strings.Contains(log, "11 blocks sent") {
		t.Errorf("log does not count 11 blocks sent")
	}
}

// TestMotoCredentialRefresh puts a fake STS in front of moto that hands out
// credentials valid for only a moment beyond the cache's expiry window: the
// upload must assume the role again mid-upload and go on with the new keys.
func TestMotoCredentialRefresh(t *testing.T) {
	m := awstest.Start(t)
	m.Setenv(t)
	c := clientsFor(m.URL)
	var mu sync.Mutex
	var assumes []url.Values
	issued := map[string]bool{}
	used := map[string]bool{}
	keyRE := regexp.MustCompile(`Credential=([A-Z0-9]+)/`)
	startProxy(t, m, func(w http.ResponseWriter, r *http.Request, body []byte) bool {
		if action(r, body) == "AssumeRole" {
			v, _ := url.ParseQuery(string(body))
			mu.Lock()
			assumes = append(assumes, v)
			key := fmt.Sprintf("ASIATESTREFRESH%05d", len(assumes))
			issued[key] = true
			mu.Unlock()
			// The cache refreshes 5 minutes before expiry: these expire
			// for it 300 ms after they are issued.
			exp := time.Now().Add(5*time.Minute + 300*time.Millisecond).UTC().Format(time.RFC3339Nano)
			w.Header().Set("Content-Type", "text/xml")
			fmt.Fprintf(w, `<AssumeRoleResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><AssumeRoleResult>
<Credentials><AccessKeyId>%s</AccessKeyId><SecretAccessKey>temporary-secret-%d</SecretAccessKey><SessionToken>token-%d</SessionToken><Expiration>%s</Expiration></Credentials>
<AssumedRoleUser><Arn>arn:aws:sts::123456789012:assumed-role/obs-upload/%s</Arn><AssumedRoleId>AROATEST:%s</AssumedRoleId></AssumedRoleUser>
</AssumeRoleResult><ResponseMetadata><RequestId>r-1</RequestId></ResponseMetadata></AssumeRoleResponse>`,
				key, len(assumes), len(assumes), exp, v.Get("RoleSessionName"), v.Get("RoleSessionName"))
			return true
		}
		if isPutBlock(r) {
			if k := keyRE.FindStringSubmatch(r.Header.Get("Authorization")); k != nil {
				mu.Lock()
				used[k[1]] = true
				mu.Unlock()
			}
			time.Sleep(40 * time.Millisecond) // a slow link: the upload outlives the credentials
		}
		return false
	})
	disk := testDisk(48, func(int) bool { return true })
	name := "appliance.x86_64.raw"
	im := writeImage(t, name, disk)
	_, log, err := upload(t, context.Background(), testTarget(), testJob("11", name), jsonData(t, map[string]any{"ami_name": "refreshed"}), im)
	if err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(assumes) < 2 {
		t.Fatalf("AssumeRole called %d times, want a refresh during the upload", len(assumes))
	}
	for _, v := range assumes {
		if v.Get("RoleArn") != testARN || v.Get("ExternalId") != testExtID || v.Get("RoleSessionName") != "cloudupload-11" {
			t.Errorf("AssumeRole with %v", v)
		}
	}
	if len(used) < 2 {
		t.Errorf("blocks were signed with %d distinct keys, want the refreshed ones too", len(used))
	}
	for k := range used {
		if !issued[k] {
			t.Errorf("a block was signed with %s, not an assumed-role key", k)
		}
	}
	for i := range assumes {
		if strings.Contains(log, fmt.Sprintf("temporary-secret-%d", i+1)) {
			t.Errorf("a temporary secret appears in the log")
		}
	}
	imageByName(t, c.ec2, "refreshed")
}

// importFake answers ImportSnapshot and DescribeImportSnapshotTasks (which
// moto lacks) in front of moto: it checks the staged object, creates a
// snapshot in moto and reports the task in the states given.
type importFake struct {
	t      *testing.T
	c      *awsClients
	disk   []byte
	states []string // reported by successive DescribeImportSnapshotTasks

	mu       sync.Mutex
	polls    int
	snap     string
	form     url.Values
	cancels  int
	objectOK bool
}

func (f *importFake) handle(w http.ResponseWriter, r *http.Request, body []byte) bool {
	act := action(r, body)
	if act != "ImportSnapshot" && act != "DescribeImportSnapshotTasks" && act != "CancelImportTask" {
		return false
	}
	v, _ := url.ParseQuery(string(body))
	f.mu.Lock()
	defer f.mu.Unlock()
	w.Header().Set("Content-Type", "text/xml")
	switch act {
	case "ImportSnapshot":
		f.form = v
		ctx := context.Background()
		obj, err := f.c.s3.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(v.Get("DiskContainer.UserBucket.S3Bucket")), Key: aws.String(v.Get("DiskContainer.UserBucket.S3Key"))})
		if err == nil {
			b, _ := io.ReadAll(obj.Body)
			obj.Body.Close()
			f.objectOK = bytes.Equal(b, f.disk)
		}
		fmt.Fprint(w, `<ImportSnapshotResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/"><requestId>r-1</requestId><importTaskId>import-snap-0123456789abcdef0</importTaskId><snapshotTaskDetail><status>active</status></snapshotTaskDetail></ImportSnapshotResponse>`)
	case "DescribeImportSnapshotTasks":
		state := f.states[min(f.polls, len(f.states)-1)]
		f.polls++
		detail := fmt.Sprintf("<status>%s</status><progress>%d</progress>", state, min(f.polls*30, 100))
		switch state {
		case "completed":
			if f.snap == "" {
				ctx := context.Background()
				vol, err := f.c.ec2.CreateVolume(ctx, &ec2.CreateVolumeInput{AvailabilityZone: aws.String("us-east-1a"), Size: aws.Int32(1)})
				if err != nil {
					f.t.Error(err)
					return true
				}
				s, err := f.c.ec2.CreateSnapshot(ctx, &ec2.CreateSnapshotInput{VolumeId: vol.VolumeId})
				if err != nil {
					f.t.Error(err)
					return true
				}
				f.c.ec2.DeleteVolume(ctx, &ec2.DeleteVolumeInput{VolumeId: vol.VolumeId})
				f.snap = aws.ToString(s.SnapshotId)
			}
			detail += "<snapshotId>" + f.snap + "</snapshotId>"
		case "deleted", "deleting":
			detail += "<statusMessage>ClientError: Disk validation failed [Unsupported specified file format]</statusMessage>"
		}
		fmt.Fprintf(w, `<DescribeImportSnapshotTasksResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/"><requestId>r-2</requestId><importSnapshotTaskSet><item><importTaskId>import-snap-0123456789abcdef0</importTaskId><snapshotTaskDetail>%s</snapshotTaskDetail></item></importSnapshotTaskSet></DescribeImportSnapshotTasksResponse>`, detail)
	case "CancelImportTask":
		f.cancels++
		fmt.Fprint(w, `<CancelImportTaskResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/"><requestId>r-3</requestId><importTaskId>import-snap-0123456789abcdef0</importTaskId><state>deleting</state></CancelImportTaskResponse>`)
	}
	return true
}

// TestMotoImport takes the S3 + ImportSnapshot path: the object is staged in
// moto's S3 with a multipart upload, the fake imports it, the AMI is
// registered; a variant ending "deleted" must fail with AWS's message. In
// both the staging object is gone afterwards.
func TestMotoImport(t *testing.T) {
	m := awstest.Start(t)
	m.Setenv(t)
	c := clientsFor(m.URL)
	if _, err := c.s3.CreateBucket(context.Background(), &s3.CreateBucketInput{Bucket: aws.String("image-staging")}); err != nil {
		t.Fatal(err)
	}
	// Bigger than one 16 MiB part, so the multipart upload has two parts.
	disk := testDisk(40, func(i int) bool { return i%2 == 0 })
	name := "appliance.x86_64.raw"
	im := writeImage(t, name, disk)
	for _, c2 := range []struct {
		name   string
		states []string
		fail   string
	}{
		{"Completed", []string{"pending", "active", "completed"}, ""},
		{"Deleted", []string{"active", "deleting", "deleted"}, "Disk validation failed"},
	} {
		t.Run(c2.name, func(t *testing.T) {
			f := &importFake{t: t, c: c, disk: disk, states: c2.states}
			startProxy(t, m, f.handle)
			ami := "imported-" + strings.ToLower(c2.name)
			res, log, err := upload(t, context.Background(), testTarget(), testJob("12", name),
				jsonData(t, map[string]any{"ami_name": ami, "method": "import", "s3_bucket": "image-staging", "share_accounts": []string{"210987654321"}}), im)
			if !f.objectOK {
				t.Errorf("the staged object was not the disk when ImportSnapshot ran")
			}
			if f.form.Get("DiskContainer.Format") != "RAW" {
				t.Errorf("ImportSnapshot form %v", f.form)
			}
			if left := leftovers(t, c, []string{"us-east-1"}, "image-staging"); len(left) > 0 {
				t.Errorf("left over: %v", left)
			}
			if c2.fail != "" {
				if err == nil || !strings.Contains(err.Error(), c2.fail) || !strings.Contains(err.Error(), "ended delet") {
					t.Fatalf("error %v, want the import's failure", err)
				}
				if f.cancels != 1 {
					t.Errorf("import task cancelled %d times, want 1", f.cancels)
				}
				if imgs := ourImages(t, c.ec2); len(imgs) > 0 && aws.ToString(imgs[len(imgs)-1].Name) == ami {
					t.Errorf("an image was registered")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			img := imageByName(t, c.ec2, ami)
			if res != aws.ToString(img.ImageId) {
				t.Errorf("result %q, image %s", res, aws.ToString(img.ImageId))
			}
			if got := launchUsers(t, c.ec2, res); fmt.Sprint(got) != "[210987654321]" {
				t.Errorf("launch permissions %v", got)
			}
			if got := volumeUsers(t, c.ec2, f.snap); fmt.Sprint(got) != "[210987654321]" {
				t.Errorf("snapshot %s shared with %v", f.snap, got)
			}
			snaps, err := c.ec2.DescribeSnapshots(context.Background(), &ec2.DescribeSnapshotsInput{SnapshotIds: []string{f.snap}})
			if err != nil || len(snaps.Snapshots) != 1 || tagValue(snaps.Snapshots[0].Tags, tagJob) != "12" {
				t.Errorf("imported snapshot %s not tagged: %v %v", f.snap, snaps, err)
			}
			if !strings.Contains(log, "removed staging object") {
				t.Errorf("log does not say the staging object was removed")
			}
		})
	}
}

// TestMotoImportKilled cancels while the import is running: the task is
// cancelled and the object removed.
func TestMotoImportKilled(t *testing.T) {
	m := awstest.Start(t)
	m.Setenv(t)
	c := clientsFor(m.URL)
	if _, err := c.s3.CreateBucket(context.Background(), &s3.CreateBucketInput{Bucket: aws.String("image-staging")}); err != nil {
		t.Fatal(err)
	}
	disk := testDisk(4, func(int) bool { return true })
	im := writeImage(t, "appliance.x86_64.raw", disk)
	ctx, cancel := context.WithCancel(context.Background())
	f := &importFake{t: t, c: c, disk: disk, states: []string{"active"}}
	startProxy(t, m, func(w http.ResponseWriter, r *http.Request, body []byte) bool {
		if action(r, body) == "DescribeImportSnapshotTasks" {
			cancel()
		}
		return f.handle(w, r, body)
	})
	_, _, err := upload(t, ctx, testTarget(), testJob("13", "appliance.x86_64.raw"),
		jsonData(t, map[string]any{"ami_name": "import-killed", "method": "import", "s3_bucket": "image-staging"}), im)
	if err == nil || ctx.Err() == nil {
		t.Fatalf("error %v after cancel", err)
	}
	if f.cancels != 1 {
		t.Errorf("import task cancelled %d times, want 1", f.cancels)
	}
	if left := leftovers(t, c, []string{"us-east-1"}, "image-staging"); len(left) > 0 {
		t.Errorf("left over: %v", left)
	}
}

// TestMotoImportKilledWhileStaging cancels during the multipart upload: the
// upload is aborted and no object is left.
func TestMotoImportKilledWhileStaging(t *testing.T) {
	m := awstest.Start(t)
	m.Setenv(t)
	c := clientsFor(m.URL)
	if _, err := c.s3.CreateBucket(context.Background(), &s3.CreateBucketInput{Bucket: aws.String("image-staging")}); err != nil {
		t.Fatal(err)
	}
	disk := testDisk(80, func(int) bool { return true }) // 40 MiB: three parts
	ctx, cancel := context.WithCancel(context.Background())
	im := &cancelAfter{Image: writeImage(t, "appliance.x86_64.raw", disk), n: int64(len(disk)) * 3 / 4, cancel: cancel}
	_, log, err := upload(t, ctx, testTarget(), testJob("14", "appliance.x86_64.raw"),
		jsonData(t, map[string]any{"ami_name": "staging-killed", "method": "import", "s3_bucket": "image-staging"}), im)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("error %v, want context.Canceled", err)
	}
	if !strings.Contains(log, "aborted the multipart upload") {
		t.Errorf("the log does not say the multipart upload was aborted")
	}
	if strings.Contains(log, "import snapshot from") {
		t.Errorf("the import started although the staging upload was cancelled")
	}
	if left := leftovers(t, c, []string{"us-east-1"}, "image-staging"); len(left) > 0 {
		t.Errorf("left over: %v", left)
	}
}

// TestMotoAssumeRoleDenied: a role the service may not assume fails the job
// with a message saying so, before anything is created.
func TestMotoAssumeRoleDenied(t *testing.T) {
	m := awstest.Start(t)
	m.Setenv(t)
	startProxy(t, m, func(w http.ResponseWriter, r *http.Request, body []byte) bool {
		if action(r, body) != "AssumeRole" {
			return false
		}
		w.Header().Set("Content-Type", "text/xml")
		w.WriteHeader(http.StatusForbidden)
		io.WriteString(w, `<ErrorResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><Error><Type>Sender</Type><Code>AccessDenied</Code><Message>User is not authorized to perform: sts:AssumeRole</Message></Error><RequestId>r-9</RequestId></ErrorResponse>`)
		return true
	})
	im := writeImage(t, "appliance.x86_64.raw", testDisk(2, func(int) bool { return true }))
	_, _, err := upload(t, context.Background(), testTarget(), testJob("15", "appliance.x86_64.raw"), jsonData(t, map[string]any{"ami_name": "denied"}), im)
	msg := err.Error() // what the job's details show
	if !strings.Contains(msg, "cannot assume role "+testARN) || strings.Contains(msg, "operation error") || !strings.Contains(msg, "AccessDenied") {
		t.Errorf("error %q, want one saying the role cannot be assumed", msg)
	}
	t.Logf("job details: %s", msg)
}
