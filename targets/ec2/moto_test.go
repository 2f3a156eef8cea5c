package ec2

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/cloudupload/cloudupload/internal/testutil"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/ebs"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/cloudupload/cloudupload"
	"github.com/cloudupload/cloudupload/targets"
	"github.com/cloudupload/cloudupload/targets/awstest"
	"github.com/cloudupload/cloudupload/targets/targettest"
	"github.com/cloudupload/cloudupload/uploader/image"
)

const (
	testAccount = "123456789012" // moto's default account; assumed roles land in the ARN's account
	testARN     = "arn:aws:iam::" + testAccount + ":role/obs-upload"
	testExtID   = "obs-external-id-42"
)

// testTarget is the target with short polls and pauses for moto, which
// finishes snapshots and images at once.
func testTarget() *Target {
	return &Target{workers: 4, poll: 20 * time.Millisecond, backoff: 5 * time.Millisecond}
}

// awsClients talks to moto (or a proxy in front of it) with the test keys.
type awsClients struct {
	cfg aws.Config
	ec2 *ec2.Client
	ebs *ebs.Client
	s3  *s3.Client
}

func clientsFor(url string) *awsClients {
	cfg := aws.Config{
		Region:       awstest.Region,
		Credentials:  credentials.NewStaticCredentialsProvider(awstest.AccessKey, awstest.SecretKey, ""),
		BaseEndpoint: aws.String(url),
	}
	return &awsClients{
		cfg: cfg,
		ec2: ec2.NewFromConfig(cfg),
		ebs: ebs.NewFromConfig(cfg),
		s3:  s3.NewFromConfig(cfg, func(o *s3.Options) { o.UsePathStyle = true }),
	}
}

func (c *awsClients) ec2In(region string) *ec2.Client {
	return ec2.NewFromConfig(c.cfg, func(o *ec2.Options) { o.Region = region })
}

// testDisk is a disk of n blocks; block i holds data when data(i).
func testDisk(n int, data func(i int) bool) []byte {
	b := make([]byte, n*blockSize)
	x := uint32(88172645)
	for i := range n {
		if !data(i) {
			continue
		}
		blk := b[i*blockSize : (i+1)*blockSize]
		for k := 0; k < len(blk); k += 64 {
			x ^= x << 13
			x ^= x >> 17
			x ^= x << 5
			blk[k] = byte(x)
			blk[k+1] = byte(i)
		}
	}
	return b
}

func writeImage(t *testing.T, name string, disk []byte) targets.Image {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, disk, 0o644); err != nil {
		t.Fatal(err)
	}
	im, err := image.Open(path, name)
	if err != nil {
		t.Fatal(err)
	}
	return im
}

func testJob(id, filename string) targets.Job {
	return targets.Job{ID: id, User: "tester", Project: "home:tester", Repository: "images",
		Arch: "x86_64", Package: "appliance", Filename: filename}
}

