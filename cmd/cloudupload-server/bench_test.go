package main

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/cloudupload/cloudupload/internal/obstest"
	"github.com/cloudupload/cloudupload/internal/testutil"
)

// The benchmarks run the daemon over loopback HTTP, as a frontend or a
// source server would use it. OBS's own Perl server (internal/obstest) runs
// beside it in the same run as the baseline of BenchmarkPutToSucceeded,
// BenchmarkGetJob, BenchmarkListJobs and BenchmarkPutImage.

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

// BenchmarkGetJob: GET /cloudupload/<id> of a finished job, one client
// after the other (latency) and 4 clients at once (requests per second),
// for this daemon and, in the same run, OBS's Perl server (fewer requests:
// it forks a process per request).
func BenchmarkGetJob(b *testing.B) {
	e := start(b, "--log-level", "warn")
	name := e.create("instant")
	waitFinal(b, e.url, name)
	url := e.url + "/cloudupload/" + name
	obs := obstest.Start(b, obstest.WriteInstantUploader(b))
	obsName, _ := submitPut(b, obs.URL, "bench", 1, strings.NewReader("x"))
	waitFinal(b, obs.URL, obsName)
	obsURL := obs.URL + "/cloudupload/" + obsName
	var lat, obsLat []time.Duration
	var rps, obsRPS float64
	for b.Loop() {
		l, r := measureGets(b, url, 2000)
		lat, rps = append(lat, l...), rps+r
		l, r = measureGets(b, obsURL, 200)
		obsLat, obsRPS = append(obsLat, l...), obsRPS+r
	}
	rps, obsRPS = rps/float64(b.N), obsRPS/float64(b.N)
	b.ReportMetric(ms(percentile(lat, 0.5)), "p50-ms")
	b.ReportMetric(ms(percentile(lat, 0.99)), "p99-ms")
	b.ReportMetric(rps, "req/s")
	b.ReportMetric(ms(percentile(obsLat, 0.5)), "obs-p50-ms")
	b.ReportMetric(obsRPS, "obs-req/s")
	b.ReportMetric(rps/obsRPS, "x-obs-req/s")
}

// measureGets GETs url n times one after the other, returning each
// latency, and then n times from 4 clients at once, returning the requests
// per second.
func measureGets(b *testing.B, url string, n int) ([]time.Duration, float64) {
	lat := make([]time.Duration, 0, n)
	for range n {
		t0 := time.Now()
		get(b, url)
		lat = append(lat, time.Since(t0))
	}
	t0 := time.Now()
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for range n / 4 {
				get(b, url)
			}
		})
	}
	wg.Wait()
	return lat, float64(n/4*4) / time.Since(t0).Seconds()
}

// BenchmarkListJobs: GET /cloudupload with 1,000 finished jobs on disk,
// for this daemon (100 lists) and, in the same run, OBS's Perl server (10
// lists: each takes it tens to hundreds of milliseconds).
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
	obs := obstest.Start(b, obstest.WriteInstantUploader(b))
	fillOBS(b, obs, jobs)
	var lat, obsLat []time.Duration
	for b.Loop() {
		lat = append(lat, measureLists(b, e.url, jobs, 100)...)
		obsLat = append(obsLat, measureLists(b, obs.URL, jobs, 10)...)
	}
	b.ReportMetric(ms(percentile(lat, 0.5)), "p50-ms")
	b.ReportMetric(ms(percentile(lat, 0.99)), "p99-ms")
	b.ReportMetric(ms(percentile(obsLat, 0.5)), "obs-p50-ms")
	b.ReportMetric(ms(percentile(obsLat, 0.5))/ms(percentile(lat, 0.5)), "x-obs-p50")
	b.ReportMetric(jobs/setup.Seconds(), "jobs/s-created-to-succeeded")
}

