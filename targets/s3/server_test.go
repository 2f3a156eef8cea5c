package s3

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/cloudupload/cloudupload/targets/awstest"
)

// versitygw is the S3 server the tests prefer: a real S3 implementation
// (Apache-2.0) that checks SigV4 signatures, payload checksums and
// conditional writes, storing objects as files. The Makefile installs it
// with VersitygwInstall; a missing binary fails the tests.
const VersitygwInstall = "go install github.com/versity/versitygw/cmd/versitygw@v1.8.0"

// Keys of the local servers: test values, not secrets.
const (
	testAccess = "cloudupload-test-key"
	testSecret = "cloudupload-test-secret-not-real"
)

// server is a local S3 server for one test binary.
type server struct {
	name string
	url  string
	env  []string // environment pointing the SDK's default chain at it
	api  *s3.Client
	pid  int // the server process, when the tests started one
}

// cpu returns the CPU time (user + system) the server process has used so
// far, from /proc (0 where that cannot be read): benchmarks report the
// server's share beside the clients'.
func (s *server) cpu() time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", s.pid))
	if err != nil || s.pid == 0 {
		return 0
	}
	// Fields after the parenthesised command: state is field 3, utime 14,
	// stime 15, in clock ticks (100 per second on Linux).
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
	if len(f) < 13 {
		return 0
	}
	var utime, stime int64
	fmt.Sscan(f[11], &utime)
	fmt.Sscan(f[12], &stime)
	return time.Duration(utime+stime) * 10 * time.Millisecond
}

var (
	versityOnce sync.Once
	versitySrv  *server
	versityErr  error
	bucketSeq   atomic.Int64
)

// versity returns the package's versitygw server, starting it on first use.
// It lives until the test binary exits (Pdeathsig, and TestMain kills it).
func versity(tb testing.TB) *server {
	tb.Helper()
	versityOnce.Do(func() {
		var stop func()
		versitySrv, stop, versityErr = startVersity("")
		versityStop = stop
	})
	if versityErr != nil {
		tb.Fatal(versityErr)
	}
	return versitySrv
}

var versityStop func()

func findVersity() (string, error) {
	if p, err := exec.LookPath("versitygw"); err == nil {
		return p, nil
	}
	var dirs []string
	if d := os.Getenv("GOBIN"); d != "" {
		dirs = append(dirs, d)
	}
	if out, err := exec.Command("go", "env", "GOPATH").Output(); err == nil {
		for _, d := range filepath.SplitList(strings.TrimSpace(string(out))) {
			dirs = append(dirs, filepath.Join(d, "bin"))
		}
	}
	for _, d := range dirs {
		p := filepath.Join(d, "versitygw")
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("versitygw not found on PATH, in GOBIN or GOPATH/bin: install it with `%s` (S3 tests must not be skipped)", VersitygwInstall)
}

// startVersity starts versitygw storing its buckets in a new directory
// below parent (the default temporary directory when ""); stop kills it and
// removes the directory.
func startVersity(parent string) (s *server, stop func(), err error) {
	bin, err := findVersity()
	if err != nil {
		return nil, nil, err
	}
	root, err := os.MkdirTemp(parent, "s3test-versitygw-")
	if err != nil {
		return nil, nil, err
	}
	var lastErr error
	for range 5 {
		port, err := freePort()
		if err != nil {
			return nil, nil, err
		}
		addr := fmt.Sprintf("127.0.0.1:%d", port)
		cmd := exec.Command(bin, "--port", addr, "--quiet", "--keep-alive", "posix", root)
		cmd.Env = append(os.Environ(), "ROOT_ACCESS_KEY_ID="+testAccess, "ROOT_SECRET_ACCESS_KEY="+testSecret)
		var out strings.Builder
		cmd.Stdout, cmd.Stderr = &out, &out
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
		if err := cmd.Start(); err != nil {
			os.RemoveAll(root)
			return nil, nil, fmt.Errorf("start versitygw: %w", err)
		}
		exited := make(chan struct{})
		go func() { cmd.Wait(); close(exited) }()
		if lastErr = waitTCP(addr, exited); lastErr == nil {
			stop := func() {
				syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
				<-exited
				os.RemoveAll(root)
			}
			s := newServer("versitygw", "http://"+addr, testAccess, testSecret)
			s.pid = cmd.Process.Pid
			return s, stop, nil
		}
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		lastErr = fmt.Errorf("%v: %s", lastErr, out.String())
	}
	os.RemoveAll(root)
	return nil, nil, fmt.Errorf("versitygw did not come up: %w", lastErr)
}

func waitTCP(addr string, exited <-chan struct{}) error {
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-exited:
			return errors.New("versitygw exited")
		default:
		}
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return errors.New("no answer within 30s")
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// moto starts a moto_server for the test (S3 and STS).
func moto(tb testing.TB) *server {
	m := awstest.Start(tb)
	return newServer("moto", m.URL, awstest.AccessKey, awstest.SecretKey)
}

func newServer(name, url, access, secret string) *server {
	s := &server{name: name, url: url}
	s.env = []string{
		"AWS_ACCESS_KEY_ID=" + access,
		"AWS_SECRET_ACCESS_KEY=" + secret,
		"AWS_REGION=us-east-1",
		"AWS_ENDPOINT_URL=" + url,
		"AWS_EC2_METADATA_DISABLED=true",
		"AWS_CONFIG_FILE=/dev/null",
		"AWS_SHARED_CREDENTIALS_FILE=/dev/null",
		"AWS_CA_BUNDLE=",
	}
	s.api = s3.New(s3.Options{
		Region:       "us-east-1",
		BaseEndpoint: aws.String(url),
		UsePathStyle: true,
		Credentials:  credentials.NewStaticCredentialsProvider(access, secret, ""),
	})
	return s
}

// getenv looks up the server's environment.
func (s *server) getenv(k string) string {
	for _, kv := range s.env {
		if key, v, _ := strings.Cut(kv, "="); key == k {
			return v
		}
	}
	return ""
}

// bucket creates a fresh bucket.
func (s *server) bucket(tb testing.TB) string {
	tb.Helper()
	name := fmt.Sprintf("test-%d-%d", os.Getpid(), bucketSeq.Add(1))
	if _, err := s.api.CreateBucket(context.Background(), &s3.CreateBucketInput{Bucket: &name}); err != nil {
		tb.Fatalf("create bucket on %s: %v", s.name, err)
	}
	return name
}

// leftovers lists what a bucket holds: objects and unfinished uploads.
func (s *server) leftovers(tb testing.TB, bucket string) (objects, uploads []string) {
	tb.Helper()
	ctx := context.Background()
	lo, err := s.api.ListObjectsV2(ctx, &s3.ListObjectsV2Input{Bucket: &bucket})
	if err != nil {
		tb.Fatalf("list objects: %v", err)
	}
	for _, o := range lo.Contents {
		objects = append(objects, *o.Key)
	}
	lu, err := s.api.ListMultipartUploads(ctx, &s3.ListMultipartUploadsInput{Bucket: &bucket})
	if err != nil {
		tb.Fatalf("list multipart uploads: %v", err)
	}
	for _, u := range lu.Uploads {
		uploads = append(uploads, *u.Key+" "+*u.UploadId)
	}
	return objects, uploads
}

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) != "" {
		benchChild()
		return
	}
	code := m.Run()
	if versityStop != nil {
		versityStop()
	}
	os.Exit(code)
}
