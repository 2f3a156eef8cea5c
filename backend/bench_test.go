package backend

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cloudupload/cloudupload"
	"github.com/cloudupload/cloudupload/internal/atomicfile"
)

// BenchmarkPutToSucceeded measures the time from a PUT of an image to the
// job being succeeded with an instant uploader (ms/job; ms/after-put from
// the end of the PUT), and its ratios to baselines measured in the same run:
// starting and waiting for that uploader directly (x-exec), and one atomic
// write of a job.json, which fsyncs twice (atomic-writes/job).
func BenchmarkPutToSucceeded(b *testing.B) {
	base := execBaseline(b)
	m := open(b, daemonConfig(b.TempDir()))
	data := fakeData{Mode: "succeed", Result: "ami-1"}.bytes()
	ctx := context.Background()
	var total, after time.Duration
	var syncs int64
	for b.Loop() {
		b.StopTimer()
		j, err := m.Create(ctx, testJob("alice"), data)
		if err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		start := time.Now()
		before := atomicfile.Syncs() + journalSyncs.Load()
		if err := m.Receive(ctx, j.ID, strings.NewReader("image"), 5); err != nil {
			b.Fatal(err)
		}
		put := time.Now()
		// Timed until the job shows succeeded, as a client polling it sees
		// it; its directory then moves to done/ in the background.
		for {
			if g, _ := m.Get(j.ID); g.State.Final() {
				break
			}
			time.Sleep(50 * time.Microsecond)
		}
		total += time.Since(start)
		after += time.Since(put)
		if j, err = m.Wait(ctx, j.ID); err != nil || j.State != cloudupload.StateSucceeded {
			b.Fatalf("job %+v: %v", j, err)
		}
		syncs += atomicfile.Syncs() + journalSyncs.Load() - before
	}
	per := total / time.Duration(b.N)
	write := atomicWriteBaseline(b)
	b.ReportMetric(float64(per.Microseconds())/1000, "ms/job")
	b.ReportMetric(float64((after/time.Duration(b.N)).Microseconds())/1000, "ms/after-put")
	b.ReportMetric(float64(base.Microseconds())/1000, "ms/exec")
	b.ReportMetric(float64(per)/float64(base), "x-exec")
	b.ReportMetric(float64(write.Microseconds())/1000, "ms/atomic-write")
	b.ReportMetric(float64(per)/float64(write), "atomic-writes/job")
	// device flushes the daemon asked for from the PUT to succeeded: its
	// journal's fdatasyncs and syncfs and atomicfile's fsyncs (a large
	// image's own sync and the shim's and uploader's are not counted).
	b.ReportMetric(float64(syncs)/float64(b.N), "daemon-fsyncs/job")
}

// atomicWriteBaseline is the time of one atomic write of a job.json (two
// fsyncs) on the disk of the test's temporary directory.
func atomicWriteBaseline(b *testing.B) time.Duration {
	path := filepath.Join(b.TempDir(), fileJob)
	body, _ := encodeJob(testJob("alice"))
	const n = 20
	start := time.Now()
	for range n {
		if err := writeFileAtomic(path, body, 0o644); err != nil {
			b.Fatal(err)
		}
	}
	return time.Since(start) / n
}

// BenchmarkReceive64MiB measures Receive of a 64 MiB image (MiB/s) against
// the baseline of copying the same bytes into a file and syncing it,
// interleaved in the same run (x-copy: Receive's time over the copy's).
func BenchmarkReceive64MiB(b *testing.B) {
	const size = 64 << 20
	image := make([]byte, size)
	for i := range image {
		image[i] = byte(i * 7)
	}
	dir := b.TempDir()
	baseline := func() time.Duration {
		start := time.Now()
		f, err := os.Create(filepath.Join(dir, "copy"))
		if err != nil {
			b.Fatal(err)
		}
		buf := make([]byte, receiveBufferSize)
		if _, err := io.CopyBuffer(struct{ io.Writer }{f}, bytes.NewReader(image), buf); err != nil {
			b.Fatal(err)
		}
		f.Sync()
		f.Close()
		took := time.Since(start)
		os.Remove(filepath.Join(dir, "copy"))
		return took
	}

	cfg := daemonConfig(dir)
	cfg.MaxUploads = 1
	m := open(b, cfg)
	// A job that never ends holds the only slot, so received images stay.
	shared := b.TempDir()
	hold := create(b, m, "holder", fakeData{Mode: "wait", Dir: shared})
	receive(b, m, hold.ID, "x")
	defer os.WriteFile(filepath.Join(shared, "release-"+hold.Name()), nil, 0o644)
	data := fakeData{Mode: "succeed"}.bytes()
	var total, base time.Duration
	b.SetBytes(size)
	for b.Loop() {
		b.StopTimer()
		base += baseline()
		j, err := m.Create(context.Background(), testJob("alice"), data)
		if err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		start := time.Now()
		if err := m.Receive(context.Background(), j.ID, bytes.NewReader(image), size); err != nil {
			b.Fatal(err)
		}
		total += time.Since(start)
		b.StopTimer()
		m.Kill(context.Background(), j.ID)
		b.StartTimer()
	}
	b.ReportMetric(float64(size)/(1<<20)/(total/time.Duration(b.N)).Seconds(), "MiB/s")
	b.ReportMetric(float64(size)/(1<<20)/(base/time.Duration(b.N)).Seconds(), "copy-MiB/s")
	b.ReportMetric(float64(total)/float64(base), "x-copy")
}

