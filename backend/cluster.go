package backend

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/cloudupload/cloudupload"
	"github.com/cloudupload/cloudupload/backend/shim"
)

// What a node of a cluster (Config.Store set) does beyond a single node:
// keep its lease, stop its uploaders when it loses it, take over the jobs
// of lost nodes, keep finished jobs' logs in the store, and show the jobs
// other nodes hold.

const (
	fileLease = "lease" // STATE/lease: touched at each renewal, watched by the shims
	dirCache  = "cache" // STATE/cache/<id>.log: logs of other nodes' finished jobs
	// takeOverMargin is added to the lease and the kill grace before a lost
	// node's jobs are taken over: its shims stop their uploaders within the
	// lease and the grace after its last renewal.
	takeOverMargin = 5 * time.Second
	// maxSavedLog is how much of a finished job's log the store keeps (the
	// end of it).
	maxSavedLog     = 4 << 20
	sharedPollEvery = time.Second
	// stealWait is how long a job waits for a slot on its node before a
	// node with free slots may take it.
	stealWait = 3 * time.Second
)

// Lost is closed when this node lost its lease in a shared store: its
// uploaders are being stopped and it writes nothing more. The daemon should
// exit (a restart joins the cluster again). Never closed for a disk store.
func (m *Manager) Lost() <-chan struct{} { return m.lost }

// shimEnv is the environment that makes a shim stop its uploader once the
// lease can no longer have been renewed.
func (m *Manager) shimEnv() []string {
	if m.shared == nil {
		return nil
	}
	return []string{
		shim.EnvLeaseFile + "=" + filepath.Join(m.cfg.StateDir, fileLease),
		shim.EnvLease + "=" + m.cfg.Lease.String(),
		shim.EnvKillGrace + "=" + m.cfg.KillGrace.String(),
	}
}

// makeLocalDir makes the local directory of a job held in a shared store,
// with its target data for the uploader.
func (m *Manager) makeLocalDir(id int64, data []byte) error {
	dir := m.jobDir(id)
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return err
	}
	if err := syncDir(m.jobsDir); err != nil {
		return err
	}
	return writeFileAtomic(filepath.Join(dir, fileData), data, 0o600)
}

// saveLogShared keeps the end of job id's log in the shared store. The
// Manager calls it before it records the job final, so that any node that
// sees the job final finds its log.
func (m *Manager) saveLogShared(id int64) {
	log := m.log.With("job", id)
	if b, err := readTail(filepath.Join(m.jobDir(id), fileLog), maxSavedLog); err != nil && !errors.Is(err, os.ErrNotExist) {
		log.Error("cannot read the job's log to keep it in the shared store", "err", err)
	} else if err := m.shared.SaveLog(m.ctx, id, b); err != nil {
		log.Error("cannot keep the job's log in the shared store", "err", err)
	}
}

// archiveShared archives the local directory of final job id.
func (m *Manager) archiveShared(id int64) {
	if _, err := os.Stat(m.jobDir(id)); errors.Is(err, os.ErrNotExist) {
		return
	}
	if err := archiveDir(m.jobsDir, m.doneDir, id); err != nil {
		m.log.Error("cannot archive the job's directory", "job", id, "err", err)
	}
}

// readTail reads at most max bytes from the end of the file at path.
func readTail(path string, limit int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	off := max(0, fi.Size()-limit)
	return io.ReadAll(io.NewSectionReader(f, off, fi.Size()-off))
}

// loadShared archives the local directories of jobs this node no longer
// holds (finished, or taken over by another node while it was away).
func (m *Manager) loadShared() error {
	os.MkdirAll(filepath.Join(m.cfg.StateDir, dirCache), 0o750)
	ents, err := os.ReadDir(m.jobsDir)
	if err != nil {
		return err
	}
	for _, de := range ents {
		id, err := parseID(de.Name())
		if err != nil || m.active[id] != nil {
			continue
		}
		m.log.Info("archiving the local files of a job this node no longer holds", "job", id)
		if err := archiveDir(m.jobsDir, m.doneDir, id); err != nil {
			return fmt.Errorf("archive job %d: %w", id, err)
		}
	}
	return m.touchLease()
}

func (m *Manager) touchLease() error {
	p := filepath.Join(m.cfg.StateDir, fileLease)
	now := time.Now()
	if err := os.Chtimes(p, now, now); errors.Is(err, os.ErrNotExist) {
		return os.WriteFile(p, nil, 0o644)
	} else {
		return err
	}
}

