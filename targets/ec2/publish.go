package ec2

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ebs"
	ebstypes "github.com/aws/aws-sdk-go-v2/service/ebs/types"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/smithy-go"

	"github.com/cloudupload/cloudupload"
	"github.com/cloudupload/cloudupload/targets"
	"github.com/cloudupload/cloudupload/uploader/image"
)

// run is one publication: the clients, the validated data and what has been
// created so far (to be removed if the job does not complete).
type run struct {
	d     *data
	job   targets.Job
	img   targets.Image
	log   *targets.Log
	arch  string
	token string

	ebs   ebsAPI
	ec2   ec2API
	ec2In func(region string) ec2API // clients for copy_regions
	s3    s3API

	workers int
	poll    time.Duration
	backoff time.Duration

	mu      sync.Mutex
	created []resource // in creation order
}

// resource is something the run created and removes on failure.
type resource struct {
	region string
	kind   string // "snapshot", "image", "import"
	id     string
}

func (r *run) record(region, kind, id string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.created = append(r.created, resource{region, kind, id})
}

func (r *run) client(region string) ec2API {
	if region == r.d.Region || r.ec2In == nil {
		return r.ec2
	}
	return r.ec2In(region)
}

// publish runs the whole job and returns the result line. On any failure,
// cancellation included, it removes what it created.
func (r *run) publish(ctx context.Context) (result string, err error) {
	defer func() {
		if err != nil {
			r.cleanup(ctx)
		}
	}()
	started := time.Now()
	size, err := r.img.DiskSize(ctx)
	if err != nil {
		return "", fmt.Errorf("disk size of %s: %w", r.job.Filename, err)
	}
	vol, err := r.d.volumeGiB(size)
	if err != nil {
		return "", err
	}

	// An AMI name is unique per account and region: look before uploading.
	home, err := r.existing(ctx, r.d.Region)
	if err != nil {
		return "", err
	}
	copies := map[string]*types.Image{}
	for _, region := range r.d.CopyRegions {
		if copies[region], err = r.existing(ctx, region); err != nil {
			return "", err
		}
	}

	var amiID, snapID string
	if home != nil {
		amiID, snapID = aws.ToString(home.ImageId), rootSnapshot(home)
		r.log.Printf("AMI %s named %q already exists from this job: reusing it", amiID, r.d.AMIName)
	} else {
		if r.d.Method == methodImport {
			snapID, err = r.importSnapshot(ctx, size)
		} else {
			snapID, err = r.ebsSnapshot(ctx, size, vol)
		}
		if err != nil {
			return "", err
		}
		if amiID, err = r.register(ctx, snapID, vol); err != nil {
			return "", err
		}
	}
	if err := r.waitImage(ctx, r.ec2, r.d.Region, amiID); err != nil {
		return "", err
	}
	if err := r.share(ctx, r.ec2, r.d.Region, amiID, snapID); err != nil {
		return "", err
	}
	results := []string{amiID}
	if len(r.d.CopyRegions) > 0 {
		ids, err := r.copyAll(ctx, amiID, copies)
		if err != nil {
			return "", err
		}
		results = []string{r.d.Region + ":" + amiID}
		for _, region := range r.d.CopyRegions {
			results = append(results, region+":"+ids[region])
		}
	}
	result = strings.Join(results, ",")
	r.log.Printf("published %s as %s in %s", r.job.Filename, result, targets.Round(time.Since(started)))
	return result, nil
}

// existing finds an image of ours named ami_name in region. It returns nil
// when there is none, the image when it carries this job's token (a rerun
// of the same job, which then succeeds idempotently), and an ECONFLICT
// error naming the image otherwise.
func (r *run) existing(ctx context.Context, region string) (*types.Image, error) {
	out, err := r.client(region).DescribeImages(ctx, &ec2.DescribeImagesInput{
		Owners:  []string{"self"},
		Filters: []types.Filter{{Name: aws.String("name"), Values: []string{r.d.AMIName}}},
	})
	if err != nil {
		return nil, fmt.Errorf("look up AMI name %q in %s: %w", r.d.AMIName, region, err)
	}
	for i := range out.Images {
		img := &out.Images[i]
		if aws.ToString(img.Name) != r.d.AMIName || img.State == types.ImageStateDeregistered {
			continue
		}
		if tagValue(img.Tags, tagToken) == r.token && img.State != types.ImageStateFailed {
			return img, nil
		}
		return nil, &cloudupload.Error{Code: cloudupload.ECONFLICT, Message: fmt.Sprintf(
			"ami_name %q is already used in %s by %s (created %s, state %s): choose another ami_name or deregister that image",
			r.d.AMIName, region, aws.ToString(img.ImageId), aws.ToString(img.CreationDate), img.State)}
	}
	return nil, nil
}

