// Package pgtest starts a real PostgreSQL server for tests: initdb and
// postgres in a temporary directory, listening on 127.0.0.1 on a free port
// and on a unix socket in that directory only, as an unprivileged user
// (cloudupload-test, created with useradd when the tests run as root, since
// PostgreSQL refuses to run as root).
//
// URL returns a fresh, empty database on one server per test binary,
// started on first use (Shared returns that server, for its admin URL);
// NewServer starts a server of the test's own, for tests that stop and
// start it. A test package that uses either calls Main
// from its TestMain, which stops the servers after the tests; a server also
// stops when the test binary dies, even by SIGKILL (the postmaster runs with
// a parent-death signal).
//
// A machine without PostgreSQL fails the test, saying what to install
// (scripts/ensure-postgres.sh does it for make test). The binaries are
// found on PATH, else in /usr/lib/postgresql/<version>/bin (Debian).
// Only test code imports this package.
package pgtest