// leaseKeeper renews the lease every third of it, touching the lease file
// the shims watch after each renewal, and takes over the jobs of lost
// nodes. Without a renewal for a whole lease, the node counts itself lost.
func (m *Manager) leaseKeeper() {
	defer m.wg.Done()
	every := m.cfg.Lease / 3
	t := time.NewTicker(every)
	defer t.Stop()
	last := time.Now()
	for {
		select {
		case <-m.ctx.Done():
			return
		case <-m.lost:
			return
		case <-t.C:
		}
		ctx, cancel := context.WithTimeout(m.ctx, every)
		err := m.shared.Renew(ctx)
		cancel()
		switch {
		case errors.Is(err, ErrNotHeld):
			m.loseLease(err)
			return
		case err != nil:
			m.log.Warn("cannot renew this node's lease", "err", err, "since_last_renewal", time.Since(last).Round(time.Second).String())
			if time.Since(last) > m.cfg.Lease {
				m.loseLease(fmt.Errorf("no renewal for %s: %w", m.cfg.Lease, err))
				return
			}
			continue
		}
		last = time.Now()
		if err := m.touchLease(); err != nil {
			m.log.Error("cannot touch the lease file the uploaders watch", "err", err)
		}
		m.takeOver()
	}
}

// loseLease tells the daemon (Lost) that this node lost its lease, and
// removes the lease file: the shims then stop their uploaders within a
// second (SIGTERM, the kill grace, SIGKILL) and record why, whether or not
// the daemon is still there. Nothing more is written for the jobs: another
// node recovers them.
func (m *Manager) loseLease(err error) {
	m.lostOnce.Do(func() {
		m.log.Error("this node lost its lease in the cluster: its uploaders stop; another node recovers its jobs", "err", err)
		if err := os.Remove(filepath.Join(m.cfg.StateDir, fileLease)); err != nil && !errors.Is(err, os.ErrNotExist) {
			m.log.Error("cannot remove the lease file: the uploaders stop once it is older than the lease", "err", err)
		}
		close(m.lost)
	})
}

// takeOver takes the jobs of nodes lost for longer than their shims need
// to stop, and runs them again here or fails them.
func (m *Manager) takeOver() {
	grace := m.cfg.Lease + m.cfg.KillGrace + takeOverMargin
	ctx, cancel := context.WithTimeout(m.ctx, m.cfg.Lease)
	taken, err := m.shared.TakeOver(ctx, grace)
	cancel()
	if err != nil {
		if m.ctx.Err() == nil {
			m.log.Warn("cannot look for lost nodes", "err", err)
		}
		return
	}
	for _, t := range taken {
		m.adoptTaken(t)
	}
	if len(taken) > 0 {
		m.poke()
	}
}

// adoptTaken makes a job taken over from lost node t.From this node's: a job
// whose image comes from the image source fetches it again and runs again
// (an uploading one only when uploads are idempotent, Config.Rerun); a job
// still waiting for its PUT waits here; others fail naming the lost node.
func (m *Manager) adoptTaken(t TakenJob) {
	m.adoptFrom(t, fmt.Sprintf("node %s was lost: fetching the image again", t.From))
}

// adoptMoved makes a waiting job of a busy node this node's: it fetches
// the image again and runs here.
func (m *Manager) adoptMoved(t TakenJob) {
	m.adoptFrom(t, fmt.Sprintf("moved from node %s, whose upload slots were busy: fetching the image again", t.From))
}

// adoptFrom makes a job taken from another node this node's; again is the
// details of a job that runs again here.
func (m *Manager) adoptFrom(t TakenJob, again string) {
	j := t.Job
	log := m.jobLogger(j).With("from_node", t.From)
	e := &entry{job: j, done: make(chan struct{})}
	m.mu.Lock()
	if old := m.jobs[j.ID]; old != nil && !old.job.State.Final() {
		m.mu.Unlock()
		return // already ours
	}
	m.jobs[j.ID] = e
	m.active[j.ID] = e
	if i, found := slices.BinarySearch(m.ids, j.ID); !found {
		m.ids = slices.Insert(m.ids, i, j.ID)
	}
	m.mu.Unlock()
	e.wmu.Lock()
	defer e.wmu.Unlock()
	rerun := j.Origin == cloudupload.OriginFetch && m.cfg.Fetcher != nil &&
		(j.State != cloudupload.StateUploading || m.cfg.Rerun)
	wait := j.Origin == cloudupload.OriginPut && j.State == cloudupload.StateCreated
	if rerun || wait {
		data, err := m.store.Data(m.ctx, j.ID)
		if err == nil {
			err = m.makeLocalDir(j.ID, data)
		}
		if err != nil {
			log.Error("cannot prepare a job taken over from a lost node", "err", err)
			m.move(e, cloudupload.StateFailed, fmt.Sprintf("node %s was lost and this node could not take the job over", t.From), nil)
			return
		}
	}
	switch {
	case rerun:
		log.Warn("taking over a job of another node: fetching its image again", "state", string(j.State), "why", again)
		j.State, j.Details, j.Pid, j.PidStart, j.Started = cloudupload.StateCreated, again, 0, 0, 0
		if err := m.commit(e, j); err == nil {
			m.goFetch(e)
		}
	case wait:
		log.Warn("taking over a job of a lost node: waiting here for its image")
	default:
		reason := fmt.Sprintf("node %s was lost with the image; upload it again", t.From)
		if j.State == cloudupload.StateUploading {
			reason = fmt.Sprintf("node %s was lost while uploading; the upload may be incomplete", t.From)
		}
		log.Warn("taking over a job of a lost node: it cannot run again", "state", string(j.State), "reason", reason)
		m.move(e, cloudupload.StateFailed, reason, nil)
	}
}

