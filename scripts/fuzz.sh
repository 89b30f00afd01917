#!/usr/bin/env bash
# Runs every fuzz target (func FuzzX in a *_test.go) for FUZZTIME each (default 10s), one after another,
# two workers each. A failing input is written to PKG/testdata/fuzz/FuzzX/ (commit it with its fix: `go
# test` then runs it as a regression test). `bash scripts/fuzz.sh agent sim` limits it to those package
# directories; FUZZTIME=60s for a longer run.
set -euo pipefail
cd "$(dirname "$0")/.."
fuzztime="${FUZZTIME:-10s}"
dirs=("$@")
[ ${#dirs[@]} -gt 0 ] || dirs=(.)
# Found by grep in the tracked test files (commit a new target first), not `go test -list`, which would
# build every package's tests.
git ls-files -- "${dirs[@]/%//*_test.go}" | xargs grep -E -o '^func Fuzz[A-Za-z0-9_]+' | sort | while IFS=: read -r file fn; do
  pkg="./$(dirname "$file")"
  target="${fn#func }"
  echo "-- $pkg $target ($fuzztime)"
  # A short -fuzzminimizetime: minimizing each new interesting input for the default minute (a sample
  # event is a kilobyte of JSON) would take the whole run.
  go test -run '^$' -fuzz "^${target}\$" -fuzztime "$fuzztime" -fuzzminimizetime 2s -parallel 2 "$pkg" | grep -v '^fuzz: elapsed' || {
    echo "$pkg $target failed: the input is under $pkg/testdata/fuzz/$target/"; exit 1; }
done
