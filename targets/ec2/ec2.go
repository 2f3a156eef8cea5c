package ec2

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/ratelimit"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	"github.com/aws/aws-sdk-go-v2/service/ebs"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/smithy-go"

	"github.com/cloudupload/cloudupload"

	"github.com/cloudupload/cloudupload/internal/lazyre"
	"github.com/cloudupload/cloudupload/targets"
	"github.com/cloudupload/cloudupload/targets/awsauth"
)

// Defaults of the upload engine.
const (
	defaultWorkers  = 32              // parallel PutSnapshotBlock requests
	requestTimeout  = 2 * time.Minute // one block, SDK retries included
	blockAttempts   = 5               // own attempts per block on top of the SDK's
	defaultPoll     = 5 * time.Second // waiting for snapshots, images, imports
	cleanupTimeout  = 2 * time.Minute // removing what a failed job created
	snapshotTimeout = 60              // minutes without a block before AWS cancels the snapshot
)

// Target publishes disk images as AMIs. The zero value is not usable; call
// New.
type Target struct {
	workers int
	poll    time.Duration
	backoff time.Duration // first pause of the own block retries
}

// New returns the ec2 target.
func New() targets.Target {
	return &Target{workers: defaultWorkers, poll: defaultPoll, backoff: time.Second}
}

// Name implements targets.Target.
func (t *Target) Name() string { return "ec2" }

// Check implements targets.Target: it validates the target data and the
// job's architecture without any network call.
func (t *Target) Check(job targets.Job, raw []byte, getenv func(string) string) error {
	d, err := parseData(raw)
	if err != nil {
		return err
	}
	arch, err := archOf(job)
	if err != nil {
		return err
	}
	return checkBootArch(d, arch)
}

// checkBootArch rejects what cannot boot: arm64 instances start only with
// UEFI.
func checkBootArch(d *data, arch string) error {
	if arch == "arm64" && d.BootMode == "legacy-bios" {
		return invalid("boot_mode legacy-bios cannot start an aarch64 image (arm64 instances boot with UEFI only)")
	}
	return nil
}

// Upload implements targets.Target.
func (t *Target) Upload(ctx context.Context, req targets.Request) (string, error) {
	d, err := parseData(req.Data)
	if err != nil {
		return "", err
	}
	arch, err := archOf(req.Job)
	if err != nil {
		return "", err
	}
	if err := checkBootArch(d, arch); err != nil {
		return "", err
	}
	getenv := req.Getenv
	if getenv == nil {
		getenv = os.Getenv
	}
	workers := t.workers
	if v := getenv("CLOUDUPLOAD_EC2_WORKERS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 256 {
			return "", fmt.Errorf("CLOUDUPLOAD_EC2_WORKERS=%q is not a number from 1 to 256", v)
		}
		workers = n
	}
	cfg, err := awsauth.Config(ctx, d.Region, awsauth.Role{
		ARN: d.ARN, ExternalID: d.ExternalID, Session: "cloudupload-" + req.Job.ID,
	}, awsauth.Options{MaxConns: workers, Logf: req.Log.Printf})
	if err != nil {
		return "", err
	}
	req.Log.Printf("ec2: publishing %s as AMI %q in %s as role %s, session %s (method %s, arch %s)",
		req.Job.Filename, d.AMIName, d.Region, d.ARN, awsauth.SessionName("cloudupload-"+req.Job.ID), d.Method, arch)
	r := t.newRun(req, d, arch)
	r.workers = workers
	r.ebs = newEBSClient(cfg)
	ec2Opts := func(o *ec2.Options) {
		o.Retryer = retry.NewStandard(func(o *retry.StandardOptions) { o.MaxAttempts = 6 })
	}
	r.ec2 = ec2.NewFromConfig(cfg, ec2Opts)
	var mu sync.Mutex
	perRegion := map[string]ec2API{}
	r.ec2In = func(region string) ec2API {
		mu.Lock()
		defer mu.Unlock()
		if perRegion[region] == nil {
			perRegion[region] = ec2.NewFromConfig(cfg, ec2Opts, func(o *ec2.Options) { o.Region = region })
		}
		return perRegion[region]
	}
	pathStyle := cfg.BaseEndpoint != nil || getenv("AWS_ENDPOINT_URL_S3") != ""
	r.s3 = s3.NewFromConfig(cfg, func(o *s3.Options) { o.UsePathStyle = pathStyle })
	res, err := r.publish(ctx)
	if err != nil {
		if e := assumeRoleError(err, d); e != nil {
			req.Log.Printf("%v", tidy(err)) // the whole chain, for whoever debugs it
			return "", e
		}
	}
	return res, tidy(err)
}

