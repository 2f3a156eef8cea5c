#!/usr/bin/env bash
# Installs what `make test` talks to, when it is missing: moto (a local AWS),
# xz and zstd (image formats), coreutils' sha256sum, chromium (the
# dashboard's browser test). Runs as root with apt-get
# on Debian-like machines; elsewhere it says what to install and fails, so CI
# fails instead of skipping tests.
set -euo pipefail

missing_apt=()
command -v tar >/dev/null || missing_apt+=(tar) # GNU tar: sparse archives in targets/mirror tests
command -v xz >/dev/null || missing_apt+=(xz-utils)
command -v zstd >/dev/null || missing_apt+=(zstd)
command -v gzip >/dev/null || missing_apt+=(gzip)
command -v sha256sum >/dev/null || missing_apt+=(coreutils)
command -v curl >/dev/null || missing_apt+=(curl)
# headless Chromium for the download server's browser test (chromedp)
command -v chromium >/dev/null || command -v chromium-browser >/dev/null || missing_apt+=(chromium)

apt_install() {
	if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
		echo "installing $* with apt-get" >&2
		apt-get update -qq >/dev/null
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
	else
		echo "missing: $* (install them, e.g. apt-get install $*)" >&2
		exit 1
	fi
}

if [ ${#missing_apt[@]} -gt 0 ]; then
	apt_install "${missing_apt[@]}"
fi

if ! command -v moto_server >/dev/null; then
	echo "moto_server not found; trying pip install 'moto[server]'" >&2
	if ! python3 -m pip install -q 'moto[server]' 2>/dev/null; then
		echo "moto_server is required by the AWS tests: install it with pip install 'moto[server]'" >&2
		exit 1
	fi
fi
