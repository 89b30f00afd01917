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
  # Go's fuzzing engine can end a run with "context deadline exceeded" and no failing input when
  # -fuzztime runs out while a worker is busy (a loaded machine); that is rerun once. A failure that
  # wrote an input under testdata/fuzz is never rerun.
  for attempt in 1 2; do
    before=$(ls "$pkg/testdata/fuzz/$target" 2>/dev/null | wc -l)
    if out=$(go test -run '^$' -fuzz "^${target}\$" -fuzztime "$fuzztime" -fuzzminimizetime 2s -parallel 2 "$pkg" 2>&1); then
      grep -v '^fuzz: elapsed' <<<"$out"; break
    fi
    grep -v '^fuzz: elapsed' <<<"$out"
    after=$(ls "$pkg/testdata/fuzz/$target" 2>/dev/null | wc -l)
    if [ "$attempt" = 1 ] && [ "$before" = "$after" ] && grep -q 'context deadline exceeded' <<<"$out"; then
      echo "   (the fuzzing engine's own deadline, no failing input: once more)"; continue
    fi
    echo "$pkg $target failed: the input is under $pkg/testdata/fuzz/$target/"; exit 1
  done
done
