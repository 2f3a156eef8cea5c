package backend

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/cloudupload/cloudupload"
	"github.com/cloudupload/cloudupload/internal/atomicfile"
)

// The disk store's journal: every change of a job is a record appended to
// STATE/journal.<n> and made durable (fdatasync) before the job's own
// files are written, without fsync, and before the change is acted on.
// Changes made at the same time share one fdatasync (group commit), so a
// burst of creates costs a few device flushes instead of several per job.
// A checkpoint, in the background, starts a new journal file, makes every
// file written before it durable with one syncfs of the state directory's
// file system, and removes the old journal. Open replays what journals a
// crash left over the job files (replayJournals) and checkpoints; a clean
// stop leaves none, so the state directory is then exactly what doc.go
// describes without a journal.
const (
	journalPrefix = "journal."
	// checkpointSize bounds how much a restart replays, with checkpointEvery.
	checkpointSize = 16 << 20
	// maxRecord bounds a record a replay accepts: anything longer is the
	// torn end of a journal, never a record (job documents and target data
	// are limited far below it, images in a record to maxInlineImage).
	maxRecord = 64 << 20
)

// A record's flags.
const (
	recData  = 1 << iota // the job's target data follows its document
	recImage             // then its image
)

// journalSyncs counts the fdatasyncs and syncfs of every journal of this
// process, for benchmarks that count a job's device flushes.
var journalSyncs atomic.Int64

// journalSyncHook, when set (by tests), is called by the committer before
// each fdatasync with the number of records it covers.
var journalSyncHook func(records int)

// checkpointEvery is how often a journal with records is checkpointed (a
// variable for tests).
var checkpointEvery = 5 * time.Second

// journalRecord is one change of a job: its whole document, and at its
// creation its target data, or with the record that schedules it a small
// image (UpdateImage).
type journalRecord struct {
	job   cloudupload.Job
	doc   []byte // job encoded (encodeJob), when the caller has it already
	data  []byte
	image []byte
	flags byte
}

// encode appends the record to b: u32 length of what follows the
// checksum, u32 CRC-32C of it, flags, then each part as u32 length and
// bytes (document, data if recData, image if recImage). Little endian.
func (r *journalRecord) encode(b []byte) ([]byte, error) {
	doc := r.doc
	if doc == nil {
		var err error
		if doc, err = encodeJob(r.job); err != nil {
			return b, err
		}
	}
	n := 1 + 4 + len(doc)
	if r.flags&recData != 0 {
		n += 4 + len(r.data)
	}
	if r.flags&recImage != 0 {
		n += 4 + len(r.image)
	}
	start := len(b)
	b = binary.LittleEndian.AppendUint32(b, uint32(n))
	b = binary.LittleEndian.AppendUint32(b, 0)
	b = append(b, r.flags)
	b = binary.LittleEndian.AppendUint32(b, uint32(len(doc)))
	b = append(b, doc...)
	if r.flags&recData != 0 {
		b = binary.LittleEndian.AppendUint32(b, uint32(len(r.data)))
		b = append(b, r.data...)
	}
	if r.flags&recImage != 0 {
		b = binary.LittleEndian.AppendUint32(b, uint32(len(r.image)))
		b = append(b, r.image...)
	}
	binary.LittleEndian.PutUint32(b[start+4:], crc32.Checksum(b[start+8:], crcTable))
	return b, nil
}

var crcTable = crc32.MakeTable(crc32.Castagnoli)

// errTorn is the end of a journal cut by a crash: a record whose length,
// checksum or parts do not hold together. Nothing after it was committed.
var errTorn = errors.New("torn record")

