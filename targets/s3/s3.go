package s3

import (
	"context"
	"encoding/hex"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/cloudupload/cloudupload/targets"
	"github.com/cloudupload/cloudupload/targets/awsauth"
)

// New returns the s3 target.
func New() targets.Target { return target{} }

type target struct{}

func (target) Name() string { return "s3" }

// plan is a validated publication: the data and the keys it gives.
type plan struct {
	cfg         *config
	key, latest string
}

func makePlan(job targets.Job, data []byte, now time.Time) (*plan, error) {
	c, err := parseConfig(data)
	if err != nil {
		return nil, err
	}
	name := job.Filename
	if c.Decompress {
		var ok bool
		if name, ok = diskName(name); !ok {
			return nil, invalid("decompress: %q is not a disk image (raw, img, vhdfixed or qcow2, possibly compressed with xz, gz or zst)", clip(job.Filename))
		}
	}
	key, latest, err := keys(c.Prefix, vars{job: job, filename: name, date: now})
	if err != nil {
		return nil, err
	}
	if c.Latest && latest == key {
		return nil, invalid("latest: the pointer %q would be the object itself; put {filename}, {job} or {date} in prefix", clip(key))
	}
	return &plan{cfg: c, key: key, latest: latest}, nil
}

// Check validates the data and the key it gives. The daemon validates before
// the job has an id or a file name (and a job started by hand may lack other
// fields): empty job fields stand in as "x" here, and Upload refuses to
// render a key with an empty one.
func (target) Check(job targets.Job, data []byte, getenv func(string) string) error {
	for _, f := range []*string{&job.ID, &job.Project, &job.Repository, &job.Arch, &job.Package, &job.Filename} {
		if *f == "" {
			*f = "x"
		}
	}
	_, err := makePlan(job, data, time.Now())
	return err
}

func (target) Upload(ctx context.Context, req targets.Request) (string, error) {
	started := time.Now()
	job := req.Job
	if job.Filename == "" {
		job.Filename = filepath.Base(req.Image.Path())
	}
	p, err := makePlan(job, req.Data, started)
	if err != nil {
		return "", err
	}
	getenv := req.Getenv
	if getenv == nil {
		getenv = os.Getenv
	}
	cfg, err := awsauth.Config(ctx, p.cfg.Region, awsauth.Role{
		ARN: p.cfg.ARN, ExternalID: p.cfg.ExternalID, Session: "cloudupload-" + job.ID,
	}, awsauth.Options{MaxConns: parallel, Logf: req.Log.Printf})
	if err != nil {
		return "", err
	}
	digest, err := targets.ImageSHA256(getenv)
	if err != nil {
		return "", err
	}
	pub := &publisher{api: NewClient(cfg, getenv), log: req.Log, digest: digest}
	return pub.publish(ctx, req.Image, job, p, started)
}

// client is everything publish needs from S3.
type client interface {
	uploadAPI
	pointerAPI
}

// NewClient makes an S3 client from cfg, with path-style addressing when an
// endpoint is configured (AWS_ENDPOINT_URL, AWS_ENDPOINT_URL_S3): local
// S3-compatible servers need it. It sends no "Expect: 100-continue": that
// costs a round trip per part, and a whole second per part against servers
// that never answer it (Go's ExpectContinueTimeout), for the one benefit of
// not sending a part S3 would refuse.
func NewClient(cfg aws.Config, getenv func(string) string) *s3.Client {
	return s3.NewFromConfig(cfg, func(o *s3.Options) {
		o.UsePathStyle = getenv("AWS_ENDPOINT_URL_S3") != "" || getenv("AWS_ENDPOINT_URL") != ""
		o.ContinueHeaderThresholdBytes = -1
		o.RetryMaxAttempts = 8 // S3 answers 500 and 503 SlowDown now and then; multi-hour uploads ride them out
	})
}

