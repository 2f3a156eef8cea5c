package s3

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/cloudupload/cloudupload/targets"
	"github.com/cloudupload/cloudupload/targets/awsauth"
	"github.com/cloudupload/cloudupload/uploader/image"
)

// childEnv, when set ("bucket key file"), makes the test binary run one
// upload as the uploader process would, instead of the tests: the benchmark
// measures its time and peak memory (rusage) from outside.
const childEnv = "CLOUDUPLOAD_S3_BENCH_CHILD"

// benchSize is the file the benchmark uploads; benchRounds how many times
// each client uploads it per b.N.
const (
	benchSize   = 1 << 30
	benchRounds = 2
)

// benchChild uploads one file with the service's own credentials from the
// environment (the role step is the only part of Upload it skips) and
// exits.
func benchChild() {
	f := strings.Fields(os.Getenv(childEnv))
	if len(f) != 3 {
		fmt.Fprintln(os.Stderr, "bench child: want \"bucket key file\"")
		os.Exit(2)
	}
	bucket, key, file := f[0], f[1], f[2]
	ctx := context.Background()
	log := targets.NewLog(os.Stderr)
	cfg, err := awsauth.Config(ctx, "us-east-1", awsauth.Role{}, awsauth.Options{MaxConns: parallel})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	img, err := image.Open(file, filepath.Base(file))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	pub := &publisher{api: NewClient(cfg, os.Getenv), log: log}
	p := &plan{cfg: &config{Bucket: bucket}, key: key}
	if _, err := pub.publish(ctx, img, targets.Job{ID: "bench", Filename: filepath.Base(file)}, p, time.Now()); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Exit(0)
}

// BenchmarkUpload1GiB uploads a 1 GiB file to a local versitygw with the s3
// target (in a child process), `aws s3 cp` and `rclone copy`, one after the
// other in the same run, and reports each one's MiB/s and peak memory, and
// the target's speed as a ratio to each (x-aws, x-rclone: above 1 is
// faster), and the CPU time each client process used (the server's is not
// counted). The clients run with their default settings (but for rclone's
// 100-continue wait, below). The server keeps its data in /dev/shm. Missing clients
// are installed with apt-get when running as root; otherwise the benchmark
// fails naming them.
func BenchmarkUpload1GiB(b *testing.B) {
	ensureClients(b)
	// Memory, not this machine's disk, holds the server's objects and the
	// file, so the figures compare the clients.
	dir := b.TempDir()
	if st, err := os.Stat("/dev/shm"); err == nil && st.IsDir() {
		if dir, err = os.MkdirTemp("/dev/shm", "s3bench-"); err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { os.RemoveAll(dir) })
	}
	s, stop, err := startVersity(dir)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(stop)
	bucket := s.bucket(b)
	file := filepath.Join(dir, "appliance.x86_64-1.0-Build1.1.raw")
	writeRandomFile(b, file, benchSize)

	env := append(os.Environ(), s.env...)
	env = append(env, "AWS_CA_BUNDLE=") // rclone and awscli fail on loopback with it set
	clients := []struct {
		name string
		cmd  func(round int) *exec.Cmd
	}{
		{"target", func(round int) *exec.Cmd {
			cmd := exec.Command(os.Args[0])
			cmd.Env = append(env, fmt.Sprintf("%s=%s target/%d.raw %s", childEnv, bucket, round, file))
			return cmd
		}},
		{"aws", func(round int) *exec.Cmd {
			cmd := exec.Command("aws", "--endpoint-url", s.url, "--only-show-errors", "s3", "cp", file, fmt.Sprintf("s3://%s/aws/%d.raw", bucket, round))
			cmd.Env = withoutCABundle(env)
			return cmd
		}},
		{"rclone", func(round int) *exec.Cmd {
			// --expect-continue-timeout 0: rclone sends "Expect:
			// 100-continue" and, when the server does not answer it,
			// waits a second per 5 MiB part; real S3 answers at once.
			cmd := exec.Command("rclone", "copyto", "--config", "/dev/null", "--expect-continue-timeout", "0", file, fmt.Sprintf("bench:%s/rclone/%d.raw", bucket, round))
			cmd.Env = append(withoutCABundle(env),
				"RCLONE_CONFIG_BENCH_TYPE=s3",
				"RCLONE_CONFIG_BENCH_PROVIDER=Other",
				"RCLONE_CONFIG_BENCH_ENV_AUTH=true",
				"RCLONE_CONFIG_BENCH_ENDPOINT="+s.url,
				"RCLONE_CONFIG_BENCH_REGION=us-east-1",
				"RCLONE_CONFIG_BENCH_FORCE_PATH_STYLE=true",
			)
			return cmd
		}},
	}
	rate := map[string]float64{}
	peak := map[string]float64{}
	cpu := map[string]float64{}
	b.ResetTimer()
	// Rounds alternate the clients and each keeps its best: the machine is
	// shared and its load changes from one second to the next.
	for round := range b.N * benchRounds {
		for _, c := range clients {
			cmd := c.cmd(round)
			var out bytes.Buffer
			cmd.Stdout, cmd.Stderr = &out, &out
			start := time.Now()
			err := cmd.Run()
			d := time.Since(start)
			if err != nil {
				b.Fatalf("%s: %v\n%s", c.name, err, out.String())
			}
			if c.name == "target" {
				b.Logf("target log:\n%s", out.String())
				// The object is there, whole, with its checksum.
				key := fmt.Sprintf("target/%d.raw", round)
				head, err := s.api.HeadObject(context.Background(), &s3.HeadObjectInput{Bucket: &bucket, Key: &key})
				if err != nil || *head.ContentLength != benchSize || len(head.Metadata[metaSHA256]) != 64 {
					b.Fatalf("target's object: %v", err)
				}
			}
			// Free the server's memory for the next client.
			removeAll(b, s, bucket, c.name+"/")
			mibs := benchSize / float64(1<<20) / d.Seconds()
			rate[c.name] = max(rate[c.name], mibs) // best of the rounds
			if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
				peak[c.name] = max(peak[c.name], float64(ru.Maxrss)/1024) // KiB on Linux
				used := time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()
				if cpu[c.name] == 0 || used < cpu[c.name] {
					cpu[c.name] = used
				}
			}
			b.Logf("round %d %s: %.1f MiB/s", round, c.name, mibs)
		}
	}
	b.StopTimer()
	b.ReportMetric(rate["target"], "MiB/s")
	b.ReportMetric(rate["aws"], "aws-MiB/s")
	b.ReportMetric(rate["rclone"], "rclone-MiB/s")
	b.ReportMetric(rate["target"]/rate["aws"], "x-aws")
	b.ReportMetric(rate["target"]/rate["rclone"], "x-rclone")
	b.ReportMetric(peak["target"], "peak-MiB")
	b.ReportMetric(peak["aws"], "aws-peak-MiB")
	b.ReportMetric(peak["rclone"], "rclone-peak-MiB")
	b.ReportMetric(cpu["target"], "cpu-s")
	b.ReportMetric(cpu["aws"], "aws-cpu-s")
	b.ReportMetric(cpu["rclone"], "rclone-cpu-s")
	b.ReportMetric(0, "ns/op")
}

