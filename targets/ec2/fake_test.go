package ec2

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cloudupload/cloudupload/internal/testutil"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/service/ebs"
	ebstypes "github.com/aws/aws-sdk-go-v2/service/ebs/types"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/smithy-go"
	smithyhttp "github.com/aws/smithy-go/transport/http"

	"github.com/cloudupload/cloudupload/targets"
	"github.com/cloudupload/cloudupload/uploader/image"
)

// fakeEBS records what is sent and can fail or stall chosen requests.
type fakeEBS struct {
	mu       sync.Mutex
	start    *ebs.StartSnapshotInput
	blocks   map[int32][]byte
	puts     int
	complete *ebs.CompleteSnapshotInput
	// fail decides the answer to the n-th PutSnapshotBlock (1-based):
	// nil to accept, errStall to wait for the request's context.
	fail func(n int, index int32) error
	bad  []string // checksum or length problems seen
	// staleToken, when set, is a client token whose snapshot ended in
	// error (an earlier run of the job).
	staleToken string
	starts     []string
}

var errStall = errors.New("stall")

func (f *fakeEBS) StartSnapshot(_ context.Context, in *ebs.StartSnapshotInput, _ ...func(*ebs.Options)) (*ebs.StartSnapshotOutput, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.starts = append(f.starts, aws.ToString(in.ClientToken))
	if f.staleToken != "" && aws.ToString(in.ClientToken) == f.staleToken {
		return &ebs.StartSnapshotOutput{SnapshotId: aws.String("snap-old"), Status: ebstypes.StatusError}, nil
	}
	f.start = in
	f.blocks = map[int32][]byte{}
	return &ebs.StartSnapshotOutput{SnapshotId: aws.String("snap-fake"), BlockSize: aws.Int32(blockSize), Status: ebstypes.StatusPending}, nil
}

