// Package backend is the daemon's core: the job store on disk, the state
// machine driver, the scheduler with its upload slots, the supervisor of
// uploader processes, and crash recovery. The HTTP layer (backend/httpapi)
// and image fetching (backend/imagesource) build on the Manager API (see
// api.go). The daemon never imports a target or a cloud SDK: it reaches
// targets only through the uploader process.
//
// # The state directory, for operators
//
// Everything a job is lives in plain files that ls and cat can inspect:
//
//	STATE/next-id            the first job id not yet reserved: ids are handed out from blocks of 64
//	                         reserved here before use, so ids are never reused (after a restart they
//	                         continue past the block: increasing, not contiguous)
//	STATE/lock               locked (flock) by the running server: one server per state directory
//	STATE/journal.<n>        the job journal while the server runs (see below); none after a clean stop
//	STATE/MIGRATED           written by Migrate once the jobs moved into a shared store: the server
//	                         then starts on this directory only with that store
//	STATE/jobs/<id>/         one directory per unfinished job (on ext2/3/4, jobs/ is marked
//	                         chattr +T, so these spread over the block groups)
//	    job.json             the whole job (state, details, names, pid, times), indented JSON
//	    data                 the target data (mode 0600; never logged, never in argv)
//	    image                the image as received
//	    log                  the uploader's log: its stdout and stderr, appended
//	    result               written by the uploader: the result (e.g. an AMI id) or a failure reason
//	    exit                 how the uploader ended: "0", "exit status N" or "signal: <name>"
//	    progress             written by the uploader while it runs: {"done":N,"total":M} (bytes)
//	    work/                the uploader's working directory, fresh for each run
//	STATE/done/<id>/         finished jobs: job.json, log, result, exit (image, data and
//	                         work are removed when a job ends: its final job.json is written
//	                         in jobs/<id>/, then the directory moves here in the background,
//	                         several jobs per sync; a restart finishes a move a crash cut)
//
// A job's state is on disk before it is visible through the API or acted
// upon. Each change (a job created with its data, each new state, and the
// image of a job whose image is at most 1 MiB) is first appended to the
// journal, a binary file of checksummed records, and made durable there
// with fdatasync; changes made at the same time share one fdatasync, so a
// burst of creates costs a few device flushes rather than several per job.
// Then the job's files show it: job.json and data are replaced atomically
// (a temporary file ".<name>.tmp-*" renamed over the old one; a new job's
// directory is made as ".<id>.tmp-*" and renamed), without an fsync of
// their own. Every 5 s, when the journal holds records, a checkpoint
// starts a new journal file, makes every file written before it durable
// with one syncfs of the state directory's file system, and removes the
// old journal. After a crash, the next start replays the journals over the
// files (a record cut by the crash was never acknowledged and is ignored),
// syncs, and removes them; temporary files and directories are removed.
// A clean stop checkpoints and leaves no journal, so an older server can
// read the directory. The state directory must be one file system (syncfs
// covers one). Images over 1 MiB, next-id, and the moves to done/ are
// synced as before, without the journal. Times in job.json are unix
// seconds; pid_start is the start time of pid in clock ticks since boot
// (/proc/<pid>/stat field 22).
//
// With a retention configured, finished jobs are removed that long after
// they ended (at start and then hourly); without one they are kept.
//
// # Uploaders
//
// A scheduled job starts when a slot is free (MaxUploads in all,
// MaxUploadsPerUser per user, oldest job first). The daemon starts a shim
// (package backend/shim: the program Config.Shim, cloudupload-shim, or
// without it the daemon's own binary re-executed, see RunShimIfRequested;
// argv[1] "__cloudupload_shim" either way) in a new process group, in the
// job's work directory,
// with stdin /dev/null and stdout and stderr appended to the job log. The
// shim runs the uploader with OBS's argv
//
//	<uploader> <user> <target> <image> <data file> <filename> <result file>
//
// and the environment CLOUDUPLOAD_JOB, _USER, _FILENAME, _PROJECT, _REPOSITORY, _ARCH,
// _PACKAGE plus Config.UploaderEnv, waits for it, writes the exit file and
// exits. The daemon records the shim's pid and start time in job.json, so a
// restarted daemon re-adopts a live shim (and not a recycled pid) or, when
// it is gone, learns the outcome from the exit file. When the shim has
// ended, whatever is left of its process group is killed before the job
// becomes final.
//
// Kill sends SIGTERM to the group and SIGKILL after the kill grace; the job
// becomes final (failed, "killed") only when no process of the group runs.
//
// Stopping or restarting the server leaves running uploads alone; a service
// manager must do the same (with systemd: KillMode=process), or a restart
// kills every upload in progress.
//
// # Recovery after a crash
//
// At start no job stays stuck: a job still fetching its image fetches it
// again (resuming where the image file ends); one whose image was being sent
// with PUT fails ("upload it again"); scheduled jobs are queued; a live
// uploader is re-adopted; an uploader that ended while the daemon was down
// gives its recorded outcome, one that vanished fails with "the server lost
// the uploader". A shim whose pid was never recorded (the daemon died while
// starting it) is found by its work directory and command line and
// re-adopted; processes of a job without their shim are stopped as a kill
// stops them. Temporary files of an uploading job are left to its live
// processes and removed when it ends.
//
// A job.json that cannot be read leaves the job visible as failed ("the
// server could not read this job's record"), its directory untouched for
// the operator; processes still running in its work directory are stopped.
// A next-id that cannot be read is rebuilt from the highest id on disk.
//
// # Receiving
//
// A receive that gets no byte for Config.ReceiveIdleTimeout fails its job
// ("the image stopped arriving"), and so does a job created for a PUT that
// has not come within that time. A kill or an idle timeout interrupts a
// read blocked on a stalled sender (see Interrupter). Images that would
// take the state directory's free space below Config.MinFreeSpace are
// refused before a byte is written (ENOSPACE); a full disk while receiving
// removes the partial image, then fails the job ("the server ran out of
// disk space").
//
// # Many nodes on one database
//
// With Config.Store (backend/pgstore, --database) the job records live in
// PostgreSQL and several daemons serve one queue; each keeps its jobs' local
// files in its own state directory as above, without job.json and next-id.
// A job is held by the node that created it (its image is there); upload
// slots are counted over the cluster when a job is claimed. A node renews
// its lease every third of Config.Lease and touches STATE/lease; its shims
// watch that file and stop their uploader (SIGTERM, the kill grace, SIGKILL)
// once it is older than the lease, so a node whose daemon died stops
// uploading on its own. A node that lost its lease stops its uploaders and
// exits (Lost); its writes are refused by the store (fencing). Once a lost
// node's lease has run out by more than the kill grace and a margin, a live
// node takes its unfinished jobs over: a job whose image comes from the
// image source fetches it again and runs again (an uploading one only with
// Config.Rerun, when uploads are idempotent), a job still waiting for its
// PUT waits on the new node, and the others fail naming the lost node. The
// last 4 MiB of a finished job's log are kept in the store; any node shows
// any job, and the API passes requests about a job another live node holds
// on to it (httpapi.Holders).
package backend