// tags are set on every snapshot and image the run creates.
func (r *run) tags() []types.Tag {
	var keys []string
	for k := range r.d.Tags {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var tags []types.Tag
	if _, ok := r.d.Tags["Name"]; !ok {
		tags = append(tags, types.Tag{Key: aws.String("Name"), Value: aws.String(r.d.AMIName)})
	}
	for _, k := range keys {
		tags = append(tags, types.Tag{Key: aws.String(k), Value: aws.String(r.d.Tags[k])})
	}
	return append(tags,
		types.Tag{Key: aws.String(tagJob), Value: aws.String(r.job.ID)},
		types.Tag{Key: aws.String(tagToken), Value: aws.String(r.token)},
		types.Tag{Key: aws.String(tagImage), Value: aws.String(r.job.Filename)},
	)
}

func (r *run) description() string {
	if r.d.Description != "" {
		return r.d.Description
	}
	desc := fmt.Sprintf("%s (cloudupload job %s)", r.job.Filename, r.job.ID)
	if len(desc) > maxDescription {
		desc = desc[:maxDescription]
	}
	return desc
}

// ebsSnapshot writes the disk into a new snapshot with the EBS direct APIs
// and waits until it is completed.
func (r *run) ebsSnapshot(ctx context.Context, size, vol int64) (string, error) {
	var ebsTags []ebstypes.Tag
	for _, t := range r.tags() {
		ebsTags = append(ebsTags, ebstypes.Tag{Key: t.Key, Value: t.Value})
	}
	done := r.log.Step("start snapshot of %d GiB", vol)
	start := func(token string) (*ebs.StartSnapshotOutput, error) {
		return r.ebs.StartSnapshot(ctx, &ebs.StartSnapshotInput{
			VolumeSize:  aws.Int64(vol),
			ClientToken: aws.String(token),
			Description: aws.String(r.description()),
			Tags:        ebsTags,
			Timeout:     aws.Int32(snapshotTimeout),
		})
	}
	out, err := start("cloudupload-" + r.token)
	if err == nil && out.Status != "" && out.Status != ebstypes.StatusPending {
		// The token's snapshot is from an earlier run of this job that
		// ended; AWS answers idempotently with it. Start afresh.
		r.log.Printf("snapshot %s of an earlier run is %s: starting a new one", aws.ToString(out.SnapshotId), out.Status)
		out, err = start(fmt.Sprintf("cloudupload-%s-%d", r.token, time.Now().UnixNano()))
	}
	if err != nil {
		return "", fmt.Errorf("start snapshot: %w", err)
	}
	snap := aws.ToString(out.SnapshotId)
	if snap == "" {
		return "", fmt.Errorf("start snapshot: no snapshot id in the answer")
	}
	r.record(r.d.Region, "snapshot", snap)
	done()

	var disk io.ReadCloser
	if r.img.Format() == "raw" {
		// A raw file is the disk: when it is sparse, its holes need not be read.
		if sf := image.OpenSparse(r.img.Path(), size); sf != nil {
			r.log.Printf("%s is a sparse file: reading only its data", r.job.Filename)
			disk = sf
		}
	}
	if disk == nil {
		if disk, err = r.img.OpenDisk(ctx); err != nil {
			return "", fmt.Errorf("open disk of %s: %w", r.job.Filename, err)
		}
	}
	defer disk.Close()
	r.log.Printf("writing %s of disk to snapshot %s with %d parallel requests", targets.MiB(size), snap, r.workers)
	progress := r.log.Progress("snapshot "+snap, size)
	w := &blockWriter{api: r.ebs, snapshot: snap, workers: r.workers, timeout: requestTimeout,
		attempts: blockAttempts, backoff: r.backoff, progress: progress}
	stats, err := w.writeBlocks(ctx, disk, size)
	if err != nil {
		return "", fmt.Errorf("write snapshot %s: %w", snap, err)
	}
	progress.Done()
	r.log.Printf("snapshot %s: %d blocks sent (%s), %d zero blocks skipped, %d block requests retried",
		snap, stats.Sent, targets.MiB(stats.Sent*blockSize), stats.Skipped, stats.Retried)

	done = r.log.Step("complete snapshot %s", snap)
	if _, err := r.ebs.CompleteSnapshot(ctx, &ebs.CompleteSnapshotInput{
		SnapshotId:         aws.String(snap),
		ChangedBlocksCount: aws.Int32(int32(stats.Sent)),
	}); err != nil {
		return "", fmt.Errorf("complete snapshot %s: %w", snap, err)
	}
	if err := r.waitSnapshot(ctx, snap); err != nil {
		return "", err
	}
	done()
	return snap, nil
}

func (r *run) waitSnapshot(ctx context.Context, snap string) error {
	return r.wait(ctx, "snapshot "+snap, func() (bool, error) {
		out, err := r.ec2.DescribeSnapshots(ctx, &ec2.DescribeSnapshotsInput{SnapshotIds: []string{snap}})
		if isNotFound(err) {
			return false, nil // eventual consistency right after creation
		} else if err != nil {
			return false, err
		}
		for _, s := range out.Snapshots {
			switch s.State {
			case types.SnapshotStateCompleted:
				return true, nil
			case types.SnapshotStateError:
				return false, fmt.Errorf("snapshot %s failed: %s", snap, aws.ToString(s.StateMessage))
			}
		}
		return false, nil
	})
}

// register registers the AMI and tags it at once, so a killed run's image
// can be recognised.
func (r *run) register(ctx context.Context, snap string, vol int64) (string, error) {
	defer r.log.Step("register AMI %q from %s", r.d.AMIName, snap)()
	in := &ec2.RegisterImageInput{
		Name:               aws.String(r.d.AMIName),
		Description:        aws.String(r.description()),
		Architecture:       types.ArchitectureValues(r.arch),
		VirtualizationType: aws.String("hvm"),
		RootDeviceName:     aws.String("/dev/xvda"),
		BlockDeviceMappings: []types.BlockDeviceMapping{{
			DeviceName: aws.String("/dev/xvda"),
			Ebs: &types.EbsBlockDevice{
				SnapshotId:          aws.String(snap),
				VolumeSize:          aws.Int32(int32(vol)),
				VolumeType:          types.VolumeTypeGp3,
				DeleteOnTermination: aws.Bool(true),
			},
		}},
		EnaSupport: aws.Bool(r.d.ENA),
	}
	if r.d.SRIOV {
		in.SriovNetSupport = aws.String("simple")
	}
	if r.d.BootMode != "" {
		in.BootMode = types.BootModeValues(r.d.BootMode)
	}
	if r.d.IMDSv2 {
		in.ImdsSupport = types.ImdsSupportValuesV20
	}
	if r.d.TPM {
		in.TpmSupport = types.TpmSupportValuesV20
	}
	out, err := r.ec2.RegisterImage(ctx, in)
	if err != nil {
		return "", fmt.Errorf("register image %s: %w", r.d.AMIName, err)
	}
	ami := aws.ToString(out.ImageId)
	r.record(r.d.Region, "image", ami)
	if err := r.tag(ctx, r.ec2, ami, snap); err != nil {
		return "", err
	}
	return ami, nil
}

func (r *run) tag(ctx context.Context, api ec2API, ids ...string) error {
	var list []string
	for _, id := range ids {
		if id != "" {
			list = append(list, id)
		}
	}
	if _, err := api.CreateTags(ctx, &ec2.CreateTagsInput{Resources: list, Tags: r.tags()}); err != nil {
		return fmt.Errorf("tag %s: %w", strings.Join(list, ", "), err)
	}
	return nil
}

func (r *run) waitImage(ctx context.Context, api ec2API, region, ami string) error {
	defer r.log.Step("wait for AMI %s in %s to be available", ami, region)()
	return r.wait(ctx, "AMI "+ami, func() (bool, error) {
		out, err := api.DescribeImages(ctx, &ec2.DescribeImagesInput{ImageIds: []string{ami}})
		if isNotFound(err) {
			return false, nil
		} else if err != nil {
			return false, err
		}
		for _, img := range out.Images {
			switch img.State {
			case types.ImageStateAvailable:
				return true, nil
			case types.ImageStateFailed, types.ImageStateError, types.ImageStateInvalid, types.ImageStateDeregistered:
				reason := ""
				if img.StateReason != nil {
					reason = ": " + aws.ToString(img.StateReason.Message)
				}
				return false, fmt.Errorf("AMI %s in %s is %s%s", ami, region, img.State, reason)
			}
		}
		return false, nil
	})
}

// wait polls check until it reports done, fails, or ctx ends.
func (r *run) wait(ctx context.Context, what string, check func() (bool, error)) error {
	for {
		done, err := check()
		if err != nil {
			return fmt.Errorf("wait for %s: %w", what, err)
		}
		if done {
			return nil
		}
		select {
		case <-time.After(r.poll):
		case <-ctx.Done():
			return fmt.Errorf("wait for %s: %w", what, ctx.Err())
		}
	}
}

// share grants launch permission on the image and create-volume permission
// on its snapshot to share_accounts.
func (r *run) share(ctx context.Context, api ec2API, region, ami, snap string) error {
	if len(r.d.ShareAccounts) == 0 {
		return nil
	}
	defer r.log.Step("share %s in %s with %s", ami, region, strings.Join(r.d.ShareAccounts, ", "))()
	var perms []types.LaunchPermission
	for _, a := range r.d.ShareAccounts {
		perms = append(perms, types.LaunchPermission{UserId: aws.String(a)})
	}
	if _, err := api.ModifyImageAttribute(ctx, &ec2.ModifyImageAttributeInput{
		ImageId:          aws.String(ami),
		LaunchPermission: &types.LaunchPermissionModifications{Add: perms},
	}); err != nil {
		return fmt.Errorf("share image %s: %w", ami, err)
	}
	if snap == "" {
		return nil
	}
	if _, err := api.ModifySnapshotAttribute(ctx, &ec2.ModifySnapshotAttributeInput{
		SnapshotId:    aws.String(snap),
		Attribute:     types.SnapshotAttributeNameCreateVolumePermission,
		OperationType: types.OperationTypeAdd,
		UserIds:       r.d.ShareAccounts,
	}); err != nil {
		return fmt.Errorf("share snapshot %s: %w", snap, err)
	}
	return nil
}

// copyAll copies the image to every copy region in parallel (reusing this
// job's copies from an earlier run), waits for each, tags and shares it.
func (r *run) copyAll(ctx context.Context, ami string, existing map[string]*types.Image) (map[string]string, error) {
	ids := map[string]string{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	errs := make([]error, len(r.d.CopyRegions))
	for i, region := range r.d.CopyRegions {
		wg.Add(1)
		go func() {
			defer wg.Done()
			id, err := r.copyTo(ctx, ami, region, existing[region])
			errs[i] = err
			mu.Lock()
			ids[region] = id
			mu.Unlock()
		}()
	}
	wg.Wait()
	return ids, errors.Join(errs...)
}

func (r *run) copyTo(ctx context.Context, ami, region string, prev *types.Image) (string, error) {
	api := r.client(region)
	var id string
	if prev != nil {
		id = aws.ToString(prev.ImageId)
		r.log.Printf("copy %s of %s already exists from this job: reusing it", id, r.d.AMIName)
	} else {
		done := r.log.Step("copy %s to %s", ami, region)
		out, err := api.CopyImage(ctx, &ec2.CopyImageInput{
			Name:          aws.String(r.d.AMIName),
			Description:   aws.String(r.description()),
			SourceImageId: aws.String(ami),
			SourceRegion:  aws.String(r.d.Region),
			ClientToken:   aws.String("cloudupload-" + r.token + "-" + region),
		})
		if err != nil {
			return "", fmt.Errorf("copy %s to %s: %w", ami, region, err)
		}
		id = aws.ToString(out.ImageId)
		r.record(region, "image", id)
		if err := r.tag(ctx, api, id); err != nil {
			return "", err
		}
		done()
	}
	if err := r.waitImage(ctx, api, region, id); err != nil {
		return "", err
	}
	snap, err := r.imageSnapshot(ctx, api, id)
	if err != nil {
		return "", err
	}
	if snap != "" {
		if err := r.tag(ctx, api, snap); err != nil {
			return "", err
		}
	}
	if err := r.share(ctx, api, region, id, snap); err != nil {
		return "", err
	}
	return id, nil
}

// imageSnapshot returns the root snapshot of an image, "" if it has none.
func (r *run) imageSnapshot(ctx context.Context, api ec2API, ami string) (string, error) {
	out, err := api.DescribeImages(ctx, &ec2.DescribeImagesInput{ImageIds: []string{ami}})
	if err != nil {
		return "", fmt.Errorf("describe image %s: %w", ami, err)
	}
	for i := range out.Images {
		return rootSnapshot(&out.Images[i]), nil
	}
	return "", nil
}

func rootSnapshot(img *types.Image) string {
	for _, m := range img.BlockDeviceMappings {
		if m.Ebs != nil && m.Ebs.SnapshotId != nil && (img.RootDeviceName == nil || aws.ToString(m.DeviceName) == aws.ToString(img.RootDeviceName)) {
			return aws.ToString(m.Ebs.SnapshotId)
		}
	}
	for _, m := range img.BlockDeviceMappings {
		if m.Ebs != nil && m.Ebs.SnapshotId != nil {
			return aws.ToString(m.Ebs.SnapshotId)
		}
	}
	return ""
}

// cleanup removes what the run created, newest first, with a fresh context
// so that it also runs after a kill.
func (r *run) cleanup(parent context.Context) {
	r.mu.Lock()
	created := append([]resource(nil), r.created...)
	r.mu.Unlock()
	if len(created) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(parent), cleanupTimeout)
	defer cancel()
	defer r.log.Step("removing what this job created")()
	for i := len(created) - 1; i >= 0; i-- {
		res := created[i]
		api := r.client(res.region)
		var err error
		switch res.kind {
		case "image":
			// A copy's snapshot is created by AWS: find it before the image goes.
			var snap string
			if res.region != r.d.Region {
				snap, _ = r.imageSnapshot(ctx, api, res.id)
			}
			_, err = api.DeregisterImage(ctx, &ec2.DeregisterImageInput{ImageId: aws.String(res.id)})
			if isNotFound(err) {
				err = nil
			}
			if err == nil && snap != "" {
				err = r.deleteSnapshot(ctx, api, snap)
			}
		case "snapshot":
			err = r.deleteSnapshot(ctx, api, res.id)
		case "import":
			_, err = api.CancelImportTask(ctx, &ec2.CancelImportTaskInput{
				ImportTaskId: aws.String(res.id), CancelReason: aws.String("cloudupload job failed or was killed"),
			})
			if err != nil {
				// A finished task cannot be cancelled; its snapshot is removed separately.
				r.log.Printf("cancel import task %s: %v", res.id, err)
				err = nil
			}
		}
		if err != nil {
			r.log.Printf("could not remove %s %s in %s: %v (remove it by hand)", res.kind, res.id, res.region, err)
		} else {
			r.log.Printf("removed %s %s in %s", res.kind, res.id, res.region)
		}
	}
}

// deleteSnapshot deletes snap, retrying while an image being deregistered
// still holds it.
func (r *run) deleteSnapshot(ctx context.Context, api ec2API, snap string) error {
	for attempt := 0; ; attempt++ {
		_, err := api.DeleteSnapshot(ctx, &ec2.DeleteSnapshotInput{SnapshotId: aws.String(snap)})
		if err == nil || isNotFound(err) {
			return nil
		}
		var ae smithy.APIError
		if !errors.As(err, &ae) || ae.ErrorCode() != "InvalidSnapshot.InUse" || attempt >= 20 {
			return fmt.Errorf("delete snapshot %s: %w", snap, err)
		}
		select {
		case <-time.After(min(r.poll, 3*time.Second)):
		case <-ctx.Done():
			return fmt.Errorf("delete snapshot %s: %w", snap, err)
		}
	}
}

func isNotFound(err error) bool {
	var ae smithy.APIError
	if err == nil || !errors.As(err, &ae) {
		return false
	}
	code := ae.ErrorCode()
	return strings.HasSuffix(code, ".NotFound") || code == "ResourceNotFoundException"
}

func tagValue(tags []types.Tag, key string) string {
	for _, t := range tags {
		if aws.ToString(t.Key) == key {
			return aws.ToString(t.Value)
		}
	}
	return ""
}
