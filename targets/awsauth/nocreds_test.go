package awsauth

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/ec2"

	"github.com/cloudupload/cloudupload"
)

// noIdentity makes the environment one with no AWS identity: no keys, no
// shared files, and an instance metadata service (a recording fake on
// loopback) that refuses the IMDSv2 token and knows no role, as on a
// machine that is not an EC2 instance with a role. It returns the
// requests the fake saw.
func noIdentity(t *testing.T) func() []string {
	for _, k := range []string{"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE",
		"AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_CONTAINER_CREDENTIALS_FULL_URI", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
		"AWS_EC2_METADATA_DISABLED"} {
		t.Setenv(k, "")
	}
	dir := t.TempDir()
	t.Setenv("AWS_CONFIG_FILE", filepath.Join(dir, "config"))
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", filepath.Join(dir, "credentials"))
	var mu sync.Mutex
	var seen []string
	imds := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen = append(seen, r.Method+" "+r.URL.Path)
		mu.Unlock()
		http.NotFound(w, r)
	}))
	t.Cleanup(imds.Close)
	t.Setenv("AWS_EC2_METADATA_SERVICE_ENDPOINT", imds.URL)
	return func() []string {
		mu.Lock()
		defer mu.Unlock()
		return append([]string(nil), seen...)
	}
}

// TestNoCredentials: on a server with no AWS identity, Config says so (and
// not that the user's role is wrong) before any request is made, and the
// SDK's warnings reach Options.Logf in the caller's format instead of
// stderr in the SDK's.
func TestNoCredentials(t *testing.T) {
	seen := noIdentity(t)
	// Where AWS would be: nothing may reach it.
	var reached []string
	aws := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		reached = append(reached, r.URL.String())
		http.Error(w, "no", http.StatusForbidden)
	}))
	defer aws.Close()
	t.Setenv("AWS_ENDPOINT_URL", aws.URL)

	var logged []string
	var mu sync.Mutex
	logf := func(format string, args ...any) {
		mu.Lock()
		defer mu.Unlock()
		logged = append(logged, fmt.Sprintf(format, args...))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err := Config(ctx, "us-east-1", Role{ARN: "arn:aws:iam::123456789012:role/obs", Session: "cloudupload-1"}, Options{Logf: logf})
	if cloudupload.ErrorMessage(err) != NoCredentials || cloudupload.ErrorCode(err) != cloudupload.EINTERNAL {
		t.Errorf("error %v, want %q", err, NoCredentials)
	}
	if len(reached) > 0 {
		t.Errorf("requests reached AWS: %v", reached)
	}
	if len(seen()) == 0 {
		t.Error("the instance metadata service was not asked")
	}
	mu.Lock()
	defer mu.Unlock()
	joined := strings.Join(logged, "\n")
	if !strings.Contains(joined, "AWS SDK warn: falling back to IMDSv1") || !strings.Contains(joined, "no AWS credentials: ") {
		t.Errorf("the SDK's warning and the cause did not reach Logf: %q", joined)
	}
}

// TestRoleRefused: with an identity whose role assumption STS refuses,
// Config succeeds and the first call fails with STS's answer (the user's
// role is to blame).
func TestRoleRefused(t *testing.T) {
	noIdentity(t)
	t.Setenv("AWS_ACCESS_KEY_ID", "AKIATESTTESTTESTTEST")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "secret")
	sts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "text/xml")
		w.WriteHeader(http.StatusForbidden)
		io.WriteString(w, `<ErrorResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><Error><Type>Sender</Type><Code>AccessDenied</Code><Message>not authorized to perform: sts:AssumeRole</Message></Error><RequestId>r-1</RequestId></ErrorResponse>`)
	}))
	defer sts.Close()
	t.Setenv("AWS_ENDPOINT_URL", sts.URL)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cfg, err := Config(ctx, "us-east-1", Role{ARN: "arn:aws:iam::123456789012:role/obs", Session: "s"}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	_, err = ec2.NewFromConfig(cfg).DescribeRegions(ctx, nil)
	if err == nil || !strings.Contains(err.Error(), "AccessDenied") {
		t.Errorf("error %v, want STS's AccessDenied", err)
	}
}
