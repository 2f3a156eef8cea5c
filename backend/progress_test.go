package backend

import (
	"context"
	"io"
	"strconv"
	"testing"
	"time"

	"github.com/cloudupload/cloudupload"
)

// observer records what the Manager tells it.
type observer struct{ ends chan string }

func (o *observer) JobFinished(j cloudupload.Job, upload string) {
	o.ends <- string(j.State) + " " + upload
}

// An uploader that reports progress: the job shows it moving, with rate and
// ETA, and keeps 100% once succeeded, in memory and in job.json.
func TestProgressUploading(t *testing.T) {
	cfg := daemonConfig(t.TempDir())
	obs := &observer{ends: make(chan string, 4)}
	cfg.Observer = obs
	m := open(t, cfg)
	const total = 100 << 20 // 2 s at 1 MiB per 20 ms
	j := create(t, m, "alice", fakeData{Mode: "progress", Total: total, Result: "done"})
	receive(t, m, j.ID, "image")
	var seen []int64
	waitFor(t, "progress to move", func() bool {
		g, _ := m.Get(j.ID)
		if g.State != cloudupload.StateUploading || g.BytesDone == 0 {
			return g.State.Final()
		}
		if n := len(seen); n == 0 || seen[n-1] != g.BytesDone {
			seen = append(seen, g.BytesDone)
			if g.BytesTotal != total || g.Progress != strconv.FormatInt(g.BytesDone*100/total, 10) {
				t.Errorf("progress %q, %d of %d", g.Progress, g.BytesDone, g.BytesTotal)
			}
			if len(seen) >= 3 && g.BytesDone < total/2 && (g.Rate <= 0 || g.Rate > 100<<20 || g.ETA <= 0) {
				t.Errorf("rate %f, ETA %d while moving", g.Rate, g.ETA)
			}
			if l := m.List([]int64{j.ID}); l[0].BytesDone < g.BytesDone {
				t.Errorf("list shows %d bytes, get %d", l[0].BytesDone, g.BytesDone)
			}
		}
		time.Sleep(100 * time.Millisecond)
		return len(seen) >= 4
	})
	if len(seen) < 4 {
		t.Fatalf("progress seen: %v", seen)
	}
	for i := 1; i < len(seen); i++ {
		if seen[i] <= seen[i-1] {
			t.Fatalf("progress went back: %v", seen)
		}
	}
	g := wait(t, m, j.ID)
	wantState(t, g, cloudupload.StateSucceeded, "done")
	if g.Progress != "100" || g.BytesDone != total || g.BytesTotal != total || g.ETA != 0 {
		t.Errorf("final: %q %d of %d, ETA %d", g.Progress, g.BytesDone, g.BytesTotal, g.ETA)
	}
	if d := diskJob(t, cfg.StateDir, j.ID); d.Progress != "100" || d.BytesDone != total || d.Rate <= 0 {
		t.Errorf("job.json: %q %d bytes %f/s", d.Progress, d.BytesDone, d.Rate)
	}
	if got := <-obs.ends; got != "succeeded succeeded" {
		t.Errorf("observer: %q", got)
	}
	if st := m.Stats(); st.BytesUploaded != total || st.BytesReceived != 5 || st.Uploading != 0 ||
		st.Jobs[StatsKey{cloudupload.StateSucceeded, "fake"}] != 1 {
		t.Errorf("stats %+v", st)
	}
}

// A killed upload keeps where it stopped.
func TestProgressKilled(t *testing.T) {
	cfg := daemonConfig(t.TempDir())
	obs := &observer{ends: make(chan string, 4)}
	cfg.Observer = obs
	m := open(t, cfg)
	j := create(t, m, "alice", fakeData{Mode: "progress", Total: 1 << 40})
	receive(t, m, j.ID, "image")
	waitFor(t, "progress", func() bool { g, _ := m.Get(j.ID); return g.BytesDone > 0 })
	if st := m.Stats(); st.Uploading != 1 || st.BytesUploaded == 0 {
		t.Errorf("stats while uploading %+v", st)
	}
	if err := m.Kill(context.Background(), j.ID); err != nil {
		t.Fatal(err)
	}
	g, _ := m.Get(j.ID)
	wantState(t, g, cloudupload.StateFailed, "killed")
	if g.Progress != "0" || g.BytesDone == 0 || g.BytesTotal != 1<<40 {
		t.Errorf("killed job: %q %d of %d", g.Progress, g.BytesDone, g.BytesTotal)
	}
	if d := diskJob(t, cfg.StateDir, j.ID); d.BytesDone != g.BytesDone {
		t.Errorf("job.json: %d bytes, memory %d", d.BytesDone, g.BytesDone)
	}
	if got := <-obs.ends; got != "failed killed" {
		t.Errorf("observer: %q", got)
	}
}

