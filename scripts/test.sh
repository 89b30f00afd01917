#!/usr/bin/env bash
# The test command (README.md, CI). It installs the reference tools the tests drive into ./.tools/bin when
# they are missing, then runs the whole suite with the race detector. Run it as root for the device,
# filesystem and data-survival tests (loop devices, mkfs, mount).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/tools.sh
export PATH="$PWD/.tools/bin:$PATH"
go test -race -count=1 -parallel 4 -timeout 30m "$@" ./...
