#!/usr/bin/env bash
# Installs versitygw, the S3 server the s3 target's tests and benchmark start
# on loopback (Apache-2.0; it checks SigV4 signatures, part checksums and
# conditional writes, which moto does not). The tests look for it on PATH,
# in $GOBIN and in $(go env GOPATH)/bin, and fail, never skip, without it.
# `go install` takes about 75 s on 2 cores with a cold module cache.
set -euo pipefail
version=v1.8.0
found() {
	command -v versitygw >/dev/null && return 0
	[ -n "${GOBIN:-}" ] && [ -x "$GOBIN/versitygw" ] && return 0
	local d
	for d in $(go env GOPATH | tr ':' ' '); do
		[ -x "$d/bin/versitygw" ] && return 0
	done
	return 1
}
if found; then
	exit 0
fi
echo "installing versitygw $version with go install (the s3 target's tests need it)" >&2
if ! go install "github.com/versity/versitygw/cmd/versitygw@$version"; then
	echo "versitygw is required by the s3 target's tests: go install github.com/versity/versitygw/cmd/versitygw@$version" >&2
	exit 1
fi
