#!/usr/bin/env bash
# make bench: every Go benchmark of the project, one run, on this machine.
# Figures are ratios against baselines measured in the same run (reading the
# image, aws s3 cp, rclone, Go's http.FileServer for the download server)
# plus absolute numbers and peak memory, because these machines are shared
# and noisy. Output: $1/bench.txt.
# BenchmarkDashboard (cmd/cloudupload-server) measures the dashboard's and
# /metrics' per-request cost and GET /cloudupload/<id> with and without
# dashboards polling; BENCH=Dashboard scripts/bench.sh runs it alone.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-bench-results}
mkdir -p "$out"
scripts/ensure-test-deps.sh
scripts/ensure-s3-test-server.sh
scripts/ensure-azurite.sh
scripts/ensure-postgres.sh
# OBS's own cloud upload server (Debian's obs-server) is the baseline of
# cmd/cloudupload-server BenchmarkPutToSucceeded, BenchmarkGetJob, BenchmarkListJobs
# and BenchmarkPutImage (internal/obstest runs it on loopback); make test does not need it.
scripts/ensure-obs-server.sh
# The S3 comparison needs the other clients; install them when missing.
if ! command -v rclone >/dev/null || ! command -v aws >/dev/null; then
	if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
		apt-get update -qq >/dev/null
		pkgs=()
		command -v rclone >/dev/null || pkgs+=(rclone)
		command -v aws >/dev/null || pkgs+=(awscli)
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${pkgs[@]}" >/dev/null
	fi
fi
# The azure and cli benchmarks compare with curl's PUT; install it when missing.
if ! command -v curl >/dev/null && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
	apt-get update -qq >/dev/null
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq curl >/dev/null
fi
# Includes targets/azure BenchmarkSparseUpload: a sparse raw image and its .raw.xz
# into a page blob on Azurite and on an in-process sink, against reading the
# image (page cache and cold), curl's PUT of the same data, and decoding it.
# Includes targets/mirror BenchmarkUnpack: an "unpack" publication of a 256 MiB
# build archive against tar -x + sha256sum + sync of the same archive.
# Includes cli BenchmarkPush (bin/cloudupload push of 256 MiB against curl's
# POST + PUT, client peak memory) and client BenchmarkTarStream (a directory
# streamed as push sends it against tar -cf).
# Includes cmd/cloudupload-server BenchmarkClusterJobs (jobs/s through one node
# on the state directory, one node and three nodes on one PostgreSQL) and
# BenchmarkClusterGet (GET latency on the state directory and on PostgreSQL,
# through the node that ran the job and another), and backend/pgstore's.
# Includes targets/s3 BenchmarkDecompressUpload: a .raw.xz stored with
# decompress to versitygw and to a loopback sink that takes no CPU, against
# decoding the same file, with the CPU time of each party (decoder, uploader,
# server) and the CPU ceiling they give on this machine.
echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB; $(go version)" | tee "$out/bench.txt"
go test -p 1 -run "^$" -bench "${BENCH:-.}" -benchtime "${BENCHTIME:-1x}" -count 1 -timeout 60m ./... 2>&1 | tee -a "$out/bench.txt"
