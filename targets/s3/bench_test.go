package s3

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/cloudupload/cloudupload/internal/benchutil"
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
	if len(f) < 3 {
		fmt.Fprintln(os.Stderr, "bench child: want \"bucket key file [decompress]\"")
		os.Exit(2)
	}
	bucket, key, file := f[0], f[1], f[2]
	decompress := len(f) > 3 && f[3] == "decompress"
	if prof := os.Getenv(childEnv + "_CPUPROFILE"); prof != "" {
		if f, err := os.Create(prof); err == nil {
			pprof.StartCPUProfile(f)
		}
	}
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
	digest, err := targets.ImageSHA256(os.Getenv)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	pub := &publisher{api: NewClient(cfg, os.Getenv), log: log, digest: digest}
	p := &plan{cfg: &config{Bucket: bucket, Decompress: decompress}, key: key}
	_, err = pub.publish(ctx, img, targets.Job{ID: "bench", Filename: filepath.Base(file)}, p, time.Now())
	pprof.StopCPUProfile()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	// The uploader's own CPU time apart from its decompressor's, for the
	// benchmark's accounting.
	var self, children syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &self)
	syscall.Getrusage(syscall.RUSAGE_CHILDREN, &children)
	fmt.Fprintf(os.Stderr, "%s %s %s\n", childCPU, rusageCPU(&self), rusageCPU(&children))
	os.Exit(0)
}

// childCPU starts the child's last line: its own CPU time and that of its
// decompressor, as Go durations.
const childCPU = "bench child cpu (self, decompressor):"

// selfCPU is the CPU time this process has used so far.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return rusageCPU(&ru)
}

