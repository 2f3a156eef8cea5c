#!/usr/bin/env bash
# Installs OBS's own cloud upload server (Debian's obs-server 2.9.4: the Perl
# bs_clouduploadserver and bs_clouduploadworker) when missing. Only the
# benchmarks need it (internal/obstest runs it on loopback as the baseline of
# PUT → succeeded), so scripts/bench.sh calls this and make test does not.
# The package's postinst enables and starts OBS's backend services; none must
# run here, so a policy-rc.d that forbids starting services is in place during
# the install, and on a systemd machine the units are disabled afterwards.
# Runs as root with apt-get on Debian-like machines.
set -euo pipefail
server=/usr/lib/obs/server/bs_clouduploadserver
if [ -x "$server" ] && [ -x /usr/lib/obs/server/bs_clouduploadworker ]; then
	exit 0
fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
	echo "missing: $server (OBS's cloud upload server, the benchmarks' baseline): install it as root, e.g. apt-get install obs-server" >&2
	exit 1
fi
echo "installing obs-server with apt-get (the benchmarks compare with OBS's cloud upload server); none of its services is started" >&2
policy=/usr/sbin/policy-rc.d
if [ ! -e "$policy" ]; then
	printf '#!/bin/sh\n# written by cloudupload scripts/ensure-obs-server.sh for the install of obs-server\nexit 101\n' >"$policy"
	chmod 755 "$policy"
	trap 'rm -f "$policy"' EXIT
fi
apt-get update -qq >/dev/null
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends obs-server >/dev/null
if [ -d /run/systemd/system ]; then
	units=(obsdeltastore obsdispatcher obsdodup obspublisher obsrepserver obsservice obssigner obssrcserver obswarden
		obsscheduler@i586 obsscheduler@x86_64 obsscheduler@armv7hl)
	systemctl disable --now "${units[@]/%/.service}" >/dev/null 2>&1 || true
fi
[ -x "$server" ] || {
	echo "obs-server is installed but $server is missing" >&2
	exit 1
}