func (f *fakeEBS) PutSnapshotBlock(ctx context.Context, in *ebs.PutSnapshotBlockInput, _ ...func(*ebs.Options)) (*ebs.PutSnapshotBlockOutput, error) {
	data, err := io.ReadAll(in.BlockData)
	if err != nil {
		return nil, err
	}
	f.mu.Lock()
	f.puts++
	n := f.puts
	fail := f.fail
	f.mu.Unlock()
	if fail != nil {
		if err := fail(n, aws.ToInt32(in.BlockIndex)); err == errStall {
			<-ctx.Done()
			return nil, ctx.Err()
		} else if err != nil {
			return nil, err
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	sum := sha256.Sum256(data)
	if got := aws.ToString(in.Checksum); got != base64.StdEncoding.EncodeToString(sum[:]) {
		f.bad = append(f.bad, fmt.Sprintf("block %d: checksum %s does not match its data", aws.ToInt32(in.BlockIndex), got))
	}
	if in.ChecksumAlgorithm != ebstypes.ChecksumAlgorithmChecksumAlgorithmSha256 {
		f.bad = append(f.bad, fmt.Sprintf("block %d: algorithm %q", aws.ToInt32(in.BlockIndex), in.ChecksumAlgorithm))
	}
	if len(data) != blockSize || aws.ToInt32(in.DataLength) != blockSize {
		f.bad = append(f.bad, fmt.Sprintf("block %d: %d bytes, DataLength %d", aws.ToInt32(in.BlockIndex), len(data), aws.ToInt32(in.DataLength)))
	}
	if aws.ToString(in.SnapshotId) != "snap-fake" {
		f.bad = append(f.bad, "wrong snapshot id "+aws.ToString(in.SnapshotId))
	}
	f.blocks[aws.ToInt32(in.BlockIndex)] = data
	return &ebs.PutSnapshotBlockOutput{Checksum: in.Checksum, ChecksumAlgorithm: in.ChecksumAlgorithm}, nil
}

func (f *fakeEBS) CompleteSnapshot(_ context.Context, in *ebs.CompleteSnapshotInput, _ ...func(*ebs.Options)) (*ebs.CompleteSnapshotOutput, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.complete = in
	return &ebs.CompleteSnapshotOutput{Status: ebstypes.StatusCompleted}, nil
}

// disk reassembles the blocks received into size bytes.
func (f *fakeEBS) disk(size int) []byte {
	f.mu.Lock()
	defer f.mu.Unlock()
	b := make([]byte, size)
	for i, data := range f.blocks {
		off := int(i) * blockSize
		copy(b[off:], data[:min(len(data), size-off)])
	}
	return b
}

// fakeEC2 keeps images and snapshots in memory and records calls.
type fakeEC2 struct {
	region string
	mu     sync.Mutex
	images map[string]*types.Image
	snaps  map[string]string // id → state
	calls  []string
	reg    *ec2.RegisterImageInput
	tags   map[string][]types.Tag
	launch map[string][]string
	volume map[string][]string
	// import task states reported in turn
	importStates []string
	importPolls  int
	cancelled    []string
	n            int
}

func newFakeEC2(region string) *fakeEC2 {
	return &fakeEC2{region: region, images: map[string]*types.Image{}, snaps: map[string]string{},
		tags: map[string][]types.Tag{}, launch: map[string][]string{}, volume: map[string][]string{}}
}

func (f *fakeEC2) call(s string) {
	f.calls = append(f.calls, s)
}

func notFound(code string) error {
	return &smithy.GenericAPIError{Code: code, Message: "not found", Fault: smithy.FaultClient}
}

func (f *fakeEC2) DescribeImages(_ context.Context, in *ec2.DescribeImagesInput, _ ...func(*ec2.Options)) (*ec2.DescribeImagesOutput, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.call("DescribeImages")
	var out []types.Image
	for id, img := range f.images {
		if len(in.ImageIds) > 0 && !contains(in.ImageIds, id) {
			continue
		}
		if len(in.Filters) > 0 && aws.ToString(img.Name) != in.Filters[0].Values[0] {
			continue
		}
		c := *img
		c.Tags = f.tags[id]
		out = append(out, c)
	}
	if len(in.ImageIds) > 0 && len(out) == 0 {
		return nil, notFound("InvalidAMIID.NotFound")
	}
	return &ec2.DescribeImagesOutput{Images: out}, nil
}

func (f *fakeEC2) RegisterImage(_ context.Context, in *ec2.RegisterImageInput, _ ...func(*ec2.Options)) (*ec2.RegisterImageOutput, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.call("RegisterImage")
	f.reg = in
	f.n++
	id := fmt.Sprintf("ami-%s%d", f.region, f.n)
	f.images[id] = &types.Image{ImageId: aws.String(id), Name: in.Name, State: types.ImageStateAvailable,
		RootDeviceName: in.RootDeviceName, BlockDeviceMappings: in.BlockDeviceMappings}
	return &ec2.RegisterImageOutput{ImageId: aws.String(id)}, nil
}

func (f *fakeEC2) DeregisterImage(_ context.Context, in *ec2.DeregisterImageInput, _ ...func(*ec2.Options)) (*ec2.DeregisterImageOutput, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.call("DeregisterImage " + aws.ToString(in.ImageId))
	delete(f.images, aws.ToString(in.ImageId))
	return &ec2.DeregisterImageOutput{}, nil
}

func (f *fakeEC2) CopyImage(_ context.Context, in *ec2.CopyImageInput, _ ...func(*ec2.Options)) (*ec2.CopyImageOutput, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.call("CopyImage " + aws.ToString(in.SourceRegion) + " " + aws.ToString(in.SourceImageId))
	f.n++
	id := fmt.Sprintf("ami-%s%d", f.region, f.n)
	snap := fmt.Sprintf("snap-%s%d", f.region, f.n)
	f.snaps[snap] = "completed"
	f.images[id] = &types.Image{ImageId: aws.String(id), Name: in.Name, State: types.ImageStateAvailable,
		BlockDeviceMappings: []types.BlockDeviceMapping{{DeviceName: aws.String("/dev/xvda"), Ebs: &types.EbsBlockDevice{SnapshotId: aws.String(snap)}}}}
	return &ec2.CopyImageOutput{ImageId: aws.String(id)}, nil
}

func (f *fakeEC2) ModifyImageAttribute(_ context.Context, in *ec2.ModifyImageAttributeInput, _ ...func(*ec2.Options)) (*ec2.ModifyImageAttributeOutput, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.call("ModifyImageAttribute")
	for _, p := range in.LaunchPermission.Add {
		f.launch[aws.ToString(in.ImageId)] = append(f.launch[aws.ToString(in.ImageId)], aws.ToString(p.UserId))
	}
	return &ec2.ModifyImageAttributeOutput{}, nil
}

func (f *fakeEC2) DescribeSnapshots(_ context.Context, in *ec2.DescribeSnapshotsInput, _ ...func(*ec2.Options)) (*ec2.DescribeSnapshotsOutput, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.call("DescribeSnapshots")
	var out []types.Snapshot
	for _, id := range in.SnapshotIds {
		state := f.snaps[id]
		if state == "" {
			state = "completed"
		}
		out = append(out, types.Snapshot{SnapshotId: aws.String(id), State: types.SnapshotState(state)})
	}
	return &ec2.DescribeSnapshotsOutput{Snapshots: out}, nil
}

func (f *fakeEC2) DeleteSnapshot(_ context.Context, in *ec2.DeleteSnapshotInput, _ ...func(*ec2.Options)) (*ec2.DeleteSnapshotOutput, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.call("DeleteSnapshot " + aws.ToString(in.SnapshotId))
	delete(f.snaps, aws.ToString(in.SnapshotId))
	return &ec2.DeleteSnapshotOutput{}, nil
}

func (f *fakeEC2) ModifySnapshotAttribute(_ context.Context, in *ec2.ModifySnapshotAttributeInput, _ ...func(*ec2.Options)) (*ec2.ModifySnapshotAttributeOutput, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.call("ModifySnapshotAttribute")
	if in.Attribute != types.SnapshotAttributeNameCreateVolumePermission || in.OperationType != types.OperationTypeAdd {
		return nil, fmt.Errorf("unexpected snapshot attribute change %s %s", in.Attribute, in.OperationType)
	}
	f.volume[aws.ToString(in.SnapshotId)] = append(f.volume[aws.ToString(in.SnapshotId)], in.UserIds...)
	return &ec2.ModifySnapshotAttributeOutput{}, nil
}

func (f *fakeEC2) CreateTags(_ context.Context, in *ec2.CreateTagsInput, _ ...func(*ec2.Options)) (*ec2.CreateTagsOutput, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.call("CreateTags " + strings.Join(in.Resources, " "))
	for _, r := range in.Resources {
		f.tags[r] = append(f.tags[r], in.Tags...)
	}
	return &ec2.CreateTagsOutput{}, nil
}

func (f *fakeEC2) ImportSnapshot(_ context.Context, in *ec2.ImportSnapshotInput, _ ...func(*ec2.Options)) (*ec2.ImportSnapshotOutput, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.call("ImportSnapshot " + aws.ToString(in.DiskContainer.Format) + " " + aws.ToString(in.DiskContainer.UserBucket.S3Bucket))
	return &ec2.ImportSnapshotOutput{ImportTaskId: aws.String("import-snap-1")}, nil
}

func (f *fakeEC2) DescribeImportSnapshotTasks(_ context.Context, in *ec2.DescribeImportSnapshotTasksInput, _ ...func(*ec2.Options)) (*ec2.DescribeImportSnapshotTasksOutput, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	state := f.importStates[min(f.importPolls, len(f.importStates)-1)]
	f.importPolls++
	d := &types.SnapshotTaskDetail{Status: aws.String(state), Progress: aws.String("50")}
	switch state {
	case "completed":
		d.SnapshotId = aws.String("snap-imported")
		f.snaps["snap-imported"] = "completed"
	case "deleted", "deleting":
		d.StatusMessage = aws.String("ClientError: Disk validation failed [Unsupported specified file format]")
	}
	return &ec2.DescribeImportSnapshotTasksOutput{ImportSnapshotTasks: []types.ImportSnapshotTask{{ImportTaskId: aws.String("import-snap-1"), SnapshotTaskDetail: d}}}, nil
}

func (f *fakeEC2) CancelImportTask(_ context.Context, in *ec2.CancelImportTaskInput, _ ...func(*ec2.Options)) (*ec2.CancelImportTaskOutput, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.call("CancelImportTask " + aws.ToString(in.ImportTaskId))
	f.cancelled = append(f.cancelled, aws.ToString(in.ImportTaskId))
	return &ec2.CancelImportTaskOutput{}, nil
}

func (f *fakeEC2) callList() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return strings.Join(f.calls, "\n")
}

// memImage is a disk in memory.
type memImage struct {
	disk   []byte
	opened int
	closed int
	mu     sync.Mutex
}

func (m *memImage) Path() string   { return "/nonexistent/appliance.raw" }
func (m *memImage) Format() string { return "raw" }
func (m *memImage) DiskSize(context.Context) (int64, error) {
	return int64(len(m.disk)), nil
}
func (m *memImage) OpenDisk(context.Context) (io.ReadCloser, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.opened++
	return &memReader{Reader: bytes.NewReader(m.disk), m: m}, nil
}

type memReader struct {
	*bytes.Reader
	m *memImage
}

func (r *memReader) Close() error {
	r.m.mu.Lock()
	defer r.m.mu.Unlock()
	r.m.closed++
	return nil
}

type fakeWorld struct {
	ebs   *fakeEBS
	ec2   map[string]*fakeEC2
	s3    *fakeS3
	log   *testutil.SyncBuffer
	image *memImage
}

func fakeRun(t *testing.T, raw string, disk []byte) (*run, *fakeWorld) {
	t.Helper()
	d, err := parseData([]byte(raw))
	if err != nil {
		t.Fatal(err)
	}
	w := &fakeWorld{ebs: &fakeEBS{}, ec2: map[string]*fakeEC2{}, s3: newFakeS3(), log: &testutil.SyncBuffer{}, image: &memImage{disk: disk}}
	for _, region := range append([]string{d.Region}, d.CopyRegions...) {
		w.ec2[region] = newFakeEC2(region)
	}
	tg := &Target{workers: 3, poll: time.Millisecond, backoff: time.Millisecond}
	r := tg.newRun(targets.Request{Job: testJob("6", "appliance.x86_64.raw"), Image: w.image, Log: targets.NewLog(w.log)}, d, "x86_64")
	r.ebs, r.ec2, r.s3 = w.ebs, w.ec2[d.Region], w.s3
	r.ec2In = func(region string) ec2API { return w.ec2[region] }
	return r, w
}

const fakeBase = `"arn":"arn:aws:iam::123456789012:role/obs","region":"us-east-1","ami_name":"appliance-1"`

func TestFakeEBSPath(t *testing.T) {
	// blocks 0, 3 data; 1, 4 zero; 2 zero but for one byte; the last one partial
	disk := testDisk(6, func(i int) bool { return i == 0 || i == 3 || i == 5 })
	disk[2*blockSize+blockSize-1] = 7
	disk = disk[:5*blockSize+4096]
	r, w := fakeRun(t, `{`+fakeBase+`,"boot_mode":"uefi","tpm":true,"imds_v2":true,"sriov":true,"ena":false,
		"tags":{"team":"os"},"share_accounts":["210987654321"],"copy_regions":["eu-west-1"],"root_volume_size":8,"description":"desc"}`, disk)
	res, err := r.publish(context.Background())
	t.Logf("log:\n%s", w.log.String())
	if err != nil {
		t.Fatal(err)
	}
	if res != "us-east-1:ami-us-east-11,eu-west-1:ami-eu-west-11" {
		t.Errorf("result %q", res)
	}
	e := w.ebs
	if len(e.bad) > 0 {
		t.Errorf("bad blocks: %v", e.bad)
	}
	var idx []int
	for i := range e.blocks {
		idx = append(idx, int(i))
	}
	sort.Ints(idx)
	if fmt.Sprint(idx) != "[0 2 3 5]" {
		t.Errorf("blocks sent %v, want [0 2 3 5] (zero blocks skipped)", idx)
	}
	if got := e.disk(len(disk)); !bytes.Equal(got, disk) {
		t.Errorf("blocks do not reassemble the disk")
	}
	if last := e.blocks[5]; !bytes.Equal(last[4096:], zeroBlock[4096:]) {
		t.Errorf("the partial last block is not padded with zeros")
	}
	if got := aws.ToInt32(e.complete.ChangedBlocksCount); got != 4 {
		t.Errorf("ChangedBlocksCount %d, want 4", got)
	}
	if got := aws.ToInt64(e.start.VolumeSize); got != 8 {
		t.Errorf("VolumeSize %d, want root_volume_size 8", got)
	}
	if tok := aws.ToString(e.start.ClientToken); tok != "cloudupload-"+r.token || len(tok) > 64 {
		t.Errorf("ClientToken %q", tok)
	}
	startTags := map[string]string{}
	for _, tg := range e.start.Tags {
		startTags[aws.ToString(tg.Key)] = aws.ToString(tg.Value)
	}
	if startTags["team"] != "os" || startTags[tagJob] != "6" || startTags[tagToken] != r.token || startTags["Name"] != "appliance-1" {
		t.Errorf("snapshot tags %v", startTags)
	}

	home := w.ec2["us-east-1"]
	reg := home.reg
	bdm := reg.BlockDeviceMappings[0]
	switch {
	case aws.ToString(reg.Name) != "appliance-1", aws.ToString(reg.Description) != "desc":
		t.Errorf("name/description %q %q", aws.ToString(reg.Name), aws.ToString(reg.Description))
	case reg.Architecture != types.ArchitectureValuesX8664, aws.ToString(reg.VirtualizationType) != "hvm":
		t.Errorf("arch %q virt %q", reg.Architecture, aws.ToString(reg.VirtualizationType))
	case reg.BootMode != types.BootModeValuesUefi, reg.TpmSupport != types.TpmSupportValuesV20, reg.ImdsSupport != types.ImdsSupportValuesV20:
		t.Errorf("boot %q tpm %q imds %q", reg.BootMode, reg.TpmSupport, reg.ImdsSupport)
	case aws.ToBool(reg.EnaSupport), aws.ToString(reg.SriovNetSupport) != "simple":
		t.Errorf("ena %v sriov %q", aws.ToBool(reg.EnaSupport), aws.ToString(reg.SriovNetSupport))
	case aws.ToString(reg.RootDeviceName) != "/dev/xvda", aws.ToString(bdm.DeviceName) != "/dev/xvda":
		t.Errorf("root device %q mapping %q", aws.ToString(reg.RootDeviceName), aws.ToString(bdm.DeviceName))
	case aws.ToString(bdm.Ebs.SnapshotId) != "snap-fake", bdm.Ebs.VolumeType != types.VolumeTypeGp3,
		!aws.ToBool(bdm.Ebs.DeleteOnTermination), aws.ToInt32(bdm.Ebs.VolumeSize) != 8:
		t.Errorf("mapping %+v", *bdm.Ebs)
	}
	if got := home.launch["ami-us-east-11"]; fmt.Sprint(got) != "[210987654321]" {
		t.Errorf("launch permission %v", got)
	}
	if got := home.volume["snap-fake"]; fmt.Sprint(got) != "[210987654321]" {
		t.Errorf("create volume permission %v", got)
	}
	if tagValue(home.tags["ami-us-east-11"], tagToken) != r.token || tagValue(home.tags["snap-fake"], "team") != "os" {
		t.Errorf("home tags %v", home.tags)
	}
	eu := w.ec2["eu-west-1"]
	if !strings.Contains(eu.callList(), "CopyImage us-east-1 ami-us-east-11") {
		t.Errorf("copy calls:\n%s", eu.callList())
	}
	if tagValue(eu.tags["ami-eu-west-11"], tagJob) != "6" || tagValue(eu.tags["snap-eu-west-11"], tagJob) != "6" {
		t.Errorf("copy tags %v", eu.tags)
	}
	if fmt.Sprint(eu.launch["ami-eu-west-11"]) != "[210987654321]" || fmt.Sprint(eu.volume["snap-eu-west-11"]) != "[210987654321]" {
		t.Errorf("copy not shared: %v %v", eu.launch, eu.volume)
	}
	if w.image.opened != 1 || w.image.closed != 1 {
		t.Errorf("disk opened %d closed %d times", w.image.opened, w.image.closed)
	}
	for _, want := range []string{"4 blocks sent", "2 zero blocks skipped"} {
		if !strings.Contains(w.log.String(), want) {
			t.Errorf("log lacks %q", want)
		}
	}
}

func TestFakeRetries(t *testing.T) {
	disk := testDisk(8, func(int) bool { return true })
	_, w := fakeRun(t, `{`+fakeBase+`}`, disk)
	// The SDK is not in the way here: these are failures as the SDK would
	// return them once its own attempts are spent.
	w.ebs.fail = func(n int, index int32) error {
		switch n {
		case 1:
			return &smithy.GenericAPIError{Code: "ThrottlingException", Message: "slow down", Fault: smithy.FaultClient}
		case 2:
			return &smithy.GenericAPIError{Code: "InternalServerException", Fault: smithy.FaultServer}
		case 3:
			return errStall // times out
		case 4:
			return errors.New("connection reset by peer")
		}
		return nil
	}
	bw := &blockWriter{api: w.ebs, snapshot: "snap-fake", workers: 2, timeout: 50 * time.Millisecond, attempts: 5, backoff: time.Millisecond}
	if _, err := w.ebs.StartSnapshot(context.Background(), &ebs.StartSnapshotInput{}); err != nil {
		t.Fatal(err)
	}
	stats, err := bw.writeBlocks(context.Background(), bytes.NewReader(disk), int64(len(disk)))
	if err != nil {
		t.Fatal(err)
	}
	if stats.Sent != 8 || stats.Retried != 4 {
		t.Errorf("stats %+v, want 8 sent, 4 retried", stats)
	}
	if got := w.ebs.disk(len(disk)); !bytes.Equal(got, disk) {
		t.Errorf("disk differs after retries")
	}
}

func TestFakeClientErrorNotRetried(t *testing.T) {
	disk := testDisk(4, func(int) bool { return true })
	r, w := fakeRun(t, `{`+fakeBase+`}`, disk)
	w.ebs.fail = func(n int, index int32) error {
		if index == 2 {
			return &smithy.GenericAPIError{Code: "ValidationException", Message: "bad checksum", Fault: smithy.FaultClient}
		}
		return nil
	}
	_, err := r.publish(context.Background())
	if err == nil || !strings.Contains(err.Error(), "ValidationException") {
		t.Fatalf("error %v, want the validation error", err)
	}
	if w.ebs.puts > 4+1 {
		t.Errorf("%d puts: the client error was retried", w.ebs.puts)
	}
	home := w.ec2["us-east-1"]
	if !strings.Contains(home.callList(), "DeleteSnapshot snap-fake") {
		t.Errorf("the unfinished snapshot was not deleted:\n%s", home.callList())
	}
	if w.image.opened != w.image.closed {
		t.Errorf("disk opened %d closed %d times", w.image.opened, w.image.closed)
	}
}

func TestFakeImport(t *testing.T) {
	disk := testDisk(3, func(i int) bool { return i != 1 })
	for _, c := range []struct {
		name   string
		states []string
		fail   string
	}{
		{"Completed", []string{"pending", "active", "completed"}, ""},
		{"Deleted", []string{"active", "deleting", "deleted"}, "Disk validation failed"},
		{"Error", []string{"active", "error"}, "ended error"},
	} {
		t.Run(c.name, func(t *testing.T) {
			r, w := fakeRun(t, `{`+fakeBase+`,"method":"import","s3_bucket":"my-images"}`, disk)
			home := w.ec2["us-east-1"]
			home.importStates = c.states
			res, err := r.publish(context.Background())
			t.Logf("log:\n%s", w.log.String())
			if len(w.s3.objects) > 0 || len(w.s3.uploads) > 0 {
				t.Errorf("left in S3: objects %v, uploads %v", w.s3.objects, w.s3.uploads)
			}
			if !bytes.Equal(w.s3.completed, disk) {
				t.Errorf("the object uploaded is not the disk (%d bytes)", len(w.s3.completed))
			}
			if !strings.Contains(home.callList(), "ImportSnapshot RAW my-images") {
				t.Errorf("calls:\n%s", home.callList())
			}
			if c.fail == "" {
				if err != nil || res != "ami-us-east-11" {
					t.Fatalf("result %q, error %v", res, err)
				}
				if aws.ToString(home.reg.BlockDeviceMappings[0].Ebs.SnapshotId) != "snap-imported" {
					t.Errorf("registered from %q", aws.ToString(home.reg.BlockDeviceMappings[0].Ebs.SnapshotId))
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), c.fail) {
				t.Fatalf("error %v, want %q", err, c.fail)
			}
			if home.reg != nil {
				t.Errorf("an image was registered after a failed import")
			}
			if !strings.Contains(home.callList(), "CancelImportTask import-snap-1") {
				t.Errorf("import task not cancelled:\n%s", home.callList())
			}
		})
	}
}

func TestFakeCancel(t *testing.T) {
	disk := testDisk(64, func(int) bool { return true })
	r, w := fakeRun(t, `{`+fakeBase+`}`, disk)
	ctx, cancel := context.WithCancel(context.Background())
	w.ebs.fail = func(n int, index int32) error {
		if n == 10 {
			cancel()
		}
		if n >= 10 {
			return errStall
		}
		return nil
	}
	_, err := r.publish(ctx)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("error %v, want context.Canceled", err)
	}
	if !strings.Contains(w.ec2["us-east-1"].callList(), "DeleteSnapshot snap-fake") {
		t.Errorf("snapshot not deleted after cancel")
	}
	if w.ebs.complete != nil {
		t.Errorf("snapshot completed after cancel")
	}
	if w.image.opened != w.image.closed {
		t.Errorf("disk opened %d closed %d times", w.image.opened, w.image.closed)
	}
}

