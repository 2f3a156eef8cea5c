// Package uploader is what the per-job uploader process (bin/clouduploader)
// does around a target: it reads OBS's argv and the job's environment,
// checks the target data, opens and decompresses the image, runs the
// target's Upload with a context that SIGTERM or SIGINT cancels, and writes
// the result file atomically. It also answers `validate <target>` (for the
// daemon, before a job exists) and `targets`.
//
// Exit status: 0 success (result file: the result); 1 failure (result
// file: one line saying why); 2 bad usage or invalid target data; 128+n
// when stopped by signal n (143 for SIGTERM; result file: "killed"). Once
// the outcome is recorded, the process exits with it while the signals are
// still caught (Options.Exit): a kill that arrives as the upload completes
// cannot turn a published image into a job recorded as killed.
//
// Standard output is the job log, for people: a header naming the job,
// target and image, each step of the target, the total time. The target
// data is never printed (it may name private resources; secrets are never
// in it in clear, and never in the log).
//
// Progress: when the daemon sets CLOUDUPLOAD_PROGRESS_FILE, every transfer
// a target reports with targets.Log.Progress is also written there as
// {"done":N,"total":M} (atomically, at most once a second, and at its end);
// the daemon shows it in the job document as <progress> and the elements
// after OBS's.
package uploader