// measureLists GETs the list at base n times, one after the other, and
// returns each latency; the list must hold jobs jobs.
func measureLists(b *testing.B, base string, jobs, n int) []time.Duration {
	var lat []time.Duration
	for range n {
		t0 := time.Now()
		doc := get(b, base+"/cloudupload")
		lat = append(lat, time.Since(t0))
		if got := strings.Count(string(doc), "<clouduploadjob "); got != jobs {
			b.Fatalf("%s: the list holds %d jobs, want %d", base, got, jobs)
		}
	}
	return lat
}

// fillOBS gives OBS's server n finished jobs: one through its API, and
// copies of that job's file (OBS's own bytes, each with its own name) in
// its done/ directory, where OBS keeps finished jobs; making 1,000 jobs
// through OBS would take minutes, and its list reads the same files either
// way.
func fillOBS(b *testing.B, obs *obstest.Server, n int) {
	name, _ := submitPut(b, obs.URL, "bench", 1, strings.NewReader("x"))
	waitFinal(b, obs.URL, name)
	done := filepath.Join(obs.Dir, "cloudupload", "done")
	doc, err := os.ReadFile(filepath.Join(done, name))
	if err != nil {
		b.Fatal(err)
	}
	first, _ := strconv.Atoi(name)
	for i := first + 1; i < first+n; i++ {
		id := strconv.Itoa(i)
		clone := bytes.Replace(doc, []byte(`name="`+name+`"`), []byte(`name="`+id+`"`), 1)
		if err := os.WriteFile(filepath.Join(done, id), clone, 0o644); err != nil {
			b.Fatal(err)
		}
	}
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
	dir := b.TempDir()
	bin := filepath.Join(dir, "cloudupload-server")
	out, err := exec.Command("go", "build", "-o", dir+"/", ".", "../cloudupload-shim").CombinedOutput()
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
	return startProcessWith(b, bin, uploader, dir, extra...)
}

// startProcessWith runs the server bin with the uploader and its state in
// dir; extra are more flags.
func startProcessWith(b testing.TB, bin, uploader, dir string, extra ...string) *serverProcess {
	testutil.StopStrays(b, dir)
	pub, priv := testKeys()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	for i, a := range extra { // a node of a cluster advertises its own address
		extra[i] = strings.ReplaceAll(a, "{addr}", addr)
	}
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
// noisy, and against the same POST+PUT to OBS's Perl server, which does not
// sync the image); the time from the PUT's answer to the job's success with an
// instant uploader for the big image (for 1 KiB images, against OBS:
// BenchmarkPutToSucceeded); and the daemon's peak memory (VmHWM) after 64 MiB
// and after 256 MiB PUTs, each in a fresh process: it must not grow with
// the image.
func BenchmarkPutImage(b *testing.B) {
	bin := buildServer(b)
	const big, small = 256 << 20, 64 << 20
	var puts, disks, bigDone, obsPuts []time.Duration
	var hwmBig, hwmSmall float64
	obs := obstest.Start(b, obstest.WriteInstantUploader(b))
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

			t0 = time.Now()
			name, answered = submitPut(b, obs.URL, "bench", big, io.LimitReader(pattern{}, big))
			obsPuts = append(obsPuts, answered.Sub(t0))
			waitFinal(b, obs.URL, name) // its image is removed once the job is final
		}
		hwmBig = max(hwmBig, p.vmHWM(b))

		q := startProcess(b, bin)
		for range 3 { // as many PUTs as above
			name, _ := submitPut(b, q.url, "bench", small, io.LimitReader(pattern{}, small))
			waitFinal(b, q.url, name)
		}
		hwmSmall = max(hwmSmall, q.vmHWM(b))
	}
	put, disk := percentile(puts, 0.5), percentile(disks, 0.5)
	mibs, obsMibs := 256/put.Seconds(), 256/percentile(obsPuts, 0.5).Seconds()
	b.ReportMetric(mibs, "MiB/s")
	b.ReportMetric(obsMibs, "obs-MiB/s")
	b.ReportMetric(mibs/obsMibs, "x-obs-MiB/s")
	b.ReportMetric(256/disk.Seconds(), "disk-write+fsync-MiB/s")
	b.ReportMetric(disk.Seconds()/put.Seconds(), "x-disk")
	b.ReportMetric(ms(percentile(bigDone, 0.5)), "put-to-succeeded-256MiB-ms")
	b.ReportMetric(hwmSmall/1024, "peak-MiB-64MiB-put")
	b.ReportMetric(hwmBig/1024, "peak-MiB-256MiB-put")
	b.ReportMetric(hwmBig/hwmSmall, "peak-ratio-256/64")
}

