#!/usr/bin/env bash
# Runs every test toolgate has, on a fresh machine: installs what the
# tests need (npm packages for the x402 end-to-end tests, anvil, pebble
# for the ACME tests), vets,
# runs the Go tests under -race, runs each fuzz target briefly, and builds
# the benchmarks so that they do not rot.
set -euo pipefail
cd "$(dirname "$0")/.."

export GOFLAGS="${GOFLAGS:-} -mod=mod"
step() { printf '\n== %s\n' "$*"; }

step "dependencies"
go mod download
# versitygw (S3 with Object Lock, for the audit shipping tests) takes about
# 3 CPU-minutes to build when missing: build it beside the other installs.
vgw_pid=""
vgw_log=$(mktemp)
if [ -x scripts/versitygw-deps.sh ]; then scripts/versitygw-deps.sh >"$vgw_log" 2>&1 & vgw_pid=$!; fi
if [ -x scripts/e2e-deps.sh ]; then scripts/e2e-deps.sh; fi
# Cluster-mode tests start their own redis-server (Redis 7, Debian's
# package); install it when missing. Never started here: each test runs
# its own on a free loopback port.
if ! command -v redis-server >/dev/null 2>&1; then
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq && $sudo apt-get install -y -qq redis-server >/dev/null
  command -v redis-server >/dev/null 2>&1 || { echo "redis-server could not be installed" >&2; exit 1; }
  echo "redis-server: installed ($(redis-server --version | cut -d' ' -f3))"
fi
if [ -x scripts/pebble-deps.sh ]; then scripts/pebble-deps.sh; fi
# The dashboard's browser test drives Debian's Chromium headless; install
# it when missing.
if ! command -v chromium >/dev/null 2>&1 && ! command -v chromium-browser >/dev/null 2>&1; then
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq && $sudo apt-get install -y -qq chromium >/dev/null
  command -v chromium >/dev/null 2>&1 || { echo "chromium could not be installed" >&2; exit 1; }
  echo "chromium: installed ($(chromium --version 2>/dev/null | cut -d' ' -f2))"
fi
if [ -n "$vgw_pid" ]; then
  if ! wait "$vgw_pid"; then cat "$vgw_log"; echo "versitygw could not be built" >&2; exit 1; fi
  cat "$vgw_log"
fi
rm -f "$vgw_log"

step "gofmt + go vet"
unformatted=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go' -not -path './e2e/node_modules/*'))
if [ -n "$unformatted" ]; then echo "gofmt needed:"; echo "$unformatted"; exit 1; fi
go vet ./...

step "go test -race"
go test -race -count=1 -timeout 20m ./...

step "fuzz (a few seconds each)"
fuzztime="${FUZZTIME:-5s}"
for pkg in $(go list ./...); do
  dir=$(go list -f '{{.Dir}}' "$pkg")
  for fn in $(grep -ho '^func Fuzz[A-Za-z0-9_]*' "$dir"/*_test.go 2>/dev/null | sed 's/^func //'); do
    echo "-- $pkg $fn"
    out=$(mktemp)
    if ! go test -run='^$' -fuzz="^${fn}\$" -fuzztime="$fuzztime" "$pkg" >"$out" 2>&1; then
      # A failing input is a real failure. A fuzz run that ends without one
      # (a worker the shared machine starved past the fuzzer's hang limit)
      # is run once more; its output is shown either way.
      cat "$out"
      if grep -q "Failing input written to" "$out"; then exit 1; fi
      echo "   (no failing input was found: running $fn once more)"
      go test -run='^$' -fuzz="^${fn}\$" -fuzztime="$fuzztime" "$pkg" >"$out" 2>&1 || { cat "$out"; exit 1; }
    fi
    rm -f "$out"
  done
done

step "benchmarks compile and run once"
go test -run='^$' -bench=. -benchtime=1x ./... >/dev/null

echo; echo "all tests passed"
