package cli_test

import (
	"bytes"
	"fmt"
	"io"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// curlPush is the baseline of BenchmarkPush: what a script does with curl,
// POST the job skeleton then PUT the file (without "Expect: 100-continue",
// which would make curl wait for the server). $1 URL, $2 file, $3 its size.
const curlPush = `set -e
details=$(printf '{"tree": "demo"}' | od -An -tx1 | tr -d ' \n')
id=$(printf '<clouduploadjob><user>tester</user><target>mirror</target><project>home:tester</project><repository>images</repository><package>image</package><arch>noarch</arch><filename>image.raw</filename><size>%s</size><details>%s</details></clouduploadjob>' "$3" "$details" |
	curl -sf -H 'Content-Type: text/xml' --data-binary @- "$1/cloudupload" | sed -n 's/.*name="\([0-9]*\)".*/\1/p')
curl -sf -H 'Expect:' -T "$2" "$1/cloudupload/$id" >/dev/null
echo "$id"`

// BenchmarkPush pushes a 256 MiB file to the real server with
// bin/cloudupload push (skeleton + PUT), and in the same run does the same
// with curl (curlPush), then waits untimed for each job to end so that
// uploads do not overlap. Reports MiB/s of both, the ratio (>1: the client
// is faster than curl) and the client's peak memory (VmHWM, sampled).
func BenchmarkPush(b *testing.B) {
	if _, err := exec.LookPath("curl"); err != nil {
		b.Fatal("curl is needed as the baseline (scripts/ensure-test-deps.sh installs it)")
	}
	e := start(b)
	const size = 256 << 20
	src := filepath.Join(b.TempDir(), "image.raw")
	f, err := os.Create(src)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := io.CopyN(f, rand.New(rand.NewSource(1)), size); err != nil {
		b.Fatal(err)
	}
	f.Close()
	data := e.dataFile(`{"tree": "demo"}`)
	var ours, base time.Duration
	var maxrss int64
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		start := time.Now()
		cmd := exec.Command(filepath.Join(e.bin, "cloudupload"), "push", "--url", e.url, "--target", "mirror", "--data", data, "--json", src)
		var out bytes.Buffer
		cmd.Stdout = &out
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
		hwm := watchHWM(cmd.Process.Pid)
		if err := cmd.Wait(); err != nil {
			b.Fatalf("push: %v", err)
		}
		ours += time.Since(start)
		maxrss = max(maxrss, hwm())
		b.StopTimer()
		job := decodeJob(b, out.String())
		e.ok("wait", job.Name())

		start = time.Now()
		cmd = exec.Command("sh", "-c", curlPush, "sh", e.url, src, fmt.Sprint(size))
		cmd.Stderr = io.Discard
		id, err := cmd.Output()
		if err != nil {
			b.Fatalf("curl: %v", err)
		}
		base += time.Since(start)
		e.ok("wait", strings.TrimSpace(string(id)))
		b.StartTimer()
	}
	mibs := func(d time.Duration) float64 { return float64(size) * float64(b.N) / d.Seconds() / (1 << 20) }
	b.ReportMetric(mibs(ours), "MiB/s")
	b.ReportMetric(mibs(base), "curl-MiB/s")
	b.ReportMetric(base.Seconds()/ours.Seconds(), "x-curl")
	b.ReportMetric(float64(maxrss)/1024, "client-peak-MiB")
}

// watchHWM samples the peak resident memory (VmHWM, KiB) of process pid
// every 5 ms until the returned function is called, which gives the last
// value read. (The rusage of a child is no use here: Linux counts in it the
// parent's memory at the time of the fork.)
func watchHWM(pid int) func() int64 {
	var peak atomic.Int64
	done := make(chan struct{})
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		for {
			if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid)); err == nil {
				for _, line := range strings.Split(string(b), "\n") {
					if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
						if kib, err := strconv.ParseInt(strings.Fields(v)[0], 10, 64); err == nil {
							peak.Store(max(peak.Load(), kib))
						}
					}
				}
			}
			select {
			case <-done:
				return
			case <-time.After(5 * time.Millisecond):
			}
		}
	}()
	return func() int64 { close(done); <-stopped; return peak.Load() }
}