// BenchmarkPutToSucceeded: the time from a PUT's answer (1 KiB image)
// until GET /cloudupload/<id> shows the job succeeded, with an uploader that
// succeeds at once, for this daemon (and its shim) and for OBS's own Perl
// server and worker (internal/obstest) on the same machine in the same run:
// the same uploader script, the same client code polling every
// millisecond, jobs interleaved between the two and the order swapped each
// round. Reports the p50 of each side and their ratio (ours / OBS's).
func BenchmarkPutToSucceeded(b *testing.B) {
	const jobs = 48 // per side and iteration, after one warm-up job each
	// The benchmarks before this one leave hundreds of MiB to write back;
	// both sides start on a disk with nothing pending.
	syscall.Sync()
	uploader := obstest.WriteInstantUploader(b)
	obs := obstest.Start(b, uploader)
	ours := startProcessWith(b, buildServer(b), uploader, b.TempDir())
	sides := []struct {
		name, url string
		lat       []time.Duration
	}{{"ours", ours.url, nil}, {"OBS", obs.URL, nil}}
	putToSucceeded := func(base string) time.Duration {
		name, answered := submitPut(b, base, "bench", 1024, io.LimitReader(pattern{}, 1024))
		state, done := waitFinal(b, base, name)
		if doc := string(get(b, base+"/cloudupload/"+name)); state != "succeeded" || jobField(b, doc, "details") != "ok" {
			b.Fatalf("%s: job %s did not succeed with the instant uploader's result:\n%s", base, name, doc)
		}
		return done.Sub(answered)
	}
	for _, s := range sides {
		putToSucceeded(s.url)
	}
	for b.Loop() {
		for i := range jobs {
			for k := range sides {
				s := &sides[(i+k)%len(sides)]
				s.lat = append(s.lat, putToSucceeded(s.url))
			}
		}
	}
	p50ours, p50obs := percentile(sides[0].lat, 0.5), percentile(sides[1].lat, 0.5)
	b.ReportMetric(ms(p50ours), "put-to-succeeded-p50-ms")
	b.ReportMetric(ms(p50obs), "obs-put-to-succeeded-p50-ms")
	b.ReportMetric(ms(p50ours)/ms(p50obs), "x-obs-put-to-succeeded")
	b.ReportMetric(ms(percentile(sides[0].lat, 0.9)), "put-to-succeeded-p90-ms")
	b.ReportMetric(ms(percentile(sides[1].lat, 0.9)), "obs-put-to-succeeded-p90-ms")
}