func TestFakeExistingName(t *testing.T) {
	disk := testDisk(2, func(int) bool { return true })
	r, w := fakeRun(t, `{`+fakeBase+`,"copy_regions":["eu-west-1"]}`, disk)
	eu := w.ec2["eu-west-1"]
	eu.images["ami-other"] = &types.Image{ImageId: aws.String("ami-other"), Name: aws.String("appliance-1"), State: types.ImageStateAvailable, CreationDate: aws.String("2026-01-02T03:04:05Z")}
	_, err := r.publish(context.Background())
	if err == nil || !strings.Contains(err.Error(), "ami-other") || !strings.Contains(err.Error(), "eu-west-1") {
		t.Fatalf("error %v, want a conflict naming ami-other in eu-west-1", err)
	}
	if w.ebs.start != nil {
		t.Errorf("a snapshot was started although the name is taken")
	}
}

func TestBlockWriterMemoryBound(t *testing.T) {
	// A slow endpoint must not make the reader run ahead and buffer the
	// disk: at each request, blocks read minus requests started stays
	// within the buffer pool (workers+2).
	const workers = 4
	disk := testDisk(64, func(int) bool { return true })
	e := &fakeEBS{blocks: map[int32][]byte{}}
	r := &countingReader{r: bytes.NewReader(disk)}
	var mu sync.Mutex
	inflight, peak, ahead := 0, 0, int64(0)
	e.fail = func(n int, index int32) error {
		mu.Lock()
		inflight++
		peak = max(peak, inflight)
		ahead = max(ahead, r.read.Load()/blockSize-int64(n))
		mu.Unlock()
		time.Sleep(time.Millisecond)
		mu.Lock()
		inflight--
		mu.Unlock()
		return nil
	}
	bw := &blockWriter{api: e, snapshot: "snap-fake", workers: workers, timeout: time.Minute, attempts: 1, backoff: time.Millisecond}
	stats, err := bw.writeBlocks(context.Background(), r, int64(len(disk)))
	if err != nil {
		t.Fatal(err)
	}
	if stats.Sent != 64 {
		t.Errorf("%d blocks sent", stats.Sent)
	}
	if peak > workers {
		t.Errorf("%d requests in flight, want at most %d", peak, workers)
	}
	if ahead > workers+2 {
		t.Errorf("reader ran %d blocks ahead of the requests, want at most %d", ahead, workers+2)
	}
}