// Holder returns the URL of the other live node that holds unfinished job
// id, for the API to pass requests about it on; "" when this node holds
// it, the job is final or unknown, or the store is not shared.
func (m *Manager) Holder(id int64) string {
	if m.shared == nil {
		return ""
	}
	m.mu.RLock()
	e := m.jobs[id]
	var j cloudupload.Job
	if e != nil {
		j = e.job
	}
	m.mu.RUnlock()
	movable := j.State == cloudupload.StateScheduled && j.Origin == cloudupload.OriginFetch
	if (e != nil && !movable) || m.finalCache.has(id) {
		return "" // this node's, or final
	}
	n, live, ok, err := m.shared.Holder(m.ctx, id)
	if err != nil || !ok || n.Name == m.shared.Node().Name {
		return ""
	}
	if e != nil {
		m.forget(e, n.Name) // another node took it while it waited here
	}
	if !live {
		return ""
	}
	return n.URL
}

// forget drops job e, which another node (to) took while it waited for a
// slot here, with its local files.
func (m *Manager) forget(e *entry, to string) {
	m.mu.Lock()
	if m.jobs[e.job.ID] != e {
		m.mu.Unlock()
		return
	}
	id := e.job.ID
	delete(m.jobs, id)
	delete(m.active, id)
	if i, found := slices.BinarySearch(m.ids, id); found {
		m.ids = slices.Delete(m.ids, i, i+1)
	}
	m.mu.Unlock()
	m.log.Info("a waiting job moved to another node", "job", id, "to", to)
	if err := os.RemoveAll(m.jobDir(id)); err != nil {
		m.log.Error("cannot remove the local files of a job that moved", "job", id, "err", err)
	}
	close(e.done)
}

// notHeld handles a write to job e the store refused with ErrNotHeld: a
// waiting job another node took is forgotten; anything else means this
// node lost its lease.
func (m *Manager) notHeld(e *entry, err error) {
	id := m.snapshot(e).ID
	n, _, ok, herr := m.shared.Holder(m.ctx, id)
	if herr == nil && ok && n.Name != m.shared.Node().Name && m.snapshot(e).State == cloudupload.StateScheduled {
		go m.forget(e, n.Name) // the caller holds e.wmu
		return
	}
	m.loseLease(err)
}

// steal takes waiting jobs of busy nodes when this node has free slots.
func (m *Manager) steal() {
	limit := m.cfg.NodeUploads
	if limit <= 0 {
		limit = m.cfg.MaxUploads
	}
	m.mu.RLock()
	busy := 0
	for _, e := range m.active {
		if s := e.job.State; s == cloudupload.StateUploading || s == cloudupload.StateScheduled ||
			(s == cloudupload.StateReceiving && e.job.Origin == cloudupload.OriginFetch) || s == cloudupload.StateCreated {
			busy++
		}
	}
	m.mu.RUnlock()
	if busy >= limit {
		return
	}
	ctx, cancel := context.WithTimeout(m.ctx, sharedPollEvery)
	moved, err := m.shared.Steal(ctx, limit-busy, stealWait, Limits{Max: m.cfg.MaxUploads, PerUser: m.cfg.MaxUploadsPerUser})
	cancel()
	if err != nil {
		if m.ctx.Err() == nil {
			m.log.Warn("cannot look for waiting jobs of busy nodes", "err", err)
		}
		return
	}
	for _, t := range moved {
		m.adoptMoved(t)
	}
}