// BenchmarkKill: the time from a kill request to its answer, which comes
// once the job is final, for a job in each unfinished state, with the
// default kill grace of 30s (a kill must not wait for it): created (no
// image yet), receiving (a PUT stalled mid-body), scheduled (all slots
// busy) and uploading (an uploader that stops on SIGTERM).
func BenchmarkKill(b *testing.B) {
	bin := buildServer(b)
	release := b.TempDir()
	b.Setenv("RELEASE_DIR", release)
	p := startProcess(b, bin, "--max-uploads", "1", "--kill-grace", "30s")
	kill := func(name string) time.Duration {
		start := time.Now()
		resp, err := benchClient.Post(p.url+"/cloudupload/"+name+"?cmd=kill", "", nil)
		if err != nil {
			b.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		took := time.Since(start)
		doc := string(get(b, p.url+"/cloudupload/"+name))
		if resp.StatusCode != 200 || jobField(b, doc, "details") != "killed" {
			b.Fatalf("kill: %s\n%s", resp.Status, doc)
		}
		return took
	}
	create := func(size int64, mode string) string {
		resp, err := benchClient.Post(p.url+"/cloudupload", "text/xml", strings.NewReader(skeletonFor("alice", size, mode)))
		if err != nil {
			b.Fatal(err)
		}
		doc, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return jobField(b, string(doc), "name")
	}
	waitState := func(name, state string) {
		for i := 0; jobField(b, string(get(b, p.url+"/cloudupload/"+name)), "state") != state; i++ {
			if i > 5000 {
				b.Fatalf("job %s never %s", name, state)
			}
			time.Sleep(time.Millisecond)
		}
	}
	const rounds = 5
	times := map[string][]time.Duration{}
	for range rounds {
		times["created"] = append(times["created"], kill(create(1024, "instant")))

		name := create(8<<20, "instant")
		conn, err := net.Dial("tcp", strings.TrimPrefix(p.url, "http://"))
		if err != nil {
			b.Fatal(err)
		}
		fmt.Fprintf(conn, "PUT /cloudupload/%s HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n", name, 8<<20)
		conn.Write(make([]byte, 1<<20))
		waitState(name, "receiving")
		times["receiving (stalled PUT)"] = append(times["receiving (stalled PUT)"], kill(name))
		conn.Close()

		busy, _ := submitPutMode(b, p.url, "alice", 5, strings.NewReader("12345"), "slow")
		waitState(busy, "uploading")
		queued, _ := submitPutMode(b, p.url, "bob", 5, strings.NewReader("12345"), "instant")
		waitState(queued, "scheduled")
		times["scheduled"] = append(times["scheduled"], kill(queued))
		times["uploading"] = append(times["uploading"], kill(busy))
	}
	for _, state := range []string{"created", "receiving (stalled PUT)", "scheduled", "uploading"} {
		d := times[state]
		b.Logf("kill of a %s job: p50 %.1f ms, max %.1f ms (%d kills, kill grace 30s)", state, ms(percentile(d, 0.5)), ms(percentile(d, 1)), len(d))
	}
}

// BenchmarkCreateBurst: 200 creates at once (POST of a skeleton + PUT of a
// 4 KiB image each) with the project's own uploader, whose target data is
// checked before each job exists: the latency of each create (p50, p99)
// and of the whole burst, with the uploader's long-lived validate-stream
// (stream) and with a validate process per create (exec: the same uploader
// behind a wrapper that does not know validate-stream), and what the
// creates cost without the uploads competing for the two cores (held:
// validate-stream as in stream, but each "upload" is a shell sleeping
// 0.3 s, so the burst's uploads use next to no CPU or disk). The baseline
// (floor) is the same client against an HTTP server in the benchmark's own
// process that answers each request at once, storing and checking nothing:
// what the client, HTTP and this machine's two cores cost by themselves.
func BenchmarkCreateBurst(b *testing.B) {
	b.Run("floor", func(b *testing.B) {
		var next atomic.Int64
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			io.Copy(io.Discard, r.Body)
			w.Header().Set("Content-Type", "text/xml")
			fmt.Fprintf(w, "<clouduploadjob name=\"%d\">\n  <state>created</state>\n</clouduploadjob>\n", next.Add(1))
		}))
		defer srv.Close()
		lat, total, failed := createBurst(b, srv.URL, 200)
		b.ReportMetric(float64(failed), "failed-creates")
		b.ReportMetric(ms(percentile(lat, 0.5)), "ms-p50/create")
		b.ReportMetric(ms(percentile(lat, 0.99)), "ms-p99/create")
		b.ReportMetric(ms(total), "ms/burst")
	})
	bin := testutil.BuildBinaries(b)
	wrapper := filepath.Join(b.TempDir(), "exec-only")
	os.WriteFile(wrapper, []byte("#!/bin/sh\n[ \"$1\" = validate-stream ] && exit 2\nexec "+filepath.Join(bin, "clouduploader")+" \"$@\"\n"), 0o755)
	held := filepath.Join(b.TempDir(), "held")
	os.WriteFile(held, []byte("#!/bin/sh\n[ \"$1\" = validate-stream ] && exec "+filepath.Join(bin, "clouduploader")+" \"$@\"\nsleep 0.3\n"), 0o755)
	for _, mode := range []struct{ name, uploader string }{
		{"stream", filepath.Join(bin, "clouduploader")}, {"exec", wrapper}, {"held", held},
	} {
		b.Run(mode.name, func(b *testing.B) {
			syscall.Sync() // nothing left to write back from earlier benchmarks
			mirror := b.TempDir()
			p := startProcessWith(b, filepath.Join(bin, "cloudupload-server"), mode.uploader, b.TempDir(),
				"--mirror", "bench="+mirror, "--max-connections", "512")
			lat, total, failed := createBurst(b, p.url, 200)
			if failed > 0 {
				for _, line := range strings.Split(p.log.String(), "\n") {
					if strings.Contains(line, "level=ERROR") {
						b.Logf("first error the server logged: %s", line)
						break
					}
				}
			}
			// Let the uploads end before the trees are removed.
			for deadline := time.Now().Add(2 * time.Minute); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
				list := string(get(b, p.url+"/cloudupload"))
				if !strings.Contains(list, "<state>created</state>") && !strings.Contains(list, "<state>receiving</state>") &&
					!strings.Contains(list, "<state>scheduled</state>") && !strings.Contains(list, "<state>uploading</state>") {
					break
				}
			}
			b.ReportMetric(float64(failed), "failed-creates")
			b.ReportMetric(ms(percentile(lat, 0.5)), "ms-p50/create")
			b.ReportMetric(ms(percentile(lat, 0.99)), "ms-p99/create")
			b.ReportMetric(ms(total), "ms/burst")
		})
	}
}