func jsonData(t *testing.T, m map[string]any) []byte {
	t.Helper()
	base := map[string]any{"arn": testARN, "external_id": testExtID, "region": awstest.Region, "user_id": 30, "vpc_subnet_id": ""}
	for k, v := range m {
		base[k] = v
	}
	b, err := json.Marshal(base)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func upload(t *testing.T, ctx context.Context, tg *Target, job targets.Job, data []byte, im targets.Image) (string, string, error) {
	t.Helper()
	var log testutil.SyncBuffer
	res, err := tg.Upload(ctx, targets.Request{Job: job, Data: data, Image: im, Log: targets.NewLog(&log), Getenv: os.Getenv})
	t.Logf("log:\n%s", log.String())
	for _, secret := range []string{awstest.SecretKey, awstest.AccessKey} {
		if strings.Contains(log.String(), secret) || strings.Contains(res, secret) || err != nil && strings.Contains(err.Error(), secret) {
			t.Errorf("a secret appears in the log, result or error")
		}
	}
	return res, log.String(), err
}

// ourSnapshots lists the snapshots carrying the uploader's token tag.
func ourSnapshots(t *testing.T, api *ec2.Client) []types.Snapshot {
	t.Helper()
	out, err := api.DescribeSnapshots(context.Background(), &ec2.DescribeSnapshotsInput{
		OwnerIds: []string{"self"},
		Filters:  []types.Filter{{Name: aws.String("tag-key"), Values: []string{tagToken}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	return out.Snapshots
}

func ourImages(t *testing.T, api *ec2.Client) []types.Image {
	t.Helper()
	out, err := api.DescribeImages(context.Background(), &ec2.DescribeImagesInput{Owners: []string{"self"}})
	if err != nil {
		t.Fatal(err)
	}
	return out.Images
}

// leftovers lists snapshots of ours without an image of the same job,
// multipart uploads and objects in bucket (when not "").
func leftovers(t *testing.T, c *awsClients, regions []string, bucket string) []string {
	t.Helper()
	var left []string
	for _, region := range regions {
		api := c.ec2In(region)
		tokens := map[string]bool{}
		for _, img := range ourImages(t, api) {
			tokens[tagValue(img.Tags, tagToken)] = true
		}
		for _, s := range ourSnapshots(t, api) {
			if !tokens[tagValue(s.Tags, tagToken)] {
				left = append(left, region+" snapshot "+aws.ToString(s.SnapshotId))
			}
		}
	}
	if bucket != "" {
		ctx := context.Background()
		mp, err := c.s3.ListMultipartUploads(ctx, &s3.ListMultipartUploadsInput{Bucket: aws.String(bucket)})
		if err != nil {
			t.Fatal(err)
		}
		for _, u := range mp.Uploads {
			left = append(left, "multipart upload "+aws.ToString(u.Key))
		}
		objs, err := c.s3.ListObjectsV2(ctx, &s3.ListObjectsV2Input{Bucket: aws.String(bucket)})
		if err != nil {
			t.Fatal(err)
		}
		for _, o := range objs.Contents {
			left = append(left, "object "+aws.ToString(o.Key))
		}
	}
	return left
}

// snapshotDisk reads a snapshot's blocks back from moto's EBS and returns
// the disk (size bytes) and the number of blocks stored. (moto's
// ListSnapshotBlocks answer does not decode, so every index is tried.)
func snapshotDisk(t *testing.T, c *awsClients, snap string, size int) ([]byte, int) {
	t.Helper()
	ctx := context.Background()
	api := ebs.NewFromConfig(c.cfg, func(o *ebs.Options) { o.Retryer = aws.NopRetryer{} })
	disk := make([]byte, size)
	stored := 0
	for i := 0; i*blockSize < size; i++ {
		got, err := api.GetSnapshotBlock(ctx, &ebs.GetSnapshotBlockInput{SnapshotId: aws.String(snap), BlockIndex: aws.Int32(int32(i)), BlockToken: aws.String("x")})
		if err != nil {
			continue // moto answers 500 for a block never written
		}
		data, err := io.ReadAll(got.BlockData)
		got.BlockData.Close()
		if err != nil {
			t.Fatal(err)
		}
		stored++
		copy(disk[i*blockSize:], data[:min(len(data), size-i*blockSize)])
	}
	return disk, stored
}

func imageByName(t *testing.T, api *ec2.Client, name string) *types.Image {
	t.Helper()
	out, err := api.DescribeImages(context.Background(), &ec2.DescribeImagesInput{
		Owners: []string{"self"}, Filters: []types.Filter{{Name: aws.String("name"), Values: []string{name}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(out.Images) != 1 {
		t.Fatalf("%d images named %q, want 1", len(out.Images), name)
	}
	return &out.Images[0]
}

func snapshotByToken(t *testing.T, api *ec2.Client, token string) types.Snapshot {
	t.Helper()
	var found []types.Snapshot
	for _, s := range ourSnapshots(t, api) {
		if tagValue(s.Tags, tagToken) == token {
			found = append(found, s)
		}
	}
	if len(found) != 1 {
		t.Fatalf("%d snapshots with token %s, want 1", len(found), token)
	}
	return found[0]
}

func wantTags(t *testing.T, what string, got []types.Tag, want map[string]string) {
	t.Helper()
	for k, v := range want {
		if g := tagValue(got, k); g != v {
			t.Errorf("%s: tag %s = %q, want %q", what, k, g, v)
		}
	}
}

func launchUsers(t *testing.T, api *ec2.Client, ami string) []string {
	t.Helper()
	out, err := api.DescribeImageAttribute(context.Background(), &ec2.DescribeImageAttributeInput{
		ImageId: aws.String(ami), Attribute: types.ImageAttributeNameLaunchPermission,
	})
	if err != nil {
		t.Fatal(err)
	}
	var users []string
	for _, p := range out.LaunchPermissions {
		users = append(users, aws.ToString(p.UserId))
	}
	sort.Strings(users)
	return users
}

func volumeUsers(t *testing.T, api *ec2.Client, snap string) []string {
	t.Helper()
	out, err := api.DescribeSnapshotAttribute(context.Background(), &ec2.DescribeSnapshotAttributeInput{
		SnapshotId: aws.String(snap), Attribute: types.SnapshotAttributeNameCreateVolumePermission,
	})
	if err != nil {
		t.Fatal(err)
	}
	var users []string
	for _, p := range out.CreateVolumePermissions {
		users = append(users, aws.ToString(p.UserId))
	}
	sort.Strings(users)
	return users
}

// TestMotoEBS publishes through the EBS direct APIs with every option and
// checks what exists in moto, then reruns the same job (idempotent) and
// another job with the same name (conflict).
func TestMotoEBS(t *testing.T) {
	m := awstest.Start(t)
	m.Setenv(t)
	c := clientsFor(m.URL)
	disk := testDisk(9, func(i int) bool { return i%3 != 1 })
	disk = disk[:len(disk)-3*512] // not a whole number of blocks
	name := "appliance.x86_64-1.0.0-Build1.1.raw"
	im := writeImage(t, name, disk)
	data := jsonData(t, map[string]any{
		"ami_name": "appliance-1.0.0-build1.1", "description": "the appliance", "boot_mode": "uefi",
		"tpm": true, "imds_v2": true, "sriov": true, "tags": map[string]string{"team": "os", "Name": "app"},
		"share_accounts": []string{"210987654321", "111122223333"}, "copy_regions": []string{"eu-west-1"},
	})
	job := testJob("6", name)
	res, log, err := upload(t, context.Background(), testTarget(), job, data, im)
	if err != nil {
		t.Fatal(err)
	}
	home := imageByName(t, c.ec2, "appliance-1.0.0-build1.1")
	copied := imageByName(t, c.ec2In("eu-west-1"), "appliance-1.0.0-build1.1")
	if want := fmt.Sprintf("us-east-1:%s,eu-west-1:%s", aws.ToString(home.ImageId), aws.ToString(copied.ImageId)); res != want {
		t.Errorf("result %q, want %q", res, want)
	}
	tags := map[string]string{"team": "os", "Name": "app", tagJob: "6", tagImage: name}
	wantTags(t, "image", home.Tags, tags)
	wantTags(t, "copy", copied.Tags, tags)
	if got := aws.ToString(home.Description); got != "the appliance" {
		t.Errorf("description %q", got)
	}
	shared := []string{"111122223333", "210987654321"}
	if got := launchUsers(t, c.ec2, aws.ToString(home.ImageId)); !equal(got, shared) {
		t.Errorf("launch permissions %v, want %v", got, shared)
	}
	if got := launchUsers(t, c.ec2In("eu-west-1"), aws.ToString(copied.ImageId)); !equal(got, shared) {
		t.Errorf("launch permissions of the copy %v, want %v", got, shared)
	}
	snap := snapshotByToken(t, c.ec2, tagValue(home.Tags, tagToken))
	wantTags(t, "snapshot", snap.Tags, tags)
	if got := volumeUsers(t, c.ec2, aws.ToString(snap.SnapshotId)); !equal(got, shared) {
		t.Errorf("create volume permissions %v, want %v", got, shared)
	}
	if aws.ToInt32(snap.VolumeSize) != 1 {
		t.Errorf("volume size %d GiB, want 1", aws.ToInt32(snap.VolumeSize))
	}
	got, blocks := snapshotDisk(t, c, aws.ToString(snap.SnapshotId), len(disk))
	if !bytes.Equal(got, disk) {
		t.Errorf("snapshot content differs from the disk")
	}
	if blocks != 6 {
		t.Errorf("%d blocks stored, want 6 (3 zero blocks skipped)", blocks)
	}
	for _, want := range []string{"6 blocks sent", "3 zero blocks skipped", "register AMI", "copy ", "done in"} {
		if !strings.Contains(log, want) {
			t.Errorf("log lacks %q", want)
		}
	}
	if left := leftovers(t, c, []string{"us-east-1", "eu-west-1"}, ""); len(left) > 0 {
		t.Errorf("left over: %v", left)
	}

	t.Run("RerunSameJob", func(t *testing.T) {
		res2, _, err := upload(t, context.Background(), testTarget(), job, data, im)
		if err != nil {
			t.Fatal(err)
		}
		if res2 != res {
			t.Errorf("rerun result %q, want %q", res2, res)
		}
		if n := len(ourSnapshots(t, c.ec2)); n != 1 {
			t.Errorf("%d snapshots after the rerun, want 1", n)
		}
	})
	t.Run("OtherJobSameName", func(t *testing.T) {
		_, _, err := upload(t, context.Background(), testTarget(), testJob("7", name), data, im)
		if cloudupload.ErrorCode(err) != cloudupload.ECONFLICT || !strings.Contains(err.Error(), aws.ToString(home.ImageId)) {
			t.Errorf("error %v, want a conflict naming %s", err, aws.ToString(home.ImageId))
		}
		if n := len(ourSnapshots(t, c.ec2)); n != 1 {
			t.Errorf("%d snapshots after the conflict, want 1 (nothing uploaded)", n)
		}
	})
}

func equal(a, b []string) bool {
	return strings.Join(a, ",") == strings.Join(b, ",")
}

// cancelAfter wraps an image and cancels once n bytes were read.
type cancelAfter struct {
	targets.Image
	n      int64
	cancel func()
}

func (c *cancelAfter) OpenDisk(ctx context.Context) (io.ReadCloser, error) {
	rc, err := c.Image.OpenDisk(ctx)
	if err != nil {
		return nil, err
	}
	return &cancelReader{ReadCloser: rc, c: c}, nil
}

type cancelReader struct {
	io.ReadCloser
	c    *cancelAfter
	read int64
}

func (r *cancelReader) Read(p []byte) (int, error) {
	n, err := r.ReadCloser.Read(p)
	r.read += int64(n)
	if r.read >= r.c.n {
		r.c.cancel()
	}
	return n, err
}

// TestMotoKill cancels mid-upload and finds nothing left in moto.
func TestMotoKill(t *testing.T) {
	m := awstest.Start(t)
	m.Setenv(t)
	c := clientsFor(m.URL)
	disk := testDisk(40, func(i int) bool { return true })
	name := "appliance.x86_64.raw"
	ctx, cancel := context.WithCancel(context.Background())
	im := &cancelAfter{Image: writeImage(t, name, disk), n: int64(len(disk) / 2), cancel: cancel}
	data := jsonData(t, map[string]any{"ami_name": "killed-image"})
	start := time.Now()
	_, log, err := upload(t, ctx, testTarget(), testJob("8", name), data, im)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("error %v, want context.Canceled", err)
	}
	if d := time.Since(start); d > 30*time.Second {
		t.Errorf("stopping took %s", d)
	}
	if !strings.Contains(log, "removed snapshot") {
		t.Errorf("log does not say the snapshot was removed")
	}
	if left := leftovers(t, c, []string{"us-east-1"}, ""); len(left) > 0 {
		t.Errorf("left over: %v", left)
	}
	if imgs := ourImages(t, c.ec2); len(imgs) > 0 {
		t.Errorf("%d images left", len(imgs))
	}
}

// TestMotoFailAfterRegister fails while copying to another region (moto
// has no such image to copy there once the home image is gone) and checks
// the registered AMI and snapshot are removed.
func TestMotoCopyFails(t *testing.T) {
	m := awstest.Start(t)
	m.Setenv(t)
	c := clientsFor(m.URL)
	name := "appliance.x86_64.raw"
	im := writeImage(t, name, testDisk(2, func(i int) bool { return i == 0 }))
	tg := testTarget()
	d, err := parseData(jsonData(t, map[string]any{"ami_name": "copy-fails", "copy_regions": []string{"eu-west-1"}}))
	if err != nil {
		t.Fatal(err)
	}
	var log testutil.SyncBuffer
	r := tg.newRun(targets.Request{Job: testJob("9", name), Image: im, Log: targets.NewLog(&log)}, d, "x86_64")
	r.ebs, r.ec2 = c.ebs, c.ec2
	r.ec2In = func(region string) ec2API { return failingCopy{c.ec2In(region)} }
	_, err = r.publish(context.Background())
	t.Logf("log:\n%s", log.String())
	if err == nil || !strings.Contains(err.Error(), "injected") {
		t.Fatalf("error %v, want the injected copy failure", err)
	}
	if imgs := ourImages(t, c.ec2); len(imgs) > 0 {
		t.Errorf("%d images left after the failed copy", len(imgs))
	}
	if left := leftovers(t, c, []string{"us-east-1", "eu-west-1"}, ""); len(left) > 0 {
		t.Errorf("left over: %v", left)
	}
}

type failingCopy struct{ *ec2.Client }

func (f failingCopy) CopyImage(context.Context, *ec2.CopyImageInput, ...func(*ec2.Options)) (*ec2.CopyImageOutput, error) {
	return nil, errors.New("injected copy failure")
}

// TestConformance runs the shared target suite against moto.
func TestConformance(t *testing.T) {
	m := awstest.Start(t)
	m.Setenv(t)
	c := clientsFor(m.URL)
	targettest.Run(t, targettest.Harness{
		New: func(t *testing.T) targets.Target { return testTarget() },
		ValidData: func(t *testing.T) []byte {
			name := strings.NewReplacer("/", "-", "_", "-").Replace(t.Name())
			return jsonData(t, map[string]any{"ami_name": name})
		},
		Invalid: []targettest.InvalidCase{
			{Data: []byte(`{"external_id":"x1","region":"us-east-1","ami_name":"abc"}`), Field: "arn"},
			{Data: jsonData(t, map[string]any{"region": "mars", "ami_name": "abc"}), Field: "region"},
			{Data: jsonData(t, map[string]any{"ami_name": "_abc"}), Field: "ami_name"},
			{Data: jsonData(t, map[string]any{"ami_name": "abc", "boot_mod": "uefi"}), Field: "boot_mod"},
			{Data: jsonData(t, map[string]any{"ami_name": "abc", "share_accounts": []string{"12"}}), Field: "share_accounts"},
		},
		WantsDisk: true,
		Secrets:   []string{awstest.SecretKey},
		Verify: func(t *testing.T, result string, want []byte) {
			out, err := c.ec2.DescribeImages(context.Background(), &ec2.DescribeImagesInput{ImageIds: []string{result}})
			if err != nil || len(out.Images) != 1 {
				t.Fatalf("AMI %q not found: %v", result, err)
			}
			snap := snapshotByToken(t, c.ec2, tagValue(out.Images[0].Tags, tagToken))
			got, _ := snapshotDisk(t, c, aws.ToString(snap.SnapshotId), len(want))
			if !bytes.Equal(got, want) {
				t.Errorf("snapshot content differs from the disk")
			}
		},
		Leftovers: func(t *testing.T) []string { return leftovers(t, c, []string{"us-east-1"}, "") },
	})
}
