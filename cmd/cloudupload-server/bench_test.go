package main

import (
	"bufio"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cloudupload/cloudupload/internal/testutil"
)

// The benchmarks run the daemon over loopback HTTP, as a frontend or a
// source server would use it. For scale, OBS's Perl server on a machine of
// this size: GET of one job ~420 req/s (p50 17 ms), the list of 1,000 jobs
// p50 100 ms, POST+PUT of 256 MiB ~780 MiB/s, PUT → succeeded ~21 ms.

// benchClient keeps connections alive between requests.
var benchClient = &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 16, WriteBufferSize: 256 << 10}}

func get(tb testing.TB, url string) []byte {
	resp, err := benchClient.Get(url)
	if err != nil {
		tb.Fatal(err)
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != 200 {
		tb.Fatalf("GET %s: %s %v", url, resp.Status, err)
	}
	return b
}

func percentile(d []time.Duration, p float64) time.Duration {
	slices.Sort(d)
	return d[int(float64(len(d)-1)*p)]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// skeletonFor is the job skeleton of an image of size bytes for the test
// uploader in mode.
func skeletonFor(user string, size int64, mode string) string {
	return "<clouduploadjob><user>" + user + "</user><target>test</target><project>P</project><repository>R</repository>" +
		"<package>K</package><arch>x86_64</arch><filename>img.raw</filename><size>" + strconv.FormatInt(size, 10) +
		"</size><details>" + hex.EncodeToString([]byte(mode)) + "</details></clouduploadjob>"
}

// submitPut creates a job by skeleton and PUTs size bytes of body; it
// returns the job name and when the PUT was answered.
func submitPut(tb testing.TB, base, user string, size int64, body io.Reader) (string, time.Time) {
	return submitPutMode(tb, base, user, size, body, "instant")
}

func submitPutMode(tb testing.TB, base, user string, size int64, body io.Reader, mode string) (string, time.Time) {
	resp, err := benchClient.Post(base+"/cloudupload", "text/xml", strings.NewReader(skeletonFor(user, size, mode)))
	if err != nil {
		tb.Fatal(err)
	}
	doc, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		tb.Fatalf("POST: %s %s", resp.Status, doc)
	}
	name := jobField(tb, string(doc), "name")
	req, _ := http.NewRequest("PUT", base+"/cloudupload/"+name, body)
	req.ContentLength = size
	resp, err = benchClient.Do(req)
	if err != nil {
		tb.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		tb.Fatalf("PUT: %s", resp.Status)
	}
	return name, time.Now()
}

// waitFinal polls job name every millisecond until it is final.
func waitFinal(tb testing.TB, base, name string) (string, time.Time) {
	deadline := time.Now().Add(time.Minute)
	for time.Now().Before(deadline) {
		doc := string(get(tb, base+"/cloudupload/"+name))
		if s := jobField(tb, doc, "state"); s == "succeeded" || s == "failed" {
			return s, time.Now()
		}
		time.Sleep(time.Millisecond)
	}
	tb.Fatalf("job %s not final after a minute", name)
	return "", time.Time{}
}

// BenchmarkGetJob: GET /cloudupload/<id>, one client after the other
// (latency) and 4 clients at once (requests per second).
func BenchmarkGetJob(b *testing.B) {
	e := start(b, "--log-level", "warn")
	name := e.create("instant")
	waitFinal(b, e.url, name)
	url := e.url + "/cloudupload/" + name
	const batch = 2000
	var lat []time.Duration
	var parallel time.Duration
	for b.Loop() {
		for range batch {
			t0 := time.Now()
			get(b, url)
			lat = append(lat, time.Since(t0))
		}
		t0 := time.Now()
		var wg sync.WaitGroup
		for range 4 {
			wg.Go(func() {
				for range batch / 4 {
					get(b, url)
				}
			})
		}
		wg.Wait()
		parallel += time.Since(t0)
	}
	b.ReportMetric(ms(percentile(lat, 0.5)), "p50-ms")
	b.ReportMetric(ms(percentile(lat, 0.99)), "p99-ms")
	b.ReportMetric(float64(len(lat))/parallel.Seconds(), "req/s")
	b.ReportMetric(float64(len(lat))/parallel.Seconds()/420, "x-obs-req/s")
}

// BenchmarkListJobs: GET /cloudupload with 1,000 finished jobs on disk.
func BenchmarkListJobs(b *testing.B) {
	e := start(b, "--log-level", "warn", "--max-uploads", "4", "--max-uploads-per-user", "4")
	const jobs = 1000
	t0 := time.Now()
	var wg sync.WaitGroup
	names := make(chan string, jobs)
	for w := range 4 {
		wg.Go(func() {
			for i := w; i < jobs; i += 4 {
				name, _ := submitPut(b, e.url, "u"+strconv.Itoa(w), 1, strings.NewReader("x"))
				names <- name
			}
		})
	}
	wg.Wait()
	close(names)
	var last string
	for n := range names {
		last = n
	}
	waitFinal(b, e.url, last)
	for {
		if doc := string(get(b, e.url+"/cloudupload")); !strings.Contains(doc, "<state>scheduled</state>") && !strings.Contains(doc, "<state>uploading</state>") {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	setup := time.Since(t0)
	var lat []time.Duration
	for b.Loop() {
		for range 100 {
			t1 := time.Now()
			doc := get(b, e.url+"/cloudupload")
			lat = append(lat, time.Since(t1))
			if n := strings.Count(string(doc), "<clouduploadjob "); n != jobs {
				b.Fatalf("list holds %d jobs", n)
			}
		}
	}
	b.ReportMetric(ms(percentile(lat, 0.5)), "p50-ms")
	b.ReportMetric(ms(percentile(lat, 0.99)), "p99-ms")
	b.ReportMetric(100/ms(percentile(lat, 0.5)), "x-obs-p50")
	b.ReportMetric(jobs/setup.Seconds(), "jobs/s-created-to-succeeded")
}

// pattern is an endless image of non-zero bytes, never held in memory.
type pattern struct{}

var patternBlock = func() []byte {
	b := make([]byte, 1<<20)
	for i := range b {
		b[i] = byte(i%251 + 1)
	}
	return b
}()

func (pattern) Read(p []byte) (int, error) {
	n := 0
	for n < len(p) {
		n += copy(p[n:], patternBlock)
	}
	return n, nil
}

// diskBaseline writes size bytes to a file in dir and syncs it: what the
// disk allows, measured in the same run.
func diskBaseline(b *testing.B, dir string, size int64) time.Duration {
	t0 := time.Now()
	f, err := os.Create(filepath.Join(dir, "baseline"))
	if err != nil {
		b.Fatal(err)
	}
	defer os.Remove(f.Name())
	defer f.Close()
	if _, err := io.CopyBuffer(f, io.LimitReader(pattern{}, size), make([]byte, 1<<20)); err != nil {
		b.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		b.Fatal(err)
	}
	return time.Since(t0)
}

// serverProcess runs bin/cloudupload-server as a child process (built into
// dir), so its peak memory can be read from /proc.
type serverProcess struct {
	cmd *exec.Cmd
	url string
	log *testutil.SyncBuffer // its standard error
}

func buildServer(b testing.TB) string {
	bin := filepath.Join(b.TempDir(), "cloudupload-server")
	out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
	if err != nil {
		b.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

func startProcess(b testing.TB, bin string, extra ...string) *serverProcess {
	return startProcessIn(b, bin, b.TempDir(), extra...)
}

// startProcessIn runs the server with its state (and uploader) in dir; extra
// are more flags.
func startProcessIn(b testing.TB, bin, dir string, extra ...string) *serverProcess {
	uploader := filepath.Join(dir, "uploader")
	os.WriteFile(uploader, []byte(testUploader), 0o755)
	pub, priv := testKeys()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	cmd := exec.Command(bin, append([]string{"--listen", addr, "--state-dir", filepath.Join(dir, "state"), "--uploader", uploader,
		"--pubkey", pub, "--privkey", priv, "--log-level", "warn"}, extra...)...)
	stderr, _ := cmd.StderrPipe()
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	log := &testutil.SyncBuffer{}
	go io.Copy(log, bufio.NewReader(stderr))
	b.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Signal(os.Interrupt)
			cmd.Wait()
		}
	})
	p := &serverProcess{cmd: cmd, url: "http://" + addr, log: log}
	for i := 0; ; i++ {
		if resp, err := http.Get(p.url + "/"); err == nil {
			resp.Body.Close()
			break
		}
		if i > 500 {
			b.Fatal("server did not start")
		}
		time.Sleep(10 * time.Millisecond)
	}
	return p
}

// vmHWM is the peak resident memory of the process in KiB.
func (p *serverProcess) vmHWM(b testing.TB) float64 {
	s, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.cmd.Process.Pid))
	if err != nil {
		b.Fatal(err)
	}
	for _, line := range strings.Split(string(s), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			n, _ := strconv.ParseFloat(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 64)
			return n
		}
	}
	b.Fatal("no VmHWM")
	return 0
}