type countingReader struct {
	r    io.Reader
	read atomic.Int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.read.Add(int64(n))
	return n, err
}

// fakeS3 keeps multipart uploads and objects in memory.
type fakeS3 struct {
	mu        sync.Mutex
	uploads   map[string]map[int32][]byte
	objects   map[string][]byte
	completed []byte
}

func newFakeS3() *fakeS3 {
	return &fakeS3{uploads: map[string]map[int32][]byte{}, objects: map[string][]byte{}}
}

func (f *fakeS3) CreateMultipartUpload(_ context.Context, in *s3.CreateMultipartUploadInput, _ ...func(*s3.Options)) (*s3.CreateMultipartUploadOutput, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.uploads["up-1"] = map[int32][]byte{}
	return &s3.CreateMultipartUploadOutput{UploadId: aws.String("up-1"), Key: in.Key}, nil
}

func (f *fakeS3) UploadPart(_ context.Context, in *s3.UploadPartInput, _ ...func(*s3.Options)) (*s3.UploadPartOutput, error) {
	b, err := io.ReadAll(in.Body)
	if err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.uploads[aws.ToString(in.UploadId)][aws.ToInt32(in.PartNumber)] = b
	return &s3.UploadPartOutput{ETag: aws.String(fmt.Sprintf(`"%d"`, aws.ToInt32(in.PartNumber)))}, nil
}