// execBaseline is the time to start the fake uploader and wait for it.
func execBaseline(b *testing.B) time.Duration {
	dir := b.TempDir()
	data := filepath.Join(dir, "data")
	os.WriteFile(data, fakeData{Mode: "succeed", Result: "x"}.bytes(), 0o600)
	const n = 20
	start := time.Now()
	for range n {
		cmd := exec.Command(os.Getenv(envFake), "alice", "fake", filepath.Join(dir, "image"), data, "f.raw", filepath.Join(dir, "result"))
		cmd.Dir = dir
		if err := cmd.Run(); err != nil {
			b.Fatal(err)
		}
	}
	return time.Since(start) / n
}

// BenchmarkThroughput pushes jobs through the whole pipeline (create, PUT,
// upload with an instant uploader, archive) from 8 clients and reports
// jobs/s.
func BenchmarkThroughput(b *testing.B) {
	cfg := daemonConfig(b.TempDir())
	m := open(b, cfg)
	data := fakeData{Mode: "succeed", Result: "ami-1"}.bytes()
	ctx := context.Background()
	b.ResetTimer()
	start := time.Now()
	var wg sync.WaitGroup
	jobs := make(chan int, b.N)
	for i := range b.N {
		jobs <- i
	}
	close(jobs)
	for c := range 8 {
		wg.Go(func() {
			for range jobs {
				j, err := m.Create(ctx, testJob(fmt.Sprintf("user%d", c)), data)
				if err == nil {
					err = m.Receive(ctx, j.ID, strings.NewReader("image"), 5)
				}
				if err == nil {
					j, err = m.Wait(ctx, j.ID)
				}
				if err != nil || j.State != cloudupload.StateSucceeded {
					b.Errorf("job %+v: %v", j, err)
					return
				}
			}
		})
	}
	wg.Wait()
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "jobs/s")
}

// openWithJobs opens a Manager on a state directory holding n finished
// jobs, written as a daemon would have.
func openWithJobs(b *testing.B, n int) *Manager {
	cfg := daemonConfig(b.TempDir())
	m := open(b, cfg)
	m.Close()
	now := time.Now().Unix()
	for i := 1; i <= n; i++ {
		j := testJob(fmt.Sprintf("user%d", i%7))
		j.ID, j.State, j.Details = int64(i), cloudupload.StateSucceeded, fmt.Sprintf("ami-%08x", i)
		j.Created, j.Updated, j.Started, j.Finished, j.Size = now, now, now, now, 1<<30
		dir := filepath.Join(cfg.StateDir, dirDone, j.Name())
		if err := os.Mkdir(dir, 0o750); err != nil {
			b.Fatal(err)
		}
		body, _ := encodeJob(j)
		if err := os.WriteFile(filepath.Join(dir, fileJob), body, 0o644); err != nil {
			b.Fatal(err)
		}
	}
	return open(b, cfg)
}

// BenchmarkOpen1000 measures loading a state directory of 1,000 jobs.
func BenchmarkOpen1000(b *testing.B) {
	m := openWithJobs(b, 1000)
	cfg := m.cfg
	m.Close()
	for b.Loop() {
		m, err := Open(context.Background(), cfg)
		if err != nil {
			b.Fatal(err)
		}
		m.Close()
	}
}

// BenchmarkGet measures Get of one job among 1,000.
func BenchmarkGet(b *testing.B) {
	m := openWithJobs(b, 1000)
	for i := 0; b.Loop(); i++ {
		if _, err := m.Get(int64(i%1000 + 1)); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkList1000 measures List(nil) of 1,000 jobs (µs/list).
func BenchmarkList1000(b *testing.B) {
	m := openWithJobs(b, 1000)
	start := time.Now()
	for b.Loop() {
		if l := m.List(nil); len(l) != 1000 {
			b.Fatalf("%d jobs", len(l))
		}
	}
	b.ReportMetric(float64(time.Since(start).Microseconds())/float64(b.N), "µs/list")
}