// BenchmarkPutImage: POST of a skeleton and PUT of a 256 MiB image (synced
// to disk) to the daemon running as its own process, three times per round
// (median reported, against writing and syncing the same amount straight
// to a file on the same disk right after each PUT, this machine's disk being
// noisy); the time from the PUT's answer to the job's success with an
// instant uploader (for the big image, and p50 over 1 KiB images: the
// scheduling latency); and the daemon's peak memory (VmHWM) after 64 MiB
// and after 256 MiB PUTs, each in a fresh process: it must not grow with
// the image.
func BenchmarkPutImage(b *testing.B) {
	bin := buildServer(b)
	const big, small = 256 << 20, 64 << 20
	var puts, disks, bigDone, tiny []time.Duration
	var hwmBig, hwmSmall float64
	for b.Loop() {
		p := startProcess(b, bin)
		for range 3 {
			t0 := time.Now()
			name, answered := submitPut(b, p.url, "bench", big, io.LimitReader(pattern{}, big))
			puts = append(puts, answered.Sub(t0))
			state, done := waitFinal(b, p.url, name)
			if state != "succeeded" {
				b.Fatalf("job %s %s", name, state)
			}
			bigDone = append(bigDone, done.Sub(answered))
			disks = append(disks, diskBaseline(b, b.TempDir(), big))
		}
		hwmBig = max(hwmBig, p.vmHWM(b))

		q := startProcess(b, bin)
		for range 3 { // as many PUTs as above
			name, _ := submitPut(b, q.url, "bench", small, io.LimitReader(pattern{}, small))
			waitFinal(b, q.url, name)
		}
		hwmSmall = max(hwmSmall, q.vmHWM(b))

		// Scheduling latency without the big file's writeback: tiny images.
		for range 10 {
			name, answered := submitPut(b, q.url, "bench", 1024, io.LimitReader(pattern{}, 1024))
			_, done := waitFinal(b, q.url, name)
			tiny = append(tiny, done.Sub(answered))
		}
	}
	put, disk := percentile(puts, 0.5), percentile(disks, 0.5)
	mibs := 256 / put.Seconds()
	b.ReportMetric(mibs, "MiB/s")
	b.ReportMetric(mibs/780, "x-obs-MiB/s")
	b.ReportMetric(256/disk.Seconds(), "disk-write+fsync-MiB/s")
	b.ReportMetric(disk.Seconds()/put.Seconds(), "x-disk")
	b.ReportMetric(ms(percentile(bigDone, 0.5)), "put-to-succeeded-256MiB-ms")
	b.ReportMetric(ms(percentile(tiny, 0.5)), "put-to-succeeded-1KiB-p50-ms")
	b.ReportMetric(hwmSmall/1024, "peak-MiB-64MiB-put")
	b.ReportMetric(hwmBig/1024, "peak-MiB-256MiB-put")
	b.ReportMetric(hwmBig/hwmSmall, "peak-ratio-256/64")
}
