#!/usr/bin/env bash
# Installs pebble (Let's Encrypt's test ACME server) and
# pebble-challtestsrv, which the ACME tests (cmd/toolgate TestServe_ACME)
# run locally. Debian and Ubuntu package both in "pebble".
#
# Idempotent: does nothing when both are on PATH. Without apt-get, or
# without the rights to use it, it says so and exits 0: the ACME tests
# then skip, naming this script.
set -euo pipefail

if command -v pebble >/dev/null 2>&1 && command -v pebble-challtestsrv >/dev/null 2>&1; then
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "pebble-deps: apt-get not found; install pebble (https://github.com/letsencrypt/pebble) by hand for the ACME tests" >&2
  exit 0
fi
sudo=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    sudo="sudo -n"
  else
    echo "pebble-deps: not root and no passwordless sudo; run: apt-get install -y pebble" >&2
    exit 0
  fi
fi
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq pebble
