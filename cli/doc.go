// Package cli is the command-line client bin/cloudupload: the commands
// submit, push, list, show, log, kill and wait over package client, their
// flags, the configuration (flags > environment > config file), and the
// output for people (tables, a progress bar on a terminal, plain lines
// otherwise) and for scripts (--json, exit statuses).
//
// Exit statuses, for scripts and CI:
//
//	0  done; for wait, log -f, submit -f and push -f: the job (every job
//	   given to wait) succeeded
//	1  the job failed (wait: one of the jobs; log -f, submit -f, push -f)
//	2  usage error or a local problem (bad flag, unreadable file, a file
//	   that changed while it was pushed)
//	3  the server could not be reached, or refused the request (the
//	   server's summary is printed)
//	4  wait --timeout elapsed before the job ended
//	130 interrupted (SIGINT or SIGTERM) before it was done; a push
//	   interrupted while sending leaves a job that fails for its
//	   incomplete image
//
// The token is never taken from the command line (argv is visible to
// every user of the machine): it comes from --token-file, the environment
// (CLOUDUPLOAD_TOKEN) or the config file.
package cli
