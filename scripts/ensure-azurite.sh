#!/usr/bin/env bash
# Installs Azurite, the Azure Storage emulator the azure target's tests and
# benchmark start on loopback (MIT; npm package "azurite", run under Node).
# The tests look for azurite-blob on PATH and fail, never skip, without it.
# Needs node and npm (installed with apt-get when missing and root).
set -euo pipefail
version=3.35.0
if command -v azurite-blob >/dev/null; then
	exit 0
fi
if ! command -v npm >/dev/null || ! command -v node >/dev/null; then
	if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
		echo "installing nodejs and npm with apt-get (Azurite runs under Node)" >&2
		apt-get update -qq >/dev/null
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null
	else
		echo "missing: node and npm (Azurite, the azure target's test server, runs under Node)" >&2
		exit 1
	fi
fi
echo "installing azurite $version with npm install -g (the azure target's tests need it)" >&2
if ! npm install -g --no-fund --no-audit "azurite@$version" >/dev/null; then
	echo "azurite is required by the azure target's tests: npm install -g azurite@$version" >&2
	exit 1
fi
command -v azurite-blob >/dev/null || {
	echo "npm installed azurite but azurite-blob is not on PATH (npm prefix: $(npm prefix -g))" >&2
	exit 1
}
