package httpapi

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"

	"github.com/cloudupload/cloudupload"
)

// fakeManager is a hand-written Manager for the handler tests: jobs in a
// map, logs in a directory, calls recorded.
type fakeManager struct {
	mu      sync.Mutex
	dir     string
	next    int64
	jobs    map[int64]*cloudupload.Job
	data    map[int64][]byte
	image   map[int64]int64 // bytes received
	killed  []int64
	failErr error // returned by Create when set
	// archive makes the log of a final job live elsewhere, as the real
	// Manager's archive does.
	archive bool
}

func newFake(dir string) *fakeManager {
	return &fakeManager{dir: dir, next: 1, jobs: map[int64]*cloudupload.Job{}, data: map[int64][]byte{}, image: map[int64]int64{}}
}

func (m *fakeManager) add(j cloudupload.Job) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.jobs[j.ID] = &j
	if j.ID >= m.next {
		m.next = j.ID + 1
	}
}

func (m *fakeManager) setState(id int64, s cloudupload.State, details string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.jobs[id].State, m.jobs[id].Details = s, details
}

func (m *fakeManager) Create(ctx context.Context, job cloudupload.Job, data []byte) (cloudupload.Job, error) {
	if m.failErr != nil {
		return cloudupload.Job{}, m.failErr
	}
	if err := cloudupload.CheckJob(&job); err != nil {
		return cloudupload.Job{}, err
	}
	if job.Target == "unknown" {
		return cloudupload.Job{}, cloudupload.Errorf(cloudupload.EINVALID, "target \"unknown\" is not known")
	}
	if job.Origin == cloudupload.OriginFetch && job.Filename == "missing.raw.xz" {
		return cloudupload.Job{}, cloudupload.Errorf(cloudupload.ENOTFOUND, "image not found: %s/%s/%s/%s/%s", job.Project, job.Repository, job.Arch, job.Package, job.Filename)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	job.ID = m.next
	m.next++
	job.State, job.Details, job.Created = cloudupload.StateCreated, "waiting to receive image", 1700000000
	m.jobs[job.ID] = &job
	m.data[job.ID] = data
	return job, nil
}

func (m *fakeManager) Receive(ctx context.Context, id int64, body io.Reader, size int64) error {
	m.mu.Lock()
	j, ok := m.jobs[id]
	if !ok {
		m.mu.Unlock()
		return cloudupload.Errorf(cloudupload.ENOTFOUND, "no such job")
	}
	if j.State != cloudupload.StateCreated {
		m.mu.Unlock()
		return cloudupload.Errorf(cloudupload.ECONFLICT, "job is not in created state")
	}
	j.State = cloudupload.StateReceiving
	want := j.Size
	m.mu.Unlock()
	if size >= 0 && size != want {
		m.mu.Lock()
		defer m.mu.Unlock()
		j.State, j.Details = cloudupload.StateFailed, "size mismatch"
		return cloudupload.Errorf(cloudupload.EINVALID, "the request announces %d bytes, expected %d", size, want)
	}
	n, err := io.Copy(io.Discard, body)
	m.mu.Lock()
	defer m.mu.Unlock()
	m.image[id] = n
	if err == nil && n != want {
		err = fmt.Errorf("short body")
	}
	if err != nil {
		j.State, j.Details = cloudupload.StateFailed, "image incomplete"
		return &cloudupload.Error{Code: cloudupload.EINVALID, Message: "image incomplete", Err: err}
	}
	j.State, j.Size = cloudupload.StateScheduled, n
	return nil
}

func (m *fakeManager) Get(id int64) (cloudupload.Job, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if j, ok := m.jobs[id]; ok {
		return *j, nil
	}
	return cloudupload.Job{}, cloudupload.Errorf(cloudupload.ENOTFOUND, "no such job")
}

func (m *fakeManager) List(ids []int64) []cloudupload.Job {
	m.mu.Lock()
	defer m.mu.Unlock()
	if ids == nil {
		for id := range m.next {
			ids = append(ids, id)
		}
	}
	var out []cloudupload.Job
	for _, id := range ids {
		if j, ok := m.jobs[id]; ok {
			out = append(out, *j)
		}
	}
	return out
}

func (m *fakeManager) Kill(ctx context.Context, id int64) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	j, ok := m.jobs[id]
	if !ok {
		return cloudupload.Errorf(cloudupload.ENOTFOUND, "no such job")
	}
	if id == 66 {
		return errors.New("kill: /var/lib/secret/path: permission denied")
	}
	if !j.State.Final() {
		j.State, j.Details = cloudupload.StateFailed, "killed"
		m.killed = append(m.killed, id)
	}
	return nil
}

func (m *fakeManager) LogPath(id int64) (string, error) {
	j, err := m.Get(id)
	if err != nil {
		return "", err
	}
	if m.archive && j.State.Final() {
		return filepath.Join(m.dir, "done-"+fmt.Sprint(id)+".log"), nil
	}
	return filepath.Join(m.dir, fmt.Sprint(id)+".log"), nil
}

func (m *fakeManager) appendLog(id int64, s string) error {
	p, _ := m.LogPath(id)
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = f.WriteString(s)
	return err
}
