#!/usr/bin/env bash
# Installs PostgreSQL when missing: the PostgreSQL job store's tests
# (backend/pgstore, via internal/pgtest) run initdb and postgres in a
# temporary directory on loopback. They look for initdb on PATH, then in
# /usr/lib/postgresql/<version>/bin (where Debian puts it), and fail, never
# skip, without it. Runs as root with apt-get on Debian-like machines.
set -euo pipefail
if command -v initdb >/dev/null || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
	exit 0
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
	echo "installing postgresql with apt-get (the PostgreSQL job store's tests need it)" >&2
	apt-get update -qq >/dev/null
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
else
	echo "missing: PostgreSQL (initdb, postgres): install it, e.g. apt-get install postgresql" >&2
	exit 1
fi
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null || {
	echo "postgresql is installed but initdb is neither on PATH nor in /usr/lib/postgresql/*/bin" >&2
	exit 1
}
