#!/usr/bin/env bash
# Builds versitygw (Versity's S3 gateway, Apache 2.0), the S3-compatible
# server with Object Lock that the audit shipping tests (ship/
# TestShipper_ObjectLockOnVersityGW) run locally on its posix backend.
# It is a Go module: `go install` fetches and builds it through the Go
# module proxy into $(go env GOPATH)/bin, where the test looks for it.
#
# Idempotent: does nothing when versitygw is on PATH or already built.
set -euo pipefail

version=v1.8.0
bin="$(go env GOPATH)/bin/versitygw"
if command -v versitygw >/dev/null 2>&1 || [ -x "$bin" ]; then
  exit 0
fi
start=$(date +%s)
GOFLAGS=-mod=mod go install "github.com/versity/versitygw/cmd/versitygw@${version}"
echo "versitygw ${version}: built in $(( $(date +%s) - start )) s ($bin)"