// readRecord reads the next record of a journal; io.EOF at its clean end.
func readRecord(r *bufio.Reader) (journalRecord, error) {
	var rec journalRecord
	var head [8]byte
	if _, err := io.ReadFull(r, head[:]); err == io.EOF {
		return rec, io.EOF
	} else if err != nil {
		return rec, errTorn
	}
	n := binary.LittleEndian.Uint32(head[:])
	if n < 5 || n > maxRecord {
		return rec, errTorn
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(r, body); err != nil {
		return rec, errTorn
	}
	if crc32.Checksum(body, crcTable) != binary.LittleEndian.Uint32(head[4:]) {
		return rec, errTorn
	}
	rec.flags, body = body[0], body[1:]
	part := func() ([]byte, bool) {
		if len(body) < 4 {
			return nil, false
		}
		l := binary.LittleEndian.Uint32(body)
		if uint64(l) > uint64(len(body)-4) {
			return nil, false
		}
		p := body[4 : 4+l]
		body = body[4+l:]
		return p, true
	}
	doc, ok := part()
	if !ok {
		return rec, errTorn
	}
	if rec.flags&recData != 0 {
		if rec.data, ok = part(); !ok {
			return rec, errTorn
		}
	}
	if rec.flags&recImage != 0 {
		if rec.image, ok = part(); !ok {
			return rec, errTorn
		}
	}
	if err := decodeJob(doc, &rec.job); err != nil {
		// The checksum held: this is not a torn write but a record this
		// daemon cannot read, which must not be skipped silently.
		return rec, fmt.Errorf("a journal record does not decode: %w", err)
	}
	return rec, nil
}

// journal appends records with group commit and checkpoints (see above).
type journal struct {
	dir string
	log *slog.Logger
	// sd is the state directory, open for syncfs: a writeback error on its
	// file system since it was opened is reported by the next syncfs.
	sd *os.File

	// gate is held for reading by each change from before its record is
	// committed until its files are written, and for writing while a
	// checkpoint switches journal files: so every record of a switched-out
	// journal has its files written before the syncfs that makes them
	// durable.
	gate sync.RWMutex

	mu      sync.Mutex
	f       *os.File // the journal appended to
	n       int64    // its number
	size    int64    // its committed length
	buf     []byte   // records waiting for the committer
	waiters []chan error
	broken  error    // set when the journal can no longer be trusted
	closed  bool     // set by close: no more records
	old     []string // switched-out journals, removed after a syncfs

	wake, ckpt      chan struct{}
	stop, committed chan struct{}
	ckptDone        chan struct{}
	commits, syncs  int64 // records committed and fdatasyncs, for logs and tests
}

// journalNames returns the journal files in dir, oldest first, with their
// numbers.
func journalNames(dir string) ([]string, int64, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, 0, err
	}
	var nums []int64
	for _, e := range ents {
		if s, ok := strings.CutPrefix(e.Name(), journalPrefix); ok {
			if n, err := strconv.ParseInt(s, 10, 64); err == nil && n > 0 && !e.IsDir() {
				nums = append(nums, n)
			}
		}
	}
	slices.Sort(nums)
	names := make([]string, len(nums))
	for i, n := range nums {
		names[i] = filepath.Join(dir, journalPrefix+strconv.FormatInt(n, 10))
	}
	last := int64(0)
	if len(nums) > 0 {
		last = nums[len(nums)-1]
	}
	return names, last, nil
}

// replayedJob is what the journals say of one job: its last document,
// and the last target data and image recorded for it.
type replayedJob struct {
	job               cloudupload.Job
	data, image       []byte
	hasData, hasImage bool
}

// readJournals reads the journals in order. A torn record ends its journal
// (what follows was never committed); the count of torn ends is returned.
func readJournals(names []string) (map[int64]*replayedJob, int, int, error) {
	jobs := map[int64]*replayedJob{}
	records, torn := 0, 0
	for _, name := range names {
		f, err := os.Open(name)
		if err != nil {
			return nil, 0, 0, err
		}
		r := bufio.NewReaderSize(f, 1<<20)
		for {
			rec, err := readRecord(r)
			if err == io.EOF {
				break
			} else if errors.Is(err, errTorn) {
				torn++
				break
			} else if err != nil {
				f.Close()
				return nil, 0, 0, fmt.Errorf("%s: record %d: %w", name, records+1, err)
			}
			records++
			rj := jobs[rec.job.ID]
			if rj == nil {
				rj = &replayedJob{}
				jobs[rec.job.ID] = rj
			}
			rj.job = rec.job
			if rec.flags&recData != 0 {
				rj.data, rj.hasData = rec.data, true
			}
			if rec.flags&recImage != 0 {
				rj.image, rj.hasImage = rec.image, true
			}
		}
		f.Close()
	}
	return jobs, records, torn, nil
}