// While an image is received, the bytes received are the progress.
func TestProgressReceiving(t *testing.T) {
	m := open(t, daemonConfig(t.TempDir()))
	j, err := m.Create(context.Background(), func() cloudupload.Job { j := testJob("alice"); j.Size = 1000; return j }(),
		fakeData{Mode: "succeed"}.bytes())
	if err != nil {
		t.Fatal(err)
	}
	pr, pw := io.Pipe()
	recvErr := make(chan error, 1)
	go func() { recvErr <- m.Receive(context.Background(), j.ID, pr, 1000) }()
	for _, n := range []int64{250, 500} {
		pw.Write(make([]byte, 250))
		waitFor(t, "bytes received", func() bool { g, _ := m.Get(j.ID); return g.BytesDone == n })
		g, _ := m.Get(j.ID)
		if g.State != cloudupload.StateReceiving || g.BytesTotal != 1000 || g.Progress != strconv.FormatInt(n/10, 10) {
			t.Errorf("receiving: %s %q %d of %d", g.State, g.Progress, g.BytesDone, g.BytesTotal)
		}
	}
	pw.Write(make([]byte, 500))
	pw.Close()
	if err := <-recvErr; err != nil {
		t.Fatal(err)
	}
	if g, _ := m.Get(j.ID); g.State != cloudupload.StateScheduled && g.State != cloudupload.StateUploading && !g.State.Final() {
		t.Errorf("after receiving: %s", g.State)
	}
	if st := m.Stats(); st.BytesReceived != 1000 {
		t.Errorf("bytes received %d", st.BytesReceived)
	}
}

// Rate and ETA from samples.
func TestProgressRate(t *testing.T) {
	var p progress
	t0 := time.Unix(1000, 0)
	p.begin(cloudupload.StateUploading, t0)
	p.add(t0.Add(2*time.Second), 20)
	if r := p.rate(t0.Add(2*time.Second), 20); r != 10 {
		t.Errorf("rate from the start: %f", r)
	}
	for i := 3; i <= 30; i++ {
		p.add(t0.Add(time.Duration(i)*time.Second), int64(20+(i-2)*100))
	}
	if r := p.rate(t0.Add(30*time.Second), 2820); r != 100 {
		t.Errorf("rate over the window: %f", r)
	}
	if len(p.samples) > 12 {
		t.Errorf("%d samples kept", len(p.samples))
	}
	// A stall: the rate falls to 0 once the window holds no movement.
	for i := 31; i <= 45; i++ {
		p.add(t0.Add(time.Duration(i)*time.Second), 2820)
	}
	if r := p.rate(t0.Add(45*time.Second), 2820); r != 0 {
		t.Errorf("rate after a stall: %f", r)
	}
	if percent(1, 3) != "33" || percent(5, 0) != "" || percent(7, 5) != "100" {
		t.Error("percent")
	}
}

// An image fetched from the build root: the image file's size is the
// progress, and the bytes count as received once fetched.
func TestProgressFetching(t *testing.T) {
	cfg := daemonConfig(t.TempDir())
	f := &fakeFetcher{content: make([]byte, 1000), block: make(chan struct{}), started: make(chan struct{}, 1)}
	cfg.Fetcher = f
	m := open(t, cfg)
	fj := testJob("alice")
	fj.Origin = cloudupload.OriginFetch
	j, err := m.Create(context.Background(), fj, fakeData{Mode: "succeed"}.bytes())
	if err != nil {
		t.Fatal(err)
	}
	<-f.started
	g, _ := m.Get(j.ID)
	if g.State != cloudupload.StateReceiving || g.BytesDone != 500 || g.BytesTotal != 1000 || g.Progress != "50" {
		t.Errorf("fetching: %s %q %d of %d", g.State, g.Progress, g.BytesDone, g.BytesTotal)
	}
	close(f.block)
	wait(t, m, j.ID)
	if st := m.Stats(); st.BytesReceived != 1000 {
		t.Errorf("bytes received %d", st.BytesReceived)
	}
}