func (f *fakeS3) CompleteMultipartUpload(_ context.Context, in *s3.CompleteMultipartUploadInput, _ ...func(*s3.Options)) (*s3.CompleteMultipartUploadOutput, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	parts := f.uploads[aws.ToString(in.UploadId)]
	var all []byte
	for i, p := range in.MultipartUpload.Parts {
		if aws.ToInt32(p.PartNumber) != int32(i+1) || aws.ToString(p.ETag) != fmt.Sprintf(`"%d"`, i+1) {
			return nil, fmt.Errorf("part %d: number %d etag %s", i+1, aws.ToInt32(p.PartNumber), aws.ToString(p.ETag))
		}
		all = append(all, parts[int32(i+1)]...)
	}
	delete(f.uploads, aws.ToString(in.UploadId))
	f.objects[aws.ToString(in.Key)] = all
	f.completed = all
	return &s3.CompleteMultipartUploadOutput{}, nil
}

func (f *fakeS3) AbortMultipartUpload(_ context.Context, in *s3.AbortMultipartUploadInput, _ ...func(*s3.Options)) (*s3.AbortMultipartUploadOutput, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.uploads, aws.ToString(in.UploadId))
	return &s3.AbortMultipartUploadOutput{}, nil
}

// ListParts answers 404 NoSuchUpload for an upload that is not open, as S3.
func (f *fakeS3) ListParts(_ context.Context, in *s3.ListPartsInput, _ ...func(*s3.Options)) (*s3.ListPartsOutput, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.uploads[aws.ToString(in.UploadId)]; ok {
		return &s3.ListPartsOutput{}, nil
	}
	return nil, &awshttp.ResponseError{ResponseError: &smithyhttp.ResponseError{
		Response: &smithyhttp.Response{Response: &http.Response{StatusCode: 404}},
		Err:      errors.New("NoSuchUpload"),
	}}
}

