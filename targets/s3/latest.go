package s3

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/smithy-go"

	"github.com/cloudupload/cloudupload/targets"
)

// pointerAPI is the part of the S3 client that moves latest pointers.
type pointerAPI interface {
	HeadObject(context.Context, *s3.HeadObjectInput, ...func(*s3.Options)) (*s3.HeadObjectOutput, error)
	PutObject(context.Context, *s3.PutObjectInput, ...func(*s3.Options)) (*s3.PutObjectOutput, error)
}

// metaOrder (x-amz-meta-cloudupload-order) on a pointer is when the upload
// it names started, as fixed-width UTC text, so later sorts after.
const (
	metaOrder   = "cloudupload-order"
	orderLayout = "20060102T150405.000000000Z"
	maxRaces    = 20
)

// pointer is one latest pointer to move.
type pointer struct {
	bucket, key string    // where the pointer lives
	target      string    // the key it names
	started     time.Time // when the named upload started: its place in the order
	job         string
	public      bool
}

// movePointer makes p.key name p.target unless it already names an upload
// that started later: pointers only move forward. Writes are conditional
// (If-None-Match: * when the pointer is new, If-Match: <etag> otherwise), so
// concurrent jobs cannot move it backwards; a lost race is retried. It
// reports whether the pointer moved.
func movePointer(ctx context.Context, api pointerAPI, log *targets.Log, p pointer) (bool, error) {
	order := p.started.UTC().Format(orderLayout)
	where := fmt.Sprintf("s3://%s/%s", p.bucket, p.key)
	for range maxRaces {
		in := &s3.PutObjectInput{
			Bucket: &p.bucket, Key: &p.key,
			Body:                    strings.NewReader(p.target + "\n"),
			ContentType:             aws.String("text/plain; charset=utf-8"),
			CacheControl:            aws.String("no-cache"),
			WebsiteRedirectLocation: aws.String((&url.URL{Path: "/" + p.target}).EscapedPath()),
			Metadata:                map[string]string{metaOrder: order, metaJob: p.job},
		}
		if p.public {
			in.ACL = types.ObjectCannedACLPublicRead
		}
		head, err := api.HeadObject(ctx, &s3.HeadObjectInput{Bucket: &p.bucket, Key: &p.key})
		switch {
		case isStatus(err, 404):
			in.IfNoneMatch = aws.String("*")
		case err != nil:
			return false, s3Error("read "+where, err)
		default:
			if cur := head.Metadata[metaOrder]; cur > order {
				log.Printf("%s stays: it names a newer upload (started %s)", where, cur)
				return false, nil
			}
			in.IfMatch = head.ETag
		}
		_, err = api.PutObject(ctx, in)
		if err == nil {
			log.Printf("%s now names %s", where, p.target)
			return true, nil
		}
		if !lostRace(err) {
			return false, s3Error("write "+where, err)
		}
	}
	return false, fmt.Errorf("write %s: more than %d concurrent updates in a row", where, maxRaces)
}

// lostRace tells whether a conditional write failed because another writer
// changed the object first.
func lostRace(err error) bool {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		switch ae.ErrorCode() {
		case "PreconditionFailed", "ConditionalRequestConflict":
			return true
		}
	}
	return isStatus(err, 412) || isStatus(err, 409)
}
