// Package obstest runs OBS's own cloud upload server, the Perl
// bs_clouduploadserver and bs_clouduploadworker of Debian's obs-server
// 2.9.4, on loopback as the benchmarks' baseline: what the project replaces,
// measured beside it in the same run on the same machine.
//
// Start runs both programs as they ship (from /usr/lib/obs/server), with a
// BSConfig of its own in a temporary directory: their state (bsdir) in that
// directory, no change of user, write access from 127.0.0.1 only, and the
// server listening on a socket the benchmark opened on 127.0.0.1:0 and
// handed over as a file descriptor (OBS's "--port &=N"). The worker runs
// `clouduploader` found on PATH, so the uploader given to Start is linked
// under that name into a directory put first on the worker's PATH.
// InstantUploader is an uploader that both OBS's worker and the project's
// daemon accept and that succeeds at once (WriteInstantUploader writes it
// to a file).
//
// A machine without obs-server fails the benchmark, saying what to install
// (scripts/ensure-obs-server.sh does it for make bench; make test does not
// need it). Only test code imports this package.
package obstest