// openJournal opens a new journal in dir after the existing ones, which
// must have been replayed: they are removed at the first checkpoint.
func openJournal(dir string, log *slog.Logger) (*journal, error) {
	names, last, err := journalNames(dir)
	if err != nil {
		return nil, err
	}
	sd, err := os.Open(dir)
	if err != nil {
		return nil, err
	}
	jl := &journal{dir: dir, log: log, sd: sd, n: last, old: names,
		wake: make(chan struct{}, 1), ckpt: make(chan struct{}, 1),
		stop: make(chan struct{}), committed: make(chan struct{}), ckptDone: make(chan struct{})}
	if jl.f, err = jl.create(last + 1); err != nil {
		sd.Close()
		return nil, err
	}
	jl.n = last + 1
	go jl.committer()
	go jl.checkpointer()
	return jl, nil
}

// create makes journal file n, durable in the directory.
func (jl *journal) create(n int64) (*os.File, error) {
	f, err := os.OpenFile(filepath.Join(jl.dir, journalPrefix+strconv.FormatInt(n, 10)), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, fmt.Errorf("create journal: %w", err)
	}
	if err := syncDir(jl.dir); err != nil {
		f.Close()
		return nil, fmt.Errorf("create journal: %w", err)
	}
	return f, nil
}

// commit appends rec and returns once it is durable. The caller holds
// gate for reading, from before commit until the files of the change are
// written.
func (jl *journal) commit(rec *journalRecord) error {
	w := make(chan error, 1)
	jl.mu.Lock()
	if jl.closed {
		jl.mu.Unlock()
		return errors.New("the job store is closed")
	}
	if jl.broken != nil {
		err := jl.broken
		jl.mu.Unlock()
		return err
	}
	var err error
	if jl.buf, err = rec.encode(jl.buf); err != nil {
		jl.mu.Unlock()
		return err
	}
	jl.waiters = append(jl.waiters, w)
	jl.mu.Unlock()
	select {
	case jl.wake <- struct{}{}:
	default:
	}
	return <-w
}

// committer writes the waiting records and syncs them, one fdatasync for
// all that waited, until stop.
func (jl *journal) committer() {
	defer close(jl.committed)
	var spare []byte
	for {
		stopping := false
		select {
		case <-jl.wake:
		case <-jl.stop:
			stopping = true // after a last batch: close refuses new records first
		}
		jl.mu.Lock()
		buf, ws, f, size := jl.buf, jl.waiters, jl.f, jl.size
		if len(ws) == 0 {
			jl.mu.Unlock()
			if stopping {
				return
			}
			continue
		}
		// Double buffering: writers fill the other buffer meanwhile.
		jl.buf, jl.waiters = spare[:0], nil
		jl.mu.Unlock()
		var broken error
		_, err := f.WriteAt(buf, size)
		if err != nil {
			// A full disk: cut the partial batch off, so later records are
			// not hidden behind a torn one.
			if terr := f.Truncate(size); terr != nil {
				broken = terr
			}
		} else {
			journalSyncs.Add(1)
			if journalSyncHook != nil {
				journalSyncHook(len(ws))
			}
			if err = unix.Fdatasync(int(f.Fd())); err != nil {
				broken = err // what reached the disk is unknown
			}
		}
		jl.mu.Lock()
		if err == nil {
			jl.size = size + int64(len(buf))
			jl.commits += int64(len(ws))
			jl.syncs++
			if jl.size >= checkpointSize {
				select {
				case jl.ckpt <- struct{}{}:
				default:
				}
			}
		}
		if broken != nil && jl.broken == nil {
			jl.broken = fmt.Errorf("the job journal cannot be written (restart the server once the cause is fixed): %w", broken)
			jl.log.Error("the job journal cannot be written: every further change fails until the server is restarted", "err", broken)
		}
		jl.mu.Unlock()
		if err != nil {
			err = fmt.Errorf("write the job journal: %w", err)
		}
		for _, w := range ws {
			w <- err
		}
		if cap(buf) <= 4<<20 {
			spare = buf
		} else {
			spare = nil
		}
		if stopping {
			return
		}
	}
}

