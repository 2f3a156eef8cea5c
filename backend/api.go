package backend

import (
	"context"
	"log/slog"
	"os"
	"time"

	"github.com/cloudupload/cloudupload"
)

// Config configures a Manager. Zero values take the documented defaults.
type Config struct {
	StateDir string // required; created if missing
	Uploader string // path of clouduploader; required
	// Shim is the program started as each job's shim (cloudupload-shim,
	// see package backend/shim); "" re-executes this program as the shim,
	// which then must call RunShimIfRequested first thing. Both behave
	// the same; the small program starts in a fraction of the time.
	Shim              string
	MaxUploads        int           // uploads running at once; default 4
	MaxUploadsPerUser int           // uploads running at once per user; default 2
	NodeUploads       int           // with a shared store: uploads at once on this node; 0 = MaxUploads
	KillGrace         time.Duration // SIGTERM → SIGKILL delay; default 30s
	Retention         time.Duration // finished jobs are removed this long after they ended; 0 keeps them
	// ReceiveIdleTimeout fails a job whose image stops arriving for this
	// long ("the image stopped arriving"); default 5m.
	ReceiveIdleTimeout time.Duration
	// MinFreeSpace is the free space, in bytes, the state directory's file
	// system keeps: an image that would go below it is refused (ENOSPACE)
	// before a byte is written. Default 256 MiB; < 0 disables the check.
	MinFreeSpace int64
	// UploaderEnv is added to the daemon's own environment for uploader
	// processes (e.g. CLOUDUPLOAD_MIRRORS=…, CLOUDUPLOAD_PRIVKEY=…).
	UploaderEnv []string
	// NoValidate is set when the uploader does not speak this project's
	// protocol (ProbeUploader): OBS's clouduploader or a site's script.
	// Create then does not run `<uploader> validate`; the uploader checks
	// the target data when it runs, as with OBS.
	NoValidate bool
	// Fetcher fetches the image of jobs created with Origin fetch; nil means
	// such jobs cannot be created.
	Fetcher Fetcher
	Logger  *slog.Logger // default slog.Default()
	// Observer is told when jobs end, for metrics; nil tells no one.
	Observer Observer

	// Store, when set, keeps the job records in a store several nodes share
	// (backend/pgstore); nil keeps them in StateDir. The job's local files
	// (image, log, work directory) stay in StateDir either way.
	Store SharedStore
	// Lease is the shared store's lease duration (the store renews it; the
	// Manager renews every third of it); default 30s.
	Lease time.Duration
	// Rerun: the uploader's uploads are idempotent (this project's
	// clouduploader: client tokens, build ids), so a job that was uploading
	// on a lost node runs again on the node that takes it over; otherwise
	// it fails naming the lost node.
	Rerun bool
}

// Fetcher copies a job's image from where builds live (a build root or a
// repository server). Implementations are in backend/imagesource.
type Fetcher interface {
	// Stat reports the image's size, or a *cloudupload.Error ENOTFOUND
	// ("image not found: <project>/<repository>/<arch>/<package>/<filename>")
	// when it does not exist. Called before a job is created: a missing image
	// creates no job.
	Stat(ctx context.Context, job cloudupload.Job) (size int64, err error)
	// Fetch writes the image into dst, which already holds its first offset
	// bytes (0, or more when resuming after a restart), and returns the final
	// size. It streams without holding the image in memory, has no fixed
	// time limit, and honours ctx.
	Fetch(ctx context.Context, job cloudupload.Job, dst *os.File, offset int64) (size int64, err error)
}

// The Manager methods, implemented in manager.go and supervise.go:
//
//	Open(ctx, cfg) (*Manager, error)   load jobs from disk, recover, start the scheduler
//	(*Manager) Close() error           stop goroutines; running uploaders are left running and re-adopted by the next Open
//	(*Manager) Create(ctx, job, data) (cloudupload.Job, error)
//	    job carries User, Target, Project, Repository, Arch, Package,
//	    Filename, Size (may be 0) and Origin; data is the target data. Create
//	    validates the names (cloudupload.CheckJob), the target data (by asking
//	    one of the long-lived `<uploader> validate-stream` processes, or, for
//	    an uploader without it, running `<uploader> validate <target>` with
//	    data on stdin: exit 2 = EINVALID with stderr as message; skipped with
//	    Config.NoValidate), the free space (ENOSPACE below
//	    Config.MinFreeSpace), and for Origin fetch asks Fetcher.Stat; only then
//	    assigns an id and writes the job (state created, details "waiting to
//	    receive image"). For Origin fetch it then receives in the background.
//	(*Manager) Receive(ctx, id, body io.Reader, size int64) error
//	    PUT of the image: ENOTFOUND for unknown ids, ECONFLICT "job is not in
//	    created state" otherwise (also for Origin fetch jobs); state receiving
//	    while it streams; size is the request's Content-Length, < 0 when
//	    unknown (chunked); when the job has a Size, that must arrive and a
//	    size that differs fails the job at once ("the request announces N
//	    bytes, expected M"); a short or long body or read error → job failed
//	    with the reason, returned as EINVALID ("received N bytes, expected
//	    M"); a local write
//	    error → failed, EINTERNAL; killed meanwhile → ECONFLICT "job was
//	    killed"; success (image synced) → scheduled. Close cancels it and
//	    leaves the job receiving (the next Open fails it: "upload it again").
//	(*Manager) Get(id) (cloudupload.Job, error)         ENOTFOUND "no such job"
//	(*Manager) List(ids []int64) []cloudupload.Job      nil = all jobs, ascending ids; unknown ids skipped
//	    Get and List give receiving and uploading jobs their live transfer
//	    figures (Progress, BytesDone, BytesTotal, Rate, ETA; progress.go).
//	(*Manager) Stats() Stats                            jobs by state and target, bytes, rates: for metrics (stats.go)
//	(*Manager) Kill(ctx, id) error                      returns once the job is final (processes gone); nil when already final
//	(*Manager) LogPath(id) (string, error)              the job's log; may not exist yet (read as empty)
//	(*Manager) Wait(ctx, id) (cloudupload.Job, error)   returns once the job is final (processes gone)