func removeAll(b *testing.B, s *server, bucket, prefix string) {
	ctx := context.Background()
	out, err := s.api.ListObjectsV2(ctx, &s3.ListObjectsV2Input{Bucket: &bucket, Prefix: &prefix})
	if err != nil {
		b.Fatal(err)
	}
	for _, o := range out.Contents {
		if _, err := s.api.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: &bucket, Key: o.Key}); err != nil {
			b.Fatal(err)
		}
	}
}

// withoutCABundle drops AWS_CA_BUNDLE: some clients fail on loopback
// endpoints when it is set, even empty.
func withoutCABundle(env []string) []string {
	var out []string
	for _, kv := range env {
		if !strings.HasPrefix(kv, "AWS_CA_BUNDLE=") {
			out = append(out, kv)
		}
	}
	return out
}

// ensureClients makes sure aws and rclone are installed.
func ensureClients(b *testing.B) {
	var missing []string
	for bin, pkg := range map[string]string{"aws": "awscli", "rclone": "rclone"} {
		if _, err := exec.LookPath(bin); err != nil {
			missing = append(missing, pkg)
		}
	}
	if len(missing) == 0 {
		return
	}
	if _, err := exec.LookPath("apt-get"); err != nil || os.Geteuid() != 0 {
		b.Fatalf("missing S3 clients for the comparison: %s (install them, e.g. apt-get install %s)", strings.Join(missing, ", "), strings.Join(missing, " "))
	}
	for _, args := range [][]string{{"update", "-qq"}, append([]string{"install", "-y", "-qq"}, missing...)} {
		cmd := exec.Command("apt-get", args...)
		cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
		if out, err := cmd.CombinedOutput(); err != nil {
			b.Fatalf("apt-get %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
}

// writeRandomFile writes size bytes of incompressible data.
func writeRandomFile(b *testing.B, path string, size int) {
	f, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	var key [32]byte
	r := rand.NewChaCha8(key)
	buf := make([]byte, 4<<20)
	for n := 0; n < size; n += len(buf) {
		r.Read(buf)
		if _, err := f.Write(buf); err != nil {
			b.Fatal(err)
		}
	}
}