// publisher publishes images with one S3 client.
type publisher struct {
	api      client
	log      *targets.Log
	parallel int   // parts in flight; 0 = the default
	partSize int64 // fixed part size for tests; 0 = chosen from the size
	// digest is the SHA-256 of the image file as received, from the
	// daemon (targets.ImageSHA256Env); nil when not known.
	digest []byte
}

// publish stores the image, then moves the latest pointer if asked. A
// failure after the object was stored deletes it again.
func (pub *publisher) publish(ctx context.Context, img targets.Image, job targets.Job, p *plan, started time.Time) (string, error) {
	c, api, log := p.cfg, pub.api, pub.log
	o := &object{
		bucket: c.Bucket, key: p.key,
		storageClass: c.StorageClass,
		tags:         c.Tags,
		public:       c.Public,
		owner:        job.ID + " " + started.UTC().Format(time.RFC3339Nano),
		contentType:  contentType(job.Filename),
	}
	if c.Decompress && img.Format() == "" {
		return "", invalid("decompress: %q is not a disk image (raw, vhdfixed or qcow2, possibly compressed)", clip(job.Filename))
	}
	if c.Decompress {
		// The parts are read from the decompressor once, hashed on the
		// way. Only a disk whose size its file does not tell (gzip, zstd
		// without frame sizes) is decompressed once more, before, to
		// learn the size the parts are cut by.
		o.open, o.contentType = img.OpenDisk, "application/octet-stream"
		known := false
		if k, ok := img.(interface{ KnownDiskSize() (int64, bool) }); ok {
			o.size, known = k.KnownDiskSize()
		}
		if !known {
			done := log.Step("measure the disk (%s stores no size)", img.Format())
			n, err := img.DiskSize(ctx)
			if err != nil {
				return "", err
			}
			o.size = n
			done()
		}
	} else {
		f, err := os.Open(img.Path())
		if err != nil {
			return "", fmt.Errorf("open image: %w", err)
		}
		defer f.Close()
		fi, err := f.Stat()
		if err != nil {
			return "", fmt.Errorf("open image: %w", err)
		}
		o.size, o.file, o.want = fi.Size(), f, pub.digest
	}
	up := &uploader{api: api, log: log, parallel: pub.parallel, partSize: pub.partSize}
	sum, err := up.put(ctx, o)
	if err != nil {
		return "", err
	}
	url := fmt.Sprintf("s3://%s/%s", c.Bucket, p.key)
	log.Printf("stored %s (%s, sha256 %s)", url, targets.MiB(o.size), hex.EncodeToString(sum[:]))
	if c.Latest {
		_, err := movePointer(ctx, api, log, pointer{bucket: c.Bucket, key: p.latest, target: p.key, started: started, job: job.ID, public: c.Public})
		if err != nil {
			up.removeIfOurs(ctx, o)
			if ctx.Err() != nil {
				return "", fmt.Errorf("move latest pointer: %w", ctx.Err())
			}
			return "", err
		}
	}
	return url, nil
}

// tagging encodes tags as S3's x-amz-tagging header wants them: URL query
// form, with spaces as %20 (Encode writes them as "+", and a literal "+" as
// %2B, so every "+" it writes is a space).
func tagging(tags map[string]string) string {
	v := url.Values{}
	for k, val := range tags {
		v.Set(k, val)
	}
	return strings.ReplaceAll(v.Encode(), "+", "%20")
}

// contentType is the MIME type of a file as received.
func contentType(name string) string {
	switch {
	case strings.HasSuffix(name, ".xz"):
		return "application/x-xz"
	case strings.HasSuffix(name, ".gz"):
		return "application/gzip"
	case strings.HasSuffix(name, ".zst"):
		return "application/zstd"
	case strings.HasSuffix(name, ".txt"), strings.HasSuffix(name, ".sha256"), strings.HasSuffix(name, "SUMS"):
		return "text/plain; charset=utf-8"
	}
	return "application/octet-stream"
}