// notHere is the answer to a change of job id, which this node does not
// hold (lookup's err): with a shared store, nil for a final job (a kill of
// it is done), EUNAVAILABLE for one held by a node that is not live (the
// API passes requests on to live ones); else err.
func (m *Manager) notHere(id int64, err error) error {
	if m.shared == nil {
		return err
	}
	j, gerr := m.storeGet(id)
	switch {
	case gerr != nil:
		return gerr
	case j.State.Final():
		return nil
	}
	n, _, _, herr := m.shared.Holder(m.ctx, id)
	if herr != nil {
		return internal("could not read the job", herr)
	}
	return cloudupload.Errorf(cloudupload.EUNAVAILABLE,
		"job %d is held by node %s, which is not responding; another node takes it over within %s",
		id, n.Name, m.cfg.Lease+m.cfg.KillGrace+takeOverMargin)
}

// storeGet returns a job this node does not have in memory from a shared
// store.
func (m *Manager) storeGet(id int64) (cloudupload.Job, error) {
	if m.shared == nil {
		return cloudupload.Job{}, cloudupload.Errorf(cloudupload.ENOTFOUND, "no such job")
	}
	if j, ok := m.finalCache.get(id); ok {
		return j, nil
	}
	j, err := m.shared.Get(m.ctx, id)
	if err != nil && cloudupload.ErrorCode(err) != cloudupload.ENOTFOUND {
		return j, internal("could not read the job", err)
	}
	if err == nil && j.State.Final() {
		m.finalCache.put(j) // a final job never changes
	}
	return j, err
}

// finalJobs keeps the last finalCacheSize final jobs read from a shared
// store: they never change, and other nodes' jobs are asked for often
// (a frontend polls them).
type finalJobs struct {
	mu    sync.Mutex
	jobs  map[int64]cloudupload.Job
	order []int64
}

const finalCacheSize = 4096

func (c *finalJobs) get(id int64) (cloudupload.Job, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	j, ok := c.jobs[id]
	return j, ok
}

func (c *finalJobs) has(id int64) bool {
	_, ok := c.get(id)
	return ok
}

func (c *finalJobs) put(j cloudupload.Job) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.jobs == nil {
		c.jobs = map[int64]cloudupload.Job{}
	}
	if _, ok := c.jobs[j.ID]; ok {
		return
	}
	if len(c.order) >= finalCacheSize {
		delete(c.jobs, c.order[0])
		c.order = c.order[1:]
	}
	c.jobs[j.ID] = j
	c.order = append(c.order, j.ID)
}

// storeList merges the jobs of a shared store with this node's (which have
// their live figures).
func (m *Manager) storeList(ids []int64, local []cloudupload.Job) []cloudupload.Job {
	all, err := m.shared.List(m.ctx, ids)
	if err != nil {
		m.log.Error("cannot list the jobs of the shared store", "err", err)
		return local
	}
	mine := make(map[int64]cloudupload.Job, len(local))
	for _, j := range local {
		mine[j.ID] = j
	}
	for i, j := range all {
		if l, ok := mine[j.ID]; ok && !j.State.Final() {
			all[i] = l
		}
	}
	return all
}

// remoteLogPath returns a local copy of the kept log of a job this node
// did not run.
func (m *Manager) remoteLogPath(id int64) (string, error) {
	j, err := m.storeGet(id)
	if err != nil {
		return "", err
	}
	p := filepath.Join(m.cfg.StateDir, dirCache, strconv.FormatInt(id, 10)+".log")
	if !j.State.Final() {
		// Held by a node that is not live: nothing to show until another
		// node takes it over.
		return p + ".none", nil
	}
	if _, err := os.Stat(p); err == nil {
		return p, nil
	}
	b, err := m.shared.Log(m.ctx, id)
	if cloudupload.ErrorCode(err) == cloudupload.ENOTFOUND {
		return p + ".none", nil // read as empty; not cached, it may come
	}
	if err != nil {
		return "", internal("could not read the job's log", err)
	}
	if err := writeFileAtomic(p, b, 0o640); err != nil {
		return "", internal("could not read the job's log", err)
	}
	return p, nil
}

// waitRemote polls a shared store until job id, held by another node, is
// final.
func (m *Manager) waitRemote(ctx context.Context, id int64) (cloudupload.Job, error) {
	t := time.NewTicker(sharedPollEvery)
	defer t.Stop()
	for {
		j, err := m.storeGet(id)
		if err != nil || j.State.Final() {
			return j, err
		}
		select {
		case <-ctx.Done():
			return j, ctx.Err()
		case <-t.C:
		}
	}
}