// createBurst makes n mirror jobs at once by skeleton and PUT of 4 KiB and
// returns the latency of each (failed ones included, as far as they got),
// of the whole, and how many failed (the first failure is logged).
func createBurst(b *testing.B, base string, n int) ([]time.Duration, time.Duration, int) {
	data := hex.EncodeToString([]byte(`{"tree":"bench","series":"burst"}`))
	img := make([]byte, 4096)
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: n}}
	lat := make([]time.Duration, n)
	var wg sync.WaitGroup
	var mu sync.Mutex
	failed := 0
	fail := func(format string, args ...any) {
		mu.Lock()
		defer mu.Unlock()
		if failed++; failed == 1 {
			b.Logf("first failed create: "+format, args...)
		}
	}
	start := time.Now()
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			t0 := time.Now()
			defer func() { lat[i] = time.Since(t0) }()
			skel := "<clouduploadjob><user>u" + strconv.Itoa(i%10) + "</user><target>mirror</target><project>P</project><repository>R</repository>" +
				"<package>K</package><arch>x86_64</arch><filename>img-" + strconv.Itoa(i) + ".raw</filename><size>4096</size><details>" +
				data + "</details></clouduploadjob>"
			resp, err := client.Post(base+"/cloudupload", "text/xml", strings.NewReader(skel))
			if err != nil {
				fail("%v", err)
				return
			}
			doc, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 {
				fail("POST: %s %s", resp.Status, doc)
				return
			}
			req, _ := http.NewRequest("PUT", base+"/cloudupload/"+jobField(b, string(doc), "name"), bytes.NewReader(img))
			resp, err = client.Do(req)
			if err != nil {
				fail("%v", err)
				return
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 {
				fail("PUT: %s", resp.Status)
			}
		}()
	}
	wg.Wait()
	return lat, time.Since(start), failed
}