func (f *fakeS3) DeleteObject(_ context.Context, in *s3.DeleteObjectInput, _ ...func(*s3.Options)) (*s3.DeleteObjectOutput, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.objects, aws.ToString(in.Key))
	return &s3.DeleteObjectOutput{}, nil
}

// fileImage is a raw disk file, as image.Open would give for ".raw".
type fileImage struct{ path string }

func (f fileImage) Path() string   { return f.path }
func (f fileImage) Format() string { return "raw" }
func (f fileImage) DiskSize(context.Context) (int64, error) {
	fi, err := os.Stat(f.path)
	if err != nil {
		return 0, err
	}
	return fi.Size(), nil
}
func (f fileImage) OpenDisk(context.Context) (io.ReadCloser, error) { return os.Open(f.path) }

func TestSparseRaw(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sparse.raw")
	file, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	size := int64(40*blockSize + 4096)
	if err := file.Truncate(size); err != nil {
		t.Fatal(err)
	}
	for _, off := range []int64{2*blockSize + 100, 17*blockSize + blockSize - 1, 30 * blockSize, 40 * blockSize} {
		if _, err := file.WriteAt([]byte("data"), off); err != nil {
			t.Fatal(err)
		}
	}
	// an allocated block of zeros
	if _, err := file.WriteAt(make([]byte, blockSize), 25*blockSize); err != nil {
		t.Fatal(err)
	}
	file.Close()
	disk, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if image.OpenSparse(path, size) == nil {
		t.Skip("this file system does not report holes (SEEK_DATA)") // e.g. some overlay set-ups
	}
	r, w := fakeRun(t, `{`+fakeBase+`}`, nil)
	r.img = fileImage{path}
	if _, err := r.publish(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Logf("log:\n%s", w.log.String())
	if !strings.Contains(w.log.String(), "sparse file") {
		t.Errorf("the sparse path was not taken")
	}
	var idx []int
	for i := range w.ebs.blocks {
		idx = append(idx, int(i))
	}
	sort.Ints(idx)
	if fmt.Sprint(idx) != "[2 17 18 30 40]" {
		t.Errorf("blocks sent %v, want [2 17 18 30 40]", idx)
	}
	if got := w.ebs.disk(len(disk)); !bytes.Equal(got, disk) {
		t.Errorf("blocks do not reassemble the disk")
	}
	if len(w.ebs.bad) > 0 {
		t.Errorf("bad blocks: %v", w.ebs.bad)
	}
	if got := aws.ToInt32(w.ebs.complete.ChangedBlocksCount); got != 5 {
		t.Errorf("ChangedBlocksCount %d", got)
	}
	if !strings.Contains(w.log.String(), "36 zero blocks skipped") {
		t.Errorf("log does not count 36 skipped blocks")
	}
}

func TestFakeStaleClientToken(t *testing.T) {
	disk := testDisk(2, func(int) bool { return true })
	r, w := fakeRun(t, `{`+fakeBase+`}`, disk)
	w.ebs.staleToken = "cloudupload-" + r.token
	if _, err := r.publish(context.Background()); err != nil {
		t.Fatal(err)
	}
	if len(w.ebs.starts) != 2 || w.ebs.starts[1] == w.ebs.starts[0] || !strings.HasPrefix(w.ebs.starts[1], w.ebs.starts[0]) {
		t.Errorf("StartSnapshot tokens %q: want a fresh one after the stale snapshot", w.ebs.starts)
	}
	if len(w.ebs.blocks) != 2 {
		t.Errorf("%d blocks written to the new snapshot", len(w.ebs.blocks))
	}
}
