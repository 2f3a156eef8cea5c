// Package shim is the process that supervises one uploader: the uploader's
// parent, which waits for it and records how it ended in the job's exit
// file, so that a daemon restarted meanwhile still learns the outcome of an
// upload it did not start (see package backend).
//
// The daemon runs it either as the small program cloudupload-shim (found
// beside the daemon, or given with --shim) or, without one, by re-executing
// its own binary with Arg as argv[1] (backend.RunShimIfRequested). Both run
// Run, and the contract between daemon and shim is the same:
//
//	argv   <name> Arg <exit file> <uploader> <uploader's args>...
//	env    the uploader's environment, plus in a cluster EnvLeaseFile,
//	       EnvLease and EnvKillGrace (removed before the uploader starts)
//	exit   file  "0", "exit status N", "signal: NAME" or "stopped: ...",
//	       one line, written atomically when the uploader has ended
//	status 0 once the exit file is written; UnrecordedSuccess or
//	       UnrecordedFailure when it could not be (a full disk)
//
// The package imports only the standard library, internal/atomicfile and
// internal/human: a shim starts for every job, so its start-up must cost as
// little as a Go program's can (the daemon's binary spends most of its
// start-up in package initialisation it does not need here).
package shim