// assumeRoleError says plainly that the user's role could not be assumed,
// the commonest misconfiguration, when that is why err happened.
func assumeRoleError(err error, d *data) error {
	for e := err; e != nil; e = errors.Unwrap(e) {
		oe, ok := e.(*smithy.OperationError)
		if !ok || oe.ServiceID != "STS" {
			continue
		}
		why := "no answer"
		var ae smithy.APIError
		if errors.As(oe.Err, &ae) {
			why = ae.ErrorCode() + ": " + ae.ErrorMessage()
		} else if oe.Err != nil {
			why = oe.Err.Error()
		}
		return &cloudupload.Error{Code: cloudupload.EINVALID, Message: fmt.Sprintf(
			"cannot assume role %s (check arn, external_id and the role's trust policy): %s", d.ARN, why)}
	}
	return nil
}

// sdkNoise matches how the SDK spells a failed call, to say it shorter.
var sdkNoise = lazyre.New(`operation error (\w+): (\w+), (?:exceeded maximum number of attempts, (\d+), )?https response error StatusCode: (\d+), RequestID: ([^,]*), (?:api error )?`)

// tidy shortens the SDK's error text for the job's details ("EC2
// RegisterImage: HTTP 400, request 1234: InvalidParameterValue: …")
// while keeping the error chain for errors.Is/As.
func tidy(err error) error {
	if err == nil {
		return nil
	}
	msg := sdkNoise.ReplaceAllStringFunc(err.Error(), func(m string) string {
		g := sdkNoise.FindStringSubmatch(m)
		s := g[1] + " " + g[2] + ": HTTP " + g[4]
		if g[5] != "" {
			s += ", request " + g[5]
		}
		if g[3] != "" {
			s += ", after " + g[3] + " attempts"
		}
		return s + ": "
	})
	if msg == err.Error() {
		return err
	}
	return &targets.ShortError{Msg: msg, Err: err}
}

func (t *Target) newRun(req targets.Request, d *data, arch string) *run {
	log := req.Log
	if log == nil {
		log = targets.NewLog(discard{})
	}
	return &run{
		d: d, job: req.Job, img: req.Image, log: log, arch: arch,
		token:   jobToken(req.Job, d, req.Image),
		workers: t.workers, poll: t.poll, backoff: t.backoff,
	}
}

// jobToken identifies one job's publication of one image: the StartSnapshot
// and CopyImage client tokens derive from it, and the cloudupload:token tag
// carries it so a rerun of the same job recognises its own AMI.
func jobToken(job targets.Job, d *data, img targets.Image) string {
	h := sha256.New()
	fmt.Fprintf(h, "%q %q %q %q %q %q %q %q %q\n", job.ID, job.User, job.Project, job.Repository,
		job.Arch, job.Package, job.Filename, d.Region, d.AMIName)
	if img != nil {
		if fi, err := os.Stat(img.Path()); err == nil {
			fmt.Fprintf(h, "%d %d\n", fi.Size(), fi.ModTime().UnixNano())
		}
	}
	return hex.EncodeToString(h.Sum(nil))[:32]
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

// newEBSClient is the EBS client of the upload: the SDK retries throttling,
// 5xx and transport errors, without a client-side retry quota (throttling
// is expected under load and must not make the upload give up).
func newEBSClient(cfg aws.Config) *ebs.Client {
	return ebs.NewFromConfig(cfg, func(o *ebs.Options) {
		o.Retryer = retry.NewStandard(func(o *retry.StandardOptions) {
			o.MaxAttempts = 6
			o.MaxBackoff = 20 * time.Second
			o.RateLimiter = ratelimit.None
		})
	})
}
