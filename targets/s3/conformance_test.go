package s3

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/cloudupload/cloudupload/targets"
	"github.com/cloudupload/cloudupload/targets/awstest"
	"github.com/cloudupload/cloudupload/targets/targettest"
)

// TestConformance runs the shared target suite through the whole target:
// target data, AssumeRole at moto's STS, then S3 at moto. It runs twice: the
// file as received, and with decompress (the disk).
func TestConformance(t *testing.T) {
	m := awstest.Start(t)
	m.Setenv(t)
	s := newServer("moto", m.URL, awstest.AccessKey, awstest.SecretKey)
	bucket := s.bucket(t)
	base := fmt.Sprintf(`{"arn":"arn:aws:iam::123456789012:role/obs","external_id":"obs-42","region":"us-east-1","bucket":%q,"latest":true,"tags":{"suite":"conformance"}`, bucket)
	invalid := []targettest.InvalidCase{
		{Data: []byte(`{}`), Field: "arn"},
		{Data: []byte(`{"arn":"arn:aws:iam::123456789012:role/obs","region":"us-east-1"}`), Field: "bucket"},
		{Data: []byte(`{"arn":"arn:aws:iam::123456789012:role/obs","region":"us-east-1","bucket":"Bad_Bucket"}`), Field: "bucket"},
		{Data: []byte(base + `,"prefix":"{nope}"}`), Field: "prefix"},
		{Data: []byte(base + `,"storage_class":"CHEAP"}`), Field: "storage_class"},
		{Data: []byte(base + `,"bogus":1}`), Field: "bogus"},
	}
	for _, disk := range []bool{false, true} {
		name, data := "AsReceived", base+"}"
		if disk {
			name, data = "Decompress", base+`,"decompress":true,"prefix":"disks/{job}/{filename}"}`
		}
		t.Run(name, func(t *testing.T) {
			targettest.Run(t, targettest.Harness{
				New:       func(t *testing.T) targets.Target { return New() },
				ValidData: func(t *testing.T) []byte { return []byte(data) },
				Invalid:   invalid,
				Getenv:    s.getenv,
				WantsDisk: disk,
				Secrets:   []string{awstest.SecretKey},
				Verify: func(t *testing.T, result string, want []byte) {
					key, ok := strings.CutPrefix(result, "s3://"+bucket+"/")
					if !ok {
						t.Fatalf("result %q is not in s3://%s/", result, bucket)
					}
					if disk && !strings.HasSuffix(key, ".raw") {
						t.Errorf("decompressed disk stored as %q, want a .raw name", key)
					}
					s.checkStored(t, bucket, key, want)
					pointer := key[:strings.LastIndexByte(key, '/')] + "/latest"
					if disk {
						pointer = "disks/latest"
					}
					out, err := s.api.GetObject(context.Background(), &s3.GetObjectInput{Bucket: &bucket, Key: &pointer})
					if err != nil {
						t.Fatalf("latest pointer: %v", err)
					}
					b, _ := io.ReadAll(out.Body)
					out.Body.Close()
					if !bytes.Equal(b, []byte(key+"\n")) {
						t.Errorf("latest pointer holds %q, want %q", b, key)
					}
				},
				Leftovers: func(t *testing.T) []string {
					_, uploads := s.leftovers(t, bucket)
					return uploads
				},
			})
		})
	}
}