// checkpointer checkpoints every checkpointEvery when something was
// committed, and when the committer finds the journal large, until stop.
func (jl *journal) checkpointer() {
	defer close(jl.ckptDone)
	t := time.NewTicker(checkpointEvery)
	defer t.Stop()
	for {
		select {
		case <-t.C:
		case <-jl.ckpt:
		case <-jl.stop:
			return
		}
		if err := jl.checkpoint(); err != nil {
			jl.log.Error("journal checkpoint failed: the journal is kept and replayed at the next start", "err", err)
		}
	}
}

// checkpoint starts a new journal file when the current one holds
// records, makes every job file written so far durable (syncfs), and
// removes the switched-out journals.
func (jl *journal) checkpoint() error {
	jl.mu.Lock()
	empty, n, broken := jl.size == 0 && len(jl.waiters) == 0, jl.n, jl.broken
	jl.mu.Unlock()
	if broken != nil {
		return nil // kept for the replay at the next start
	}
	if empty && len(jl.old) == 0 {
		return nil
	}
	if !empty {
		nf, err := jl.create(n + 1)
		if err != nil {
			return err
		}
		jl.gate.Lock()
		jl.mu.Lock()
		prev := jl.f
		jl.f, jl.n, jl.size = nf, n+1, 0
		jl.mu.Unlock()
		jl.gate.Unlock()
		jl.old = append(jl.old, prev.Name())
		prev.Close()
	}
	journalSyncs.Add(1)
	if err := unix.Syncfs(int(jl.sd.Fd())); err != nil {
		return fmt.Errorf("syncfs of the state directory: %w", err)
	}
	for _, name := range jl.old {
		if err := os.Remove(name); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
	}
	jl.old = nil
	// A removal that did not reach the disk would replay records older
	// than the files: harmless (the newer journal follows), but make it
	// durable all the same.
	return syncDir(jl.dir)
}

// close stops the committer and checkpointer, checkpoints, and removes
// the last (empty) journal: a clean stop leaves no journal. Callers must
// have stopped changing jobs.
func (jl *journal) close() error {
	select {
	case <-jl.stop:
		return nil
	default:
	}
	jl.mu.Lock()
	jl.closed = true
	jl.mu.Unlock()
	close(jl.stop)
	<-jl.committed
	<-jl.ckptDone
	err := jl.checkpoint()
	jl.mu.Lock()
	f, size, broken := jl.f, jl.size, jl.broken
	jl.mu.Unlock()
	f.Close()
	if err == nil && size == 0 && broken == nil {
		if err = os.Remove(f.Name()); err == nil {
			err = syncDir(jl.dir)
		}
	}
	jl.sd.Close()
	return err
}

// writeIfDifferent replaces path with b unless it already holds exactly b
// (a restart after a crash of the daemon alone finds its writes intact;
// an uploader may be reading the image). Not synced: the caller syncs the
// file system.
func writeIfDifferent(path string, b []byte, perm os.FileMode) error {
	if cur, err := os.ReadFile(path); err == nil && string(cur) == string(b) {
		return nil
	}
	return atomicfile.Replace(path, b, perm)
}

// diverged is called when the files of job id could not be written after
// its record was committed: the journal then holds a change the files do
// not show, and must not be removed by a checkpoint. The journal stops
// taking changes until a restart replays it.
func (jl *journal) diverged(id int64, err error) error {
	jl.mu.Lock()
	defer jl.mu.Unlock()
	if jl.broken == nil {
		jl.broken = fmt.Errorf("the files of job %d could not be written after its change was committed (restart the server to replay the journal): %w", id, err)
		jl.log.Error("a job's files could not be written after its change was committed: every further change fails until the server is restarted", "job", id, "err", err)
	}
	return jl.broken
}

// syncFS makes everything written on the file system of dir durable.
func syncFS(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	return unix.Syncfs(int(f.Fd()))
}
