#!/usr/bin/env bash
# make demo: one whole job on the embedded default, as a new user sees it.
# Builds the two binaries, generates a small disk image in a demo build
# tree, starts the server on 127.0.0.1:5452 (or $LISTEN), submits a job for
# the `mirror` target with curl, follows its log while it runs, prints the
# final job and where the image was published, and stops the server.
# Needs only Go, curl and xz. Everything lands in ./demo (make clean removes it).
set -euo pipefail
cd "$(dirname "$0")/.."

LISTEN=${LISTEN:-127.0.0.1:5452}
URL="http://$LISTEN"
project=home:demo repository=images arch=x86_64 package=demo-image
filename=demo-image.x86_64.raw.xz
build=demo/build/$project/$repository/$arch/$package

for tool in go curl xz; do
	command -v "$tool" >/dev/null || { echo "demo: $tool is needed but not installed" >&2; exit 1; }
done
# Bold headings on a terminal only: no escape codes in files and pipes.
if [ -t 1 ]; then bold=$'\033[1m' plain=$'\033[0m'; else bold= plain=; fi
say() { printf '\n%s== %s%s\n' "$bold" "$*" "$plain"; }

say "building bin/cloudupload-server, bin/cloudupload-shim and bin/clouduploader"
mkdir -p bin
go build -o bin/ ./cmd/...

if [ ! -f "$build/$filename" ]; then
	say "generating a 16 MiB disk image with holes: $build/$filename"
	mkdir -p "$build"
	raw=$(mktemp demo/image.XXXXXX)
	trap 'rm -f "$raw"' EXIT
	truncate -s 16M "$raw"
	# A "boot sector", a few MiB of data, and zeros in between.
	printf 'cloudupload demo image, made %s\n' "$(date -u +%FT%TZ)" | dd of="$raw" conv=notrunc status=none
	dd if=/dev/urandom of="$raw" bs=1M seek=2 count=2 conv=notrunc status=none
	head -c 1048576 /dev/zero | tr '\0' 'x' | dd of="$raw" bs=1M seek=9 conv=notrunc status=none
	xz -1 -T1 -c "$raw" >"$build/$filename.part"
	mv "$build/$filename.part" "$build/$filename"
	rm -f "$raw"
	trap - EXIT
fi
ls -l "$build/$filename"
mkdir -p demo/mirror demo/state

say "starting the server on $LISTEN (log: demo/server.log)"
bin/cloudupload-server --listen "$LISTEN" --state-dir demo/state --build-root demo/build \
	--mirror demo=demo/mirror >demo/server.log 2>&1 &
server=$!
stop() {
	if kill -0 "$server" 2>/dev/null; then
		kill -TERM "$server"
		wait "$server" 2>/dev/null || true
		echo "server stopped"
	fi
}
trap stop EXIT
for _ in $(seq 1 150); do
	curl -fsS "$URL/" >/dev/null 2>&1 && break
	if ! kill -0 "$server" 2>/dev/null; then
		echo "demo: the server did not start:" >&2
		cat demo/server.log >&2
		if grep -q 'address already in use' demo/server.log; then
			echo "($LISTEN is taken; choose another address: LISTEN=127.0.0.1:5453 make demo)" >&2
		fi
		exit 1
	fi
	sleep 0.2
done
curl -fsS "$URL/"

say "submitting a job: target mirror, target data {\"tree\":\"demo\"}"
query="project=$project&repository=$repository&arch=$arch&package=$package&filename=$filename&user=demo&target=mirror"
echo "curl -X POST --data-binary '{\"tree\":\"demo\"}' '$URL/cloudupload?$query'"
job=$(curl -sS -X POST -H 'Content-Type: application/octet-stream' --data-binary '{"tree":"demo"}' \
	-w '\n%{http_code}' "$URL/cloudupload?$query")
code=${job##*$'\n'}
job=${job%$'\n'*}
printf '%s' "$job"
if [ "$code" != 200 ]; then
	echo "demo: the server refused the job (HTTP $code)" >&2
	exit 1
fi
id=$(printf '%s\n' "$job" | sed -n 's/.*<clouduploadjob name="\([0-9]*\)".*/\1/p')

say "following the log of job $id as it runs (GET /cloudupload/$id/_log)"
curl -sS -N "$URL/cloudupload/$id/_log"

say "waiting for job $id to finish"
state=
for _ in $(seq 1 600); do
	doc=$(curl -fsS "$URL/cloudupload/$id")
	state=$(printf '%s\n' "$doc" | sed -n 's/.*<state>\(.*\)<\/state>.*/\1/p')
	case $state in succeeded|failed) break ;; esac
	sleep 0.2
done
echo "$doc"
details=$(printf '%s\n' "$doc" | sed -n 's/.*<details>\(.*\)<\/details>.*/\1/p')

say "result: job $id $state: $details"
if [ "$state" = succeeded ]; then
	echo "published under demo/mirror:"
	find demo/mirror -newer "$build/$filename" \( -type f -o -type l \) ! -name ".*" -print | sort | sed 's/^/  /'
	echo
	echo "the job's files (an operator's view): demo/state/done/$id/"
	ls -l "demo/state/done/$id/" 2>/dev/null | sed 's/^/  /' || true
else
	echo "the server log is in demo/server.log" >&2
	exit 1
fi
