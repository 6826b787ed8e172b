#!/usr/bin/env bash
# Installs the end-to-end test dependencies (anvil, solc-js, viem, the x402
# reference packages) into e2e/node_modules from e2e/package-lock.json.
#
# Idempotent: runs `npm ci` only when node_modules is missing or was installed
# from a different package-lock.json (a stamp file records the lock's hash).
# The Go helpers in e2e/chain read the same stamp to decide whether the
# dependencies are installed and current.
#
# Usage: scripts/e2e-deps.sh [--force]
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
e2e="$root/e2e"
stamp="$e2e/node_modules/.toolgate-e2e-deps"

for tool in node npm sha256sum; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "e2e-deps: $tool not found on PATH (need Node.js >= 20 with npm)" >&2
    exit 1
  fi
done
node_major="$(node -p 'process.versions.node.split(".")[0]')"
if [ "$node_major" -lt 20 ]; then
  echo "e2e-deps: Node.js $(node --version) is too old; need >= 20" >&2
  exit 1
fi

want="$(sha256sum "$e2e/package-lock.json" | cut -d' ' -f1)"
if [ "${1:-}" != "--force" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] \
  && [ -x "$e2e/node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil" ]; then
  echo "e2e-deps: up to date"
  exit 0
fi

start=$(date +%s)
# --ignore-scripts: nothing in the pinned set needs an install script (the
# native keccak/bufferutil builds are optional and have JS fallbacks), and it
# keeps the install offline-safe and fast.
npm ci --prefix "$e2e" --ignore-scripts --no-audit --no-fund --loglevel=error
if [ ! -x "$e2e/node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil" ]; then
  echo "e2e-deps: anvil binary missing after npm ci (this script supports linux/amd64 only)" >&2
  exit 1
fi
echo "$want" >"$stamp"
echo "e2e-deps: installed in $(($(date +%s) - start))s"