func rusageCPU(ru *syscall.Rusage) time.Duration {
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// parseChildCPU finds the child's CPU line in its output.
func parseChildCPU(out string) (self, decompressor time.Duration, ok bool) {
	i := strings.LastIndex(out, childCPU)
	if i < 0 {
		return 0, 0, false
	}
	f := strings.Fields(out[i+len(childCPU):])
	if len(f) < 2 {
		return 0, 0, false
	}
	self, err1 := time.ParseDuration(f[0])
	decompressor, err2 := time.ParseDuration(f[1])
	return self, decompressor, err1 == nil && err2 == nil
}

// parseJoin finds how long the server took to join the parts (the
// uploader's log line after CompleteMultipartUpload).
func parseJoin(out string) time.Duration {
	const mark = " parts in "
	i := strings.LastIndex(out, "the server joined the ")
	if i < 0 {
		return 0
	}
	rest := out[i:]
	j := strings.Index(rest, mark)
	if j < 0 {
		return 0
	}
	f := strings.Fields(rest[j+len(mark):])
	if len(f) == 0 {
		return 0
	}
	d, _ := time.ParseDuration(f[0])
	return d
}

// BenchmarkUpload1GiB uploads a 1 GiB file to a local versitygw with the s3
// target (in a child process), `aws s3 cp` and `rclone copy`, one after the
// other in the same run, and reports each one's MiB/s and peak memory, and
// the target's speed as a ratio to each (x-aws, x-rclone: above 1 is
// faster; goals 1.2 and 2), and the CPU time each client process used (the
// server's is not counted). The target runs as the daemon runs it, with
// CLOUDUPLOAD_IMAGE_SHA256 set, and also without it (nodigest-*: the
// SHA-256 is learnt during the upload and stored as a tag). The clients run with their default settings (but for rclone's
// 100-continue wait, below). The server keeps its data in /dev/shm. Missing clients
// are installed with apt-get when running as root; otherwise the benchmark
// fails naming them.
func BenchmarkUpload1GiB(b *testing.B) {
	ensureClients(b)
	s, bucket, dir := benchServer(b)
	file := filepath.Join(dir, "appliance.x86_64-1.0-Build1.1.raw")
	sum := writeRandomFile(b, file, benchSize)

	env := append(os.Environ(), s.env...)
	env = append(env, "AWS_CA_BUNDLE=") // rclone and awscli fail on loopback with it set
	clients := []struct {
		name string
		cmd  func(round int) *exec.Cmd
	}{
		{"target", func(round int) *exec.Cmd {
			// As the daemon runs it: with the SHA-256 computed while
			// the file was received.
			cmd := exec.Command(os.Args[0])
			cmd.Env = append(env, fmt.Sprintf("%s=%s target/%d.raw %s", childEnv, bucket, round, file), targets.ImageSHA256Env+"="+sum)
			return cmd
		}},
		{"target-nodigest", func(round int) *exec.Cmd {
			// Run by hand without it: the SHA-256 is learnt during
			// the upload and stored as a tag.
			cmd := exec.Command(os.Args[0])
			cmd.Env = append(env, fmt.Sprintf("%s=%s target-nodigest/%d.raw %s", childEnv, bucket, round, file))
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
	serverCPU := map[string]float64{}
	b.ResetTimer()
	// Rounds alternate the clients and each keeps its best: the machine is
	// shared and its load changes from one second to the next.
	for round := range b.N * benchRounds {
		for _, c := range clients {
			cmd := c.cmd(round)
			var out bytes.Buffer
			cmd.Stdout, cmd.Stderr = &out, &out
			start, scpu := time.Now(), s.cpu()
			err := cmd.Run()
			d := time.Since(start)
			scpu = s.cpu() - scpu
			if err != nil {
				b.Fatalf("%s: %v\n%s", c.name, err, out.String())
			}
			if strings.HasPrefix(c.name, "target") {
				b.Logf("%s log:\n%s", c.name, out.String())
				// The object is there, whole, with its SHA-256.
				key := fmt.Sprintf("%s/%d.raw", c.name, round)
				head, err := s.api.HeadObject(context.Background(), &s3.HeadObjectInput{Bucket: &bucket, Key: &key})
				if err != nil || *head.ContentLength != benchSize {
					b.Fatalf("%s's object: %v", c.name, err)
				}
				stored := head.Metadata[metaSHA256]
				if c.name == "target-nodigest" {
					tags, err := s.api.GetObjectTagging(context.Background(), &s3.GetObjectTaggingInput{Bucket: &bucket, Key: &key})
					if err != nil {
						b.Fatal(err)
					}
					for _, t := range tags.TagSet {
						if *t.Key == tagSHA256 {
							stored = *t.Value
						}
					}
				}
				if stored != sum {
					b.Fatalf("%s's object carries SHA-256 %q, want %s", c.name, stored, sum)
				}
			}
			// Free the server's memory for the next client.
			removeAll(b, s, bucket, c.name+"/")
			mibs := benchSize / float64(1<<20) / d.Seconds()
			if mibs > rate[c.name] {
				rate[c.name] = mibs // best of the rounds
				serverCPU[c.name] = scpu.Seconds()
			}
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
	b.ReportMetric(rate["target-nodigest"], "nodigest-MiB/s")
	b.ReportMetric(rate["aws"], "aws-MiB/s")
	b.ReportMetric(rate["rclone"], "rclone-MiB/s")
	b.ReportMetric(rate["target"]/rate["aws"], "x-aws")
	b.ReportMetric(rate["target"]/rate["rclone"], "x-rclone")
	b.ReportMetric(rate["target-nodigest"]/rate["aws"], "nodigest-x-aws")
	b.ReportMetric(peak["target"], "peak-MiB")
	b.ReportMetric(peak["target-nodigest"], "nodigest-peak-MiB")
	b.ReportMetric(peak["aws"], "aws-peak-MiB")
	b.ReportMetric(peak["rclone"], "rclone-peak-MiB")
	b.ReportMetric(cpu["target"], "cpu-s")
	b.ReportMetric(cpu["aws"], "aws-cpu-s")
	b.ReportMetric(cpu["rclone"], "rclone-cpu-s")
	b.ReportMetric(serverCPU["target"], "server-cpu-s")
	b.ReportMetric(serverCPU["aws"], "aws-server-cpu-s")
	b.ReportMetric(0, "ns/op")
}

// benchServer starts versitygw for a benchmark, with a bucket, and returns
// a directory for its files. Memory (/dev/shm), not this machine's disk,
// holds the server's objects and the files, so the figures compare the
// clients.
func benchServer(b *testing.B) (s *server, bucket, dir string) {
	dir = b.TempDir()
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
	return s, s.bucket(b), dir
}

// BenchmarkDecompressUpload stores the disk of a multi-block .raw.xz (1 GiB
// of disk: 1 MiB stretches of text-like data, random bytes and zeros;
// compressed by `xz -T2 -1`, 3 MiB blocks) with decompress to a local
// versitygw, in a child process, and reports its speed (disk MiB/s) as a
// ratio to the project's own decoding of the same file measured around it
// in the same run (x-decode, goal ≥ 0.9), the decoding's speed as a ratio
// to single-threaded `xz -d` (decode-x-xz1, goal ≥ 1.7 on 2 cores; both
// sides the best of the rounds), and the child's peak RSS.
//
// It also accounts for the CPU time, because on a machine whose cores the
// decoder already fills, an upload can only be as fast as the decoder if
// the rest costs next to nothing: decode-cpu-s (the decoding alone, the xz
// binary included), cpu-s (the upload's child process with its xz),
// uploader-cpu-s (the child without its xz), server-cpu-s (versitygw
// during the upload) and join-s (the wall time versitygw takes to join the
// parts after the last one arrived; it copies the whole object). cpu-ceiling
// is decode-cpu-s / (cpu-s + server-cpu-s): the x-decode the upload could
// reach if every process kept every core busy all the time (it holds only
// while nothing else runs on the machine).
//
// Each round also uploads the same disk to a sink (see sink): sink-x-decode
// is the upload's speed against the decoding around it when the server
// takes next to no CPU, as a distant S3 would not take this machine's;
// sink-uploader-cpu-s and sink-server-cpu-s are the uploader's CPU time
// without its xz, and the sink's.
//
// CLOUDUPLOAD_S3_BENCH_CHILD_CPUPROFILE=file makes the child write a CPU
// profile.
func BenchmarkDecompressUpload(b *testing.B) {
	s, bucket, _ := benchServer(b)
	file := benchXZ(b)
	env := append(os.Environ(), s.env...)
	var decCPU []time.Duration
	decode := func() time.Duration {
		d, n, cpu := benchutil.Decode(b, file)
		if n != decompressDisk {
			b.Fatalf("decode: %d bytes", n)
		}
		decCPU = append(decCPU, cpu)
		return d
	}
	xz1 := func() time.Duration {
		start := time.Now()
		cmd := exec.Command("xz", "-d", "-T1", "-c", file)
		if err := cmd.Run(); err != nil { // stdout is /dev/null
			b.Fatal(err)
		}
		return time.Since(start)
	}
	var bestUp, aroundBest, bestDec, bestXZ1 time.Duration = 1 << 62, 1 << 62, 1 << 62, 1 << 62
	var peak float64
	var cpu, uploaderCPU, serverCPU, join time.Duration
	k := startSink(b)
	bestSink, aroundSink := time.Duration(1<<62), time.Duration(0)
	var sinkSelf, sinkServer time.Duration
	decode() // warm the page cache
	decCPU = nil
	for round := range b.N * benchRounds {
		d1 := decode()
		cmd := exec.Command(os.Args[0])
		cmd.Env = append(env, fmt.Sprintf("%s=%s disk/%d.raw %s decompress", childEnv, bucket, round, file))
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		start, scpu := time.Now(), s.cpu()
		if err := cmd.Run(); err != nil {
			b.Fatalf("upload: %v\n%s", err, out.String())
		}
		up := time.Since(start)
		scpu = s.cpu() - scpu
		b.Logf("round %d upload log:\n%s", round, out.String())
		// The same upload to the sink, which takes no CPU to speak of.
		kcmd := exec.Command(os.Args[0])
		kcmd.Env = append(env, "AWS_ENDPOINT_URL="+k.url, fmt.Sprintf("%s=%s disk/%d.raw %s decompress", childEnv, bucket, round, file))
		var kout bytes.Buffer
		kcmd.Stdout, kcmd.Stderr = &kout, &kout
		kstart, kcpu0 := time.Now(), selfCPU()
		if err := kcmd.Run(); err != nil {
			b.Fatalf("upload to the sink: %v\n%s", err, kout.String())
		}
		kup, kcpu := time.Since(kstart), selfCPU()-kcpu0
		d2 := decode()
		x := xz1()
		key := fmt.Sprintf("disk/%d.raw", round)
		head, err := s.api.HeadObject(context.Background(), &s3.HeadObjectInput{Bucket: &bucket, Key: &key})
		if err != nil || *head.ContentLength != decompressDisk {
			b.Fatalf("stored disk: %v", err)
		}
		tags, err := s.api.GetObjectTagging(context.Background(), &s3.GetObjectTaggingInput{Bucket: &bucket, Key: &key})
		if err != nil || len(tags.TagSet) != 1 || *tags.TagSet[0].Key != tagSHA256 {
			b.Fatalf("stored disk's tags: %v", err)
		}
		if size, tag, err := k.object(bucket + "/" + key); err != nil || size != decompressDisk || tag != *tags.TagSet[0].Value {
			b.Fatalf("the sink's object: %d bytes, sha256 %s, want %s (%v)", size, tag, *tags.TagSet[0].Value, err)
		}
		removeAll(b, s, bucket, "disk/")
		self, _, ok := parseChildCPU(out.String())
		kself, _, kok := parseChildCPU(kout.String())
		if !ok || !kok {
			b.Fatalf("the upload's log has no line %q", childCPU)
		}
		if kup < bestSink {
			bestSink, aroundSink, sinkSelf, sinkServer = kup, (d1+d2)/2, kself, kcpu
		}
		// Each round is judged against the decoding around it: the
		// machine's load changes from one second to the next.
		if up < bestUp {
			bestUp, aroundBest, serverCPU, uploaderCPU, join = up, (d1+d2)/2, scpu, self, parseJoin(out.String())
			if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
				cpu = rusageCPU(ru)
			}
		}
		bestDec, bestXZ1 = min(bestDec, d1, d2), min(bestXZ1, x)
		if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
			peak = max(peak, float64(ru.Maxrss)/1024)
		}
		b.Logf("round %d: upload %.1f MiB/s (to the sink %.1f), decode %.1f and %.1f MiB/s, xz -d -T1 %.1f MiB/s", round, mibs(up), mibs(kup), mibs(d1), mibs(d2), mibs(x))
	}
	dcpu := slices.Min(decCPU)
	b.ReportMetric(mibs(bestUp), "MiB/s")
	b.ReportMetric(mibs(bestDec), "decode-MiB/s")
	b.ReportMetric(mibs(bestXZ1), "xz1-MiB/s")
	b.ReportMetric(aroundBest.Seconds()/bestUp.Seconds(), "x-decode")
	b.ReportMetric(bestXZ1.Seconds()/bestDec.Seconds(), "decode-x-xz1")
	b.ReportMetric(peak, "peak-MiB")
	b.ReportMetric(dcpu.Seconds(), "decode-cpu-s")
	b.ReportMetric(cpu.Seconds(), "cpu-s")
	b.ReportMetric(uploaderCPU.Seconds(), "uploader-cpu-s")
	b.ReportMetric(serverCPU.Seconds(), "server-cpu-s")
	b.ReportMetric(join.Seconds(), "join-s")
	b.ReportMetric(dcpu.Seconds()/(cpu+serverCPU).Seconds(), "cpu-ceiling")
	b.ReportMetric(mibs(bestSink), "sink-MiB/s")
	b.ReportMetric(aroundSink.Seconds()/bestSink.Seconds(), "sink-x-decode")
	b.ReportMetric(sinkSelf.Seconds(), "sink-uploader-cpu-s")
	b.ReportMetric(sinkServer.Seconds(), "sink-server-cpu-s")
	b.ReportMetric(0, "ns/op")
}

// decompressDisk is the disk size of BenchmarkDecompressUpload's image.
const decompressDisk = 1 << 30

func mibs(d time.Duration) float64 { return decompressDisk / float64(1<<20) / d.Seconds() }

// benchXZ returns the .raw.xz of BenchmarkDecompressUpload, generated once
// into $TMPDIR/cloudupload-bench and reused.
func benchXZ(b *testing.B) string {
	dir := filepath.Join(os.TempDir(), "cloudupload-bench")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		b.Fatal(err)
	}
	path := filepath.Join(dir, "s3-1g.raw.xz")
	if _, err := os.Stat(path); err == nil {
		return path
	}
	b.Logf("generating %s (once)", path)
	tmp := path + ".tmp"
	out, err := os.Create(tmp)
	if err != nil {
		b.Fatal(err)
	}
	defer out.Close()
	cmd := exec.Command("xz", "-T2", "-1", "-c")
	cmd.Stdout = out
	w, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	r := rand.New(rand.NewPCG(3, 3))
	text := benchutil.NewText(r)
	blk := make([]byte, 1<<20)
	for range decompressDisk >> 20 {
		switch r.IntN(8) {
		case 0, 1, 2:
			clear(blk)
		case 3:
			for i := range blk {
				blk[i] = byte(r.Uint32())
			}
		default:
			text.Fill(blk)
		}
		if _, err := w.Write(blk); err != nil {
			b.Fatal(err)
		}
	}
	w.Close()
	if err := cmd.Wait(); err != nil {
		b.Fatalf("xz: %v", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		b.Fatal(err)
	}
	return path
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

// writeRandomFile writes size bytes of incompressible data and returns
// their SHA-256 in hex.
func writeRandomFile(b *testing.B, path string, size int) string {
	f, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	var key [32]byte
	r := rand.NewChaCha8(key)
	buf := make([]byte, 4<<20)
	h := sha256.New()
	for n := 0; n < size; n += len(buf) {
		r.Read(buf)
		h.Write(buf)
		if _, err := f.Write(buf); err != nil {
			b.Fatal(err)
		}
	}
	return hex.EncodeToString(h.Sum(nil))
}
